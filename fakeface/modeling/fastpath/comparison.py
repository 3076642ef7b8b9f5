"""How far the int8 detector is from fp32 on labelled images: AUC, |Δp|, verdict agreement, speed."""
from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
from PIL import Image

from fakeface.modeling.inference import Detector


def _roc_auc(labels: np.ndarray, p_fake: np.ndarray) -> float:
    """ROC-AUC (fake positive); NaN with one class only, which the export reads as "not measured"."""
    from sklearn.metrics import roc_auc_score   # on first use: serving never compares

    return float(roc_auc_score(labels, p_fake)) if len(np.unique(labels)) == 2 else float("nan")


def compare_detectors(reference: Detector, candidate: Detector, images: Sequence[Image.Image],
                      labels: Sequence[int] | None = None, *, batch_size: int = 16,
                      reference_scores: tuple[Any, float] | None = None) -> dict[str, Any]:
    """How far ``candidate`` is from ``reference`` on ``images``: AUC, |Δp|, verdict agreement, speed.

    ``reference_scores`` = (Scores, seconds) from an earlier call reuses the
    reference's scoring (see :func:`score_timed`).
    """
    ref, ref_seconds = reference_scores or score_timed(reference, images, batch_size)
    start = time.perf_counter()
    new = candidate.score_batches(images, batch_size)
    new_seconds = time.perf_counter() - start
    diff = np.abs(ref.p_fake - new.p_fake)
    result: dict[str, Any] = {
        "images": len(images),
        "max_abs_dp": float(diff.max()) if len(diff) else 0.0,
        "mean_abs_dp": float(diff.mean()) if len(diff) else 0.0,
        "verdict_agreement": float(np.mean([a == b for a, b in zip(ref.verdicts, new.verdicts)])) if len(diff) else 1.0,
        "ms_per_image_fp32": 1000 * ref_seconds / max(1, len(images)),
        "ms_per_image_int8": 1000 * new_seconds / max(1, len(images)),
    }
    if labels is not None:
        labels = np.asarray(labels)
        result["auc_fp32"] = _roc_auc(labels, ref.p_fake)
        result["auc_int8"] = _roc_auc(labels, new.p_fake)
        result["auc_drop"] = result["auc_fp32"] - result["auc_int8"]
    return result


def score_timed(detector: Detector, images: Sequence[Image.Image], batch_size: int = 16) -> tuple[Any, float]:
    """(Scores, seconds) of ``detector.score_batches``."""
    start = time.perf_counter()
    scores = detector.score_batches(images, batch_size)
    return scores, time.perf_counter() - start
