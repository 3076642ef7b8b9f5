"""Grad-CAM: where a detector looked when it called an image fake.

The heatmap is computed on the last convolutional stage, found generically
for timm CNNs as the output of ``model.forward_features`` (ResNet's
``layer4``, MobileNetV2's final ``conv_head`` block, ...), and the logits are
recomputed from it with ``model.forward_head``. It is a picture of *where the
evidence came from*, not proof of anything: a random-weight model lights up
somewhere too.

A detector sees an image as K crops (see :mod:`fakeface.data.preprocess`), so
:func:`gradcam` returns one heatmap per crop and :func:`overlay_heatmap`
puts each crop's heatmap back where that crop came from.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from fakeface.utils.constants import FAKE
from fakeface.data.preprocess import Preprocessing, eval_canvas_size, eval_crop_origins

if TYPE_CHECKING:   # torch loads with the first Grad-CAM, not with this module
    import torch
    from torch import nn

__all__ = ["crop_coverage", "explain_image", "gradcam", "overlay_heatmap"]

# Areas no crop covered are shown darkened: the model never saw them.
_UNSEEN_DIMMING = 0.45


def _split_model(model: nn.Module) -> tuple:
    """(features_fn, head_fn) of a timm CNN, or a clear error for anything else."""
    features = getattr(model, "forward_features", None)
    head = getattr(model, "forward_head", None)
    if not callable(features) or not callable(head):
        raise TypeError(
            f"Grad-CAM needs a timm model with forward_features/forward_head; got {type(model).__name__}"
        )
    return features, head


def gradcam(model: nn.Module, crops: torch.Tensor, target: int = FAKE) -> np.ndarray:
    """Grad-CAM heatmaps of ``crops`` (K, C, H, W) towards class ``target``: float32 (K, H, W) in [0, 1].

    The score explained is the logit margin ``z[target] - z[other]``, i.e. the
    evidence for ``target`` *against* the other class, which for a two-class
    detector is what moves p(target). All K crops share one normalisation so
    a crop with little evidence stays dark next to one with a lot.
    """
    import torch
    import torch.nn.functional as F

    if crops.dim() != 4:
        raise ValueError(f"crops must be (K, C, H, W), got shape {tuple(crops.shape)}")
    features_fn, head_fn = _split_model(model)
    was_training = model.training
    model.eval()
    # The crops may come from an inference_mode context; autograd needs a plain tensor.
    x = crops.detach().clone().float()
    try:
        with torch.enable_grad():
            features = features_fn(x)                              # (K, C', h, w)
            if features.dim() != 4:
                raise TypeError(
                    f"Grad-CAM needs spatial (N, C, h, w) features; {type(model).__name__} gives {tuple(features.shape)}"
                )
            features.retain_grad()
            logits = head_fn(features)                             # (K, num_classes)
            others = [c for c in range(logits.shape[1]) if c != target]
            margin = logits[:, target] - logits[:, others].max(dim=1).values
            (grads,) = torch.autograd.grad(margin.sum(), features)
    finally:
        model.train(was_training)
    weights = grads.mean(dim=(2, 3), keepdim=True)                 # (K, C', 1, 1)
    cam = F.relu((weights * features.detach()).sum(dim=1, keepdim=True))  # (K, 1, h, w)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = float(cam.max())
    if peak > 0:
        cam = cam / peak
    return cam.clamp_(0, 1).numpy().astype(np.float32)


def _colorize(heat: np.ndarray, colormap: str) -> np.ndarray:
    """(H, W) in [0, 1] -> uint8 RGB (H, W, 3)."""
    from matplotlib import colormaps

    return (colormaps[colormap](heat)[..., :3] * 255).astype(np.uint8)


def overlay_heatmap(
    image: Image.Image,
    heatmap: np.ndarray,
    preprocessing: Preprocessing,
    *,
    alpha: float = 0.5,
    colormap: str = "jet",
    max_side: int | None = 768,
) -> Image.Image:
    """Blend Grad-CAM crop heatmaps (K, H, W) onto ``image``, each at the place its crop was taken.

    The crop positions are the evaluation transform's own
    (:func:`fakeface.data.preprocess.eval_crop_origins` on the image as the
    transform enlarges it), so the overlay shows exactly what the model saw.
    Overlapping crops are averaged; parts of the image no crop covered are
    darkened. ``max_side`` bounds the returned image's size for display.
    """
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim == 2:
        heatmap = heatmap[None]
    image = image if image.mode == "RGB" else image.convert("RGB")
    crop_h, crop_w = preprocessing.crop_size
    if preprocessing.crop_protocol == "resize":
        # One crop: the whole image squashed to the input size.
        canvas_heat = heatmap.mean(axis=0)
        covered = np.ones_like(canvas_heat, dtype=bool)
    else:
        canvas_w, canvas_h = eval_canvas_size(image.width, image.height, preprocessing)
        origins = eval_crop_origins(canvas_h, canvas_w, preprocessing)
        if len(origins) != heatmap.shape[0]:
            raise ValueError(f"{heatmap.shape[0]} heatmaps for {len(origins)} crops")
        total = np.zeros((canvas_h, canvas_w), np.float32)
        count = np.zeros((canvas_h, canvas_w), np.float32)
        for (y, x), heat in zip(origins, heatmap):
            total[y:y + crop_h, x:x + crop_w] += heat
            count[y:y + crop_h, x:x + crop_w] += 1
        canvas_heat = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        covered = count > 0

    width, height = image.size
    if max_side and max(width, height) > max_side:
        scale = max_side / max(width, height)
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    heat = np.asarray(
        Image.fromarray(canvas_heat.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR)
    ).clip(0, 1)
    seen = np.asarray(Image.fromarray(covered.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)) > 0
    base = np.asarray(image, dtype=np.float32)
    # Stronger colour where the heat is higher, so cold regions keep the photo readable.
    weight = (alpha * (0.35 + 0.65 * heat))[..., None]
    blended = base * (1 - weight) + _colorize(heat, colormap).astype(np.float32) * weight
    blended[~seen] = base[~seen] * _UNSEEN_DIMMING
    return Image.fromarray(blended.clip(0, 255).astype(np.uint8))


def explain_image(detector, image: Image.Image, target: int = FAKE, **overlay_kwargs) -> tuple[np.ndarray, Image.Image]:
    """Grad-CAM of one decoded image with a :class:`fakeface.modeling.inference.Detector`: (heatmaps, overlay).

    Always uses the detector's torch model (``detector.model``), also when
    scores come from a faster runtime.
    """
    crops = detector.prepare([image])[0]                          # (K, C, H, W)
    heatmap = gradcam(detector.model, crops, target=target)
    return heatmap, overlay_heatmap(image, heatmap, detector.preprocessing, **overlay_kwargs)


def crop_coverage(image: Image.Image, preprocessing: Preprocessing) -> float:
    """Fraction of ``image``'s area that the evaluation crops look at (1.0 for ``resize``).

    Native crops of a large photo cover only part of it; the app says so.
    """
    if preprocessing.crop_protocol == "resize":
        return 1.0
    crop_h, crop_w = preprocessing.crop_size
    # Only images smaller than a crop are enlarged, so this is cheap.
    canvas_w, canvas_h = eval_canvas_size(image.width, image.height, preprocessing)
    mask = np.zeros((canvas_h, canvas_w), dtype=bool)
    for y, x in eval_crop_origins(canvas_h, canvas_w, preprocessing):
        mask[y:y + crop_h, x:x + crop_w] = True
    return float(mask.mean())
