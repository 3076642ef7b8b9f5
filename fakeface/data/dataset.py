"""The face dataset: build (sources → checks → grouped split → parquet + card), push, and load.

One loader, :func:`load_face_dataset`, serves training, evaluation and the
app; it takes a local folder or a Hub id and returns the splits with the schema
of :func:`build_features`. :func:`build_face_dataset` writes a folder that
``datasets.load_dataset(folder)`` and the Hub read identically:

    README.md            card with the YAML (configs, features, split sizes)
    build_report.json    counts, skipped files and why, duplicates, bias report
    data/{split}-00000-of-0000N.parquet

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
from fakeface.utils.hub import BadSource, ErrorKind, HubUnreachable, Source, SourceError, parse_source, probe_repo
from fakeface.data.images import ImageDecodeError, load_image

logger = logging.getLogger(__name__)

__all__ = [
    "BuildResult", "DatasetLoadError", "REPORT_NAME", "build_face_dataset", "build_features", "ensure_synthetic_dataset",
    "format_build_summary", "load_face_dataset", "push_face_dataset", "resolve_dataset_source",
]

REPORT_NAME = "build_report.json"
CARD_NAME = "README.md"
DATA_DIR = "data"
REPORT_FORMAT = "fakeface-dataset/1"       # marks a folder as ours: only such folders are ever replaced
DEFAULT_MAX_SHARD_BYTES = 500 * 2**20
DEFAULT_MAX_FILE_BYTES = 256 * 2**20
ROW_GROUP_SIZE = 100                       # what datasets uses for image parquet: cheap random access and streaming
_SYNTHETIC_STAGING = ".synthetic-staging"


class DatasetLoadError(SourceError, ValueError):
    """A dataset could not be loaded or lacks the face dataset's schema: ``kind``, ``source``, ``problem``, ``fix``."""


def build_features():
    """The schema every split has (``datasets.Features``); attribute columns are null when unknown."""
    from datasets import ClassLabel, Features, Image, Value

    return Features({
        "image": Image(),
        "label": ClassLabel(names=list(LABEL_NAMES)),
        "generator": Value("string"),
        "source_id": Value("string"),
        "width": Value("int32"),
        "height": Value("int32"),
        "format": Value("string"),
        **{column: Value("string") for column in ATTRIBUTE_COLUMNS},
    })


# --------------------------------------------------------------------------- build

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
    from fakeface.data.synthetic import generate_synthetic_faces

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
        listings: list[FolderListing] = []
        taken: set[str] = set()
        attribute_path = Path(attributes).expanduser() if attributes is not None else None
        for folder, tag in zip(real_paths, unique_tags(real_paths, taken)):
            listings.append(collect_real_folder(folder, tag=tag, generator=real_source, attributes=table,
                                                exclude=[attribute_path] if attribute_path else []))
        for folder, tag in zip(fake_paths, unique_tags(fake_paths, taken)):
            listings.append(collect_fake_folder(folder, tag=tag, generator=fake_generator))
        if synthetic:
            listings.append(_stage_synthetic(generate_synthetic_faces(synthetic, seed, size=synthetic_size),
                                             staging / _SYNTHETIC_STAGING, synthetic, progress))

        candidates = sorted((c for lst in listings for c in lst.candidates), key=lambda c: c.name)
        skipped: list[Skipped] = [s for lst in listings for s in lst.skipped]
        records, normalised, warnings = _inspect_all(candidates, skipped, max_file_bytes, num_workers, progress)
        records, exact = _drop_exact_duplicates(records, skipped)
        near_pairs, groups = _group(records, near_duplicate_distance)
        assignment = assign_group_splits(
            {g: Counter((r.candidate.label, r.candidate.generator) for r in members) for g, members in groups.items()},
            split_fractions, seed,
        )
        splits: dict[str, list[_Record]] = {name: [] for name in SPLIT_NAMES}
        for group, members in groups.items():
            splits[assignment[group]].extend(members)
        for name in splits:
            splits[name].sort(key=lambda r: seeded_key(seed, r.candidate.name))

        written = _write_shards(staging / DATA_DIR, splits, skipped, max_shard_bytes, progress)
        rows = [{"split": s, **r.facts_row()} for s, members in written.items() for r in members]
        generators = sorted({r["generator"] for r in rows})
        report = {
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
        if not rows:
            raise ValueError("no usable images: every file was skipped — " + format_build_summary(report))
        split_sizes = {s: (len(m), sum(r.size for r in m)) for s, m in written.items() if m}
        shard_patterns = {s: f"{DATA_DIR}/{s}-*" for s in split_sizes}
        download_size = sum(p.stat().st_size for p in (staging / DATA_DIR).glob("*.parquet"))
        (staging / CARD_NAME).write_text(render_dataset_card(
            features=build_features(), split_sizes=split_sizes, shard_patterns=shard_patterns, report=report,
            license=dataset_license(generators, license), pretty_name=pretty_name or _default_name(report),
            download_size=download_size,
        ), encoding="utf-8")
        (staging / REPORT_NAME).write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
        shutil.rmtree(staging / _SYNTHETIC_STAGING, ignore_errors=True)
        _replace_folder(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("dataset written to %s", output)
    return BuildResult(output, report)


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
    """A tqdm bar over ``iterable`` (or a bare bar to ``update`` when None); a no-op when disabled."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with datasets
        enabled = False
    if not enabled:
        return iterable if iterable is not None else _NoBar()
    return tqdm(iterable, total=total, desc=desc, unit="img")


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


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
                    row = _row(record, skipped)
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


def _row(record: _Record, skipped: list[Skipped]) -> dict[str, Any] | None:
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
    try:
        return parse_source(source, revision, what="dataset")
    except BadSource as error:
        raise DatasetLoadError(**error.fields()) from None


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
    import datasets

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
    from huggingface_hub import constants as hub_constants
    from huggingface_hub import snapshot_download

    folder: Path | None = None
    try:
        folder = Path(snapshot_download(src.location, repo_type="dataset", revision=src.revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - no ref recorded: look at the snapshots themselves
        repo_cache = Path(hub_constants.HF_HUB_CACHE) / ("datasets--" + src.location.replace("/", "--")) / "snapshots"
        snapshots = [p for p in repo_cache.glob("*") if (p / CARD_NAME).is_file()] if repo_cache.is_dir() else []
        if src.revision:
            snapshots = [p for p in snapshots if p.name.startswith(src.revision)]
        if snapshots:
            folder = max(snapshots, key=lambda p: (p.stat().st_mtime, p.name))
    if folder is None or not any(folder.glob(f"{DATA_DIR}/*.parquet")):
        raise DatasetLoadError(
            ErrorKind.UNREACHABLE,
            f"the Hugging Face Hub could not be reached ({reason}) and no cached copy of dataset {src.display} exists",
            "check the network or use a local dataset folder", source=src.display, revision=src.revision,
        )
    logger.warning("Hub unreachable (%s); loading the cached snapshot %s of %s", reason, folder.name[:12], src.location)
    return _load_folder(folder, split, streaming, src)


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
