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


@dataclass(frozen=True)
class Decision:
    """How crop-averaged logits become a calibrated p(fake) and a verdict.

    Until calibration (:func:`fakeface.evaluation.metrics.calibrate`) the
    probabilities are the raw softmax and the threshold is the plain argmax.
    Calibration returns a new ``Decision``; it never mutates one.
    """

    temperature: float = 1.0
    threshold_fake: float = 0.5     # p(fake) >= this -> "fake"
    threshold_real: float = 0.5     # p(fake) <  this -> "real"; in between -> "uncertain"
    target_fpr: float | None = None
    calibrated: bool = False

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0.0 <= self.threshold_real <= self.threshold_fake <= 1.0:
            raise ValueError(
                f"thresholds must satisfy 0 <= threshold_real <= threshold_fake <= 1, "
                f"got {self.threshold_real} / {self.threshold_fake}"
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

    def to_cfg(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_cfg(cls, block: Mapping[str, Any] | None) -> "Decision":
        block = block or {}
        default = cls()
        target = block.get("target_fpr", default.target_fpr)
        return cls(
            temperature=float(block.get("temperature", default.temperature)),
            threshold_fake=float(block.get("threshold_fake", default.threshold_fake)),
            threshold_real=float(block.get("threshold_real", default.threshold_real)),
            target_fpr=None if target is None else float(target),
            calibrated=bool(block.get("calibrated", default.calibrated)),
        )


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
