"""The one preprocessing definition: read from the model's config, used everywhere.

A detector's ``pretrained_cfg`` (timm's standard keys: ``input_size``,
``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``) plus its
``fakeface`` block (``crop_protocol``, ``num_test_crops``) fully determine how
an image becomes a tensor. Training, evaluation, the app and the benchmark all
call :func:`resolve_preprocessing` on the model and build their transforms
from the result, so train/serve skew cannot happen.

Two crop protocols:

``native-crops`` (the ``robust`` recipe)
    Never downscale. Training takes random ``H x W`` crops at the image's own
    resolution; evaluation averages logits over ``num_test_crops`` fixed crops
    (centre, then corners). Generator fingerprints are high-frequency and a
    resize to 224 erases them (CNNDetection, B-Free, TextureCrop).
``resize`` (the ``seed`` recipe, the original project's)
    Squash the whole image to ``H x W``. Kept for comparison.
"""
from __future__ import annotations

import io
import random
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageFilter

from fakeface.utils.constants import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    import torch

CROP_PROTOCOLS = ("native-crops", "resize")
SUPPORTED_TEST_CROPS = (1, 5, 9)

_PIL_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


@dataclass(frozen=True)
class Preprocessing:
    """Everything that turns a decoded RGB image into model input."""

    input_size: tuple[int, int, int] = (3, 224, 224)  # (C, H, W)
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_protocol: str = "native-crops"
    num_test_crops: int = 5

    def __post_init__(self) -> None:
        if self.crop_protocol not in CROP_PROTOCOLS:
            raise ValueError(f"crop_protocol must be one of {CROP_PROTOCOLS}, got {self.crop_protocol!r}")
        if self.num_test_crops not in SUPPORTED_TEST_CROPS:
            raise ValueError(f"num_test_crops must be one of {SUPPORTED_TEST_CROPS}, got {self.num_test_crops}")
        if self.interpolation not in _PIL_INTERPOLATION:
            raise ValueError(f"unknown interpolation {self.interpolation!r}")

    @property
    def crop_size(self) -> tuple[int, int]:
        return int(self.input_size[1]), int(self.input_size[2])

    @property
    def crops_per_image(self) -> int:
        """How many crops the evaluation transform returns for one image."""
        return self.num_test_crops if self.crop_protocol == "native-crops" else 1

    def to_pretrained_cfg(self) -> dict[str, Any]:
        """The timm-standard part, written into ``pretrained_cfg``.

        ``crop_mode='squash'``/``crop_pct=1`` tells plain timm users (and
        transformers' TimmWrapper) the closest standard equivalent; the exact
        protocol lives in the ``fakeface`` block.
        """
        return {
            "input_size": tuple(self.input_size),
            "interpolation": self.interpolation,
            "mean": tuple(self.mean),
            "std": tuple(self.std),
            "crop_pct": 1.0,
            "crop_mode": "squash" if self.crop_protocol == "resize" else "center",
        }

    def to_fakeface_cfg(self) -> dict[str, Any]:
        """The part timm has no field for, written into the ``fakeface`` block."""
        return {"crop_protocol": self.crop_protocol, "num_test_crops": self.num_test_crops}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_preprocessing(model_or_cfg: Any) -> Preprocessing:
    """Read the preprocessing from a model (its ``pretrained_cfg``) or a config dict.

    Accepts a timm model, a ``pretrained_cfg`` dict (with an optional nested
    ``fakeface`` block), or a whole ``config.json`` dict.
    """
    if isinstance(model_or_cfg, Mapping):
        cfg = dict(model_or_cfg.get("pretrained_cfg", model_or_cfg))
        extra = dict(model_or_cfg.get("fakeface") or cfg.get("fakeface") or {})
    else:
        cfg = dict(getattr(model_or_cfg, "pretrained_cfg", None) or {})
        extra = dict(cfg.get("fakeface") or {})
    if "input_size" not in cfg:
        raise ValueError("the model's config has no 'input_size': not a fakeface/timm detector config")
    return Preprocessing(
        input_size=tuple(int(v) for v in cfg["input_size"]),
        interpolation=str(cfg.get("interpolation") or "bicubic"),
        mean=tuple(float(v) for v in cfg.get("mean", Preprocessing.mean)),
        std=tuple(float(v) for v in cfg.get("std", Preprocessing.std)),
        crop_protocol=str(extra.get("crop_protocol", "resize" if cfg.get("crop_mode") == "squash" else "native-crops")),
        num_test_crops=int(extra.get("num_test_crops", 1)),
    )


# --------------------------------------------------------------------------- helpers

def _normalized(arrays: Sequence[np.ndarray], pp: Preprocessing) -> np.ndarray:
    """uint8 (H, W, 3) arrays -> normalised float32 (N, 3, H, W): ((x / 255) - mean) / std, each step rounded to
    float32 as torch's ``.float().div_(255).sub_(mean).div_(std)`` rounds it (the same bits; tests check it)."""
    batch = np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32)
    batch /= np.float32(255.0)
    batch -= np.asarray(pp.mean, np.float32).reshape(1, 3, 1, 1)
    batch /= np.asarray(pp.std, np.float32).reshape(1, 3, 1, 1)
    return batch


def _to_normalized_tensor(arrays: Sequence[np.ndarray], pp: Preprocessing) -> torch.Tensor:
    """uint8 (H, W, 3) arrays -> normalised float (N, 3, H, W) tensor (:func:`_normalized`'s array, not copied)."""
    import torch

    return torch.from_numpy(_normalized(arrays, pp))


def _ensure_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def eval_canvas_size(width: int, height: int, pp: Preprocessing) -> tuple[int, int]:
    """(width, height) of the image the crops are taken from: enlarged only if smaller than a crop."""
    crop_h, crop_w = pp.crop_size
    scale = max(crop_h / height, crop_w / width)
    if scale <= 1.0:
        return width, height
    return max(crop_w, round(width * scale)), max(crop_h, round(height * scale))


def _upscale_to_cover(image: Image.Image, pp: Preprocessing) -> Image.Image:
    """Images smaller than the crop are enlarged (never the other way round)."""
    size = eval_canvas_size(image.width, image.height, pp)
    return image if size == image.size else image.resize(size, _PIL_INTERPOLATION[pp.interpolation])


def eval_crop_origins(height: int, width: int, pp: Preprocessing) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of the fixed evaluation crops, centre first."""
    crop_h, crop_w = pp.crop_size
    max_y, max_x = height - crop_h, width - crop_w
    centre = (max_y // 2, max_x // 2)
    if pp.num_test_crops == 1:
        return [centre]
    if pp.num_test_crops == 5:
        return [centre, (0, 0), (0, max_x), (max_y, 0), (max_y, max_x)]
    grid = [(max_y * i // 2, max_x * j // 2) for i in range(3) for j in range(3)]
    return [grid[4]] + grid[:4] + grid[5:]  # grid[4] is the centre


# --------------------------------------------------------------------------- transforms

def build_eval_arrays(pp: Preprocessing) -> Callable[[Image.Image], np.ndarray]:
    """PIL image -> float32 array (K, C, H, W), K = ``pp.crops_per_image``: the evaluation crops, normalised.

    Deterministic. Callers average the model's logits over the K crops
    (see :func:`fakeface.modeling.inference.logits_from_crops`). The int8
    fast path feeds these arrays to ONNX Runtime without torch.
    """
    crop_h, crop_w = pp.crop_size
    resample = _PIL_INTERPOLATION[pp.interpolation]

    def transform(image: Image.Image) -> np.ndarray:
        image = _ensure_rgb(image)
        if pp.crop_protocol == "resize":
            arr = np.asarray(image.resize((crop_w, crop_h), resample))
            return _normalized([arr], pp)
        arr = np.asarray(_upscale_to_cover(image, pp))
        crops = [arr[y:y + crop_h, x:x + crop_w] for y, x in eval_crop_origins(arr.shape[0], arr.shape[1], pp)]
        return _normalized(crops, pp)

    return transform


def build_eval_transform(pp: Preprocessing) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> float tensor (K, C, H, W): :func:`build_eval_arrays`' array as a torch tensor."""
    arrays = build_eval_arrays(pp)

    def transform(image: Image.Image) -> torch.Tensor:
        import torch   # on first call: building a transform does not load torch

        return torch.from_numpy(arrays(image))

    return transform


@dataclass(frozen=True)
class Augmentation:
    """Training-only perturbations (Wang et al. 2020 style), applied before normalisation."""

    hflip_prob: float = 0.5
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 3.0)
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (30, 100)
    rescale_prob: float = 0.0   # random downscale of the whole image before cropping
    rescale_range: tuple[float, float] = (0.5, 1.0)
    extra: dict = field(default_factory=dict)

    @classmethod
    def robust(cls) -> "Augmentation":
        return cls(blur_prob=0.2, jpeg_prob=0.3, rescale_prob=0.5)

    @classmethod
    def none(cls) -> "Augmentation":
        return cls(hflip_prob=0.0)


def jpeg_roundtrip(image: Image.Image, quality: int) -> Image.Image:
    """Re-encode as JPEG at ``quality`` (used by augmentation and the robustness checks)."""
    buffer = io.BytesIO()
    _ensure_rgb(image).save(buffer, format="JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def build_train_transform(
    pp: Preprocessing, augmentation: Augmentation | None = None, *, rng: random.Random | None = None
) -> Callable[[Image.Image], torch.Tensor]:
    """PIL image -> float tensor (C, H, W) with random crop and augmentation.

    The crop protocol is the evaluation's: native-resolution random crops for
    ``native-crops``, a squash resize for ``resize``. ``rng`` makes it
    reproducible (the training loop seeds one per worker).
    """
    aug = augmentation or Augmentation()
    rng = rng or random.Random()
    crop_h, crop_w = pp.crop_size
    resample = _PIL_INTERPOLATION[pp.interpolation]

    def transform(image: Image.Image) -> torch.Tensor:
        image = _ensure_rgb(image)
        if aug.rescale_prob and rng.random() < aug.rescale_prob:
            s = rng.uniform(*aug.rescale_range)
            image = image.resize((max(1, round(image.width * s)), max(1, round(image.height * s))), resample)
        if pp.crop_protocol == "resize":
            image = image.resize((crop_w, crop_h), resample)
        else:
            image = _upscale_to_cover(image, pp)
            y = rng.randint(0, image.height - crop_h)
            x = rng.randint(0, image.width - crop_w)
            image = image.crop((x, y, x + crop_w, y + crop_h))
        if aug.hflip_prob and rng.random() < aug.hflip_prob:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if aug.blur_prob and rng.random() < aug.blur_prob:
            image = image.filter(ImageFilter.GaussianBlur(rng.uniform(*aug.blur_sigma)))
        if aug.jpeg_prob and rng.random() < aug.jpeg_prob:
            image = jpeg_roundtrip(image, rng.randint(*aug.jpeg_quality))
        return _to_normalized_tensor([np.asarray(image)], pp)[0]

    return transform
