"""Helpers shared by several test modules (public names; test modules import from here, not from each other).

* the shared real-face data (``../shared/data``, read in place, never copied) and its skip rule;
* small labelled toy images that a tiny detector learns in a few steps.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from fakeface.data.images import load_image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SEED_FFHQ = SHARED / "seed-ffhq"
GROUP_PHOTOS = SHARED / "faces-dev" / "real" / "group-photos-ulfd"


def require_shared(folder: Path) -> None:
    """Skip the test when the shared real-face data is absent (it must sit next to the repo)."""
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (the shared real-face data must sit next to the repo, in ../shared/data)")


def load_seed_photos() -> list[Image.Image]:
    """The seed FFHQ photos, decoded (skips when ../shared is absent)."""
    require_shared(SEED_FFHQ)
    paths = sorted(SEED_FFHQ.glob("*.png"))
    assert paths, f"{SEED_FFHQ} holds no PNG"
    return [load_image(path).image for path in paths]


def toy_image(rng: np.random.Generator, fake: bool, size: int = 48) -> Image.Image:
    """A "fake" is blocky upscaled noise, a "real" blurred full-resolution noise: learnable in a few steps."""
    if fake:
        low = rng.integers(0, 256, (size // 2, size // 2, 3), dtype=np.uint8)
        return Image.fromarray(low).resize((size, size), Image.Resampling.NEAREST)
    noise = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(noise).filter(ImageFilter.GaussianBlur(1.0))


def toy_images(seed: int, n: int) -> tuple[list[Image.Image], np.ndarray]:
    """n toy images, alternately real (0) and fake (1), and their labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    return [toy_image(rng, bool(label)) for label in labels], labels
