"""Metrics, reliability (ECE) and robustness for a real/fake detector.

Fitting the temperature and choosing thresholds is :mod:`fakeface.evaluation.calibration`;
when to abstain is :mod:`fakeface.evaluation.abstention`.

Everything scores through :class:`fakeface.modeling.inference.Detector`, so evaluation
sees exactly the crops, temperature and thresholds the app applies.

Conventions: ``labels`` are 0 = real, 1 = fake (``constants.REAL``/``FAKE``);
``p_fake`` is the (calibrated) probability of ``fake``; the positive class of
every metric is ``fake``. Curves, areas, the calibration curve and the
confusion matrix come from scikit-learn, the temperature fit from scipy.
"""
from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from PIL import Image, ImageFilter

from fakeface.utils.constants import ATTRIBUTE_COLUMNS, FAKE, LABEL_NAMES, REAL
from fakeface.data.images import ImageDecodeError, load_image
from fakeface.data.preprocess import jpeg_roundtrip
from fakeface.modeling.config import VERDICT_UNCERTAIN, Decision
from fakeface.utils.formatting import json_safe  # noqa: F401 - also imported from here by the app

logger = logging.getLogger(__name__)

DEFAULT_ECE_BINS = 15


# --------------------------------------------------------------------------- input checks

def _sklearn_metrics():
    """``sklearn.metrics``, imported on first use: the app's verdicts never need scikit-learn (~0.8 s to import)."""
    from sklearn import metrics

    return metrics


def _as_labels_and_scores(labels: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} vs {s.size}")
    if y.size and not np.isin(y, (REAL, FAKE)).all():
        raise ValueError(f"labels must be {REAL} ({LABEL_NAMES[REAL]}) or {FAKE} ({LABEL_NAMES[FAKE]})")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    return y, s


# --------------------------------------------------------------------------- curves
# scikit-learn computes the curves; these wrappers fix the conventions (fake = positive,
# every distinct score a point, NaN instead of a warning when one class is missing).

def _one_class(y: np.ndarray) -> bool:
    return not ((y == FAKE).any() and (y == REAL).any())


def roc_curve_points(labels: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), one point per distinct score, starting at (0, 0).

    ``thresholds[i]`` is the score at which the point is reached (``score >= t``
    is called fake); the first threshold is ``inf``.
    """
    y, s = _as_labels_and_scores(labels, scores)
    if not y.size:
        return np.full(1, np.nan), np.full(1, np.nan), np.array([np.inf])
    from sklearn.exceptions import UndefinedMetricWarning

    with warnings.catch_warnings():  # one class present: sklearn warns and returns NaN rates, as wanted
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return _sklearn_metrics().roc_curve(y, s, pos_label=FAKE, drop_intermediate=False)


def precision_recall_points(labels: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) over decreasing thresholds, recall rising from 0 (first threshold ``inf``)."""
    y, s = _as_labels_and_scores(labels, scores)
    if not (y == FAKE).any():
        thresholds = np.r_[np.inf, np.unique(s)[::-1]]
        return np.r_[1.0, np.zeros(thresholds.size - 1)], np.full(thresholds.size, np.nan), thresholds
    precision, recall, thresholds = _sklearn_metrics().precision_recall_curve(y, s, pos_label=FAKE,
                                                                           drop_intermediate=False)
    return precision[::-1], recall[::-1], np.r_[np.inf, thresholds[::-1]]


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve (ties count half); NaN when one class is missing."""
    y, s = _as_labels_and_scores(labels, scores)
    return float("nan") if _one_class(y) else float(_sklearn_metrics().roc_auc_score(y, s))


def average_precision(labels: Sequence[int], scores: Sequence[float]) -> float:
    """sum_n (R_n - R_{n-1}) P_n over distinct thresholds; NaN without fakes."""
    y, s = _as_labels_and_scores(labels, scores)
    if not (y == FAKE).any():
        return float("nan")
    return float(_sklearn_metrics().average_precision_score(y, s, pos_label=FAKE))


# --------------------------------------------------------------------------- reliability

@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width bins over p(fake): what the reliability diagram draws."""

    edges: np.ndarray        # (B+1,)
    mean_p_fake: np.ndarray  # (B,) NaN for empty bins
    frac_fake: np.ndarray    # (B,) observed fraction of fakes; NaN for empty bins
    counts: np.ndarray       # (B,)


def reliability_bins(labels: Sequence[int], p_fake: Sequence[float], n_bins: int = DEFAULT_ECE_BINS) -> ReliabilityBins:
    """Bin p(fake) into ``n_bins`` equal-width bins (a value on an inner edge goes to the lower bin)."""
    y, p = _as_labels_and_scores(labels, p_fake)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # calibration_curve returns the filled bins only; their counts place them (same binning as sklearn's).
    counts = np.bincount(np.searchsorted(edges[1:-1], p), minlength=n_bins).astype(np.int64)
    mean_p, frac = np.full(n_bins, np.nan), np.full(n_bins, np.nan)
    if y.size:
        from sklearn.calibration import calibration_curve

        filled = counts > 0
        frac[filled], mean_p[filled] = calibration_curve(
            y, p, pos_label=FAKE, n_bins=n_bins, strategy="uniform")
    return ReliabilityBins(edges, mean_p, frac, counts)


def expected_calibration_error(labels: Sequence[int], p_fake: Sequence[float], n_bins: int = DEFAULT_ECE_BINS) -> float:
    """ECE of p(fake): sum over bins of (bin share) x |mean p(fake) - fraction fake|."""
    bins = reliability_bins(labels, p_fake, n_bins)
    total = bins.counts.sum()
    if not total:
        return float("nan")
    filled = bins.counts > 0
    gaps = np.abs(bins.mean_p_fake[filled] - bins.frac_fake[filled])
    return float(np.sum(bins.counts[filled] / total * gaps))


# --------------------------------------------------------------------------- metrics

def compute_metrics(labels: Sequence[int], p_fake: Sequence[float], threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, ROC-AUC, AP, F1, confusion matrix and ECE, ``fake`` as positive.

    ``p_fake >= threshold`` is called fake. ``confusion_matrix`` is
    ``[[real->real, real->fake], [fake->real, fake->fake]]`` (rows = truth).
    With a single class present, AUC/AP are NaN and ``notes`` says why.
    """
    y, p = _as_labels_and_scores(labels, p_fake)
    pred = (p >= threshold).astype(np.int64)
    cm = (_sklearn_metrics().confusion_matrix(y, pred, labels=[REAL, FAKE]).astype(np.int64) if y.size
          else np.zeros((2, 2), dtype=np.int64))
    tp, fp, fn = int(cm[FAKE, FAKE]), int(cm[REAL, FAKE]), int(cm[FAKE, REAL])
    notes = []
    n_fake, n_real = int((y == FAKE).sum()), int((y == REAL).sum())
    if y.size == 0:
        notes.append("no samples")
    elif not n_fake or not n_real:
        present = LABEL_NAMES[FAKE] if n_fake else LABEL_NAMES[REAL]
        notes.append(f"only {present} images: ROC-AUC and average precision are undefined")
    return {
        "n": int(y.size),
        "n_real": n_real,
        "n_fake": n_fake,
        "threshold": float(threshold),
        "accuracy": float(np.mean(pred == y)) if y.size else float("nan"),
        "roc_auc": roc_auc(y, p) if n_fake and n_real else float("nan"),
        "average_precision": average_precision(y, p) if n_fake and n_real else float("nan"),
        "f1": float(2 * tp / (2 * tp + fp + fn)) if (2 * tp + fp + fn) else 0.0,
        "tpr": float(tp / n_fake) if n_fake else float("nan"),
        "fpr": float(fp / n_real) if n_real else float("nan"),
        "confusion_matrix": cm.tolist(),
        "ece": expected_calibration_error(y, p) if y.size else float("nan"),
        "notes": notes,
    }


def verdict_counts(verdicts: Iterable[str]) -> dict[str, int]:
    """How many "real" / "fake" / "uncertain" verdicts."""
    counts = {name: 0 for name in (*LABEL_NAMES, VERDICT_UNCERTAIN)}
    for verdict in verdicts:
        counts[verdict] = counts.get(verdict, 0) + 1
    return counts


def compute_group_metrics(
    labels: Sequence[int], p_fake: Sequence[float], groups: Sequence[Any], threshold: float = 0.5,
    *, against_other_class: bool = False,
) -> dict[str, dict[str, Any]]:
    """Metrics for each value of ``groups`` (e.g. an attribute column); ``None`` values are skipped.

    ``against_other_class=True`` (used for ``generator``, whose value is
    single-class per group): each group is scored against *all* images of the
    other class, so every generator gets its own AUC, and every real source
    its own false-positive rate.
    """
    y, p = _as_labels_and_scores(labels, p_fake)
    g = np.asarray([None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in groups], dtype=object)
    result = {}
    for value in sorted({v for v in g if v is not None}):
        mask = g == value
        if against_other_class:
            classes = np.unique(y[mask])
            if classes.size == 1:
                mask = mask | (y != classes[0])
        result[value] = compute_metrics(y[mask], p[mask], threshold)
        result[value]["n_group"] = int((g == value).sum())
    return result


# --------------------------------------------------------------------------- robustness

def _downscale(image: Image.Image, factor: float, resample=Image.Resampling.BICUBIC) -> Image.Image:
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, resample)


# name -> (description, perturbation). Order is the table's order.
ROBUSTNESS_CONDITIONS: dict[str, tuple[str, Callable[[Image.Image], Image.Image]]] = {
    "clean": ("as stored", lambda im: im),
    "jpeg95": ("JPEG re-encode, quality 95", lambda im: jpeg_roundtrip(im, 95)),
    "jpeg75": ("JPEG re-encode, quality 75", lambda im: jpeg_roundtrip(im, 75)),
    "jpeg50": ("JPEG re-encode, quality 50", lambda im: jpeg_roundtrip(im, 50)),
    "downscale0.5": ("downscaled to 0.5x (bicubic)", lambda im: _downscale(im, 0.5)),
    "blur": ("Gaussian blur, sigma 1.0", lambda im: im.filter(ImageFilter.GaussianBlur(1.0))),
    # A screenshot of an image shown at 80 % zoom: bilinear resampling by a
    # non-integer factor, then a lossless capture.
    "screenshot": ("screenshot-like: shown at 0.8x, bilinear", lambda im: _downscale(im, 0.8, Image.Resampling.BILINEAR)),
}


def apply_condition(image: Image.Image, condition: str) -> Image.Image:
    """Apply one named robustness perturbation (see ``ROBUSTNESS_CONDITIONS``)."""
    try:
        return ROBUSTNESS_CONDITIONS[condition][1](image)
    except KeyError:
        raise ValueError(f"unknown robustness condition {condition!r}; choose from {list(ROBUSTNESS_CONDITIONS)}") from None


def robustness_sweep(
    detector: Any,
    images: Sequence[Image.Image],
    labels: Sequence[int],
    conditions: Sequence[str] = tuple(ROBUSTNESS_CONDITIONS),
    *,
    batch_size: int = 16,
    clean_logits: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Score perturbed copies of ``images`` under each condition: one metrics row per condition.

    Metrics use the detector's own temperature and ``threshold_fake``, as the
    app would; ``clean_logits`` saves recomputing the clean condition.
    """
    threshold = detector.decision.threshold_fake
    rows = []
    for name in conditions:
        if name == "clean" and clean_logits is not None:
            scores = detector.scores_from_logits(clean_logits)
        else:
            scores = detector.score_batches((apply_condition(im, name) for im in images), batch_size=batch_size)
        row = {"condition": name, "description": ROBUSTNESS_CONDITIONS[name][0]}
        row.update(compute_metrics(labels, scores.p_fake, threshold))
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- datasets

def decode_split(split: Any, *, max_images: int | None = None) -> tuple[list[Image.Image], np.ndarray, dict[str, list]]:
    """Decode a dataset split's images via ``fakeface.data.images.load_image`` from the original bytes.

    Returns (images, labels, columns) where ``columns`` holds ``generator`` and
    the attribute columns present in the split. Rows that fail to decode are
    skipped with a warning (they were validated when the dataset was built).
    """
    from datasets import Image as ImageFeature  # datasets is slow to import; only evaluation runs need it

    if max_images is not None and len(split) > max_images:
        split = split.select(range(max_images))
    split = split.cast_column("image", ImageFeature(decode=False))
    names = [c for c in ("generator", *ATTRIBUTE_COLUMNS) if c in split.column_names]
    images, labels, columns = [], [], {c: [] for c in names}
    for index, row in enumerate(split):
        data = row["image"].get("bytes") or row["image"].get("path")
        try:
            images.append(load_image(data).image)
        except ImageDecodeError as error:
            logger.warning("skipping row %d: %s", index, error)
            continue
        labels.append(int(row["label"]))
        for c in names:
            columns[c].append(row[c])
    return images, np.asarray(labels, dtype=np.int64), columns


def evaluate_detector(
    detector: Any,
    split: Any,
    *,
    batch_size: int = 16,
    robustness: bool | Sequence[str] = True,
    max_images: int | None = None,
    decoded: tuple[list[Image.Image], np.ndarray, dict[str, list]] | None = None,
) -> dict[str, Any]:
    """The full report on one split: overall, per generator, per attribute, robustness.

    ``detector`` is a :class:`fakeface.modeling.inference.Detector` (or anything with
    its interface, e.g. the int8 fast path). ``split`` is a ``datasets``
    split with the face-dataset schema; ``decoded`` may pass
    :func:`decode_split`'s result instead to reuse decoded images.
    """
    images, labels, columns = decoded if decoded is not None else decode_split(split, max_images=max_images)
    decision: Decision = detector.decision
    threshold = decision.threshold_fake
    start = time.perf_counter()
    scores = detector.score_batches(images, batch_size=batch_size)
    seconds = time.perf_counter() - start
    report: dict[str, Any] = {
        "n": len(images),
        "settings": decision.to_cfg(),
        "overall": compute_metrics(labels, scores.p_fake, threshold),
        "overall_at_0.5": compute_metrics(labels, scores.p_fake, 0.5),
        "verdicts": verdict_counts(scores.verdicts),
        "images_per_second": len(images) / seconds if seconds > 0 else float("nan"),
        "per_generator": {},
        "per_attribute": {},
        "robustness": [],
    }
    if "generator" in columns:
        report["per_generator"] = compute_group_metrics(
            labels, scores.p_fake, columns["generator"], threshold, against_other_class=True
        )
    for name in ATTRIBUTE_COLUMNS:
        if name in columns and any(v is not None for v in columns[name]):
            report["per_attribute"][name] = compute_group_metrics(labels, scores.p_fake, columns[name], threshold)
    if robustness:
        conditions = tuple(ROBUSTNESS_CONDITIONS) if robustness is True else tuple(robustness)
        report["robustness"] = robustness_sweep(
            detector, images, labels, conditions, batch_size=batch_size, clean_logits=scores.logits
        )
    report["scores"] = {"labels": labels.tolist(), "p_fake": scores.p_fake.tolist(), "logits": scores.logits.tolist()}
    return report

