"""From decoded images to calibrated verdicts: the one scoring path.

Training's validation, ``scripts/evaluate.py``, the app and the benchmark all
score through :class:`Detector`, so the crop averaging, temperature and
thresholds are applied identically everywhere.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from fakeface.utils.constants import FAKE, LABEL_NAMES
from fakeface.modeling.detector import detector_settings, load_detector
from fakeface.data.preprocess import Preprocessing, build_eval_transform, resolve_preprocessing

VERDICT_UNCERTAIN = "uncertain"


def logits_from_crops(model: nn.Module, crops: torch.Tensor) -> torch.Tensor:
    """(N, K, C, H, W) crops -> (N, num_classes) logits averaged over the K crops."""
    n, k = crops.shape[:2]
    logits = model(crops.flatten(0, 1))                 # (N*K, num_classes)
    return logits.view(n, k, -1).mean(dim=1)


def fake_probability(logits: torch.Tensor | np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Temperature-scaled softmax probability of the ``fake`` class, shape (N,)."""
    logits = torch.as_tensor(logits, dtype=torch.float32)
    return torch.softmax(logits / float(temperature), dim=-1)[..., FAKE].numpy()


def decide(p_fake: float, threshold_fake: float, threshold_real: float) -> str:
    """"fake" at or above ``threshold_fake``, "real" below ``threshold_real``, else "uncertain"."""
    if p_fake >= threshold_fake:
        return LABEL_NAMES[FAKE]
    if p_fake < threshold_real:
        return LABEL_NAMES[1 - FAKE]
    return VERDICT_UNCERTAIN


@dataclass(frozen=True)
class Scores:
    logits: np.ndarray     # (N, 2), crop-averaged, before temperature
    p_fake: np.ndarray     # (N,), calibrated
    verdicts: list[str]


class Detector:
    """A loaded model together with its preprocessing and decision settings."""

    def __init__(self, model: nn.Module):
        self.model = model.eval()
        self.preprocessing: Preprocessing = resolve_preprocessing(model)
        self.transform = build_eval_transform(self.preprocessing)

    @classmethod
    def from_pretrained(cls, source: str, **kwargs) -> "Detector":
        return cls(load_detector(source, **kwargs))

    @property
    def settings(self) -> dict:
        return detector_settings(self.model)

    def prepare(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Decoded images -> (N, K, C, H, W) input tensor."""
        return torch.stack([self.transform(image) for image in images])

    @torch.inference_mode()
    def logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        return logits_from_crops(self.model, self.prepare(images)).float().numpy()

    def scores_from_logits(self, logits: np.ndarray) -> Scores:
        s = self.settings
        p_fake = fake_probability(logits, s["temperature"])
        verdicts = [decide(float(p), s["threshold_fake"], s["threshold_real"]) for p in p_fake]
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
