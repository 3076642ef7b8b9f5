"""One uploaded file -> a verdict, and on demand the evidence behind it.

:func:`score_images` is the one scoring step (every model, a list of decoded
images, each model's crops in shared calls) and returns typed
:class:`ImageVerdict` results; it goes through
:func:`fakeface.modeling.photo.score_photos`, so a model with a face stage
judges every face and the photo's verdict is its most suspicious face's
(models sharing a face crop share one face scan). :func:`analyze_bytes`
adds, when asked, the image facts, provenance, the robustness re-check and
Grad-CAM, both of the crop the verdict came from (the most suspicious face,
or the whole image). Scoring goes through each model's ``scorer`` (the int8
fast path when the release has a valid one), Grad-CAM always through the
torch model.
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
from fakeface.modeling.photo import FaceScore, PhotoScore, resolve_face_crop, run_face_stage, score_photos
from fakeface.serving.errors import AppError
from fakeface.serving.models import LoadedModel
from fakeface.utils.constants import MAX_UPLOAD_BYTES

__all__ = [
    "FaceResult", "ImageVerdict", "ModelVerdict", "ROBUSTNESS_CHECKS", "analyze_bytes", "analyze_upload",
    "assess_image", "band_facts", "check_robustness", "decode_upload", "describe_image", "display_name",
    "read_upload", "require_models", "score_images",
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
    photo: PhotoScore | None = field(default=None, repr=False, compare=False)   # how this model reached it

    @property
    def decision(self) -> Decision:
        return self.model.decision

    @property
    def mode(self) -> str:
        return self.photo.mode if self.photo is not None else "whole-image"

    def to_dict(self) -> dict[str, Any]:
        d, m = self.decision, self.model
        return {
            "model": m.name, "architecture": m.architecture, "source": m.public_source, "revision": m.revision,
            "runtime": m.runtime, "p_fake": round(float(self.p_fake), 6), "verdict": self.verdict, "mode": self.mode,
            "reason": d.reason(self.p_fake),
            "threshold_fake": d.threshold_fake, "threshold_real": d.threshold_real,
            "temperature": d.temperature, "calibrated": d.calibrated, "synthetic_training_data": m.synthetic,
            "band": band_facts(d),
            # a panel release: each expert's p(fake) on the deciding crop and the sentence on what decided it
            "experts": None if self.photo is None else self.photo.to_dict()["experts"],
            "evidence": None if self.photo is None else self.photo.evidence,
        }


def band_facts(decision: Decision) -> dict[str, Any]:
    """Where the model's uncertain band was chosen and what it measured there (None: not measured)."""
    return {"threshold_real": decision.threshold_real, "threshold_fake": decision.threshold_fake,
            "source": decision.band_source, "target": decision.band_target,
            "confidently_wrong": decision.confidently_wrong, "coverage": decision.coverage,
            "note": decision.threshold_note}


@dataclass(frozen=True)
class FaceResult:
    """One face found in a photo, as the primary model judged it.

    ``box`` is (left, top, right, bottom) in the photo's pixels; ``face`` its
    number (1 = largest, as labelled on the image). ``p_fake``/``verdict`` are
    None for a face too small to judge. ``most_suspicious`` marks the face the
    photo's verdict comes from.
    """

    box: tuple[int, int, int, int]
    p_fake: float | None
    verdict: str | None
    too_small: bool = False
    cut_by_border: bool = False
    face: int = 1
    score: float = 1.0                 # the face detector's confidence
    most_suspicious: bool = False
    experts: Any = None                # a panel's per-expert p(fake) for this face (else None)
    evidence: str | None = None        # a panel's sentence on what decided this face (else None)

    @classmethod
    def from_score(cls, face: FaceScore, most_suspicious: bool = False) -> "FaceResult":
        return cls(face.box, face.p_fake, face.verdict, face.too_small, face.cut_by_border, face.index, face.score,
                   most_suspicious, face.experts, face.evidence)

    def to_dict(self) -> dict[str, Any]:
        return {"face": self.face, "box": list(self.box),
                "p_fake": None if self.p_fake is None else round(float(self.p_fake), 6), "verdict": self.verdict,
                "too_small": self.too_small, "cut_by_border": self.cut_by_border,
                "most_suspicious": self.most_suspicious, "score": round(float(self.score), 4),
                "experts": None if self.experts is None else {k: round(float(v), 6) for k, v in self.experts.items()},
                "evidence": self.evidence}


@dataclass(frozen=True)
class ImageVerdict:
    """Every model's verdict on one image; the first model's is the image's (and its faces and notes)."""

    models: tuple[ModelVerdict, ...]
    faces: tuple[FaceResult, ...] = ()
    notes: tuple[str, ...] = ()        # how the primary model reached its verdict (faces, no face, ...)

    @classmethod
    def from_photos(cls, verdicts: Sequence[ModelVerdict]) -> "ImageVerdict":
        photo = verdicts[0].photo
        if photo is None:
            return cls(tuple(verdicts))
        faces = tuple(FaceResult.from_score(f, i == photo.most_suspicious) for i, f in enumerate(photo.faces))
        return cls(tuple(verdicts), faces, photo.notes)

    @property
    def mode(self) -> str:
        return self.primary.mode

    @property
    def primary(self) -> ModelVerdict:
        return self.models[0]

    @property
    def agreement(self) -> bool:
        return len({m.verdict for m in self.models}) == 1

    def to_dict(self) -> dict[str, Any]:
        rows = [m.to_dict() for m in self.models]
        first = rows[0]
        decision = self.primary.decision     # the faces are the primary model's, judged by its band
        return {"verdict": first["verdict"], "p_fake": first["p_fake"], "model": first["model"],
                "reason": first["reason"], "experts": first["experts"], "evidence": first["evidence"],
                "threshold_fake": first["threshold_fake"], "threshold_real": first["threshold_real"],
                "models": rows, "agreement": self.agreement, "mode": self.mode,
                "faces": [{**f.to_dict(), "reason": decision.reason(f.p_fake)} for f in self.faces],
                "notes": list(self.notes)}


def require_models(models: Sequence[LoadedModel]) -> Sequence[LoadedModel]:
    if not models:
        raise AppError("No detector is loaded;", "see the status panel for how to configure one.", kind="no_model")
    return models


def score_images(models: Sequence[LoadedModel], images: Sequence[Image.Image]) -> list[ImageVerdict]:
    """Each model scores all ``images`` (their faces, or the whole images) through :func:`score_photos`.

    One :class:`ImageVerdict` per image, in order. The face stage runs once per
    distinct face crop, however many models use it.
    """
    require_models(models)
    images = list(images)
    scans: dict[Any, Any] = {}
    per_model = []
    for model in models:
        face_crop = resolve_face_crop(model.detector)
        if face_crop is not None and face_crop not in scans:
            # A missing face detector never fails the request: the photos are scored whole, with a note why.
            scans[face_crop] = run_face_stage(images, face_crop)
        per_model.append(score_photos(model.scorer, images, face_crop=face_crop, scans=scans.get(face_crop)))
    return [
        ImageVerdict.from_photos([ModelVerdict(model, photos[i].photo_p_fake, photos[i].verdict, photos[i])
                                  for model, photos in zip(models, per_model)])
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


def assess_image(decoded: DecodedImage, model: LoadedModel, photo: PhotoScore | None = None) -> list[str]:
    """Warnings when the input is far from what the model was trained on (tiny, not square, compressed).

    When the verdict came from a face (``photo.mode == "faces"``), size is
    judged on that face's crop, and shape not at all (face crops are square).
    """
    pp = model.preprocessing
    crop_h, crop_w = pp.crop_size
    width, height = decoded.width, decoded.height
    from_face = photo is not None and photo.mode == "faces" and photo.scored_image is not None
    if from_face:
        width, height = photo.scored_image.size
    warnings = []
    if min(width, height) < min(crop_h, crop_w):
        what = "The face's crop" if from_face else "Small image"
        warnings.append(
            f"{what} ({width}×{height}): the model looks at {crop_w}×{crop_h} px crops, so it was enlarged; "
            "enlarging smooths away the fine detail the detector relies on."
        )
    ratio = max(width, height) / max(1, min(width, height))
    if ratio > NON_SQUARE_RATIO and not from_face:
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


def describe_coverage(image: Image.Image, model: LoadedModel, *, of: str = "this image") -> str | None:
    """A note when the model's native-resolution crops see only part of ``image`` (by design, not a fault)."""
    pp = model.preprocessing
    coverage = crop_coverage(image, pp)
    if coverage >= LOW_CROP_COVERAGE:
        return None
    crop_h, crop_w = pp.crop_size
    return (f"The model inspects {pp.crops_per_image} crop(s) of {crop_w}×{crop_h} px at full resolution "
            f"(never downscaling, which would erase generator traces), covering {coverage:.0%} of {of}.")


def _scored_part(photo: PhotoScore | None) -> str:
    """What the evidence is of, in words: the face the verdict came from, or the whole image."""
    if photo is None or photo.most_suspicious is None:
        return "the whole image"
    return f"face {photo.faces[photo.most_suspicious].index}"


def check_robustness(model: LoadedModel, image: Image.Image, clean_verdict: str, clean_p: float,
                     *, of: str = "the whole image") -> dict[str, Any]:
    """Re-score JPEG q75 and half-size copies of ``image``; ``stable`` is False when a copy gets another verdict.

    ``image`` is what the verdict was computed on: the most suspicious face's
    crop (``of`` names it; the face stage is not re-run on the copies, which
    keeps the check to one model call) or the whole image.
    """
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
    if of != "the whole image":
        summary += f" (Checked on {of}'s crop, the face the verdict comes from.)"
    return {"stable": not changed, "checks": checks, "summary": summary, "of": of}


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

def analyze_bytes(data: bytes, filename: str | None, models: Sequence[LoadedModel], **evidence: bool) -> dict[str, Any]:
    """The full analysis of one uploaded file (its original bytes); ``evidence``: :func:`analyze_upload`'s
    ``explain``, ``robustness`` and ``provenance`` (each on unless set False).

    Returns a dict: :meth:`ImageVerdict.to_dict` (``verdict``/``p_fake``/
    ``model`` of the primary model, ``models`` side by side, ``agreement``,
    ``mode`` ("faces" or "whole-image"), ``faces`` with their boxes, p_fake,
    verdicts and flags), plus ``image`` facts, ``warnings`` (input far from
    the training data), ``notes`` (how the verdict was reached: from the most
    suspicious face, no face found, faces too small, no face stage; crop
    coverage), ``evidence_of`` (what Grad-CAM and the robustness re-check
    looked at: "face N" or "the whole image"), ``provenance``,
    ``robustness`` and ``gradcam`` (a PIL image, or None; the only value that
    is not JSON) for the evidence asked for. Raises ``ImageDecodeError`` (a
    ValueError with a user-facing reason) when the bytes are not a usable
    image, and :class:`AppError` when no model is given.
    """
    return analyze_upload(data, filename, models, **evidence)[0]


def analyze_upload(
    data: bytes,
    filename: str | None,
    models: Sequence[LoadedModel],
    *,
    explain: bool = True,
    robustness: bool = True,
    provenance: bool = True,
) -> tuple[dict[str, Any], DecodedImage]:
    """:func:`analyze_bytes`' result and the image it decoded (every part of the analysis used that one
    decode), for a caller that shows the photo too: the Detect tab draws the face boxes on it."""
    require_models(models)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    decoded = decode_upload(data)
    timings["decode_ms"] = (time.perf_counter() - started) * 1e3
    t = time.perf_counter()
    [verdict] = score_images(models, [decoded.image])
    timings["score_ms"] = (time.perf_counter() - t) * 1e3
    primary, photo = models[0], verdict.primary.photo
    scored = photo.scored_image if photo is not None and photo.scored_image is not None else decoded.image
    of = _scored_part(photo)
    coverage = describe_coverage(scored, primary, of="this image" if of == "the whole image" else f"{of}'s crop")
    result: dict[str, Any] = {
        "file": display_name(filename), **verdict.to_dict(),
        "image": describe_image(decoded, len(data)), "warnings": assess_image(decoded, primary, photo),
        "synthetic_model": primary.synthetic, "evidence_of": of,
        "robustness": None, "provenance": None, "gradcam": None,
    }
    result["notes"] = [*result["notes"], *([coverage] if coverage else [])]
    if robustness:
        t = time.perf_counter()
        result["robustness"] = check_robustness(primary, scored, verdict.primary.verdict, result["p_fake"], of=of)
        timings["robustness_ms"] = (time.perf_counter() - t) * 1e3
    if provenance:
        from fakeface.serving.provenance import read_provenance   # c2pa's native library: on first use, not at start

        t = time.perf_counter()
        result["provenance"] = read_provenance(data, image_format=decoded.format)
        timings["provenance_ms"] = (time.perf_counter() - t) * 1e3
    if explain:
        t = time.perf_counter()
        _, result["gradcam"] = explain_image(primary.detector, scored)
        timings["gradcam_ms"] = (time.perf_counter() - t) * 1e3
    timings["total_ms"] = (time.perf_counter() - started) * 1e3
    result["timings_ms"] = {k: round(v, 1) for k, v in timings.items()}
    return result, decoded
