"""From decoded images to calibrated verdicts: the one scoring path.

Training's validation, ``scripts/evaluate.py``, the app and the benchmark all
score through :class:`Detector`, so the crop averaging, temperature and
thresholds are applied identically everywhere. A ``Detector`` resolves the
model's :class:`~fakeface.modeling.config.DetectorConfig` once, at
construction; a new decision (calibration) gives a new ``Detector``
(:meth:`Detector.with_decision`).
"""
from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from fakeface.data.preprocess import Preprocessing, build_eval_arrays, build_eval_transform
from fakeface.faces.crop import FaceCrop
from fakeface.modeling.config import FAKEFACE_KEY, Decision, DetectorConfig, resolve_detector_config
from fakeface.modeling.detector import load_detector
from fakeface.utils.constants import LABEL_NAMES

if TYPE_CHECKING:   # torch loads with the first torch model, not with this module (the int8 path never needs it)
    import torch
    from torch import nn


def logits_from_crops(model: nn.Module, crops: torch.Tensor) -> torch.Tensor:
    """(N, K, C, H, W) crops -> (N, num_classes) logits averaged over the K crops."""
    n, k = crops.shape[:2]
    logits = model(crops.flatten(0, 1))                 # (N*K, num_classes)
    return logits.view(n, k, -1).mean(dim=1)


def fake_probability(logits: torch.Tensor | np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Temperature-scaled softmax probability of the ``fake`` class, shape (N,) (see :meth:`Decision.p_fake`)."""
    torch = sys.modules.get("torch")   # a torch tensor exists only once torch is imported
    if torch is not None and isinstance(logits, torch.Tensor):
        logits = logits.detach().float().cpu().numpy()
    return Decision(temperature=float(temperature)).p_fake(logits)


class StaleDetectorError(RuntimeError):
    """The model's decision changed after this Detector was built; scoring would use the old thresholds."""


@dataclass(frozen=True)
class Scores:
    logits: np.ndarray     # (N, 2), crop-averaged, before temperature
    p_fake: np.ndarray     # (N,), calibrated
    verdicts: list[str]
    # A panel's (fakeface.modeling.panel): each expert's own p(fake) (name -> (N,)) and one sentence per verdict
    # on which evidence decided it; None for a single-model release.
    experts: Mapping[str, np.ndarray] | None = None
    evidence: list[str] | None = None


def _model_decision(model: nn.Module) -> Decision:
    return Decision.from_cfg((getattr(model, "pretrained_cfg", None) or {}).get(FAKEFACE_KEY))


class Detector:
    """A loaded model together with its resolved preprocessing, decision and face crop."""

    def __init__(self, model: nn.Module, config: DetectorConfig | None = None):
        self.model = model.eval()
        self.config: DetectorConfig = config or resolve_detector_config(model)
        self.preprocessing: Preprocessing = self.config.preprocessing
        self.transform = build_eval_transform(self.preprocessing)
        self.arrays = build_eval_arrays(self.preprocessing)
        # What the model carried when this Detector was built: if that changes later
        # (set_decision after calibration), scoring with the old thresholds would be silent.
        self._built_from = _model_decision(model)

    @classmethod
    def from_pretrained(cls, source: str, **kwargs) -> "Detector":
        return cls(load_detector(source, **kwargs))

    @property
    def decision(self) -> Decision:
        return self.config.decision

    @property
    def face_crop(self) -> FaceCrop | None:
        """The face-crop definition, or None: no face stage, the whole image is scored."""
        return self.config.face_crop

    @property
    def release(self) -> Any:
        """What carries the release's config (``pretrained_cfg``, ``fakeface_files``, ``fakeface_face_graph``):
        the model, or for an int8 detector loaded before its model, its ReleaseConfig (reading it builds nothing)."""
        return self.model

    def with_decision(self, decision: Decision) -> "Detector":
        """The same detector (same model, preprocessing, runtime) deciding with ``decision``."""
        new = copy.copy(self)
        new.config = self.config.with_decision(decision)
        return new

    def _check_fresh(self) -> None:
        current = _model_decision(self.model)
        if current != self._built_from and current != self.decision:
            raise StaleDetectorError(
                "the model's decision changed after this Detector was built; "
                "use detector.with_decision(decision) or build a new Detector(model)"
            )

    def prepare(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Decoded images -> (N, K, C, H, W) input tensor."""
        import torch

        return torch.stack([self.transform(image) for image in images])

    def prepare_arrays(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Decoded images -> (N, K, C, H, W) float32 array: :meth:`prepare`'s values, without torch."""
        return np.stack([self.arrays(image) for image in images])

    def logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return logits_from_crops(self.model, self.prepare(images)).float().numpy()

    def scores_from_logits(self, logits: np.ndarray) -> Scores:
        self._check_fresh()
        p_fake = self.decision.p_fake(logits)
        verdicts = [self.decision.verdict(float(p)) for p in p_fake]
        return Scores(np.asarray(logits), p_fake, verdicts)

    def score(self, images: Sequence[Image.Image]) -> Scores:
        return self.scores_from_logits(self.logits(images))

    def score_batches(self, images: Iterable[Image.Image], batch_size: int = 16) -> Scores:
        """Score an iterable of images in batches (bounded memory)."""
        chunks, batch = [], []
        for image in images:
            batch.append(image)
            if len(batch) == batch_size:
                chunks.append(self.logits(batch))
                batch = []
        if batch:
            chunks.append(self.logits(batch))
        logits = np.concatenate(chunks) if chunks else np.zeros((0, len(LABEL_NAMES)), np.float32)
        return self.scores_from_logits(logits)
