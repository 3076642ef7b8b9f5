"""fakeface.data.synthetic: deterministic, labelled, shortcut-free, and the fakes carry an upsampling fingerprint."""
from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from fakeface.utils.constants import FAKE, REAL, SYNTHETIC_GENERATOR, SYNTHETIC_REAL_SOURCE
from fakeface.data.images import load_image
from fakeface.data.synthetic import (
    SYNTHETIC_NOTICE, generate_synthetic_faces, generate_synthetic_sample, synthetic_sizes,
)

N = 64
CROP = 128


@pytest.fixture(scope="module")
def samples():
    return list(generate_synthetic_faces(N, seed=7))


def test_same_seed_same_bytes_other_seed_other_bytes_and_prefix_stability(samples):
    again = list(generate_synthetic_faces(12, seed=7))
    assert [s.data for s in again] == [s.data for s in samples[:12]]
    assert generate_synthetic_sample(11, 7) == samples[11]
    other = list(generate_synthetic_faces(12, seed=8))
    assert all(a.data != b.data for a, b in zip(other, again))


def test_labels_generators_ids_and_lookalike_groups(samples):
    assert [s.label for s in samples] == [REAL, FAKE] * (N // 2)
    assert {s.generator for s in samples if s.label == REAL} == {SYNTHETIC_REAL_SOURCE}
    assert {s.generator for s in samples if s.label == FAKE} == {SYNTHETIC_GENERATOR}
    assert len({s.id for s in samples}) == N
    reals = {s.source_id for s in samples if s.label == REAL}
    lookalikes = [s for s in samples if s.label == FAKE and s.source_id in reals]
    independent = [s for s in samples if s.label == FAKE and s.source_id not in reals]
    assert 0.25 * N / 2 <= len(lookalikes) <= 0.75 * N / 2 and independent
    # A look-alike shows the same scene as its real: same attributes.
    by_source = {s.source_id: s for s in samples if s.label == REAL}
    assert all(f.attributes == by_source[f.source_id].attributes for f in lookalikes)
    assert {s.attributes["expression"] for s in samples} == {"smiling", "neutral"}
    assert "SYNTHETIC" in SYNTHETIC_NOTICE


def test_every_sample_decodes_and_format_and_size_are_not_shortcuts(samples):
    sizes = synthetic_sizes(256)
    assert min(sizes) == 224 and max(sizes) == 320
    formats = {REAL: Counter(), FAKE: Counter()}
    pixels = {REAL: [], FAKE: []}
    for s in samples:
        decoded = load_image(s.data)
        assert (decoded.format, decoded.width, decoded.height) == (s.format, s.width, s.height)
        assert s.width == s.height and s.width in sizes
        formats[s.label][s.format] += 1
        pixels[s.label].append(s.width * s.height)
    for label in (REAL, FAKE):
        assert {"JPEG", "PNG"} <= set(formats[label])
    assert 0.8 < np.mean(pixels[REAL]) / np.mean(pixels[FAKE]) < 1.25


def _residual_spectrum(images: list[Image.Image], n: int) -> np.ndarray:
    """Mean |FFT| of the high-pass residual (image minus 3×3 box blur) of the central n×n luminance."""
    spectra = []
    for image in images:
        grey = np.asarray(image.convert("L"), np.float64)
        h, w = grey.shape
        grey = grey[(h - n) // 2:(h - n) // 2 + n, (w - n) // 2:(w - n) // 2 + n]
        padded = np.pad(grey, 1, mode="reflect")
        box = sum(padded[i:i + n, j:j + n] for i in range(3) for j in range(3)) / 9
        spectra.append(np.abs(np.fft.fft2(grey - box)))
    return np.mean(spectra, axis=0)


def _peak(spectrum: np.ndarray, u: int, v: int) -> float:
    """Magnitude at (u, v) over the median of its neighbourhood (1 = no peak)."""
    n = spectrum.shape[0]
    around = [spectrum[(u + du) % n, (v + dv) % n] for du in (-3, -2, 2, 3) for dv in (-3, 0, 3)]
    return float(spectrum[u, v] / np.median(around))


def _fingerprint(images: list[Image.Image], n: int) -> float:
    """Strongest peak at the frequencies a 2× and 4× upsampler leaves (periods 2 and 4)."""
    spectrum = _residual_spectrum(images, n)
    return max(_peak(spectrum, u, v) for u, v in [(n // 2, n // 2), (n // 2, 0), (0, n // 2), (n // 4, n // 4)])


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def test_fakes_carry_a_periodic_spectral_fingerprint_that_survives_jpeg_and_downscaling(samples):
    images = {label: [load_image(s.data).image for s in samples if s.label == label] for label in (REAL, FAKE)}
    clean = {label: _fingerprint(images[label], CROP) for label in images}
    assert clean[FAKE] > 4.0 and clean[REAL] < 2.0 and clean[FAKE] > 3 * clean[REAL], clean

    jpeg75 = {label: _fingerprint([_jpeg(i, 75) for i in images[label]], CROP) for label in images}
    assert jpeg75[FAKE] > 2.5 * jpeg75[REAL], jpeg75

    def half(i: Image.Image) -> Image.Image:
        return i.resize((i.width // 2, i.height // 2), Image.Resampling.BICUBIC)

    halved = {label: _fingerprint([half(i) for i in images[label]], 96) for label in images}
    assert halved[FAKE] > 2.5 * halved[REAL], halved


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="n must be"):
        list(generate_synthetic_faces(-1))
    with pytest.raises(ValueError, match="size must be"):
        generate_synthetic_sample(0, size=16)
    small = generate_synthetic_sample(1, 0, size=64)
    assert small.width in synthetic_sizes(64) and load_image(small.data).width == small.width
