"""The Dataset tab without the UI: load (cached), summarise, filter, sample and evaluate a face dataset."""
from __future__ import annotations

import contextlib
import logging
import random
import threading
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from fakeface.data.dataset import load_face_dataset, resolve_dataset_source
from fakeface.data.images import ImageDecodeError, load_image
from fakeface.evaluation.metrics import compute_metrics, decode_split, verdict_counts
from fakeface.modeling.photo import resolve_face_crop, score_photos
from fakeface.serving.errors import AppError
from fakeface.serving.models import LoadedModel
from fakeface.utils.constants import ATTRIBUTE_COLUMNS, LABEL_NAMES
from fakeface.utils.settings import ENV

logger = logging.getLogger(__name__)

__all__ = ["DatasetCache", "evaluate_sample", "filter_indices", "sample_gallery", "split_of", "summarize_dataset"]

ENV_DATASET = ENV["dataset"]


class DatasetCache:
    """Loaded datasets by source, so switching tabs or filters does not reload them.

    Hub ids are always accepted. Local folders only when listed in
    ``allowed_folders`` (the configured ``FAKEFACE_DATASET``): a public Space
    must not let visitors probe its file system through this box.
    """

    def __init__(self, allowed_folders: Iterable[str] = (), max_entries: int = 2):
        self._lock = threading.Lock()
        self._entries: dict[str, Any] = {}
        self._max = max_entries
        self._allowed = {self._folder_key(f) for f in allowed_folders if f}

    @staticmethod
    def _folder_key(source: str) -> str | None:
        try:
            src = resolve_dataset_source(source)
        except ValueError:
            return None
        return str(Path(src.location).expanduser().resolve()) if src.kind == "local" else None

    def load(self, source: str) -> Any:
        """``load_face_dataset(source)``, cached; every failure becomes an :class:`AppError`."""
        source = (source or "").strip()
        if not source:
            raise AppError("Enter a dataset: a Hub id (org/name);", f"{ENV_DATASET} sets the default.", kind="no_input")
        with self._lock:
            if source in self._entries:
                return self._entries[source]
        try:
            src = resolve_dataset_source(source)
        except ValueError as error:
            raise AppError(f"{_first_line(error)}.", kind="bad_input") from None
        if src.kind == "local" and self._folder_key(source) not in self._allowed:
            raise AppError("Only Hub datasets (org/name) can be loaded here;",
                           f"local folders are limited to the one configured in {ENV_DATASET}.", kind="not_allowed")
        try:
            with _quiet_datasets():
                data = load_face_dataset(source)
        except (ValueError, OSError, RuntimeError) as error:
            raise AppError(f"The dataset {src.display} could not be loaded: {_first_line(error)}",
                           kind="unavailable") from None
        if not hasattr(data, "keys"):
            data = {"train": data}
        with self._lock:
            self._entries[source] = data
            while len(self._entries) > self._max:
                self._entries.pop(next(iter(self._entries)))
        return data


@contextlib.contextmanager
def _quiet_datasets():
    """No per-split progress bars in the server log while a dataset loads (the UI has its own)."""
    import datasets   # on first use: the first verdict does not need it

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _first_line(error: BaseException) -> str:
    # Shown to the user as the cause, never parsed.
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


def split_of(data: Any, split: str | None) -> Any:
    """The named split, the test split by default; an :class:`AppError` naming the choices otherwise."""
    names = list(data.keys())
    if not names:
        raise AppError("The dataset has no splits.", kind="not_found")
    if not split:
        split = "test" if "test" in names else names[0]
    if split not in names:
        raise AppError(f"The dataset has no split {split!r};", f"choose one of {', '.join(names)}.", kind="not_found")
    return data[split]


def summarize_dataset(data: Mapping[str, Any]) -> dict[str, Any]:
    """Splits with counts per label and generator, and the attribute values present."""
    splits = {}
    attributes: dict[str, set] = {}
    generators: set[str] = set()
    for name in data.keys():
        split = data[name]
        labels = split["label"]
        counts = {LABEL_NAMES[i]: int(sum(1 for v in labels if v == i)) for i in range(len(LABEL_NAMES))}
        gens = split["generator"] if "generator" in split.column_names else []
        generators.update(g for g in gens if g)
        splits[name] = {"rows": len(split), **counts,
                        "generators": {g: int(sum(1 for x in gens if x == g)) for g in sorted(set(gens) - {None})}}
        for column in ATTRIBUTE_COLUMNS:
            values = {str(v) for v in split[column] if v is not None} if column in split.column_names else set()
            if values:
                attributes.setdefault(column, set()).update(values)
    return {"splits": splits, "generators": sorted(generators),
            "attributes": {k: sorted(v) for k, v in attributes.items()}}


def filter_indices(split: Any, *, label: str | None = None, generator: str | None = None,
                   attributes: Mapping[str, str | None] | None = None) -> list[int]:
    """Row indices of ``split`` matching the filters (None or "" or "any" means no filter)."""
    def active(value: str | None) -> bool:
        return bool(value) and value != "any"

    columns: dict[str, list] = {}
    if active(label):
        columns["label"] = [LABEL_NAMES[v] for v in split["label"]]
    if active(generator) and "generator" in split.column_names:
        columns["generator"] = split["generator"]
    for key, value in (attributes or {}).items():
        if active(value) and key in split.column_names:
            columns[key] = [None if v is None else str(v) for v in split[key]]
    wanted = {"label": label, "generator": generator, **dict(attributes or {})}
    return [i for i in range(len(split)) if all(columns[k][i] == wanted[k] for k in columns)]


def sample_gallery(split: Any, indices: Sequence[int], *, n: int = 24, seed: int = 0,
                   thumb_size: int = 256) -> list[tuple[Image.Image, str]]:
    """Up to ``n`` decoded thumbnails with captions: label · generator · attributes."""
    import datasets

    chosen = sorted(random.Random(seed).sample(list(indices), min(n, len(indices))))
    if not chosen:
        return []
    rows = split.select(chosen).cast_column("image", datasets.Image(decode=False))
    gallery = []
    for row in rows:
        data = row["image"].get("bytes") or row["image"].get("path")
        try:
            image = load_image(data).image
        except ImageDecodeError as error:
            logger.warning("dataset row not shown: %s", error)
            continue
        image.thumbnail((thumb_size, thumb_size))
        parts = [LABEL_NAMES[row["label"]], row.get("generator") or "?"]
        parts += [f"{k}: {row[k]}" for k in ATTRIBUTE_COLUMNS if row.get(k) not in (None, "")]
        gallery.append((image, " · ".join(str(p) for p in parts)))
    return gallery


def evaluate_sample(model: LoadedModel, split: Any, *, n: int = 200, seed: int = 0, batch_size: int = 16,
                    progress: Callable[[float, str], None] | None = None) -> dict[str, Any]:
    """Score a random sample of a split and compute metrics at the model's own threshold.

    Images are decoded and scored a batch at a time, so memory stays bounded
    whatever the sample size, through :func:`score_photos` like an upload (a
    model with a face stage judges each image by its most suspicious face).
    Returns the metrics dict of
    :func:`fakeface.evaluation.metrics.compute_metrics` plus ``labels``/``p_fake``
    (for the ROC curve), ``verdicts`` counts and ``modes`` (how many images
    were judged by a face or whole).
    """
    size = len(split)
    if size == 0:
        raise AppError("The split is empty.", kind="not_found")
    chosen = sorted(random.Random(seed).sample(range(size), min(int(n), size)))
    face_crop = resolve_face_crop(model.detector)
    photos, labels = [], []
    for start in range(0, len(chosen), batch_size):
        if progress:
            progress(start / len(chosen), f"scoring {start}/{len(chosen)}")
        images, batch_labels, _ = decode_split(split.select(chosen[start:start + batch_size]))
        if images:
            photos.extend(score_photos(model.scorer, images, face_crop=face_crop))
            labels.append(batch_labels)
    if not photos:
        raise AppError("None of the sampled images could be decoded.", kind="bad_input")
    decision = model.decision
    p_fake = np.array([photo.photo_p_fake for photo in photos])
    labels_all = np.concatenate(labels)
    metrics = compute_metrics(labels_all, p_fake, decision.threshold_fake)
    metrics["verdicts"] = verdict_counts([photo.verdict for photo in photos])
    metrics["modes"] = dict(Counter(photo.mode for photo in photos))
    metrics["labels"] = labels_all.tolist()
    metrics["p_fake"] = [float(p) for p in p_fake]
    metrics["model"] = model.name
    if progress:
        progress(1.0, "done")
    return metrics
