"""``manifest.jsonl``: one line per planned image a run finished (ok, refused or failed).

:class:`ManifestRecord` is the one definition of a line; :class:`ManifestWriter`
appends them crash-safely and :func:`load_manifest` reads them back. The dataset
build reads the same file (``fakeface.data.sources``) with its own, stricter
per-line checks, because it sits below this package and reports bad lines as skipped.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fakeface.data.sources import MANIFEST_NAME  # one name for the file generation writes and the dataset build reads
from fakeface.generation.client import GenerationError
from fakeface.generation.images import GeneratedImage
from fakeface.generation.plan import PlannedImage

__all__ = ["FINAL_STATUSES", "MANIFEST_NAME", "ManifestRecord", "ManifestWriter", "RecordedError", "load_manifest",
           "utc_timestamp"]

log = logging.getLogger(__name__)

# An image with one of these is done: a later "failed" line never overrides it.
FINAL_STATUSES = ("ok", "refused")


def utc_timestamp(when: datetime | None = None) -> str:
    return (when or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class RecordedError:
    """Why an image was refused or failed, as the manifest keeps it (key-free)."""

    kind: str
    message: str
    detail: str = ""
    status_code: int | None = None
    code: str | None = None

    @classmethod
    def from_error(cls, error: GenerationError) -> RecordedError:
        return cls(error.kind, error.message, error.detail, error.status_code, error.code)


@dataclass(frozen=True)
class ManifestRecord:
    """One line of ``manifest.jsonl``. ``file`` is relative to the folder; None unless ok."""

    id: str
    status: str                            # "ok" | "refused" | "failed"
    file: str | None = None
    mode: str | None = None                # "generate" | "lookalike"
    model: str | None = None
    prompt: str | None = None
    revised_prompt: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    source_id: str | None = None
    size: str | None = None
    quality: str | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    nbytes: int | None = None              # "bytes" in the file
    created_at: str | None = None
    adopted: bool = False                  # the image was on disk without its line (an interrupted run)
    error: RecordedError | None = None

    @property
    def final(self) -> bool:
        return self.status in FINAL_STATUSES

    @classmethod
    def for_item(cls, item: PlannedImage, *, status: str, file: str | None = None,
                 image: GeneratedImage | None = None, error: GenerationError | None = None,
                 created_at: str | None = None, width: int | None = None, height: int | None = None,
                 fmt: str | None = None, nbytes: int | None = None, adopted: bool = False) -> ManifestRecord:
        """The line for ``item``; with ``image`` its size and format come from what the API returned."""
        return cls(
            id=item.id, status=status, file=file, mode=item.mode, model=item.model, prompt=item.prompt,
            revised_prompt=image.revised_prompt if image else None, attributes=dict(item.attributes),
            source_id=item.source_id, size=item.size, quality=item.quality,
            width=image.width if image else width, height=image.height if image else height,
            format=image.format if image else fmt, nbytes=len(image.data) if image else nbytes,
            created_at=created_at or utc_timestamp(), adopted=adopted,
            error=RecordedError.from_error(error) if error is not None else None,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the line (key order and optional keys as the file has always had them)."""
        record: dict[str, Any] = {
            "id": self.id, "file": self.file, "status": self.status, "mode": self.mode, "model": self.model,
            "prompt": self.prompt, "revised_prompt": self.revised_prompt, "attributes": dict(self.attributes),
            "source_id": self.source_id, "size": self.size, "quality": self.quality,
            "width": self.width, "height": self.height, "format": self.format, "bytes": self.nbytes,
            "created_at": self.created_at,
        }
        if self.adopted:
            record["adopted"] = True
        if self.error is not None:
            e = self.error
            record["error"] = {"kind": e.kind, "message": e.message, "detail": e.detail,
                               "status_code": e.status_code, "code": e.code}
        return record

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ManifestRecord:
        """A line read back; ``ValueError`` when it has no id or status. Unknown keys are ignored."""
        if not isinstance(data, Mapping) or not isinstance(data.get("id"), str) or not data.get("status"):
            raise ValueError("not a manifest record (needs an 'id' and a 'status')")
        error = data.get("error")
        known = {k: data[k] for k in ("file", "mode", "model", "prompt", "revised_prompt", "source_id", "size",
                                      "quality", "width", "height", "format", "created_at") if k in data}
        return cls(
            id=data["id"], status=str(data["status"]), nbytes=data.get("bytes"),
            attributes=dict(data.get("attributes") or {}), adopted=bool(data.get("adopted", False)),
            error=RecordedError(**{k: error[k] for k in ("kind", "message", "detail", "status_code", "code")
                                   if k in error}) if isinstance(error, Mapping) else None,
            **known,
        )


def load_manifest(out_dir: str | os.PathLike) -> list[ManifestRecord]:
    """Every complete record of ``out_dir/manifest.jsonl`` in order (a torn last line is ignored)."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(keepends=True), 1):
        if not line.endswith("\n"):
            break                            # torn by a kill mid-append; repaired on the next run
        with contextlib.suppress(ValueError, TypeError):     # JSONDecodeError is a ValueError
            records.append(ManifestRecord.from_dict(json.loads(line)))
            continue
        log.warning("%s line %d is not a manifest record; ignored", path, number)
    return records


class ManifestWriter:
    """Append-only JSONL, one fsynced ``write`` per record, safe across threads."""

    def __init__(self, out_dir: Path):
        self.path = out_dir / MANIFEST_NAME
        self._lock = threading.Lock()
        self._repair()

    def _repair(self) -> None:
        # A kill mid-append can leave a last line without its newline: cut it off
        # (its image, if any, is on disk and is adopted like any orphan).
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            log.warning("%s ended with a partial line (a run was killed); removed it", self.path)
            with open(self.path, "r+b") as handle:
                handle.truncate(keep)
                handle.flush()
                os.fsync(handle.fileno())

    def append(self, record: ManifestRecord) -> None:
        line = (json.dumps(record.to_dict(), ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
