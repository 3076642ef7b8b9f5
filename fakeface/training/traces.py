"""Trace experts: trained on real faces and their self-made twins only, so no generated face is ever seen.

A twin differs from its real only by what made it (a latent decoder, an upsampler, a re-upsampling kernel), so
the one thing that tells the pair apart is that maker's pixel trace. The recipe follows the aligned-dataset
detectors (Rajan et al.; B-Free): native resolution and no early downsampling (a stride-1 stem, so the first
layer sees every pixel), and a real and its twin in the same batch under the same crop, flip and JPEG (synced
augmentation: nothing but the trace differs inside a pair). The twins come from :mod:`fakeface.data.twins`
(TAEF2, Real-ESRGAN, and NPR-style re-upsampling with nearest, bilinear and transposed-convolution kernels).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from fakeface.data.preprocess import jpeg_roundtrip

__all__ = ["TraceSettings", "TracePair", "create_trace_model", "train_trace_expert"]

@dataclass
class TracePair:
    """A real face window and its twins (same size), each made from exactly that window."""
    real: Image.Image
    twins: list[Image.Image] = field(default_factory=list)


@dataclass(frozen=True)
class TraceSettings:
    model: str = "mobilenetv2_100"
    crop: int = 64                 # native-resolution crop side, never resized (stride-1 stem: costs like 128 px)
    stem_stride: int = 1           # 1: no early downsampling
    epochs: int = 8
    pairs_per_batch: int = 16      # a batch is these reals and one twin of each
    lr: float = 1e-3
    weight_decay: float = 0.02
    jpeg_prob: float = 0.3         # synced: a pair is re-encoded at one quality, so JPEG alone never tells them apart
    jpeg_quality: tuple[int, int] = (70, 98)
    test_crops: int = 5
    seed: int = 0
    threads: int | None = None


def _synced_views(pair: TracePair, crop: int, settings: TraceSettings, rng: random.Random
                  ) -> tuple[np.ndarray, np.ndarray]:
    """The real and one random twin under one crop box, one flip and one JPEG quality."""
    twin = rng.choice(pair.twins)
    real = pair.real.convert("RGB")
    w, h = real.size
    if min(w, h) < crop:                       # small faces: enlarged (both alike) to cover the crop
        scale = crop / min(w, h)
        size = (max(crop, round(w * scale)), max(crop, round(h * scale)))
        real, twin = real.resize(size, Image.Resampling.BICUBIC), twin.resize(size, Image.Resampling.BICUBIC)
        w, h = size
    x, y = rng.randint(0, w - crop), rng.randint(0, h - crop)
    box = (x, y, x + crop, y + crop)
    views = [real.crop(box), twin.convert("RGB").crop(box)]
    if rng.random() < 0.5:
        views = [v.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for v in views]
    if rng.random() < settings.jpeg_prob:
        quality = rng.randint(*settings.jpeg_quality)
        views = [jpeg_roundtrip(v, quality) for v in views]
    return np.asarray(views[0]), np.asarray(views[1])


def create_trace_model(settings: TraceSettings):
    """A detector from the offline ImageNet start with native crops, its stem at ``stem_stride``, head at zero."""
    import torch

    from fakeface.data.preprocess import Preprocessing
    from fakeface.modeling.detector import create_detector, resolve_normalisation, set_stem_stride

    mean, std = resolve_normalisation(settings.model, True, None)
    pp = Preprocessing(input_size=(3, settings.crop, settings.crop), mean=mean, std=std,
                       crop_protocol="native-crops", num_test_crops=settings.test_crops)
    model = create_detector(settings.model, preprocessing=pp, pretrained=True)
    set_stem_stride(model, settings.stem_stride)
    with torch.no_grad():
        for parameter in model.get_classifier().parameters():
            parameter.zero_()
    return model, pp


def train_trace_expert(pairs: Sequence[TracePair], settings: TraceSettings = TraceSettings(),
                       log: Callable[[str], None] | None = None) -> tuple[Any, dict[str, Any]]:
    """Train on (real, twin) pairs; returns (the timm model in eval mode, facts for the card and the results)."""
    import torch

    from fakeface.data.preprocess import _to_normalized_tensor

    pairs = [p for p in pairs if p.twins]
    if not pairs:
        raise ValueError("a trace expert needs real faces with at least one twin each")
    torch.manual_seed(settings.seed)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    model, pp = create_trace_model(settings)
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=settings.lr)
    steps = settings.epochs * -(-len(pairs) // settings.pairs_per_batch)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=settings.lr, total_steps=steps,
                                                    pct_start=0.1)
    rng = random.Random(settings.seed)
    start, losses = time.perf_counter(), []
    model.train()
    for epoch in range(settings.epochs):
        order = list(range(len(pairs)))
        rng.shuffle(order)
        for i in range(0, len(order), settings.pairs_per_batch):
            chunk = order[i:i + settings.pairs_per_batch]
            views = [_synced_views(pairs[j], settings.crop, settings, rng) for j in chunk]
            x = _to_normalized_tensor([v[0] for v in views] + [v[1] for v in views], pp)
            y = torch.tensor([0] * len(chunk) + [1] * len(chunk))      # reals first, then their twins
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
        if log:
            log(f"trace expert epoch {epoch + 1}/{settings.epochs}: loss {np.mean(losses[-20:]):.4f} "
                f"({time.perf_counter() - start:.0f} s)")
    model.eval()
    seconds = time.perf_counter() - start
    facts = {"recipe": "trace-expert", "model": settings.model, "crop": settings.crop,
             "stem_stride": settings.stem_stride, "epochs": settings.epochs, "pairs": len(pairs),
             "twins": sum(len(p.twins) for p in pairs), "train_seconds": round(seconds, 1),
             "final_loss": float(np.mean(losses[-20:])), "test_crops": settings.test_crops,
             "synced_augmentation": {"jpeg_prob": settings.jpeg_prob, "jpeg_quality": list(settings.jpeg_quality),
                                     "flip": 0.5}}
    return model, facts
