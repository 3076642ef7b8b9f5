"""A deterministic, offline source of labelled real/fake face-like images (SYNTHETIC: no real people).

Nothing here is a photograph or a generated face. It exists so the whole
pipeline (dataset build, training, evaluation, the app) can run and be tested
without data or internet, on a task with the same *kind* of signal as the real
one:

* "real" images come from a simulated camera: a dead-leaves scene (occluding
  disks with a power-law size distribution, which gives natural images' ~1/f
  amplitude spectrum) with a simple face drawn in it, optical blur, a Bayer
  colour filter with signal-dependent sensor noise and bilinear demosaicing;
* "fake" images come from a simulated generator: the same kind of scene
  rendered at a quarter of the resolution, then upsampled by two stride-2
  transposed convolutions with fixed (per "generator") random kernels, each
  followed by noise injection and a 3×3 sharpening convolution, the way
  GAN/diffusion decoders make pixels. The uneven phases of the transposed
  convolutions leave the periodic spectral fingerprint detectors learn.

Half the fakes are look-alikes of a real scene (same scene, same
``source_id``), which exercises the group split. Post-processing (a
camera/delivery JPEG, a downscale, the final container and JPEG quality) is
drawn from the same distribution for both classes, so format and size are not
shortcuts. Every sample is a pure function of (seed, index): any prefix of a
larger set is the smaller set.
"""
from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from fakeface.utils.constants import FAKE, REAL, SYNTHETIC_GENERATOR, SYNTHETIC_REAL_SOURCE

__all__ = [
    "SYNTHETIC_NOTICE", "SyntheticSample", "generate_synthetic_faces", "generate_synthetic_sample",
    "synthetic_sizes",
]

SYNTHETIC_NOTICE = (
    "SYNTHETIC: procedurally generated stand-ins (simulated camera vs simulated upsampling generator), "
    "not photographs of people and not outputs of a real image generator."
)

# The simulated generator's weights: fixed across datasets and seeds, as a
# trained generator's are; this is what makes its fingerprint learnable.
_GENERATOR_WEIGHTS_SEED = 0x5EED_FACE
_UPSAMPLING_STAGES = 2                       # lowres = size / 4
_LOOKALIKE_PROBABILITY = 0.5

# Post-processing, identical for both classes.
_SOURCE_JPEG_PROBABILITY = 0.5               # camera JPEG (real) / delivery JPEG (fake)
_SOURCE_JPEG_QUALITY = (88, 97)
_DOWNSCALE_PROBABILITY = 0.15
_FINAL_FORMATS = (("JPEG", 0.55), ("PNG", 0.35), ("WEBP", 0.10))
_FINAL_JPEG_QUALITY = (70, 98)
_FINAL_WEBP_QUALITY = (75, 95)


@dataclass(frozen=True)
class SyntheticSample:
    """One encoded synthetic image with its labels; ``data`` holds the file's bytes."""

    id: str
    data: bytes
    format: str                    # "JPEG" | "PNG" | "WEBP"
    label: int                     # constants.REAL or constants.FAKE
    source_id: str                 # shared by a real scene and its look-alike fake
    generator: str                 # constants.SYNTHETIC_REAL_SOURCE or SYNTHETIC_GENERATOR
    width: int
    height: int
    attributes: dict[str, str | None] = field(default_factory=dict)

    @property
    def filename(self) -> str:
        return f"{self.id}.{ {'JPEG': 'jpg', 'PNG': 'png', 'WEBP': 'webp'}[self.format] }"


def synthetic_sizes(size: int = 256) -> tuple[int, ...]:
    """The square sizes images are drawn from: about 0.875×–1.25× ``size``, multiples of 16 (8 when small)."""
    step = 16 if size >= 128 else 8
    lo, hi = max(32, int(np.ceil(size * 0.875 / step)) * step), max(32, int(size * 1.25) // step * step)
    return tuple(range(lo, hi + 1, step)) or (max(32, size // step * step),)


def generate_synthetic_faces(n: int, seed: int = 0, *, size: int = 256) -> Iterator[SyntheticSample]:
    """``n`` samples, alternating real (even index) and fake (odd index); deterministic for ``seed``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    for index in range(n):
        yield generate_synthetic_sample(index, seed, size=size)


def generate_synthetic_sample(index: int, seed: int = 0, *, size: int = 256) -> SyntheticSample:
    """Sample ``index`` of the stream :func:`generate_synthetic_faces` yields for ``seed``."""
    if size < 32:
        raise ValueError(f"size must be >= 32, got {size}")
    scene_index, label = divmod(index, 2)
    rng = np.random.default_rng([seed, scene_index, label, 1])
    scene_id = f"synthetic-{scene_index:06d}"
    sizes = synthetic_sizes(size)
    if label == REAL:
        scene = _draw_scene(np.random.default_rng([seed, scene_index, 0, 0]), sizes)
        pixels = _render_camera(scene, rng)
        source_id, generator = scene_id, SYNTHETIC_REAL_SOURCE
    else:
        if rng.random() < _LOOKALIKE_PROBABILITY:
            scene = _draw_scene(np.random.default_rng([seed, scene_index, 0, 0]), sizes)
            source_id = scene_id
        else:
            scene = _draw_scene(np.random.default_rng([seed, scene_index, 1, 0]), sizes)
            source_id = f"{scene_id}-f"
        pixels = _render_generator(scene, rng)
        generator = SYNTHETIC_GENERATOR
    data, fmt, (width, height) = _postprocess(pixels, rng, sizes)
    return SyntheticSample(
        id=f"{scene_id}-{'real' if label == REAL else 'fake'}", data=data, format=fmt, label=FAKE if label else REAL,
        source_id=source_id, generator=generator, width=width, height=height, attributes=dict(scene.attributes),
    )


# --------------------------------------------------------------------------- scenes

@dataclass(frozen=True)
class _Scene:
    size: int
    leaves: np.ndarray              # (K, 6): cx, cy, r (0..1 units), r, g, b (0..255)
    face: dict
    attributes: dict[str, str | None]


def _draw_scene(rng: np.random.Generator, sizes: tuple[int, ...]) -> _Scene:
    size = int(rng.choice(sizes))
    count = int(rng.integers(200, 350))
    # Dead leaves: radius density ~ r^-(1+a) between rmin and rmax (inverse-CDF sampling).
    rmin, rmax, a = 0.01, 0.4, 1.5
    u = rng.random(count)
    radii = (rmin ** -a + u * (rmax ** -a - rmin ** -a)) ** (-1 / a)
    palette = rng.uniform(30, 225, (4, 3))
    colors = np.clip(palette[rng.integers(0, 4, count)] + rng.normal(0, 25, (count, 3)), 0, 255)
    leaves = np.column_stack([rng.uniform(-0.1, 1.1, count), rng.uniform(-0.1, 1.1, count), radii, colors])
    leaves = leaves[np.argsort(-radii, kind="stable")]          # big leaves behind small ones
    skin = np.clip(np.array([205, 160, 130]) * rng.uniform(0.45, 1.15) + rng.normal(0, 10, 3), 20, 250)
    face = {
        "cx": rng.uniform(0.42, 0.58), "cy": rng.uniform(0.45, 0.58),
        "rx": rng.uniform(0.2, 0.28), "ry": rng.uniform(0.28, 0.36),
        "skin": skin, "hair": rng.uniform(10, 120, 3) * rng.uniform(0.3, 1.0),
        "eye": rng.uniform(20, 120, 3), "lips": np.clip(skin * np.array([0.85, 0.55, 0.55]), 0, 255),
        "glasses": bool(rng.random() < 0.3), "smiling": bool(rng.random() < 0.5),
        "frame": rng.uniform(0, 80, 3),
    }
    attributes = {"gender": None, "race": None, "age": None,
                  "glasses": "yes" if face["glasses"] else "no", "expression": "smiling" if face["smiling"] else "neutral"}
    return _Scene(size, leaves, face, attributes)


def _render_scene(scene: _Scene, n: int) -> Image.Image:
    """The scene at ``n``×``n``, drawn at 2× and box-reduced so edges are anti-aliased."""
    m = 2 * n
    image = Image.new("RGB", (m, m), tuple(int(c) for c in scene.leaves[0, 3:]))
    draw = ImageDraw.Draw(image)
    for cx, cy, r, red, green, blue in scene.leaves:
        draw.ellipse(((cx - r) * m, (cy - r) * m, (cx + r) * m, (cy + r) * m), fill=(int(red), int(green), int(blue)))
    f = scene.face

    def box(cx: float, cy: float, rx: float, ry: float) -> tuple[float, float, float, float]:
        return ((cx - rx) * m, (cy - ry) * m, (cx + rx) * m, (cy + ry) * m)

    def rgb(c: np.ndarray) -> tuple[int, int, int]:
        return tuple(int(v) for v in c)

    cx, cy, rx, ry = f["cx"], f["cy"], f["rx"], f["ry"]
    draw.ellipse(box(cx, cy - 0.08, rx * 1.12, ry * 0.95), fill=rgb(f["hair"]))
    draw.ellipse(box(cx, cy, rx, ry), fill=rgb(f["skin"]))
    draw.ellipse(box(cx, cy + 0.03, rx * 0.75, ry * 0.7), fill=rgb(np.clip(f["skin"] * 1.06, 0, 255)))
    for side in (-1, 1):
        ex, ey = cx + side * rx * 0.42, cy - ry * 0.15
        draw.ellipse(box(ex, ey, rx * 0.2, ry * 0.08), fill=(240, 240, 235))
        draw.ellipse(box(ex, ey, rx * 0.08, ry * 0.07), fill=rgb(f["eye"]))
        draw.ellipse(box(ex, ey, rx * 0.035, ry * 0.03), fill=(10, 10, 10))
        draw.line((*box(ex, ey - ry * 0.17, rx * 0.2, 0)[:2], *box(ex, ey - ry * 0.17, rx * 0.2, 0)[2:]),
                  fill=rgb(f["hair"]), width=max(1, int(m * 0.012)))
        if f["glasses"]:
            draw.ellipse(box(ex, ey, rx * 0.3, ry * 0.16), outline=rgb(f["frame"]), width=max(1, int(m * 0.008)))
    if f["glasses"]:
        draw.line(((cx - rx * 0.12) * m, (cy - ry * 0.15) * m, (cx + rx * 0.12) * m, (cy - ry * 0.15) * m),
                  fill=rgb(f["frame"]), width=max(1, int(m * 0.008)))
    draw.line(((cx) * m, (cy - ry * 0.05) * m, (cx + rx * 0.06) * m, (cy + ry * 0.22) * m),
              fill=rgb(f["skin"] * 0.75), width=max(1, int(m * 0.008)))
    mouth = box(cx, cy + ry * 0.45, rx * 0.35, ry * (0.14 if f["smiling"] else 0.03))
    if f["smiling"]:
        draw.chord(mouth, 0, 180, fill=rgb(f["lips"]))
    else:
        draw.ellipse(mouth, fill=rgb(f["lips"]))
    return image.reduce(2)


# --------------------------------------------------------------------------- cameras and generators

def _shift_sum(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """2-D 'same' correlation of (H, W, C) ``x`` with a small (kh, kw) or (kh, kw, C) kernel, reflect padding."""
    kh, kw = kernel.shape[:2]
    ph, pw = kh // 2, kw // 2
    padded = np.pad(x, ((ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)), mode="reflect")
    h, w = x.shape[:2]
    out = np.zeros_like(x)
    for i in range(kh):
        for j in range(kw):
            out += padded[i:i + h, j:j + w] * kernel[i, j]
    return out


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    taps = np.exp(-0.5 * (np.arange(-2, 3) / sigma) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    return _shift_sum(_shift_sum(x, taps[:, None]), taps[None, :])


_BAYER_MASKS: dict[tuple[int, int], np.ndarray] = {}


def _bayer_masks(h: int, w: int) -> np.ndarray:
    """(H, W, 3) 0/1 masks of an RGGB colour filter array."""
    if (h, w) not in _BAYER_MASKS:
        yy, xx = np.mgrid[0:h, 0:w]
        masks = np.zeros((h, w, 3), np.float32)
        masks[..., 0] = (yy % 2 == 0) & (xx % 2 == 0)
        masks[..., 1] = (yy + xx) % 2 == 1
        masks[..., 2] = (yy % 2 == 1) & (xx % 2 == 1)
        _BAYER_MASKS[(h, w)] = masks
    return _BAYER_MASKS[(h, w)]


_DEMOSAIC = np.stack([
    np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 4,    # R
    np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], np.float32) / 4,    # G
    np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 4,    # B
], axis=-1)                                                          # (3, 3, C)


def _render_camera(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8: optics blur -> Bayer CFA + Poisson-Gaussian noise -> bilinear demosaic."""
    x = np.asarray(_render_scene(scene, scene.size), np.float32) / 255.0
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / max(h, w) - 0.5
    x = x * (1.0 + rng.uniform(-0.25, 0.25) * xx[..., None] + rng.uniform(-0.25, 0.25) * yy[..., None])
    x = _gaussian_blur(x, rng.uniform(0.45, 0.85))
    masks = _bayer_masks(h, w)
    gain, read = rng.uniform(0.0008, 0.004), rng.uniform(0.00002, 0.0002)
    mosaic = np.clip(x, 0, 1) * masks
    mosaic += masks * rng.standard_normal((h, w, 1), dtype=np.float32) * np.sqrt(gain * mosaic + read)
    return np.clip(_shift_sum(mosaic, _DEMOSAIC) * 255.0 + 0.5, 0, 255).astype(np.uint8)


@lru_cache(maxsize=1)
def _generator_weights() -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], ...]:
    """Per stage: transposed-conv kernel (4, 4, 3), noise strength per channel (3,), 3×3 conv (3, 3, 3)."""
    rng = np.random.default_rng(_GENERATOR_WEIGHTS_SEED)
    bilinear = np.outer([1, 3, 3, 1], [1, 3, 3, 1]).astype(np.float64) / 16.0
    stages = []
    for _ in range(_UPSAMPLING_STAGES):
        k = bilinear[..., None] * (1 + rng.normal(0, 0.35, (4, 4, 3)))
        # Each output phase sums a different 2×2 slice of k; uneven phase gains are the checkerboard.
        for a in range(2):
            for b in range(2):
                k[a::2, b::2] *= (1 + rng.uniform(-0.06, 0.06, 3)) / k[a::2, b::2].sum(axis=(0, 1))
        noise = rng.uniform(0.6, 1.0, 3)
        sharpen = -np.abs(rng.normal(0.12, 0.04, (3, 3, 3)))
        sharpen[1, 1] = 0
        sharpen[1, 1] = 1 - sharpen.sum(axis=(0, 1))
        stages.append((k.astype(np.float32), noise.astype(np.float32), sharpen.astype(np.float32)))
    return tuple(stages)


def _transposed_conv2x(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Stride-2 transposed convolution with a (4, 4, C) depthwise kernel: (H, W, C) -> (2H, 2W, C)."""
    h, w, c = x.shape
    padded = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
    out = np.empty((2 * h, 2 * w, c), np.float32)
    for a in range(2):
        for b in range(2):
            # Polyphase form (padding 1): output 2m+a gathers input m+a+di-1 through tap 3-a-2di.
            phase = np.zeros((h, w, c), np.float32)
            for di in range(2):
                for dj in range(2):
                    phase += padded[a + di:a + di + h, b + dj:b + dj + w] * kernel[3 - a - 2 * di, 3 - b - 2 * dj]
            out[a::2, b::2] = phase
    return out


def _render_generator(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8: low-resolution render -> 2× (transposed conv, noise injection, 3×3 conv) stages."""
    low = scene.size // 2 ** _UPSAMPLING_STAGES
    x = np.asarray(_render_scene(scene, low), np.float32) / 255.0
    strength = rng.uniform(0.012, 0.025)
    for kernel, noise, conv in _generator_weights():
        x = _transposed_conv2x(x, kernel)
        x = x + strength * noise * rng.standard_normal(x.shape[:2] + (1,), dtype=np.float32)
        x = _shift_sum(x, conv)
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- post-processing

def _encode(image: Image.Image, fmt: str, quality: int | None = None) -> bytes:
    buffer = io.BytesIO()
    params = {"quality": quality} if quality is not None else {}
    if fmt == "PNG":
        params = {"compress_level": 1}                                      # fast; lossless anyway
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _postprocess(pixels: np.ndarray, rng: np.random.Generator, sizes: tuple[int, ...]) -> tuple[bytes, str, tuple[int, int]]:
    """The same chain for both classes: optional source JPEG, optional downscale, final container."""
    image = Image.fromarray(pixels)
    if rng.random() < _SOURCE_JPEG_PROBABILITY:
        image = Image.open(io.BytesIO(_encode(image, "JPEG", int(rng.integers(*_SOURCE_JPEG_QUALITY, endpoint=True)))))
        image.load()
    smaller = [s for s in sizes if s < image.width]
    if smaller and rng.random() < _DOWNSCALE_PROBABILITY:
        target = int(rng.choice(smaller))
        image = image.resize((target, target), Image.Resampling.LANCZOS)
    formats, weights = zip(*_FINAL_FORMATS)
    fmt = str(rng.choice(formats, p=np.asarray(weights) / sum(weights)))
    quality = None
    if fmt == "JPEG":
        quality = int(rng.integers(*_FINAL_JPEG_QUALITY, endpoint=True))
    elif fmt == "WEBP":
        quality = int(rng.integers(*_FINAL_WEBP_QUALITY, endpoint=True))
    return _encode(image, fmt, quality), fmt, image.size
