"""Where models and datasets come from: local folders or Hub repos, and how the Hub fails.

Shared by :mod:`fakeface.modeling.detector` and :mod:`fakeface.data.dataset` (no torch import
here, so the dataset builder stays light).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


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


def parse_source(source: str | os.PathLike, revision: str | None = None, *, what: str = "model") -> Source:
    """``local-dir:PATH`` | an existing folder | ``hf-hub:org/name[@rev]`` | ``org/name[@rev]``.

    Raises ``ValueError`` for anything else; callers re-raise it as their own error type.
    """
    text = os.fspath(source).strip()
    if not text:
        raise ValueError(f"no {what} given: pass a local folder or a Hub id 'org/name'")
    if text.startswith("local-dir:"):
        return Source("local", str(Path(text[len("local-dir:"):]).expanduser()))
    if text.startswith("hf-hub:"):
        text = text[len("hf-hub:"):]
    elif Path(text).expanduser().exists() or text.startswith((".", "/", "~")):
        return Source("local", str(Path(text).expanduser()))
    repo_id, _, rev = text.partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"{os.fspath(source)!r} is neither an existing folder nor a Hub {what} id of the form 'org/name'")
    return Source("hub", repo_id, revision or rev or None)


class HubUnreachable(Exception):
    """The Hub did not answer (connection refused, timeout, 5xx); ``reason`` names the error."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def probe_repo(src: Source, *, repo_type: str, token: str | None = None) -> None:
    """Ask the Hub about a repo before downloading it.

    ``snapshot_download`` and ``load_dataset`` fall back to (or fail on) the
    cache silently when the Hub is down; probing first tells an outage apart
    from a missing repo. Raises ``LookupError`` with a user-facing message for
    a missing/private/gated repo or revision, :class:`HubUnreachable` when
    the Hub does not answer.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    noun = "dataset repo" if repo_type == "dataset" else "model repo"
    try:
        HfApi(token=token).repo_info(src.location, repo_type=repo_type, revision=src.revision)
    except GatedRepoError as error:  # a subclass of RepositoryNotFoundError: ask first
        raise LookupError(f"{noun} {src.location!r} is gated: accept its terms and provide a token") from error
    except RepositoryNotFoundError as error:
        raise LookupError(
            f"{noun} {src.location!r} was not found on the Hub (or it is private and no valid token was given)"
        ) from error
    except RevisionNotFoundError as error:
        raise LookupError(f"revision {src.revision!r} of {noun} {src.location!r} does not exist") from error
    except Exception as error:  # noqa: BLE001 - unreachable Hub: connection refused, timeouts, 5xx
        raise HubUnreachable(type(error).__name__) from error
