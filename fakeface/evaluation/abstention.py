"""When the model should abstain: the uncertain band, its confidently-wrong rate and coverage, and its choice.

A verdict is *confident* outside the band (``p < threshold_real`` -> "real",
``p >= threshold_fake`` -> "fake") and "uncertain" inside it. Two numbers say
what a band costs and buys on held-out images:

* **confidently wrong**: fakes called "real" plus reals called "fake", over
  *all* images (an abstention is never counted as wrong);
* **coverage**: the share of images given a confident verdict at all.

:func:`choose_abstention_band` widens a band until confidently-wrong is at most
a target (default 5 %) at the largest coverage that allows, and says honestly
when no band reaches the target. Calibration runs it on the validation split;
because that split holds the generators seen in training, a band measured on
held-out generator families can be given instead (:func:`load_abstention_band`),
and the release records which one it carries (``Decision.band_source``).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from fakeface.evaluation.metrics import _as_labels_and_scores
from fakeface.modeling.config import VALIDATION_SOURCE, VERDICT_POINT, clamp_thresholds
from fakeface.utils.constants import FAKE, REAL

DEFAULT_CONFIDENTLY_WRONG = 0.05


@dataclass(frozen=True)
class AbstentionRates:
    """What one band does on labelled images; rates are NaN where their denominator is empty."""

    threshold_real: float
    threshold_fake: float
    n: int
    confidently_wrong: float      # (fakes called real + reals called fake) / n
    coverage: float               # (called real + called fake) / n
    false_positive_rate: float    # reals called fake / reals
    false_negative_rate: float    # fakes called real / fakes
    fakes_caught: float           # fakes called fake / fakes
    uncertain_fraction: float     # 1 - coverage

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def abstention_rates(labels: Sequence[int], p_fake: Sequence[float], threshold_real: float,
                     threshold_fake: float) -> AbstentionRates:
    """Confidently-wrong rate and coverage (and the per-class rates) of one band on labelled images."""
    y, p = _as_labels_and_scores(labels, p_fake)
    called_fake, called_real = p >= threshold_fake, p < threshold_real
    reals, fakes = y == REAL, y == FAKE

    def share(part: np.ndarray, of: np.ndarray) -> float:
        return float(part.sum() / of.sum()) if of.any() else float("nan")

    everything = np.ones_like(reals)
    wrong = (called_fake & reals) | (called_real & fakes)
    return AbstentionRates(
        threshold_real=float(threshold_real), threshold_fake=float(threshold_fake), n=int(y.size),
        confidently_wrong=share(wrong, everything), coverage=share(called_fake | called_real, everything),
        false_positive_rate=share(called_fake & reals, reals), false_negative_rate=share(called_real & fakes, fakes),
        fakes_caught=share(called_fake & fakes, fakes),
        uncertain_fraction=share(~(called_fake | called_real), everything),
    )


@dataclass(frozen=True)
class AbstentionBand:
    """A chosen band, what it measured on the images it was chosen on, and whether it met its target.

    ``source`` names those images in words ("generators it never saw (...)");
    it becomes ``Decision.band_source`` and the app's reason for abstaining.
    ``met`` is False when no band reached the target (``notes`` says why):
    the band is then the best one found, and the release says the target was missed.
    """

    threshold_real: float
    threshold_fake: float
    source: str
    target: float = DEFAULT_CONFIDENTLY_WRONG
    confidently_wrong: float | None = None
    coverage: float | None = None
    n: int | None = None
    met: bool = True
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 <= self.threshold_real <= VERDICT_POINT <= self.threshold_fake <= 1.0:
            raise ValueError(f"an abstention band must satisfy 0 <= threshold_real <= {VERDICT_POINT} <= "
                             f"threshold_fake <= 1, got {self.threshold_real} / {self.threshold_fake}")
        if not self.source:
            raise ValueError("an abstention band must say where it was measured (source)")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "notes": list(self.notes)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "AbstentionBand":
        def optional(key: str, kind: type) -> Any:
            return None if data.get(key) is None else kind(data[key])

        return cls(threshold_real=float(data["threshold_real"]), threshold_fake=float(data["threshold_fake"]),
                   source=str(data["source"]), target=float(data.get("target", DEFAULT_CONFIDENTLY_WRONG)),
                   confidently_wrong=optional("confidently_wrong", float), coverage=optional("coverage", float),
                   n=optional("n", int), met=bool(data.get("met", True)), notes=tuple(data.get("notes") or ()))

    def decision_fields(self) -> dict[str, Any]:
        """The :class:`fakeface.modeling.config.Decision` fields that record this band."""
        return {"threshold_real": self.threshold_real, "threshold_fake": self.threshold_fake,
                "band_source": self.source, "band_target": self.target,
                "confidently_wrong": self.confidently_wrong, "coverage": self.coverage}

    def widened_to(self, threshold_real: float, threshold_fake: float) -> "AbstentionBand":
        """This band, widened where needed to contain (threshold_real, threshold_fake).

        Its measurements stay those of the narrower band it was measured as:
        widening can only lower both, so ``source`` says so.
        """
        lo, hi = min(self.threshold_real, threshold_real), max(self.threshold_fake, threshold_fake)
        if (lo, hi) == (self.threshold_real, self.threshold_fake):
            return self
        note = (f"widened from {self.threshold_real:.3f}–{self.threshold_fake:.3f} to {lo:.3f}–{hi:.3f} to contain the "
                "validation split's target-FPR thresholds; the measured rates are those of the narrower band "
                "(confidently wrong and coverage are at most these)")
        return replace(self, threshold_real=lo, threshold_fake=hi, notes=(*self.notes, note))


def load_abstention_band(path: str | Path) -> AbstentionBand:
    """A band chosen elsewhere (e.g. on the real-faces benchmark's held-out families), from its JSON file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return AbstentionBand.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"cannot read an abstention band from {Path(path).name}: {type(error).__name__}: {error}. "
                         "It must be JSON with threshold_real, threshold_fake and source (and optionally target, "
                         "confidently_wrong, coverage, n)") from None


def choose_abstention_band(
    labels: Sequence[int], p_fake: Sequence[float], target: float = DEFAULT_CONFIDENTLY_WRONG, *,
    start: tuple[float, float] = (VERDICT_POINT, VERDICT_POINT), min_coverage: float = 0.0,
    source: str = VALIDATION_SOURCE,
) -> AbstentionBand:
    """The band, no narrower than ``start``, with confidently-wrong <= ``target`` at the largest coverage.

    Every pair of candidate thresholds (each distinct score on its side of
    0.5, the start and the extremes) is tried in O(n log n): for each
    ``threshold_real`` the lowest ``threshold_fake`` whose errors fit the
    remaining budget. Chosen thresholds sit midway between neighbouring
    scores, so a score close to one seen here is decided the same way.
    ``met`` is False, with a note, when even the widest band has too many
    confident errors (scores of exactly 1.0 on reals) or when reaching the
    target leaves less than ``min_coverage``.
    """
    if not 0.0 <= target < 1.0:
        raise ValueError(f"the confidently-wrong target must be in [0, 1), got {target}")
    y, p = _as_labels_and_scores(labels, p_fake)
    start_real, start_fake = clamp_thresholds(*start)
    if y.size == 0:
        return AbstentionBand(start_real, start_fake, source, target, n=0, met=False,
                              notes=("no held-out images: the band could not be measured",))
    fakes, reals, scores = np.sort(p[y == FAKE]), np.sort(p[y == REAL]), np.sort(p)
    real_cands = np.unique(np.r_[0.0, p[p < start_real], start_real])     # p < t -> "real"
    fake_cands = np.unique(np.r_[p[p >= start_fake], start_fake, 1.0])   # p >= t -> "fake"
    errors_real = np.searchsorted(fakes, real_cands, "left")                              # fakes called real
    errors_fake = reals.size - np.searchsorted(reals, fake_cands, "left")                 # reals called fake
    covered_real = np.searchsorted(scores, real_cands, "left")
    covered_fake = y.size - np.searchsorted(scores, fake_cands, "left")
    allowed = math.floor(target * y.size + 1e-9)
    # errors_fake falls as threshold_fake rises: the first index within the budget is the widest coverage.
    j = np.searchsorted(-errors_fake, -(allowed - errors_real), "left")
    feasible = (errors_real <= allowed) & (j < fake_cands.size)
    if not feasible.any():
        rates = abstention_rates(y, p, 0.0, 1.0)
        return AbstentionBand(0.0, 1.0, source, target, rates.confidently_wrong, rates.coverage, rates.n, met=False,
                              notes=(f"no band reaches {100 * target:g} % confidently wrong: even abstaining below "
                                     f"p(fake) 1.0 leaves {100 * rates.confidently_wrong:.1f} % (reals scored 1.0)",))
    i_ok = np.flatnonzero(feasible)
    coverage = covered_real[i_ok] + covered_fake[j[i_ok]]
    errors = errors_real[i_ok] + errors_fake[j[i_ok]]
    best = i_ok[np.lexsort((errors, -coverage))[0]]                     # most coverage, then fewest errors
    lo = _midway_below(real_cands[best], scores, start_real)
    hi = max(_midway_below(fake_cands[j[best]], scores, start_fake), start_fake)
    rates = abstention_rates(y, p, lo, hi)
    band = AbstentionBand(lo, hi, source, target, rates.confidently_wrong, rates.coverage, rates.n)
    if rates.coverage < min_coverage:
        return replace(band, met=False, notes=(
            f"keeping confident errors at or below {100 * target:g} % leaves a confident verdict for only "
            f"{100 * rates.coverage:.1f} % of the images, below the required {100 * min_coverage:g} %",))
    return band


def _midway_below(threshold: float, scores: np.ndarray, start: float) -> float:
    """Midway between ``threshold`` and the highest score below it (same calls on these scores).

    The start itself is kept: moving off it would widen the band for nothing.
    """
    if threshold == start:
        return float(threshold)
    below = scores[scores < threshold]
    return float((below[-1] + threshold) / 2) if below.size else float(threshold)


def choose_confident_band(
    labels: Sequence[int], p_fake: Sequence[float], precision: float = 0.95, *, min_coverage: float = 0.0,
    source: str = VALIDATION_SOURCE,
) -> AbstentionBand:
    """The band at the largest coverage whose confident verdicts are right at least ``precision`` of the time.

    Where :func:`choose_abstention_band` bounds confident errors over *all* images (abstaining counts as not
    wrong), this bounds them over the confident verdicts alone: what a user reading "likely AI-generated" needs.
    Every pair of candidate thresholds is tried (a grid of at most n x n sums; fine for benchmark sizes).
    """
    if not 0.5 <= precision < 1.0:
        raise ValueError(f"precision must be in [0.5, 1), got {precision}")
    y, p = _as_labels_and_scores(labels, p_fake)
    if y.size == 0:
        return AbstentionBand(VERDICT_POINT, VERDICT_POINT, source, 1 - precision, n=0, met=False,
                              notes=("no held-out images: the band could not be measured",))
    fakes, reals, scores = np.sort(p[y == FAKE]), np.sort(p[y == REAL]), np.sort(p)
    real_cands = np.unique(np.r_[0.0, p[p < VERDICT_POINT], VERDICT_POINT])
    fake_cands = np.unique(np.r_[p[p >= VERDICT_POINT], VERDICT_POINT, np.nextafter(1.0, 2.0)])
    errors = (np.searchsorted(fakes, real_cands, "left")[:, None]
              + (reals.size - np.searchsorted(reals, fake_cands, "left"))[None, :])
    covered = (np.searchsorted(scores, real_cands, "left")[:, None]
               + (y.size - np.searchsorted(scores, fake_cands, "left"))[None, :])
    ok = errors <= (1 - precision) * covered + 1e-9
    i, j = np.unravel_index(np.lexsort((errors.ravel(), -np.where(ok, covered, -1).ravel()))[0], ok.shape)
    lo = _midway_below(real_cands[i], scores, VERDICT_POINT)
    hi = min(1.0, max(_midway_below(fake_cands[j], scores, VERDICT_POINT), VERDICT_POINT))
    rates = abstention_rates(y, p, lo, hi)
    note = f"chosen so that at least {100 * precision:g} % of confident verdicts are right"
    band = AbstentionBand(lo, hi, source, 1 - precision, rates.confidently_wrong, rates.coverage, rates.n,
                          notes=(note,))
    if rates.coverage < min_coverage:
        return replace(band, met=False, notes=(note, (
            f"that leaves a confident verdict for only {100 * rates.coverage:.1f} % of the images, below the "
            f"required {100 * min_coverage:g} %")))
    return band
