"""Where a scan's rows go: atomic parts while it runs, one table when it ends.

Layout of an output folder::

    scan.json            what is scanned with what (checked when a scan resumes)
    parts/part-*.parquet rows, committed a part at a time by each process
    scan.parquet         the merged table, sorted by the source's order
    scan.csv             the same rows as CSV
    summary.json         counts per verdict, skipped files and why

Exactly once: a part is written to a hidden temporary file and renamed into
place (fsync'd), so it is either entirely there or not at all, and an image's
rows (one per face) never straddle two parts. The done-set is the keys of
every committed part, of any process, so a run killed at any point and
started again (with any number of processes) scores only what no committed
part holds. Leftover temporary files of a killed run are ignored and removed
at the merge.
"""
from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from fakeface.utils.fileio import TEMP_MARK, fsync_dir, write_atomic

PARTS_DIR = "parts"
MANIFEST_NAME = "scan.json"
TABLE_NAME = "scan.parquet"
CSV_NAME = "scan.csv"
SUMMARY_NAME = "summary.json"
MANIFEST_FORMAT = "fakeface-scan/2"   # 2: rows from score_photos (face_index from 1, most_suspicious)

# One row per image, or per face once faces are found (face_index 1, 2, ... as the app
# numbers them; None for a whole-image row), see fakeface.scan.runner.photo_rows.
# Errors are rows too: verdict None, error_code and error set.
SCHEMA = pa.schema([
    ("order", pa.int64()),            # position in the source's deterministic order
    ("key", pa.string()),             # relative path, or split/row
    ("path", pa.string()),
    ("label", pa.string()),           # the dataset's own label, when it has one
    ("face_index", pa.int32()),
    ("box_x0", pa.int32()), ("box_y0", pa.int32()), ("box_x1", pa.int32()), ("box_y1", pa.int32()),
    ("face_score", pa.float32()),
    ("p_fake", pa.float32()),
    ("verdict", pa.string()),
    ("most_suspicious", pa.bool_()),  # the face whose verdict is the photo's (as in the app)
    ("error_code", pa.string()),
    ("error", pa.string()),
    ("note", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("format", pa.string()),
    ("model_id", pa.string()),
    ("model_revision", pa.string()),
    ("runtime", pa.string()),
    ("process_index", pa.int32()),
    ("experts", pa.string()),         # a panel release: JSON {expert: p_fake} of this row's crop; else null
    ("evidence", pa.string()),        # a panel release: the sentence on what decided this row's verdict
])
COLUMNS = tuple(SCHEMA.names)


class ScanOutputError(ValueError):
    """The output folder cannot take this scan: ``folder``, ``problem`` and ``fix`` as fields."""

    def __init__(self, folder: str, problem: str, fix: str):
        super().__init__(f"{problem}; {fix}")
        self.folder, self.problem, self.fix = folder, problem, fix


def prepare_output(folder: str | os.PathLike, manifest: dict[str, Any]) -> Path:
    """Create the folder and its manifest, or check that an existing one is the same scan (resume).

    Every process may call this at once: the manifest is deterministic, so
    the same bytes are written whoever wins.
    """
    folder = Path(folder)
    (folder / PARTS_DIR).mkdir(parents=True, exist_ok=True)
    record = {"format": MANIFEST_FORMAT, **manifest}
    path = folder / MANIFEST_NAME
    if path.is_file():
        try:
            existing = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            existing = None
        if existing != json.loads(json.dumps(record)):
            raise ScanOutputError(os.fspath(folder), f"{folder} holds another scan (see its {MANIFEST_NAME})",
                                  "use a new --output-dir, or the same source, model and options to resume it")
        return folder
    write_atomic(path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    return folder


def committed_parts(folder: str | os.PathLike) -> list[Path]:
    return sorted(p for p in (Path(folder) / PARTS_DIR).glob("part-*.parquet"))


def read_done_keys(folder: str | os.PathLike) -> set[str]:
    """Keys of every image some committed part already holds."""
    done: set[str] = set()
    for part in committed_parts(folder):
        done.update(pq.read_table(part, columns=["key"]).column("key").to_pylist())
    return done


class PartWriter:
    """Collects one process's rows and commits them as parts of at least ``part_rows`` rows.

    Call :meth:`add_image` with all the rows of one image, so that a part
    never holds half an image; :meth:`close` commits what is left.
    """

    def __init__(self, folder: str | os.PathLike, process_index: int, part_rows: int = 256):
        if part_rows < 1:
            raise ValueError(f"part_rows must be >= 1, got {part_rows}")
        self.folder = Path(folder) / PARTS_DIR
        self.part_rows = part_rows
        # A token per process run: a restarted or re-sharded run never reuses a committed name.
        self._prefix = f"part-{process_index:05d}-{uuid.uuid4().hex[:12]}"
        self._rows: list[dict[str, Any]] = []
        self._sequence = 0
        self.committed_rows = 0

    def add_image(self, rows: Sequence[dict[str, Any]]) -> None:
        self._rows.extend(rows)
        if len(self._rows) >= self.part_rows:
            self.commit()

    def commit(self) -> None:
        if not self._rows:
            return
        table = pa.Table.from_pylist([{c: row.get(c) for c in COLUMNS} for row in self._rows], schema=SCHEMA)
        final = self.folder / f"{self._prefix}-{self._sequence:06d}.parquet"
        temp = self.folder / f".{final.name}{TEMP_MARK}{os.getpid()}"
        pq.write_table(table, temp)
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, final)
        fsync_dir(self.folder)
        self.committed_rows += len(self._rows)
        self._sequence += 1
        self._rows = []

    def close(self) -> None:
        self.commit()


@dataclass(frozen=True)
class MergeResult:
    table: Path
    csv: Path
    rows: int
    images: int
    duplicate_rows_dropped: int


def merge_parts(folder: str | os.PathLike) -> MergeResult:
    """All committed parts -> ``scan.parquet`` and ``scan.csv``, sorted by (order, face_index); atomic.

    An image is kept from the first part that holds it (there is only one,
    unless two scans ran into the same folder at once; the count is returned).
    """
    folder = Path(folder)
    tables = [pq.read_table(part, schema=SCHEMA) for part in committed_parts(folder)]
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    keys = table.column("key").to_pylist()
    parts_of = {}
    part_index = [i for i, t in enumerate(tables) for _ in range(t.num_rows)]
    keep = []
    for row, (key, part) in enumerate(zip(keys, part_index)):
        first = parts_of.setdefault(key, part)
        keep.append(first == part)
    dropped = keep.count(False)
    if dropped:
        table = table.filter(pa.array(keep))
    table = table.sort_by([("order", "ascending"), ("face_index", "ascending")])
    for leftover in (folder / PARTS_DIR).glob(f".part-*{TEMP_MARK}*"):
        leftover.unlink(missing_ok=True)
    table_path, csv_path = folder / TABLE_NAME, folder / CSV_NAME
    _write_table_atomic(table_path, lambda tmp: pq.write_table(table, tmp))
    _write_table_atomic(csv_path, lambda tmp: pa_csv.write_csv(table, tmp))
    return MergeResult(table_path, csv_path, table.num_rows, len(set(table.column("key").to_pylist())), dropped)


def _write_table_atomic(path: Path, write: Any) -> None:
    temp = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")
    write(os.fspath(temp))
    with open(temp, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, path)
    fsync_dir(path.parent)


def summarize_rows(rows: Iterable[dict[str, Any]], *, max_listed: int = 20) -> dict[str, Any]:
    """Counts per verdict (rows: faces and whole images), per photo verdict (the row that decides each photo,
    as in the app), errors by code, and the first skipped files with their reason."""
    verdicts: Counter = Counter()
    photo_verdicts: Counter = Counter()
    errors: Counter = Counter()
    images: set[str] = set()
    skipped: list[dict[str, str]] = []
    faces = 0
    for row in rows:
        images.add(row["key"])
        if row.get("face_index") is not None:
            faces += 1
        if row.get("verdict") is not None:
            verdicts[row["verdict"]] += 1
            if row.get("most_suspicious") or row.get("face_index") is None:
                photo_verdicts[row["verdict"]] += 1
        elif row.get("error_code"):
            errors[row["error_code"]] += 1
            if len(skipped) < max_listed:
                skipped.append({"key": row["key"], "error_code": row["error_code"], "error": row.get("error") or ""})
    return {"images": len(images), "rows": sum(verdicts.values()) + sum(errors.values()), "faces": faces,
            "verdicts": dict(sorted(verdicts.items())), "photo_verdicts": dict(sorted(photo_verdicts.items())),
            "errors": dict(sorted(errors.items())),
            "skipped": skipped, "skipped_total": sum(errors.values())}
