"""Where models and datasets come from: local folders or Hub repos, and how loading them fails.

Shared by :mod:`fakeface.modeling.detector` and :mod:`fakeface.data.dataset` (no torch import
here, so the dataset builder stays light).

Errors are data: every loading error is a :class:`SourceError` with ``kind``
(an :class:`ErrorKind`), the ``source`` / ``file`` / ``revision`` it concerns,
``problem`` (what went wrong) and ``fix`` (a sentence saying what to do). The
message is built from those fields; a UI words its own text from them and
never parses a message.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any


class ErrorKind(str, Enum):
    """Why a model, dataset or weights file could not be had (stable tags for UIs and tests)."""

    BAD_SOURCE = "bad_source"            # neither an existing folder nor a Hub id
    NOT_FOUND = "not_found"              # folder, repo, revision or split does not exist
    PRIVATE = "private"                  # private or gated: needs a token or accepted terms
    UNREACHABLE = "unreachable"          # the Hub did not answer and no cached copy exists
    BAD_CONFIG = "bad_config"            # config.json / card / data unreadable or not ours
    MISSING_WEIGHTS = "missing_weights"  # a weights file (or the package carrying it) is absent
    CORRUPT_WEIGHTS = "corrupt_weights"  # weights truncated, damaged or of another architecture


@dataclass(eq=False)
class SourceError(Exception):
    """A model, dataset or weights file could not be loaded: what, why and how to fix it."""

    kind: ErrorKind
    problem: str                   # what went wrong, one clause (no advice)
    fix: str                       # how to fix it, one sentence
    source: str | None = None      # the source as the user wrote it (display form)
    file: str | None = None        # the file inside it that failed, if one did
    revision: str | None = None    # the Hub revision asked for, if any

    def __post_init__(self) -> None:
        self.kind = ErrorKind(self.kind)
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.problem}; {self.fix}"

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # picklable across processes despite the keyword fields
        return (_rebuild_error, (type(self), self.fields()))

    def fields(self) -> dict[str, Any]:
        """The error's fields, to re-raise it as another :class:`SourceError` type."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _rebuild_error(cls: type, values: dict[str, Any]) -> SourceError:
    return cls(**values)


class BadSource(SourceError, ValueError):
    """A source string that is neither an existing folder nor a Hub id (kind ``bad_source``)."""


class RepoLookupError(SourceError, LookupError):
    """The Hub answered: the repo or revision is missing, private or gated."""


@dataclass(eq=False)
class HubUnreachable(SourceError):
    """The Hub did not answer (connection refused, timeout, 5xx); ``reason`` names the error type."""

    reason: str = ""


@dataclass(frozen=True)
class Source:
    """A user-given location, resolved: a local folder or a Hub repo (with an optional revision)."""

    kind: str                 # "local" or "hub"
    location: str             # folder path or repo id
    revision: str | None = None

    @property
    def display(self) -> str:
        if self.kind == "local":
            return f"local folder '{Path(self.location).name}'"
        return f"hf-hub:{self.location}" + (f"@{self.revision}" if self.revision else "")


def parse_source(source: str | os.PathLike, revision: str | None = None, *, what: str = "model",
                 error: type[SourceError] = BadSource) -> Source:
    """``local-dir:PATH`` | an existing folder | ``hf-hub:org/name[@rev]`` | ``org/name[@rev]``.

    Raises :class:`BadSource` (a ``ValueError``) for anything else, or ``error``: a loader's own
    :class:`SourceError` type, with the same fields (kind ``bad_source``).
    """
    text = os.fspath(source).strip()
    if not text:
        raise error(ErrorKind.BAD_SOURCE, f"no {what} given", "pass a local folder or a Hub id 'org/name'")
    if text.startswith("local-dir:"):
        return Source("local", str(Path(text[len("local-dir:"):]).expanduser()))
    if text.startswith("hf-hub:"):
        text = text[len("hf-hub:"):]
    elif Path(text).expanduser().exists() or text.startswith((".", "/", "~")):
        return Source("local", str(Path(text).expanduser()))
    repo_id, _, rev = text.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise error(
            ErrorKind.BAD_SOURCE, f"{text!r} is neither an existing folder nor a Hub {what} id",
            f"give a folder path or a Hub {what} id of the form 'org/name'", source=text,
        )
    return Source("hub", repo_id, revision or rev or None)


def probe_repo(src: Source, *, repo_type: str, token: str | None = None) -> Any:
    """Ask the Hub about a repo before downloading it; returns its ``RepoInfo`` (with ``siblings``).

    ``snapshot_download`` and ``load_dataset`` fall back to (or fail on) the
    cache silently when the Hub is down; probing first tells an outage apart
    from a missing repo. Raises :class:`RepoLookupError` for a missing,
    private or gated repo or revision, :class:`HubUnreachable` when the Hub
    does not answer.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    noun = "dataset repo" if repo_type == "dataset" else "model repo"
    where = dict(source=src.display, revision=src.revision)
    try:
        return HfApi(token=token).repo_info(src.location, repo_type=repo_type, revision=src.revision)
    except GatedRepoError as error:  # a subclass of RepositoryNotFoundError: ask first
        raise RepoLookupError(ErrorKind.PRIVATE, f"{noun} {src.location!r} is gated",
                              "accept its terms on the Hub and provide a token", **where) from error
    except RepositoryNotFoundError as error:
        raise RepoLookupError(
            ErrorKind.NOT_FOUND,
            f"{noun} {src.location!r} was not found on the Hub (or it is private and no valid token was given)",
            "check the repo id, or log in / set HF_TOKEN if the repo is private", **where,
        ) from error
    except RevisionNotFoundError as error:
        raise RepoLookupError(ErrorKind.NOT_FOUND, f"revision {src.revision!r} of {noun} {src.location!r} does not exist",
                              "use an existing branch, tag or commit after '@'", **where) from error
    except Exception as error:  # noqa: BLE001 - unreachable Hub: connection refused, timeouts, 5xx
        raise HubUnreachable(ErrorKind.UNREACHABLE, f"the Hugging Face Hub could not be reached ({type(error).__name__})",
                             "check the network, or use a local folder", reason=type(error).__name__, **where) from error
