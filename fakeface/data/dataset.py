"""The face dataset: load (one loader for training, evaluation and the app) and push; the build is in :mod:`.build`.

:func:`load_face_dataset` takes a local folder or a Hub id and returns the
splits with the schema of :func:`build_features`. :func:`build_face_dataset`
(re-exported here) writes a folder that ``datasets.load_dataset(folder)`` and
the Hub read identically:

    README.md            card with the YAML (configs, features, split sizes)
    build_report.json    counts, skipped files and why, duplicates, bias report
    data/{split}-00000-of-0000N.parquet
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from fakeface.data.build import (  # noqa: F401 - the build is re-exported here, its one public home so far
    DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_SHARD_BYTES, BuildResult, build_face_dataset, ensure_synthetic_dataset,
    format_build_summary,
)
from fakeface.data.schema import CARD_NAME, DATA_DIR, REPORT_FORMAT, REPORT_NAME, build_features
from fakeface.utils.constants import LABEL_NAMES
from fakeface.utils.hub import ErrorKind, HubUnreachable, Source, SourceError, parse_source, probe_repo

logger = logging.getLogger(__name__)

__all__ = [
    "BuildResult", "DatasetLoadError", "REPORT_NAME", "build_face_dataset", "build_features", "ensure_synthetic_dataset",
    "format_build_summary", "load_face_dataset", "push_face_dataset", "resolve_dataset_source",
]


class DatasetLoadError(SourceError, ValueError):
    """A dataset could not be loaded or lacks the face dataset's schema: ``kind``, ``source``, ``problem``, ``fix``."""


# --------------------------------------------------------------------------- push

def push_face_dataset(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Publish a built dataset folder to a Hub dataset repo in ONE commit; returns the commit sha.

    Shards of an earlier revision that this build does not have are deleted in
    the same commit, so the repo never mixes two builds, and an interrupted push
    leaves the previous revision intact.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    report = _read_report(folder)
    source = resolve_dataset_source(repo_id)
    if source.kind != "hub":
        raise ValueError(f"{repo_id!r} is not a Hub dataset id of the form 'org/name'")
    api = HfApi(token=token)
    api.create_repo(source.location, repo_type="dataset", private=private, exist_ok=True)
    totals = ", ".join(f"{s} {n}" for s, n in report["totals"].items())
    info = api.upload_folder(
        folder_path=str(folder), repo_id=source.location, repo_type="dataset",
        revision=source.revision,
        allow_patterns=[CARD_NAME, REPORT_NAME, f"{DATA_DIR}/*.parquet"],
        delete_patterns=[f"{DATA_DIR}/*", REPORT_NAME],
        commit_message=commit_message or f"Upload face dataset ({totals})",
    )
    return getattr(info, "oid", None) or str(info)


def _read_report(folder: Path) -> dict[str, Any]:
    try:
        report = json.loads((folder / REPORT_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{folder} has no {REPORT_NAME}: not a dataset folder written by build_dataset") from None
    except (OSError, ValueError) as error:
        raise ValueError(f"{folder / REPORT_NAME} cannot be read ({error})") from None
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise ValueError(f"{folder / REPORT_NAME} is not a fakeface build report")
    return report


# --------------------------------------------------------------------------- load

def resolve_dataset_source(source: str | os.PathLike, revision: str | None = None) -> Source:
    """``local-dir:PATH`` | an existing folder | ``hf-hub:org/name[@rev]`` | ``org/name[@rev]``."""
    return parse_source(source, revision, what="dataset", error=DatasetLoadError)


def load_face_dataset(
    source: str | os.PathLike,
    *,
    split: str | None = None,
    streaming: bool = False,
    revision: str | None = None,
    token: str | None = None,
):
    """The face dataset's splits from a local folder or the Hub (``DatasetDict``, or one ``Dataset`` with ``split``).

    ``streaming=True`` gives the Iterable variants. When the Hub cannot be
    reached, a copy in the local Hugging Face cache is used (with a warning);
    otherwise :class:`DatasetLoadError` says what is wrong. The result is checked
    to have the schema of :func:`build_features`.
    """
    src = resolve_dataset_source(source, revision)
    if src.kind == "local":
        if revision is not None:
            raise DatasetLoadError(ErrorKind.BAD_SOURCE, f"a revision ({revision!r}) applies to Hub datasets, not to {src.display}",
                                   "drop the revision, or give a Hub dataset id", source=src.display, revision=revision)
        folder = Path(src.location)
        if not folder.is_dir():
            raise DatasetLoadError(ErrorKind.NOT_FOUND, f"dataset folder {folder} does not exist",
                                   "give a folder written by build_dataset.py, or a Hub dataset id", source=src.display)
        data = _load_folder(folder, split, streaming, src)
    else:
        data = _load_hub(src, split, streaming, token)
    _check_schema(data, src)
    return data


def _load_folder(folder: Path, split: str | None, streaming: bool, src: Source):
    if not (folder / CARD_NAME).is_file() and not any(folder.glob(f"{DATA_DIR}/*.parquet")):
        raise DatasetLoadError(ErrorKind.BAD_CONFIG,
                               f"{src.display} is not a face dataset folder (no {CARD_NAME} and no {DATA_DIR}/*.parquet)",
                               "give a folder written by build_dataset.py", source=src.display)
    return _load_dataset(str(folder), src, split, streaming)


def _load_hub(src: Source, split: str | None, streaming: bool, token: str | None):
    try:
        probe_repo(src, repo_type="dataset", token=token)
    except HubUnreachable as error:
        return _load_cached(src, split, streaming, error.reason)
    except SourceError as error:  # missing, private or gated repo or revision
        raise DatasetLoadError(**error.fields()) from error
    return _load_dataset(src.location, src, split, streaming, revision=src.revision, token=token)


def _load_dataset(path: str, src: Source, split: str | None, streaming: bool, **hub: Any):
    """``datasets.load_dataset`` with its failures as :class:`DatasetLoadError` (a missing split told apart by its list)."""
    import datasets

    where = dict(source=src.display, revision=src.revision)
    try:
        return datasets.load_dataset(path, split=split, streaming=streaming, **hub)
    except (ValueError, FileNotFoundError, datasets.exceptions.DatasetGenerationError) as error:
        cause = error
    if split is not None and isinstance(cause, ValueError):
        try:
            names = datasets.get_dataset_split_names(path, **hub)
        except Exception:  # noqa: BLE001 - the split list is only asked for to word the error
            names = None
        if names is not None and split not in names:
            raise DatasetLoadError(ErrorKind.NOT_FOUND, f"{src.display} has no split {split!r} (it has {list(names)})",
                                   f"use one of {list(names)}", **where) from cause
    raise DatasetLoadError(ErrorKind.BAD_CONFIG, f"{src.display} cannot be loaded as a dataset ({cause})",
                           "rebuild it with build_dataset.py, or check its files", **where) from cause


def _load_cached(src: Source, split: str | None, streaming: bool, reason: str):
    """The newest cached snapshot of a Hub dataset, loaded as a local folder (datasets cannot do this by id)."""
    from huggingface_hub import snapshot_download

    folder: Path | None = None
    try:
        folder = Path(snapshot_download(src.location, repo_type="dataset", revision=src.revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - no ref recorded: ask the cache scan for the snapshots themselves
        folder = _newest_cached_snapshot(src)
    if folder is None or not any(folder.glob(f"{DATA_DIR}/*.parquet")):
        raise DatasetLoadError(
            ErrorKind.UNREACHABLE,
            f"the Hugging Face Hub could not be reached ({reason}) and no cached copy of dataset {src.display} exists",
            "check the network or use a local dataset folder", source=src.display, revision=src.revision,
        )
    logger.warning("Hub unreachable (%s); loading the cached snapshot %s of %s", reason, folder.name[:12], src.location)
    return _load_folder(folder, split, streaming, src)


def _newest_cached_snapshot(src: Source) -> Path | None:
    """The most recently written complete snapshot (with a card) of a Hub dataset in the local cache."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        repos = scan_cache_dir().repos
    except CacheNotFound:
        return None
    revisions = [rev for repo in repos if repo.repo_type == "dataset" and repo.repo_id == src.location
                 for rev in repo.revisions if (rev.snapshot_path / CARD_NAME).is_file()]
    if src.revision:
        revisions = [rev for rev in revisions if rev.commit_hash.startswith(src.revision) or src.revision in rev.refs]
    if not revisions:
        return None
    return max(revisions, key=lambda rev: (rev.last_modified, rev.commit_hash)).snapshot_path


def _check_schema(data: Any, src: Source) -> None:
    from datasets import ClassLabel, Image

    parts = data.values() if hasattr(data, "values") and not hasattr(data, "features") else [data]
    for part in parts:
        features = getattr(part, "features", None)
        if features is None:       # streaming without declared features: checked as rows arrive
            continue
        if "image" not in features or not isinstance(features["image"], Image):
            raise DatasetLoadError(ErrorKind.BAD_CONFIG, f"{src.display} has no 'image' column of type Image: not a face dataset",
                                   "build the dataset with build_dataset.py", source=src.display)
        label = features.get("label")
        if not isinstance(label, ClassLabel) or list(label.names) != list(LABEL_NAMES):
            got = list(label.names) if isinstance(label, ClassLabel) else label
            raise DatasetLoadError(ErrorKind.BAD_CONFIG, f"{src.display} has labels {got}, expected ClassLabel{list(LABEL_NAMES)}",
                                   "build the dataset with build_dataset.py", source=src.display)
