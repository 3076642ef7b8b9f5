"""What a saved detector says about itself beyond its weights, resolved in one place.

:func:`resolve_detector_config` reads a model (its ``pretrained_cfg``) or a
``config.json`` dict and returns a frozen :class:`DetectorConfig`: the
preprocessing, the decision settings and the face crop. Training, evaluation,
the app and scans all go through it, so none of them reads a setting by
string key or carries its own default.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

import numpy as np

from fakeface.data.preprocess import Preprocessing, resolve_preprocessing
from fakeface.faces.crop import FaceCrop
from fakeface.faces.graph import FaceGraph
from fakeface.utils.constants import FAKE, LABEL_NAMES

FAKEFACE_KEY = "fakeface"          # the block of config.json that timm has no field for
FACE_CROP_KEY = "face_crop"        # inside that block
FACE_DETECTOR_KEY = "face_detector"  # inside that block: the bundled face graph's FaceGraphRecord
VERDICT_UNCERTAIN = "uncertain"


# A verdict must never contradict the p(fake) shown beside it: "fake" only at
# p(fake) >= 0.5, "real" only below. Calibration's thresholds may shape the
# uncertain band around this point but never cross it.
VERDICT_POINT = 0.5
# Decision.band_source when calibration chose the band on the validation split: in-distribution, so
# the card warns that unseen generators will do worse.
VALIDATION_SOURCE = "the validation split (generators seen in training)"


@dataclass(frozen=True)
class Decision:
    """How crop-averaged logits become a calibrated p(fake) and a verdict.

    Until calibration (:func:`fakeface.evaluation.calibration.calibrate`) the
    probabilities are the raw softmax and the threshold is the plain argmax.
    Calibration returns a new ``Decision``; it never mutates one.

    ``threshold_real <= 0.5 <= threshold_fake`` always holds, so "fake" comes
    only with p(fake) >= 0.5 and "real" only below it. Between the two
    thresholds the model abstains ("uncertain"). The ``band_*`` fields say
    where that band was chosen and what it measured there:
    ``confidently_wrong`` is the share of those images given a confident
    wrong verdict (fakes called real plus reals called fake, over all of
    them), ``coverage`` the share given a confident verdict at all.
    """

    temperature: float = 1.0
    threshold_fake: float = 0.5     # p(fake) >= this -> "fake"
    threshold_real: float = 0.5     # p(fake) <  this -> "real"; in between -> "uncertain"
    target_fpr: float | None = None
    calibrated: bool = False
    band_source: str | None = None          # the held-out images the band was chosen on, in words
    band_target: float | None = None        # the confidently-wrong rate it was chosen for
    confidently_wrong: float | None = None  # measured on band_source
    coverage: float | None = None           # measured on band_source
    threshold_note: str | None = None       # set when stored thresholds were clamped at load

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.threshold_real <= VERDICT_POINT <= self.threshold_fake <= 1.0:
            raise ValueError(
                f"thresholds must satisfy 0 <= threshold_real <= {VERDICT_POINT} <= threshold_fake <= 1 "
                f"(a verdict may not contradict its p(fake)), got {self.threshold_real} / {self.threshold_fake}; "
                "clamp_thresholds() makes such a pair"
            )

    def p_fake(self, logits: Any) -> np.ndarray:
        """(N, 2) logits -> (N,) temperature-scaled softmax probability of ``fake``."""
        z = np.asarray(logits, dtype=np.float64) / float(self.temperature)
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return (e[..., FAKE] / e.sum(axis=-1)).astype(np.float32)

    def verdict(self, p_fake: float) -> str:
        """"fake" at or above ``threshold_fake``, "real" below ``threshold_real``, else "uncertain"."""
        if p_fake >= self.threshold_fake:
            return LABEL_NAMES[FAKE]
        if p_fake < self.threshold_real:
            return LABEL_NAMES[1 - FAKE]
        return VERDICT_UNCERTAIN

    def reason(self, p_fake: float | None) -> str | None:
        """Why ``p_fake`` gets its verdict, in words for the app and the JSON (None without a score)."""
        if p_fake is None:
            return None
        p, lo, hi = (f"{float(v):.2f}" for v in (p_fake, self.threshold_real, self.threshold_fake))
        verdict = self.verdict(float(p_fake))
        if verdict == LABEL_NAMES[FAKE]:
            return f"p(fake) {p} is at or above the model's fake threshold {hi}."
        if verdict != VERDICT_UNCERTAIN:
            return f"p(fake) {p} is below the model's real threshold {lo}."
        if self.band_source:
            why = f"where this model was wrong too often on {self.band_source}"
        elif self.threshold_note:   # an old release whose thresholds crossed 0.5 (see from_cfg)
            why = "where this release's stored thresholds would give a verdict that contradicts its p(fake)"
        else:   # a release from before the band was measured: the target-FPR thresholds alone
            why = "where neither verdict met its error target on validation data"
        return f"p(fake) {p} lies in the band {lo}–{hi} {why}; it abstains rather than guess."

    def to_cfg(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_cfg(cls, block: Mapping[str, Any] | None) -> "Decision":
        """Read a config block; old releases load too (missing fields take defaults, crossing thresholds clamp)."""
        block = block or {}
        default = cls()

        def optional(key: str, kind: type) -> Any:
            value = block.get(key, getattr(default, key))
            return None if value is None else kind(value)

        t_real, t_fake = float(block.get("threshold_real", default.threshold_real)), float(
            block.get("threshold_fake", default.threshold_fake))
        clamped_real, clamped_fake = clamp_thresholds(t_real, t_fake)
        note = optional("threshold_note", str)
        if (clamped_real, clamped_fake) != (t_real, t_fake):
            note = (f"stored thresholds {t_real:.4g} (real) / {t_fake:.4g} (fake) cross p(fake) {VERDICT_POINT}; "
                    f"read as {clamped_real:.4g} / {clamped_fake:.4g} so that no verdict contradicts its p(fake)")
        return cls(
            temperature=float(block.get("temperature", default.temperature)),
            threshold_fake=clamped_fake,
            threshold_real=clamped_real,
            target_fpr=optional("target_fpr", float),
            calibrated=bool(block.get("calibrated", default.calibrated)),
            band_source=optional("band_source", str),
            band_target=optional("band_target", float),
            confidently_wrong=optional("confidently_wrong", float),
            coverage=optional("coverage", float),
            threshold_note=note,
        )


def clamp_thresholds(threshold_real: float, threshold_fake: float) -> tuple[float, float]:
    """(threshold_real, threshold_fake) moved, if needed, to either side of p(fake) 0.5.

    A threshold_fake of 0.2 would call p(fake) 0.397 "likely AI-generated"
    beside "39.7 % probability of being AI-generated"; clamped, that score
    falls in the uncertain band instead. Thresholds already on their side are
    kept as they are.
    """
    return min(float(threshold_real), VERDICT_POINT), max(float(threshold_fake), VERDICT_POINT)


@dataclass(frozen=True)
class DetectorConfig:
    """Everything besides the weights that decides a detector's output."""

    preprocessing: Preprocessing
    decision: Decision = Decision()
    face_crop: FaceCrop | None = None   # None: no face stage, the whole image is scored

    def with_decision(self, decision: Decision) -> "DetectorConfig":
        return replace(self, decision=decision)


def _fakeface_block(model_or_cfg: Any) -> dict[str, Any]:
    if isinstance(model_or_cfg, Mapping):
        cfg = model_or_cfg.get("pretrained_cfg", model_or_cfg)
        return dict(model_or_cfg.get(FAKEFACE_KEY) or cfg.get(FAKEFACE_KEY) or {})
    return dict((getattr(model_or_cfg, "pretrained_cfg", None) or {}).get(FAKEFACE_KEY) or {})


def resolve_detector_config(model_or_cfg: Any) -> DetectorConfig:
    """The model's preprocessing, decision and face crop, from a timm model or a config dict."""
    block = _fakeface_block(model_or_cfg)
    face_crop = FaceCrop.from_cfg(block.get(FACE_CROP_KEY))
    # load_detector resolved which face graph this release runs (its own copy, or the package's)
    graph = getattr(model_or_cfg, "fakeface_face_graph", None)
    if face_crop is not None and isinstance(graph, FaceGraph):
        face_crop = replace(face_crop, graph=graph)
    return DetectorConfig(
        preprocessing=resolve_preprocessing(model_or_cfg),
        decision=Decision.from_cfg(block),
        face_crop=face_crop,
    )


def resolve_decision(model_or_cfg: Any) -> Decision:
    return resolve_detector_config(model_or_cfg).decision
