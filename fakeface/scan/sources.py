"""What a scan reads: a folder of files, a dataset folder or a Hub dataset, as one ordered stream of items.

Every source yields :class:`ScanItem` in a deterministic order (sorted paths;
dataset splits in sorted order, rows in file order), numbered by ``order``:
what the merged table is sorted by, so any number of processes, killed and
restarted any number of times, produce the same table.

Processes split the items by bytes, not by count (:func:`shard_by_bytes`):
every process walks the same listing and gives each item to the process with
the fewest bytes so far, so each item has exactly one owner and the shards
differ by at most one file. (The listing must not change while a scan starts,
as when ``order`` alone split them: each process lists the source itself.)

Items carry no pixels: a file is read by the process that owns it, and a
dataset row's bytes are dropped by every other process, so memory stays
bounded by one batch whatever the source's size.
"""
from __future__ import annotations

import heapq
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from fakeface.data.dataset import CARD_NAME, DATA_DIR

KIND_FOLDER = "folder"      # any files, recursively
KIND_DATASET = "dataset"    # a dataset folder (build_dataset.py's parquet layout) or a Hub dataset id
# What an item costs beyond its bytes, in bytes: opening it and its model call, whatever its size. Measured on
# 365 faces-dev files (face stage, one thread): CPU = 29 ns/byte + 38 ms per file (fp32), so a file's fixed cost
# is ~1.3 MB of bytes (less with int8). With 0 the two shards differed by 20 % of CPU, by count by 2 %, with
# 256 KiB-2 MiB by under 1 %.
ITEM_COST_BYTES = 512 * 1024


class ScanSourceError(ValueError):
    """The scan's source cannot be read at all: ``source``, ``problem`` and ``fix`` as fields."""

    def __init__(self, source: str, problem: str, fix: str):
        super().__init__(f"{problem}; {fix}")
        self.source, self.problem, self.fix = source, problem, fix


@dataclass(frozen=True)
class ScanItem:
    """One image to score (or to report as unusable).

    ``key`` is unique within the source: the path relative to the folder, or
    ``split/row``. Exactly one of ``path`` (a file, read later) and ``data``
    (a dataset row's bytes) is set, unless the row had no image at all.
    """

    order: int
    key: str
    path: str | None = None
    data: bytes | None = None
    label: str | None = None      # a dataset's own label, when it has one (kept beside the verdict)


@dataclass(frozen=True)
class ScanSource:
    """Where the images come from: ``kind`` is :data:`KIND_FOLDER` or :data:`KIND_DATASET`."""

    location: str
    kind: str
    split: str | None = None
    image_column: str = "image"

    @property
    def describe(self) -> str:
        return self.location + (f" [{self.split}]" if self.split else "")


def resolve_scan_source(location: str | os.PathLike, *, split: str | None = None,
                        image_column: str = "image") -> ScanSource:
    """A folder with ``data/*.parquet`` (or a dataset card) is a dataset; any other folder is files; else a Hub id."""
    text = os.fspath(location)
    path = Path(text.removeprefix("local-dir:"))
    if path.is_dir():
        is_dataset = (path / CARD_NAME).is_file() and any(path.glob(f"{DATA_DIR}/*.parquet"))
        return ScanSource(os.fspath(path), KIND_DATASET if is_dataset else KIND_FOLDER, split, image_column)
    if path.exists():
        raise ScanSourceError(text, f"{text} is a file, not a folder or a dataset",
                              "give the folder that holds it, or a Hub dataset id (org/name)")
    hub_id = text.removeprefix("hf-hub:")
    if hub_id.count("/") != 1 or any(not part for part in hub_id.split("/")):
        raise ScanSourceError(text, f"{text} is neither an existing folder nor a Hub dataset id",
                              "give a folder, a dataset folder written by build_dataset.py, or org/name")
    return ScanSource(hub_id, KIND_DATASET, split, image_column)


def iter_items(source: ScanSource, *, rank: int = 0, world: int = 1,
               exclude: str | os.PathLike | None = None) -> Iterator[ScanItem]:
    """This process's share of the source's items, in order (:func:`shard_by_bytes`).

    ``exclude``: a folder left out of a folder scan (the scan's own output).
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, {world}), got {rank}")
    if source.kind == KIND_FOLDER:
        items = _iter_folder(Path(source.location), Path(exclude).resolve() if exclude else None)
    else:
        items = _iter_dataset(source)
    yield from shard_by_bytes(items, rank=rank, world=world)


def item_bytes(item: ScanItem) -> int:
    """An item's size: its bytes, or its file's size (0 when it cannot be read: its owner reports why)."""
    if item.data is not None:
        return len(item.data)
    if item.path is None:
        return 0
    try:
        return os.stat(item.path).st_size
    except OSError:
        return 0


def shard_by_bytes(items: Iterable[ScanItem], *, rank: int, world: int) -> Iterator[ScanItem]:
    """The items of process ``rank`` of ``world``: each item, in order, goes to the process with the fewest
    bytes so far (ties: the lowest rank), counting :data:`ITEM_COST_BYTES` per item beside its size.

    A function of the listing and the file sizes only, so every process computes the same split; each
    process's total is within one item of every other's. Other processes' dataset rows are dropped here.
    """
    if world == 1:
        yield from items
        return
    loads = [(0, shard) for shard in range(world)]   # a heap of (bytes so far, rank)
    for item in items:
        load, shard = loads[0]
        heapq.heapreplace(loads, (load + ITEM_COST_BYTES + item_bytes(item), shard))
        if shard == rank:
            yield item


def _iter_folder(root: Path, exclude: Path | None) -> Iterator[ScanItem]:
    """Every file under ``root``, any type (what is not an image becomes a row saying so), sorted per folder."""
    order = 0
    for folder, dirs, files in os.walk(root, followlinks=False):
        if exclude is not None:
            dirs[:] = [d for d in dirs if (Path(folder) / d).resolve() != exclude]
        dirs.sort()  # os.walk visits in this (sorted) order
        for name in sorted(files):
            path = Path(folder) / name
            yield ScanItem(order=order, key=path.relative_to(root).as_posix(), path=os.fspath(path))
            order += 1


def _iter_dataset(source: ScanSource) -> Iterator[ScanItem]:
    """Rows of each split, streamed (``datasets.load_dataset(..., streaming=True)``): bounded memory."""
    import datasets  # heavy import, only for dataset sources

    try:
        data = datasets.load_dataset(source.location, split=source.split, streaming=True)
    except Exception as error:  # noqa: BLE001 - every failure means: this source cannot be scanned
        raise ScanSourceError(source.location, f"{source.describe} cannot be loaded as a dataset "
                                               f"({type(error).__name__}: {str(error)[:300]})",
                              "check the id or folder, the split name, and the network or the HF_TOKEN") from error
    splits = {source.split: data} if source.split else {name: data[name] for name in sorted(data)}
    order = 0
    for split_name, split in splits.items():
        features = split.features or {}
        if source.image_column not in features:
            raise ScanSourceError(source.location, f"split {split_name!r} has no column {source.image_column!r} "
                                                   f"(it has {sorted(features)})", "pass --image-column NAME")
        split = split.cast_column(source.image_column, datasets.Image(decode=False))
        label_names = _label_names(features.get("label"))
        for index, row in enumerate(split):
            image = row.get(source.image_column) or {}
            label = row.get("label")
            yield ScanItem(order=order, key=f"{split_name}/{index}", data=image.get("bytes"),
                           path=None if image.get("bytes") else image.get("path"),
                           label=label_names[label] if label_names and isinstance(label, int) else
                           (None if label is None else str(label)))
            order += 1


def _label_names(feature: Any) -> list[str] | None:
    names = getattr(feature, "names", None)
    return list(names) if names else None
