"""Calibration on validation logits: the temperature, the target-FPR thresholds, the uncertain band.

:func:`calibrate` fits the temperature (scipy), picks the thresholds at a
target false-positive rate (:func:`choose_thresholds`), keeps them on either
side of p(fake) 0.5 (a verdict never contradicts its number) and widens the
uncertain band until at most 5 % of the images get a confident wrong verdict
(:mod:`fakeface.evaluation.abstention`), or takes a band measured elsewhere.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from fakeface.evaluation.abstention import (
    DEFAULT_CONFIDENTLY_WRONG, AbstentionBand, abstention_rates, choose_abstention_band,
)
from fakeface.evaluation.metrics import _as_labels_and_scores, expected_calibration_error
from fakeface.modeling.config import Decision, clamp_thresholds
from fakeface.utils.constants import FAKE, LABEL_NAMES, REAL

DEFAULT_TARGET_FPR = 0.05
# Temperatures are kept within this range: on perfectly separated validation
# data the likelihood keeps improving as T -> 0, which would only make the
# app's probabilities overconfident.
TEMPERATURE_RANGE = (0.05, 20.0)


# --------------------------------------------------------------------------- temperature

def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def platt_targets(labels: np.ndarray) -> np.ndarray:
    """Soft (N, 2) targets: fakes -> (n_fake+1)/(n_fake+2), reals -> 1/(n_real+2) (Platt 1999).

    With hard 0/1 targets, a validation split the model separates perfectly
    pulls the temperature to zero (probabilities of exactly 0 and 1). Platt's
    out-of-sample targets give the fit a finite optimum and barely change it
    otherwise.
    """
    y = np.asarray(labels).astype(np.int64).ravel()
    n_fake, n_real = int((y == FAKE).sum()), int((y == REAL).sum())
    p_fake = np.where(y == FAKE, (n_fake + 1) / (n_fake + 2), 1 / (n_real + 2))
    targets = np.empty((y.size, 2))
    targets[:, FAKE], targets[:, REAL] = p_fake, 1 - p_fake
    return targets


def _nll(logits: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    return float(-(targets * _log_softmax(logits / temperature)).sum(axis=1).mean())


def fit_temperature(logits: Sequence[Sequence[float]], labels: Sequence[int]) -> float:
    """Temperature T minimising the cross-entropy of softmax(logits / T) (Guo et al. 2017).

    The targets are Platt's (:func:`platt_targets`), so a perfectly separated
    validation split still gives a finite T. The loss is convex in 1/T, hence
    unimodal in log T, so scipy's bounded scalar search over log T finds
    the optimum, within ``TEMPERATURE_RANGE``; single-class inputs give T = 1.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64).ravel()
    if z.ndim != 2 or z.shape[0] != y.size:
        raise ValueError(f"logits must be (N, {len(LABEL_NAMES)}) matching {y.size} labels, got {z.shape}")
    if y.size == 0 or np.unique(y).size < 2:
        return 1.0
    targets = platt_targets(y)
    lo, hi = (math.log(t) for t in TEMPERATURE_RANGE)
    fit = minimize_scalar(lambda log_t: _nll(z, targets, math.exp(log_t)), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-10})
    return float(math.exp(fit.x))


# --------------------------------------------------------------------------- target-FPR thresholds

def _threshold_above(values: np.ndarray, allowed: int, all_scores: np.ndarray) -> float:
    """Smallest threshold t with at most ``allowed`` of ``values`` >= t, placed midway to the next score."""
    ranked = np.sort(values)[::-1]
    if allowed >= ranked.size:
        return float(np.min(all_scores)) if all_scores.size else 0.0
    must_reject = ranked[allowed]
    higher = all_scores[all_scores > must_reject]
    if higher.size:
        return float((must_reject + higher.min()) / 2)
    return float(np.nextafter(must_reject, np.inf))


@dataclass(frozen=True)
class ThresholdChoice:
    """What :func:`choose_thresholds` chose, and its error rates on the validation data it chose them on.

    The rates are None when the validation data has a single class (then both
    thresholds are the default 0.5 and ``notes`` says why).
    """

    threshold_fake: float
    threshold_real: float
    target_fpr: float
    target_fnr: float
    fpr_at_threshold: float | None = None
    tpr_at_threshold: float | None = None
    fnr_at_threshold_real: float | None = None
    uncertain_fraction: float | None = None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """For reports (JSON): the rates only when measured."""
        out = {k: v for k, v in asdict(self).items() if v is not None}
        out["notes"] = list(self.notes)
        return out


def choose_thresholds(
    labels: Sequence[int],
    p_fake: Sequence[float],
    target_fpr: float = DEFAULT_TARGET_FPR,
    uncertain_band: float | None = None,
) -> ThresholdChoice:
    """Decision thresholds chosen on validation data.

    ``threshold_fake``: the lowest threshold at which at most ``target_fpr`` of
    the real images are called fake. ``threshold_real``: the highest threshold
    at which at most ``uncertain_band`` (default: ``target_fpr``) of the fakes
    are called real. Scores in between are "uncertain": neither verdict meets
    its error target there. When the classes separate well the band is empty
    (``threshold_real == threshold_fake``).
    """
    y, p = _as_labels_and_scores(labels, p_fake)
    if not 0.0 <= target_fpr < 1.0:
        raise ValueError(f"target_fpr must be in [0, 1), got {target_fpr}")
    target_fnr = target_fpr if uncertain_band is None else float(uncertain_band)
    if not 0.0 <= target_fnr < 1.0:
        raise ValueError(f"uncertain_band must be in [0, 1), got {uncertain_band}")
    reals, fakes = p[y == REAL], p[y == FAKE]
    if reals.size == 0 or fakes.size == 0:
        return ThresholdChoice(0.5, 0.5, float(target_fpr), float(target_fnr),
                               notes=("validation data has a single class: kept the default 0.5 threshold",))
    t_fake = _threshold_above(reals, int(math.floor(target_fpr * reals.size + 1e-9)), p)
    # Mirror image for the fakes: at most k fakes strictly below threshold_real.
    k = int(math.floor(target_fnr * fakes.size + 1e-9))
    t_real = -_threshold_above(-fakes, k, -p)
    t_real = min(t_real, t_fake)
    return ThresholdChoice(
        threshold_fake=float(t_fake),
        threshold_real=float(t_real),
        target_fpr=float(target_fpr),
        target_fnr=float(target_fnr),
        fpr_at_threshold=float(np.mean(reals >= t_fake)),
        tpr_at_threshold=float(np.mean(fakes >= t_fake)),
        fnr_at_threshold_real=float(np.mean(fakes < t_real)),
        uncertain_fraction=float(np.mean((p < t_fake) & (p >= t_real))),
    )


# --------------------------------------------------------------------------- calibrate

def calibrate(
    logits: np.ndarray, labels: Sequence[int], *, target_fpr: float = DEFAULT_TARGET_FPR,
    uncertain_band: float | None = None, confidently_wrong_target: float = DEFAULT_CONFIDENTLY_WRONG,
    band: AbstentionBand | None = None,
) -> Decision:
    """A new calibrated :class:`Decision` fitted on validation logits: temperature, thresholds, band.

    The target-FPR thresholds are clamped to either side of 0.5 and are the
    narrowest band allowed; :func:`choose_abstention_band` widens it on the
    validation split until confidently-wrong <= ``confidently_wrong_target``.
    ``band`` (e.g. measured on held-out generator families) replaces that
    choice; it is widened, if needed, to contain the target-FPR thresholds.
    Nothing is written anywhere: the caller stores it (``set_decision(model, decision)``)
    and scores with ``detector.with_decision(decision)``.
    """
    temperature = fit_temperature(logits, labels)
    p_fake = Decision(temperature=temperature).p_fake(logits)
    thresholds = choose_thresholds(labels, p_fake, target_fpr, uncertain_band)
    start = clamp_thresholds(thresholds.threshold_real, thresholds.threshold_fake)
    if band is None:
        band = choose_abstention_band(labels, p_fake, confidently_wrong_target, start=start)
    else:
        band = band.widened_to(*start)
    return Decision(temperature=temperature, target_fpr=float(target_fpr), calibrated=True, **band.decision_fields())


def calibration_report(
    logits: np.ndarray, labels: Sequence[int], decision: Decision, *, uncertain_band: float | None = None,
) -> dict[str, Any]:
    """What a calibration did on its validation split.

    ``thresholds``: the target-FPR choice before clamping and widening;
    ``abstention``: what the decision's final band does on validation
    (confidently wrong, coverage, per-class rates); ECE before and after.
    """
    p_fake = decision.p_fake(logits)
    target_fpr = DEFAULT_TARGET_FPR if decision.target_fpr is None else decision.target_fpr
    return {
        **decision.to_cfg(),
        "thresholds": choose_thresholds(labels, p_fake, target_fpr, uncertain_band).to_dict(),
        "abstention": abstention_rates(labels, p_fake, decision.threshold_real, decision.threshold_fake).to_dict(),
        "validation_ece_before": expected_calibration_error(labels, Decision().p_fake(logits)),
        "validation_ece_after": expected_calibration_error(labels, p_fake),
    }
