"""Build the face dataset folder: collect sources, inspect every file, group near-duplicates, write shards, card.

Output (the Hub layout ``load_dataset(folder)`` reads)::

    README.md  build_report.json  data/{train,validation,test}-0000N-of-0000M.parquet

A build is deterministic for its inputs and seed, and atomic: it is written to
a hidden sibling folder and renamed into place, so an interrupted build leaves
the previous folder (or nothing), never half a dataset.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from fakeface import __version__
from fakeface.utils.constants import ATTRIBUTE_COLUMNS, LABEL_NAMES, SYNTHETIC_GENERATOR
from fakeface.data.card import build_bias_report, build_split_counts, dataset_license, render_dataset_card
from fakeface.data.sources import (
    DEFAULT_REAL_SOURCE, Candidate, FolderListing, Skipped, collect_fake_folder, collect_real_folder,
    load_attribute_table, unique_tags,
)
from fakeface.data.split import (
    DEFAULT_NEAR_DUPLICATE_DISTANCE, DEFAULT_SPLIT_FRACTIONS, SPLIT_NAMES, UnionFind, assign_group_splits,
    find_near_duplicates, perceptual_hash, seeded_key,
)
from fakeface.data.images import ImageDecodeError, load_image
from fakeface.data.synthetic import generate_synthetic_faces
from fakeface.data.schema import CARD_NAME, DATA_DIR, REPORT_FORMAT, REPORT_NAME, build_features

logger = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_BYTES = 500 * 2**20
DEFAULT_MAX_FILE_BYTES = 256 * 2**20
ROW_GROUP_SIZE = 100                       # what datasets uses for image parquet: cheap random access and streaming
_SYNTHETIC_STAGING = ".synthetic-staging"


@dataclass
class BuildResult:
    output_dir: Path
    report: dict[str, Any]

    @property
    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        return self.report["counts"]


def ensure_synthetic_dataset(folder: str | os.PathLike, images: int, seed: int) -> Path:
    """``folder`` holding ``build_face_dataset(folder, synthetic=images, seed=seed)``, built only if it does not yet.

    A build is renamed into place only when complete, so a card means a whole
    dataset; its build report must also name the same seed and image count,
    otherwise the folder is rebuilt rather than silently reused.
    """
    folder = Path(folder)
    try:
        report = json.loads((folder / REPORT_NAME).read_text()) if (folder / CARD_NAME).is_file() else None
    except (OSError, ValueError):
        report = None
    if (report and report.get("synthetic") and report.get("seed") == seed
            and sum((report.get("totals") or {}).values()) == images):
        logger.info("reusing the synthetic dataset in %s", folder)
        return folder
    logger.info("building the synthetic dataset in %s (%d images, seed %d)", folder, images, seed)
    build_face_dataset(folder, synthetic=images, seed=seed, progress=False)
    return folder


def build_face_dataset(
    output_dir: str | os.PathLike,
    *,
    real_dirs: Sequence[str | os.PathLike] = (),
    fake_dirs: Sequence[str | os.PathLike] = (),
    attributes: str | os.PathLike | None = None,
    synthetic: int = 0,
    seed: int = 0,
    real_source: str = DEFAULT_REAL_SOURCE,
    fake_generator: str | None = None,
    synthetic_size: int = 256,
    split_fractions: Sequence[float] = DEFAULT_SPLIT_FRACTIONS,
    near_duplicate_distance: int = DEFAULT_NEAR_DUPLICATE_DISTANCE,
    license: str | None = None,
    pretty_name: str | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    num_workers: int = 1,
    progress: bool = True,
) -> BuildResult:
    """Build the dataset folder from real folders, generator output folders and/or ``synthetic`` images.

    Bad files are reported (``build_report.json`` → ``skipped``) and left out;
    odd-but-valid ones keep their original bytes and are listed under
    ``normalised``. Raises ValueError for unusable arguments (missing folders,
    an attribute table without a name column, an output folder that is not a
    previous build).
    """
    output = Path(output_dir).expanduser().resolve()
    real_paths = [Path(p).expanduser().resolve() for p in real_dirs]
    fake_paths = [Path(p).expanduser().resolve() for p in fake_dirs]
    if synthetic < 0:
        raise ValueError(f"--synthetic must be >= 0, got {synthetic}")
    if not real_paths and not fake_paths and not synthetic:
        raise ValueError("no sources: give --real-dir, --fake-dir and/or --synthetic N")
    _check_output_folder(output, real_paths + fake_paths)
    if len(split_fractions) != len(SPLIT_NAMES):
        raise ValueError(f"split fractions must be {len(SPLIT_NAMES)} numbers ({', '.join(SPLIT_NAMES)})")
    table = load_attribute_table(attributes) if attributes is not None else None

    for stale in output.parent.glob(f".{output.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)  # left by a killed build of this same folder
    staging = output.parent / f".{output.name}.partial-{os.getpid()}"
    staging.mkdir(parents=True)
    try:
        # collect -> inspect -> group into splits -> write shards -> report and card
        listings = _collect(real_paths, fake_paths, table, Path(attributes).expanduser() if attributes else None,
                            real_source=real_source, fake_generator=fake_generator, synthetic=synthetic, seed=seed,
                            synthetic_size=synthetic_size, staging=staging, progress=progress)
        candidates = sorted((c for lst in listings for c in lst.candidates), key=lambda c: c.name)
        skipped: list[Skipped] = [s for lst in listings for s in lst.skipped]
        records, normalised, warnings = _inspect_all(candidates, skipped, max_file_bytes, num_workers, progress)
        records, exact = _drop_exact_duplicates(records, skipped)
        near_pairs, splits = _group_into_splits(records, near_duplicate_distance, split_fractions, seed)
        written = _write_shards(staging / DATA_DIR, splits, skipped, max_shard_bytes, progress)
        rows = [{"split": s, **r.facts_row()} for s, members in written.items() for r in members]
        report = _build_report(
            rows, written, listings, skipped, table, seed=seed, split_fractions=split_fractions, synthetic=synthetic,
            normalised=normalised, warnings=warnings, exact=exact, near_pairs=near_pairs,
            near_duplicate_distance=near_duplicate_distance,
        )
        if not rows:
            raise ValueError("no usable images: every file was skipped — " + format_build_summary(report))
        _write_card(staging, written, report, license=license, pretty_name=pretty_name)
        (staging / REPORT_NAME).write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        shutil.rmtree(staging / _SYNTHETIC_STAGING, ignore_errors=True)
        _replace_folder(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("dataset written to %s", output)
    return BuildResult(output, report)


def _collect(real_paths: Sequence[Path], fake_paths: Sequence[Path], table: Any, attribute_path: Path | None, *,
             real_source: str, fake_generator: str | None, synthetic: int, seed: int, synthetic_size: int,
             staging: Path, progress: bool) -> list[FolderListing]:
    """One listing per source: real folders, generator folders, the synthetic images (staged as files)."""
    listings: list[FolderListing] = []
    taken: set[str] = set()
    for folder, tag in zip(real_paths, unique_tags(real_paths, taken)):
        listings.append(collect_real_folder(folder, tag=tag, generator=real_source, attributes=table,
                                            exclude=[attribute_path] if attribute_path else []))
    for folder, tag in zip(fake_paths, unique_tags(fake_paths, taken)):
        listings.append(collect_fake_folder(folder, tag=tag, generator=fake_generator))
    if synthetic:
        listings.append(_stage_synthetic(generate_synthetic_faces(synthetic, seed, size=synthetic_size),
                                         staging / _SYNTHETIC_STAGING, synthetic, progress))
    return listings


def _group_into_splits(records: list["_Record"], max_distance: int, split_fractions: Sequence[float],
                       seed: int) -> tuple[list[dict[str, Any]], dict[str, list["_Record"]]]:
    """Near-duplicates grouped, whole groups assigned to splits (stratified), each split in seeded order."""
    near_pairs, groups = _group(records, max_distance)
    assignment = assign_group_splits(
        {g: Counter((r.candidate.label, r.candidate.generator) for r in members) for g, members in groups.items()},
        split_fractions, seed,
    )
    splits: dict[str, list[_Record]] = {name: [] for name in SPLIT_NAMES}
    for group, members in groups.items():
        splits[assignment[group]].extend(members)
    for name in splits:
        splits[name].sort(key=lambda r: seeded_key(seed, r.candidate.name))
    return near_pairs, splits


def _build_report(rows: list[dict[str, Any]], written: dict[str, list["_Record"]], listings: list[FolderListing],
                  skipped: list[Skipped], table: Any, *, seed: int, split_fractions: Sequence[float], synthetic: int,
                  normalised: Any, warnings: Any, exact: Any, near_pairs: list, near_duplicate_distance: int,
                  ) -> dict[str, Any]:
    """``build_report.json``: what went in, what was left out and why, duplicates, counts and biases."""
    generators = sorted({r["generator"] for r in rows})
    return {
        "format": REPORT_FORMAT,
        "fakeface_version": __version__,
        "seed": seed,
        "split_names": list(SPLIT_NAMES),
        "split_fractions": [float(f) for f in split_fractions],
        "synthetic": any(g == SYNTHETIC_GENERATOR for g in generators) or bool(synthetic),
        "totals": {s: len(m) for s, m in written.items()},
        "counts": build_split_counts(rows),
        "sources": [lst.summary for lst in listings],
        "attributes": table.summary() if table is not None else None,
        "skipped": sorted((s.as_dict() for s in skipped), key=lambda d: (d["file"], d["reason"])),
        "skipped_by_reason": _reason_counts(skipped),
        "normalised": normalised,
        "warnings": warnings,
        "duplicates": {
            "exact": exact, "near_pairs": len(near_pairs), "near": near_pairs[:1000],
            "near_duplicate_distance": near_duplicate_distance,
        },
        "bias": build_bias_report(rows),
        "empty_splits": [s for s, m in written.items() if not m],
    }


def _write_card(staging: Path, written: dict[str, list["_Record"]], report: dict[str, Any], *,
                license: str | None, pretty_name: str | None) -> None:
    """The dataset card (README.md with the Hub's YAML header) of the staged build."""
    split_sizes = {s: (len(m), sum(r.size for r in m)) for s, m in written.items() if m}
    generators = sorted({r.candidate.generator for members in written.values() for r in members})
    (staging / CARD_NAME).write_text(render_dataset_card(
        features=build_features(), split_sizes=split_sizes, shard_patterns={s: f"{DATA_DIR}/{s}-*" for s in split_sizes},
        report=report, license=dataset_license(generators, license),
        pretty_name=pretty_name or _default_name(report),
        download_size=sum(p.stat().st_size for p in (staging / DATA_DIR).glob("*.parquet")),
    ), encoding="utf-8")


def _default_name(report: dict[str, Any]) -> str:
    return "fakeface synthetic faces (SYNTHETIC)" if report["synthetic"] and len(report["bias"]["by_generator"]) <= 2 \
        else "fakeface real vs AI-generated faces"


def _check_output_folder(output: Path, sources: Iterable[Path]) -> None:
    for source in sources:
        if output == source or source in output.parents or output in source.parents:
            raise ValueError(f"the output folder {output} overlaps the source folder {source}")
    if output.exists():
        if not output.is_dir():
            raise ValueError(f"the output path {output} exists and is not a folder")
        report = output / REPORT_NAME
        if any(output.iterdir()):
            try:
                ours = json.loads(report.read_text(encoding="utf-8")).get("format") == REPORT_FORMAT
            except (OSError, ValueError, AttributeError):
                ours = False
            if not ours:
                raise ValueError(
                    f"the output folder {output} is not empty and is not a dataset built by fakeface; "
                    f"choose a new or empty folder (nothing was changed)"
                )


def _replace_folder(staging: Path, output: Path) -> None:
    """Put ``staging`` at ``output``; an old build is moved aside first and deleted last."""
    if output.exists():
        backup = output.parent / f".{output.name}.old-{os.getpid()}"
        output.rename(backup)
        staging.rename(output)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        staging.rename(output)


def _reason_counts(skipped: Sequence[Skipped]) -> dict[str, int]:
    """Skip reasons bucketed by their first words (``corrupt PNG file``, ``the file is empty``...)."""
    buckets: Counter = Counter()
    for s in skipped:
        head = s.reason.split(":")[0].split("(")[0].strip()
        buckets[head[:60]] += 1
    return dict(sorted(buckets.items(), key=lambda kv: (-kv[1], kv[0])))


def _progress(iterable: Iterable | None, *, total: int, desc: str, enabled: bool) -> Any:
    """A tqdm bar over ``iterable`` (or a bare bar to ``update`` when None); silent when not enabled."""
    return tqdm(iterable, total=total, desc=desc, unit="img", disable=not enabled)


def _stage_synthetic(samples: Iterable[Any], folder: Path, n: int, progress: bool) -> FolderListing:
    """Write synthetic samples to a staging folder so they go through the same checks as files on disk."""
    folder.mkdir(parents=True)
    listing = FolderListing(summary={"folder": "synthetic", "label": "both", "synthetic": True})
    labels: Counter = Counter()
    for sample in _progress(samples, total=n, desc="synthetic images", enabled=progress):
        path = folder / sample.filename
        path.write_bytes(sample.data)
        labels[LABEL_NAMES[sample.label]] += 1
        listing.candidates.append(Candidate(
            name=f"synthetic/{sample.filename}", path=path, label=sample.label, generator=sample.generator,
            source_id=sample.source_id, attributes=dict(sample.attributes),
        ))
    listing.summary.update(files=len(listing.candidates), labels=dict(labels))
    return listing


# --------------------------------------------------------------------------- inspection

@dataclass
class _Record:
    candidate: Candidate
    sha256: str
    size: int
    format: str
    width: int
    height: int
    jpeg_quality: int | None
    phash: int

    def facts_row(self) -> dict[str, Any]:
        c = self.candidate
        return {"label": c.label, "generator": c.generator, "format": self.format, "width": self.width,
                "height": self.height, "bytes": self.size, "jpeg_quality": self.jpeg_quality}


def _inspect_file(path: str, max_file_bytes: int) -> dict[str, Any]:
    """Decode one file the way training will, returning its facts or the reason it cannot be used."""
    try:
        data = _read_file(Path(path), max_file_bytes)
        decoded = load_image(data)
    except ImageDecodeError as error:
        return {"error": str(error)}
    return {
        "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "format": decoded.format,
        "width": decoded.width, "height": decoded.height, "jpeg_quality": decoded.jpeg_quality,
        "phash": perceptual_hash(decoded.image), "notes": decoded.notes,
    }


def _read_file(path: Path, max_file_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_file_bytes:
            raise ImageDecodeError(f"the file is too large: {size / 2**20:.1f} MiB, limit {max_file_bytes / 2**20:.0f} MiB")
        return path.read_bytes()
    except ImageDecodeError:
        raise
    except OSError as error:
        raise ImageDecodeError(f"cannot read the file ({error.strerror or type(error).__name__})") from None


def _inspect_all(candidates: Sequence[Candidate], skipped: list[Skipped], max_file_bytes: int, num_workers: int,
                 progress: bool) -> tuple[list[_Record], list[dict[str, Any]], list[str]]:
    paths = [str(c.path) for c in candidates]
    if num_workers > 1 and len(paths) > 64:
        with ProcessPoolExecutor(max_workers=num_workers) as pool:
            results = pool.map(_inspect_file, paths, [max_file_bytes] * len(paths), chunksize=32)
            facts = list(_progress(results, total=len(paths), desc="checking images", enabled=progress))
    else:
        facts = [_inspect_file(p, max_file_bytes)
                 for p in _progress(paths, total=len(paths), desc="checking images", enabled=progress)]
    records, normalised, warnings = [], [], []
    for candidate, fact in zip(candidates, facts):
        if "error" in fact:
            skipped.append(Skipped(candidate.name, fact["error"]))
            continue
        if fact["notes"]:
            normalised.append({"file": candidate.name, "notes": fact["notes"]})
        if candidate.declared_size and candidate.declared_size != (fact["width"], fact["height"]):
            warnings.append(f"{candidate.name}: the manifest says {candidate.declared_size[0]}×"
                            f"{candidate.declared_size[1]}, the file is {fact['width']}×{fact['height']}")
        records.append(_Record(candidate, fact["sha256"], fact["size"], fact["format"], fact["width"],
                               fact["height"], fact["jpeg_quality"], fact["phash"]))
    return records, normalised, warnings


def _drop_exact_duplicates(records: list[_Record], skipped: list[Skipped]) -> tuple[list[_Record], list[dict[str, Any]]]:
    """Keep the first (by name) of byte-identical files; drop all copies whose labels disagree."""
    by_hash: dict[str, list[_Record]] = defaultdict(list)
    for record in records:
        by_hash[record.sha256].append(record)
    kept, exact = [], []
    for record in records:
        same = by_hash[record.sha256]
        if len({r.candidate.label for r in same}) > 1:
            others = ", ".join(r.candidate.name for r in same if r is not record)
            skipped.append(Skipped(record.candidate.name,
                                   f"identical bytes are labelled both real and fake (also {others}): label conflict"))
            continue
        if same[0] is not record:
            skipped.append(Skipped(record.candidate.name, f"exact duplicate of {same[0].candidate.name}"))
            exact.append({"kept": same[0].candidate.name, "dropped": record.candidate.name})
            continue
        kept.append(record)
    return kept, exact


def _group(records: list[_Record], max_distance: int) -> tuple[list[dict[str, Any]], dict[str, list[_Record]]]:
    """Groups by ``source_id``, merged wherever two images of different groups are near-duplicates."""
    union = UnionFind()
    for record in records:
        union.find(record.candidate.source_id)
    near = []
    for i, j, distance in find_near_duplicates([r.phash for r in records], max_distance):
        a, b = records[i].candidate, records[j].candidate
        if a.source_id != b.source_id:
            near.append({"a": a.name, "b": b.name, "distance": distance,
                         "labels": [a.label_name, b.label_name]})
            union.union(a.source_id, b.source_id)
    groups: dict[str, list[_Record]] = defaultdict(list)
    for record in records:
        groups[str(union.find(record.candidate.source_id))].append(record)
    near.sort(key=lambda p: (p["a"], p["b"]))
    return near, dict(groups)


# --------------------------------------------------------------------------- writing

def _write_shards(folder: Path, splits: dict[str, list[_Record]], skipped: list[Skipped], max_shard_bytes: int,
                  progress: bool) -> dict[str, list[_Record]]:
    """Parquet shards ``{split}-{i:05d}-of-{n:05d}.parquet``; returns the records actually written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    schema = build_features().arrow_schema
    written: dict[str, list[_Record]] = {}
    bar = _progress(None, total=sum(len(m) for m in splits.values()), desc="writing parquet", enabled=progress)
    for split, members in splits.items():
        written[split] = []
        if not members:
            continue
        shards = max(1, math.ceil(sum(r.size for r in members) / max_shard_bytes))
        bounds = _shard_bounds([r.size for r in members], shards)
        for index, (start, stop) in enumerate(bounds):
            path = folder / f"{split}-{index:05d}-of-{len(bounds):05d}.parquet"
            with pq.ParquetWriter(path, schema) as writer:
                batch: list[dict[str, Any]] = []
                for record in members[start:stop]:
                    bar.update(1)
                    row = record_row(record, skipped)
                    if row is None:
                        continue
                    batch.append(row)
                    written[split].append(record)
                    if len(batch) == ROW_GROUP_SIZE:
                        writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                        batch = []
                if batch or not written[split]:
                    writer.write_table(pa.Table.from_pylist(batch, schema=schema))
    bar.close()
    return written


def _shard_bounds(sizes: Sequence[int], shards: int) -> list[tuple[int, int]]:
    """Contiguous (start, stop) ranges of roughly equal bytes; never an empty shard."""
    shards = min(shards, len(sizes))
    target = sum(sizes) / shards
    bounds, start, acc = [], 0, 0
    for i, size in enumerate(sizes):
        acc += size
        remaining_rows, remaining_shards = len(sizes) - i - 1, shards - len(bounds) - 1
        if remaining_shards and (acc >= target * (len(bounds) + 1) or remaining_rows == remaining_shards):
            bounds.append((start, i + 1))
            start = i + 1
    bounds.append((start, len(sizes)))
    return bounds


def record_row(record: _Record, skipped: list[Skipped]) -> dict[str, Any] | None:
    """The dataset row of one inspected file, its bytes read again as they are written (one call per row).

    None, with the reason appended to ``skipped``, when the file can no longer
    be read or changed since it was inspected.
    """
    c = record.candidate
    try:
        data = c.path.read_bytes()
    except OSError as error:
        skipped.append(Skipped(c.name, f"could not be read again while writing ({error.strerror})"))
        return None
    if hashlib.sha256(data).hexdigest() != record.sha256:
        skipped.append(Skipped(c.name, "the file changed while the dataset was being built"))
        return None
    return {
        "image": {"bytes": data, "path": c.name},
        "label": c.label, "generator": c.generator, "source_id": c.source_id,
        "width": record.width, "height": record.height, "format": record.format,
        **{column: c.attributes.get(column) for column in ATTRIBUTE_COLUMNS},
    }


def format_build_summary(report: dict[str, Any]) -> str:
    """The human summary the CLI prints: counts per split × label × generator, skips, duplicates, bias findings."""
    lines = ["split       label  generator                      images"]
    for split, by_label in report["counts"].items():
        for label, by_gen in by_label.items():
            for generator, n in by_gen.items():
                lines.append(f"{split:<11} {label:<6} {generator:<30} {n:>6}")
    lines.append("totals: " + ", ".join(f"{s} {n}" for s, n in report["totals"].items()))
    if report.get("empty_splits"):
        lines.append("empty splits (too few groups): " + ", ".join(report["empty_splits"]))
    skipped = report["skipped"]
    lines.append(f"skipped: {len(skipped)} file(s)")
    for item in skipped[:50]:
        lines.append(f"  - {item['file']}: {item['reason']}")
    if len(skipped) > 50:
        lines.append(f"  ... and {len(skipped) - 50} more (see {REPORT_NAME})")
    lines.append(f"normalised on decode (original bytes kept): {len(report['normalised'])} file(s)")
    dupes = report["duplicates"]
    lines.append(f"exact duplicates dropped: {len(dupes['exact'])}; near-duplicate pairs kept in one split: "
                 f"{dupes['near_pairs']}")
    for warning in report.get("warnings", [])[:20]:
        lines.append(f"warning: {warning}")
    findings = report["bias"].get("findings", [])
    lines.append("bias report: " + ("no shortcut found" if not findings else f"{len(findings)} finding(s)"))
    lines += [f"  ! {f}" for f in findings]
    return "\n".join(lines)
