"""One uploaded file -> a verdict, and on demand the evidence behind it.

:func:`score_images` is the one scoring step (every model, a list of decoded
images, one model call each) and returns typed :class:`ImageVerdict` results;
:func:`analyze_bytes` adds, when asked, the image facts, provenance, the
robustness re-check and Grad-CAM. Scoring goes through each model's
``scorer`` (the int8 fast path when the release has a valid one), Grad-CAM
always through the torch model.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from PIL import Image

from fakeface.data.images import DecodedImage, load_image
from fakeface.evaluation.metrics import apply_condition
from fakeface.modeling.config import Decision
from fakeface.modeling.explain import crop_coverage, explain_image
from fakeface.serving.errors import AppError
from fakeface.serving.models import LoadedModel
from fakeface.serving.provenance import read_provenance
from fakeface.utils.constants import MAX_UPLOAD_BYTES

__all__ = [
    "FaceResult", "ImageVerdict", "ModelVerdict", "ROBUSTNESS_CHECKS", "analyze_bytes", "assess_image",
    "check_robustness", "decode_upload", "describe_image", "display_name", "read_upload", "require_models",
    "score_images",
]

# The input is "far from training data" when: its short side is below the
# model's crop (it must be enlarged), its aspect ratio is beyond this, or its
# JPEG quality (estimated from the quantization tables) is below this.
NON_SQUARE_RATIO = 1.3
LOW_JPEG_QUALITY = 70
LOW_CROP_COVERAGE = 0.5
# Robustness check: the primary model re-scores these copies (names from
# fakeface.evaluation.metrics.ROBUSTNESS_CONDITIONS) and the verdict is unstable when
# any copy's verdict differs from the original's.
ROBUSTNESS_CHECKS = (("jpeg75", "JPEG re-encoded at quality 75"), ("downscale0.5", "downscaled to half size"))


# --------------------------------------------------------------------------- typed results

@dataclass(frozen=True)
class ModelVerdict:
    """One model's score of one image, with the decision settings it was judged by."""

    model: LoadedModel = field(repr=False)
    p_fake: float
    verdict: str

    @property
    def decision(self) -> Decision:
        return self.model.decision

    def to_dict(self) -> dict[str, Any]:
        d, m = self.decision, self.model
        return {
            "model": m.name, "architecture": m.architecture, "source": m.public_source, "revision": m.revision,
            "runtime": m.runtime, "p_fake": round(float(self.p_fake), 6), "verdict": self.verdict,
            "threshold_fake": d.threshold_fake, "threshold_real": d.threshold_real,
            "temperature": d.temperature, "calibrated": d.calibrated, "synthetic_training_data": m.synthetic,
        }


@dataclass(frozen=True)
class FaceResult:
    """One face found in a photo: its box (left, top, right, bottom, in pixels) and its own verdict.

    Filled by the face stage (:mod:`fakeface.faces`) once it is wired in; the
    photo's verdict then comes from its most suspicious face.
    """

    box: tuple[int, int, int, int]
    p_fake: float
    verdict: str
    too_small: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"box": list(self.box), "p_fake": round(float(self.p_fake), 6), "verdict": self.verdict,
                "too_small": self.too_small}


@dataclass(frozen=True)
class ImageVerdict:
    """Every model's verdict on one image; the first model's is the image's."""

    models: tuple[ModelVerdict, ...]
    faces: tuple[FaceResult, ...] = ()

    @property
    def primary(self) -> ModelVerdict:
        return self.models[0]

    @property
    def agreement(self) -> bool:
        return len({m.verdict for m in self.models}) == 1

    def to_dict(self) -> dict[str, Any]:
        rows = [m.to_dict() for m in self.models]
        first = rows[0]
        return {"verdict": first["verdict"], "p_fake": first["p_fake"], "model": first["model"],
                "threshold_fake": first["threshold_fake"], "threshold_real": first["threshold_real"],
                "models": rows, "agreement": self.agreement, "faces": [f.to_dict() for f in self.faces]}


def require_models(models: Sequence[LoadedModel]) -> Sequence[LoadedModel]:
    if not models:
        raise AppError("No detector is loaded;", "see the status panel for how to configure one.", kind="no_model")
    return models


def score_images(models: Sequence[LoadedModel], images: Sequence[Image.Image]) -> list[ImageVerdict]:
    """Each model scores all ``images`` in ONE call; one :class:`ImageVerdict` per image, in order."""
    require_models(models)
    per_model = [model.scorer.score(list(images)) for model in models]
    return [
        ImageVerdict(tuple(ModelVerdict(model, float(scores.p_fake[i]), scores.verdicts[i])
                           for model, scores in zip(models, per_model)))
        for i in range(len(images))
    ]


# --------------------------------------------------------------------------- image facts

def describe_image(decoded: DecodedImage, n_bytes: int) -> dict[str, Any]:
    """Image facts for the UI: format, size, file size, JPEG quality, decode notes."""
    return {
        "format": decoded.format, "width": decoded.width, "height": decoded.height, "bytes": n_bytes,
        "megapixels": round(decoded.width * decoded.height / 1e6, 2), "mode": decoded.original_mode,
        "jpeg_quality": decoded.jpeg_quality, "notes": list(decoded.notes),
    }


def assess_image(decoded: DecodedImage, model: LoadedModel) -> list[str]:
    """Warnings when the input is far from what the model was trained on (tiny, not square, compressed)."""
    pp = model.preprocessing
    crop_h, crop_w = pp.crop_size
    width, height = decoded.width, decoded.height
    warnings = []
    if min(width, height) < min(crop_h, crop_w):
        warnings.append(
            f"Small image ({width}×{height}): the model looks at {crop_w}×{crop_h} px crops, so it was enlarged; "
            "enlarging smooths away the fine detail the detector relies on."
        )
    ratio = max(width, height) / max(1, min(width, height))
    if ratio > NON_SQUARE_RATIO:
        warnings.append(
            f"Not square (aspect ratio {ratio:.1f}:1): the model was trained on square face images; "
            + ("its crops may miss the face." if pp.crop_protocol == "native-crops" else "squashing it distorts the face.")
        )
    if decoded.jpeg_quality is not None and decoded.jpeg_quality < LOW_JPEG_QUALITY:
        warnings.append(
            f"Heavily compressed JPEG (quality ≈ {decoded.jpeg_quality}): compression erases the traces "
            "generators leave, so the verdict is less reliable."
        )
    return warnings


def describe_coverage(decoded: DecodedImage, model: LoadedModel) -> str | None:
    """A note when the model's native-resolution crops see only part of the image (by design, not a fault)."""
    pp = model.preprocessing
    coverage = crop_coverage(decoded.image, pp)
    if coverage >= LOW_CROP_COVERAGE:
        return None
    crop_h, crop_w = pp.crop_size
    return (f"The model inspects {pp.crops_per_image} crop(s) of {crop_w}×{crop_h} px at full resolution "
            f"(never downscaling, which would erase generator traces), covering {coverage:.0%} of this image.")


def check_robustness(model: LoadedModel, image: Image.Image, clean_verdict: str, clean_p: float) -> dict[str, Any]:
    """Re-score JPEG q75 and half-size copies; ``stable`` is False when a copy gets another verdict."""
    copies = [apply_condition(image, name) for name, _ in ROBUSTNESS_CHECKS]
    scores = model.scorer.score(copies)
    checks = [
        {"check": name, "description": text, "p_fake": round(float(p), 6), "verdict": v,
         "delta": round(float(p) - clean_p, 6)}
        for (name, text), p, v in zip(ROBUSTNESS_CHECKS, scores.p_fake, scores.verdicts)
    ]
    changed = [c for c in checks if c["verdict"] != clean_verdict]
    if not changed:
        summary = f"Stable: the verdict stays '{clean_verdict}' after JPEG q75 re-encoding and halving the size."
    else:
        summary = "Unstable: the verdict changes when the image is " + " or ".join(
            f"{c['description']} ('{c['verdict']}')" for c in changed
        ) + "; treat the verdict with caution."
    return {"stable": not changed, "checks": checks, "summary": summary}


# --------------------------------------------------------------------------- uploads

def display_name(filename: str | os.PathLike | None) -> str:
    # Only the base name: uploads live in server temp folders that are nobody's business.
    return Path(os.fspath(filename)).name if filename else "upload"


def read_upload(path: str | os.PathLike) -> bytes:
    """The bytes of an uploaded file, refusing anything over the upload limit before reading it."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        raise AppError("The uploaded file could not be read;", "please upload it again.", kind="bad_input") from None
    if size > MAX_UPLOAD_BYTES:
        raise AppError(f"The file is too large: {size / 2**20:.1f} MiB, limit {MAX_UPLOAD_BYTES / 2**20:.0f} MiB.",
                       kind="too_large")
    return path.read_bytes()


def decode_upload(data: bytes) -> DecodedImage:
    """Safe decoding under the upload limit (raises ``ImageDecodeError``, a ValueError, for unusable bytes)."""
    return load_image(data, max_bytes=MAX_UPLOAD_BYTES)


# --------------------------------------------------------------------------- the full analysis

def analyze_bytes(
    data: bytes,
    filename: str | None,
    models: Sequence[LoadedModel],
    *,
    explain: bool = True,
    robustness: bool = True,
    provenance: bool = True,
) -> dict[str, Any]:
    """The full analysis of one uploaded file (its original bytes).

    Returns a dict: :meth:`ImageVerdict.to_dict` (``verdict``/``p_fake``/
    ``model`` of the primary model, ``models`` side by side, ``agreement``,
    ``faces``), plus ``image`` facts, ``warnings`` (input far from the
    training data), ``notes`` (e.g. crop coverage), ``provenance``,
    ``robustness`` and ``gradcam`` (a PIL image, or None; the only value that
    is not JSON) for the evidence asked for. Raises ``ImageDecodeError`` (a
    ValueError with a user-facing reason) when the bytes are not a usable
    image, and :class:`AppError` when no model is given.
    """
    require_models(models)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    decoded = decode_upload(data)
    timings["decode_ms"] = (time.perf_counter() - started) * 1e3
    t = time.perf_counter()
    [verdict] = score_images(models, [decoded.image])
    timings["score_ms"] = (time.perf_counter() - t) * 1e3
    primary = models[0]
    result: dict[str, Any] = {
        "file": display_name(filename), **verdict.to_dict(),
        "image": describe_image(decoded, len(data)), "warnings": assess_image(decoded, primary),
        "notes": [n for n in [describe_coverage(decoded, primary)] if n], "synthetic_model": primary.synthetic,
        "robustness": None, "provenance": None, "gradcam": None,
    }
    if robustness:
        t = time.perf_counter()
        result["robustness"] = check_robustness(primary, decoded.image, verdict.primary.verdict, result["p_fake"])
        timings["robustness_ms"] = (time.perf_counter() - t) * 1e3
    if provenance:
        t = time.perf_counter()
        result["provenance"] = read_provenance(data, image_format=decoded.format)
        timings["provenance_ms"] = (time.perf_counter() - t) * 1e3
    if explain:
        t = time.perf_counter()
        _, result["gradcam"] = explain_image(primary.detector, decoded.image)
        timings["gradcam_ms"] = (time.perf_counter() - t) * 1e3
    timings["total_ms"] = (time.perf_counter() - started) * 1e3
    result["timings_ms"] = {k: round(v, 1) for k, v in timings.items()}
    return result
