"""Bulk scans: score every image of a source, resumable, on one process or many.

:func:`run_scan` is the whole command: load the detector once (the int8 fast
path when the release has a valid one), take this process's share of the
source (:func:`fakeface.scan.sources.iter_items`), skip what committed parts
already hold, decode each file through the safe decoder, find faces when the
model's config asks for them, score in batches, commit parts, and on the main
process merge every part into one table with a summary.

Processes: the same command under ``torchrun --nproc_per_node N`` or
``accelerate launch`` (one machine or several) runs N copies; each reads its
rank from the environment those launchers set (``RANK``/``WORLD_SIZE``, read
through accelerate's ``PartialState``), writes its own parts, and waits for
the others before the main process merges. Nothing is sent between processes
but that barrier, so the output folder must be shared (one machine, or a
network filesystem) for the merge to see every part.

Each process keeps to its share of the machine's cores (``threads``: cores /
processes on the machine, for torch, ONNX Runtime, the face stage and every
expert; :mod:`fakeface.scan.workers`), takes a shard of about equal bytes
(:func:`fakeface.scan.sources.shard_by_bytes`), and reads and decodes the next
files on a background thread while it scores the current batch.
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from PIL import Image

from fakeface.data.dataset import DEFAULT_MAX_FILE_BYTES
from fakeface.data.images import ImageDecodeError, load_image
from fakeface.modeling.config import resolve_detector_config
from fakeface.modeling.detector import load_detector
from fakeface.modeling.panel import release_scorer
from fakeface.modeling.fastpath import compute_weights_fingerprint, load_fast_path
from fakeface.modeling.inference import Detector
from fakeface.modeling.photo import PhotoScore, score_photos
from fakeface.scan.sources import ScanItem, ScanSource, iter_items
from fakeface.scan.store import (
    SUMMARY_NAME, TABLE_NAME, PartWriter, merge_parts, prepare_output, read_done_keys, summarize_rows,
)
from fakeface.scan.workers import prefetch, threads_per_process, threads_variable
from fakeface.utils.fileio import write_atomic

logger = logging.getLogger(__name__)

PROCESSES_DIR = "processes"        # per-process counts and timings of the last run

# error_code values of rows that carry no verdict
READ_ERROR = "read_error"          # the file could not be read (permissions, vanished, I/O)
TOO_LARGE = "too_large"            # the file is over --max-file-bytes (never read into memory)
DECODE_ERROR = "decode_error"      # not an image, truncated, a decompression bomb, too small... (the decoder says which)
NO_IMAGE = "no_image"              # a dataset row without image bytes
SCORE_ERROR = "score_error"        # the model failed on this image
FACE_TOO_SMALL = "face_too_small"  # a face was found but has too few pixels to judge


@dataclass(frozen=True)
class ScanConfig:
    """One scan: what, with which model, where to, and how it is split up."""

    source: ScanSource
    model: str
    output_dir: str
    batch_size: int = 16
    part_rows: int = 256
    threads: int | None = None          # per process; None: the machine's cores / its scan processes
    use_fast_path: bool = True
    use_faces: bool = True              # when the model's config has a face crop and the face stage exists
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    limit: int | None = None            # score at most this many items per process (tests, trial runs)
    prefetch: int | None = None         # files read and decoded ahead of scoring; None: batch_size, 0: inline
    progress: bool = True
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("batch_size", "part_rows", "threads", "max_file_bytes"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.prefetch is not None and self.prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {self.prefetch}")


@dataclass(frozen=True)
class ScanModel:
    """The scorer and what identifies it in every row."""

    scorer: Any                 # Detector or FastDetector: .score(images) -> Scores
    model_id: str
    revision: str
    runtime: str
    face_crop: Any              # FaceCrop or None: score_photos scores whole images
    fast_path_note: str | None  # why the int8 path is not used, when it is not
    threads: int = 1            # the face stage's threads, as the model's: N processes x 1 thread


@dataclass
class ScanSummary:
    """What a scan did; the main process's summary covers the merged table."""

    output_dir: str
    process_index: int
    num_processes: int
    scored_now: int = 0                 # images this process scored in this run
    skipped_done: int = 0               # images already in committed parts (resumed)
    bytes_read: int = 0                 # of the files it scored now: its shard's size
    threads: int = 1                    # its threads (torch, ONNX Runtime, face stage)
    seconds: float = 0.0                # the whole run: model load, scan, merge
    scan_seconds: float = 0.0           # first item to last committed part (all processes start together)
    cpu_seconds: float = 0.0            # CPU time of all its threads over the same span
    ms_per_image: list[float] = field(default_factory=list, repr=False)   # per batch: its wall time / its images
    model: dict[str, Any] = field(default_factory=dict)
    table: dict[str, Any] | None = None  # main process: counts of the merged table
    files: dict[str, str] = field(default_factory=dict)

    _batch_started: float = field(default_factory=time.perf_counter, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if not k.startswith("_")}


# --------------------------------------------------------------------------- processes

def resolve_processes() -> tuple[int, int, Any]:
    """(process_index, num_processes, state) from the launcher's environment; (0, 1, None) when run plainly.

    accelerate's ``PartialState`` reads what ``torchrun`` and ``accelerate
    launch`` set and starts the process group (gloo on CPU) the barrier needs.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, None
    from accelerate import PartialState  # heavy, only under a launcher

    state = PartialState(cpu=not torch.cuda.is_available())
    return state.process_index, state.num_processes, state


# --------------------------------------------------------------------------- model

def load_scan_model(source: str, *, threads: int = 1, use_fast_path: bool = True, use_faces: bool = True,
                    token: str | None = None) -> ScanModel:
    """The detector once per process: int8 when its checks pass on this CPU, else fp32 (the reason kept).

    ``threads`` is every runtime's: torch's intra-op pool (one inter-op thread), the int8 session, the face
    stage and a panel's experts (their sessions read ``FAKEFACE_THREADS`` while they are built).
    """
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or torch already ran parallel work in this process
        pass
    with threads_variable(threads):
        return _load_scan_model(source, threads, use_fast_path, use_faces, token)


def _load_scan_model(source: str, threads: int, use_fast_path: bool, use_faces: bool, token: str | None) -> ScanModel:
    model = load_detector(source, token=token)
    files = getattr(model, "fakeface_files", None)
    # A Hub model is identified by its commit; a local folder by its weights.
    revision = getattr(files, "revision", None) or f"sha256:{compute_weights_fingerprint(model)[:16]}"
    scorer, note = Detector(model), None
    if use_fast_path:
        loaded = load_fast_path(model, threads=threads)
        if loaded.detector is not None:
            scorer = loaded.detector
        elif loaded.refusal is not None:
            note = loaded.refusal.message
    scorer = release_scorer(model, scorer, use_fast_path=use_fast_path)   # a panel release: every expert and its fusion (PanelError if broken)
    face_crop = resolve_detector_config(model).face_crop if use_faces else None
    return ScanModel(scorer=scorer, model_id=os.fspath(source), revision=revision,
                     runtime=getattr(scorer, "runtime", "torch-fp32"), face_crop=face_crop, fast_path_note=note,
                     threads=threads)


# --------------------------------------------------------------------------- one image

@dataclass
class _Pending:
    """One item on its way to rows: its decoded image until scored, then its rows."""

    item: ScanItem
    base: dict[str, Any]
    image: Image.Image | None = None       # None: the item is unusable and ``rows`` already says why
    rows: list[dict[str, Any]] = field(default_factory=list)
    size: int = 0                          # bytes read


def _read_bytes(item: ScanItem, max_bytes: int) -> tuple[bytes | None, str | None, str | None]:
    """(data, error_code, error) for an item; a file is checked for size before it is read."""
    if item.data is not None:
        if len(item.data) > max_bytes:
            return None, TOO_LARGE, f"image is {len(item.data)} bytes, over the limit of {max_bytes}"
        return item.data, None, None
    if item.path is None:
        return None, NO_IMAGE, "the row has no image"
    try:
        size = os.stat(item.path).st_size
        if size > max_bytes:
            return None, TOO_LARGE, f"file is {size} bytes, over the limit of {max_bytes}"
        with open(item.path, "rb") as handle:
            return handle.read(), None, None
    except OSError as error:
        return None, READ_ERROR, f"cannot read the file ({type(error).__name__}: {error.strerror or error})"


def _prepare(item: ScanItem, base: dict[str, Any], max_bytes: int) -> _Pending:
    """Read and decode; an unusable item gets its one error row here."""
    data, code, reason = _read_bytes(item, max_bytes)
    if data is None:
        return _Pending(item, base, rows=[{**base, "error_code": code, "error": reason}])
    try:
        decoded = load_image(data, max_bytes=max_bytes)
    except ImageDecodeError as error:
        return _Pending(item, base, rows=[{**base, "error_code": DECODE_ERROR, "error": str(error)}], size=len(data))
    base = {**base, "width": decoded.width, "height": decoded.height, "format": decoded.format}
    return _Pending(item, base, image=decoded.image, size=len(data))


def photo_rows(base: dict[str, Any], photo: PhotoScore) -> list[dict[str, Any]]:
    """A :class:`PhotoScore` (the app's result for the photo) as scan rows.

    One row per face found (``face_index`` = the app's face number, from 1;
    its box and the face detector's score); a face too small to judge is a
    row with ``error_code`` face_too_small. When the whole image was scored
    (no face, only faces too small, no face stage) it has its own row with
    ``face_index`` empty. ``most_suspicious`` marks the face whose verdict is
    the photo's, as in the app; every row carries the photo's notes.
    """
    note = " ".join(photo.notes) or None
    rows = []
    for position, face in enumerate(photo.faces):
        x0, y0, x1, y1 = face.box
        row = {**base, "face_index": face.index, "box_x0": x0, "box_y0": y0, "box_x1": x1, "box_y1": y1,
               "face_score": face.score, "note": note}
        if face.too_small:
            row.update(error_code=FACE_TOO_SMALL, error=f"face too small to judge ({face.size_px:.0f} px)")
        else:
            row.update(p_fake=face.p_fake, verdict=face.verdict, most_suspicious=position == photo.most_suspicious,
                       **expert_columns(face.experts, face.evidence))
        rows.append(row)
    if photo.mode == "whole-image":
        rows.append({**base, "p_fake": photo.photo_p_fake, "verdict": photo.verdict, "note": note,
                     **expert_columns(photo.experts, photo.evidence)})
    return rows


def expert_columns(experts: Mapping[str, float] | None, evidence: str | None) -> dict[str, Any]:
    """A panel's columns: ``experts`` (JSON: each expert's p(fake)) and ``evidence``; empty for a single model."""
    if experts is None:
        return {}
    return {"experts": json.dumps({name: round(float(p), 6) for name, p in experts.items()}), "evidence": evidence}


def _score_one(image: Image.Image, model: ScanModel) -> tuple[PhotoScore | None, str | None]:
    """(photo, None), or (None, why) when even this image alone fails; a failed face stage -> whole image."""
    try:
        return score_photos(model.scorer, [image], face_crop=model.face_crop, threads=model.threads)[0], None
    except Exception as error:  # noqa: BLE001 - find what fails; the others still get a verdict
        failure = f"{type(error).__name__}: {str(error)[:200]}"
    if model.face_crop is None:
        return None, failure
    try:
        photo = score_photos(model.scorer, [image], face_crop=None)[0]
    except Exception:  # noqa: BLE001 - the model itself fails on this image
        return None, failure
    note = f"The face stage or the model failed on the faces ({failure}): the whole image was scored."
    return PhotoScore((), photo.photo_p_fake, photo.verdict, "whole-image", (note,), photo.image_size), None


def _score(pending: Sequence[_Pending], model: ScanModel) -> None:
    """Rows for every decoded image in ``pending`` via :func:`score_photos` (the app's path): all in one
    call, or one image at a time when that fails, so one bad image costs only its own rows."""
    todo = [p for p in pending if p.image is not None]
    if not todo:
        return
    try:
        results = [(photo, None) for photo in
                   score_photos(model.scorer, [p.image for p in todo], face_crop=model.face_crop,
                                threads=model.threads)]
    except Exception:  # noqa: BLE001 - retried image by image below
        results = [_score_one(p.image, model) for p in todo]
    for p, (photo, failure) in zip(todo, results):
        if photo is None:
            p.rows = [{**p.base, "error_code": SCORE_ERROR, "error": f"the model failed on this image ({failure})"}]
        else:
            p.rows = photo_rows(p.base, photo)
        p.image = None   # the pixels are not needed past here


# --------------------------------------------------------------------------- the scan

def _progress(iterable: Iterator, *, enabled: bool, position: int) -> Iterator:
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=f"scan [{position}]", unit="img", disable=not enabled, position=position,
                dynamic_ncols=True, mininterval=1.0)


def run_scan(config: ScanConfig) -> ScanSummary:
    """Score this process's share of ``config.source`` into ``config.output_dir``; the main process merges."""
    started = time.perf_counter()
    rank, world, state = resolve_processes()
    threads = threads_per_process(config.threads)
    model = load_scan_model(config.model, threads=threads, use_fast_path=config.use_fast_path,
                            use_faces=config.use_faces, token=config.token)
    if model.fast_path_note and rank == 0:
        logger.warning("%s; scanning with fp32", model.fast_path_note)
    out = prepare_output(config.output_dir, {
        "source": config.source.location, "kind": config.source.kind, "split": config.source.split,
        "image_column": config.source.image_column, "model_id": model.model_id, "model_revision": model.revision,
        "faces": model.face_crop is not None, "max_file_bytes": config.max_file_bytes,
    })
    done = read_done_keys(out)
    if state is not None:
        state.wait_for_everyone()   # every model is loaded: the processes scan side by side from here
    scan_started, cpu_started = time.perf_counter(), time.process_time()
    summary = ScanSummary(os.fspath(out), rank, world, threads=threads, _batch_started=scan_started, model={
        "model_id": model.model_id, "model_revision": model.revision, "runtime": model.runtime,
        "faces": model.face_crop is not None, "fast_path_note": model.fast_path_note})
    writer = PartWriter(out, rank, config.part_rows)
    base = {"model_id": model.model_id, "model_revision": model.revision, "runtime": model.runtime,
            "process_index": rank}
    # An output folder inside a scanned folder is not scanned itself.
    items = _progress(iter_items(config.source, rank=rank, world=world, exclude=out), enabled=config.progress,
                      position=rank)

    def prepare(item: ScanItem) -> _Pending:
        return _prepare(item, {**base, "order": item.order, "key": item.key, "path": item.path, "label": item.label},
                        config.max_file_bytes)

    depth = config.batch_size if config.prefetch is None else config.prefetch
    batch: list[_Pending] = []
    for pending in prefetch(_todo(items, done, config.limit, summary), prepare, depth):
        summary.bytes_read += pending.size
        batch.append(pending)
        if len(batch) >= config.batch_size:   # images; score_photos bounds each model call itself
            _flush(batch, model, writer, summary)
            batch = []
    _flush(batch, model, writer, summary)
    writer.close()
    summary.scan_seconds = round(time.perf_counter() - scan_started, 3)
    summary.cpu_seconds = round(time.process_time() - cpu_started, 3)
    _write_process_record(out, summary)
    if state is not None:
        state.wait_for_everyone()   # every process's parts are committed before the merge reads them
    if rank == 0:
        _merge_and_summarize(out, summary)
    if state is not None:
        state.wait_for_everyone()   # nobody exits (and tears down the group) before the merge is written
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary


def _todo(items: Iterator[ScanItem], done: set[str], limit: int | None, summary: ScanSummary) -> Iterator[ScanItem]:
    """The items still to score (what committed parts hold is counted and skipped), at most ``limit``."""
    for item in items:
        if item.key in done:
            summary.skipped_done += 1
            continue
        if limit is not None and summary.scored_now >= limit:
            return
        summary.scored_now += 1
        yield item


def _flush(batch: list[_Pending], model: ScanModel, writer: PartWriter, summary: ScanSummary) -> None:
    """Score and commit; the batch's time since its first item was read counts for each of its images."""
    if not batch:
        return
    _score(batch, model)
    for pending in batch:   # whole images only: a part never holds half an image's faces
        writer.add_image(pending.rows)
    now = time.perf_counter()
    summary.ms_per_image.append(1000.0 * (now - summary._batch_started) / len(batch))
    summary._batch_started = now


def _write_process_record(out: Path, summary: ScanSummary) -> None:
    """Each process's own counts and timings (the benchmark reads them; the merge does not need them)."""
    folder = out / PROCESSES_DIR
    folder.mkdir(exist_ok=True)
    record = {k: v for k, v in summary.as_dict().items() if k not in ("table", "files")}
    write_atomic(folder / f"process-{summary.process_index:05d}.json", (json.dumps(record) + "\n").encode())


def _merge_and_summarize(out: Path, summary: ScanSummary) -> None:
    import pyarrow.parquet as pq

    merged = merge_parts(out)
    table = pq.read_table(merged.table, columns=["key", "face_index", "verdict", "most_suspicious", "error_code",
                                                       "error"])
    summary.table = {**summarize_rows(table.to_pylist()), "duplicate_rows_dropped": merged.duplicate_rows_dropped}
    summary.files = {"parquet": os.fspath(merged.table), "csv": os.fspath(merged.csv),
                     "summary": os.fspath(out / SUMMARY_NAME)}
    record = {"model": summary.model, "num_processes": summary.num_processes, **summary.table}
    write_atomic(out / SUMMARY_NAME, (json.dumps(record, indent=2) + "\n").encode())


def format_summary(summary: ScanSummary) -> str:
    """The lines the command prints at the end."""
    lines = [f"scanned with {summary.model.get('model_id')} @ {summary.model.get('model_revision')} "
             f"({summary.model.get('runtime')}), {summary.num_processes} process(es)"]
    if summary.model.get("fast_path_note"):
        lines.append(f"note: {summary.model['fast_path_note']}")
    lines.append(f"this process: {summary.scored_now} image(s) scored now, {summary.skipped_done} already done, "
                 f"{summary.seconds:.1f} s")
    table = summary.table
    if table is not None:
        verdicts = ", ".join(f"{k} {v}" for k, v in table["verdicts"].items()) or "none"
        lines.append(f"table: {table['images']} image(s), {table['rows']} row(s); verdicts: {verdicts}")
        photos = ", ".join(f"{k} {v}" for k, v in table["photo_verdicts"].items()) or "none"
        lines.append(f"photo verdicts (from each photo's most suspicious face, as in the app): {photos}")
        if table["skipped_total"]:
            reasons = ", ".join(f"{k} {v}" for k, v in table["errors"].items())
            lines.append(f"skipped {table['skipped_total']}: {reasons}")
            lines += [f"  {s['key']}: {s['error']}" for s in table["skipped"]]
            if table["skipped_total"] > len(table["skipped"]):
                lines.append(f"  ... {table['skipped_total'] - len(table['skipped'])} more in {TABLE_NAME}")
        lines.append(f"wrote {summary.files.get('parquet')} and {summary.files.get('csv')}")
    return "\n".join(lines)
