"""THE one path from a decoded photo to per-face scores: :func:`score_photos`.

The app, scans and evaluation all score photos through here, so a photo is
cut into faces, judged and summarised the same way everywhere:

* the face crop is the detector's own (``DetectorConfig.face_crop``, written by
  training next to the preprocessing), unless the caller overrides it;
* every judgeable face crop (:func:`fakeface.faces.crop_faces`, the one crop
  definition) is scored, the crops of all photos in shared model calls;
* the photo's ``photo_p_fake``/``verdict`` are those of its most suspicious
  judgeable face, and a note says so;
* faces too small to judge keep their box (``too_small=True``) but get no score;
* with no face found, or only faces too small to judge, the whole image is
  scored and a note says so; a model without a face stage (older releases,
  ``face_crop`` None) scores the whole image as it always did, and says so.

Never raises for odd pixels (grayscale, cartoons, noise, thirty faces, a face
cut by the border, a photo on its side): every photo gets a result and notes.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from PIL import Image

from fakeface.faces import FaceCrop, FaceDetectorUnavailable, FaceScan, crop_faces
from fakeface.modeling.config import DetectorConfig, resolve_detector_config

__all__ = [
    "FROM_CONFIG", "FaceScore", "FaceStageDown", "PhotoScore", "SCORE_BATCH", "resolve_face_crop", "run_face_stage",
    "scan_photos", "score_photos",
]

# Crops per model call: bounds memory on a crowd photo or a long scan (30 faces x 5 crops x 224² stays small).
SCORE_BATCH = 32

Mode = Literal["faces", "whole-image"]

NOTE_NO_FACE = "No face found: the whole image was scored."
NOTE_MISSABLE = ("Paintings, cartoons, faces in profile and very small faces can be missed by the face detector.")
NOTE_NO_FACE_STAGE = "This model has no face stage (its config has no face crop): the whole image was scored."
NOTE_ONLY_TOO_SMALL = "Every face found is smaller than {px} px, too small to judge: the whole image was scored."
NOTE_FACE_STAGE_DOWN = "The face detector is unavailable ({reason}): the whole image was scored. To fix: {fix}."
NOTE_FROM_FACE = "The photo's verdict is that of its most suspicious face: face {index} ({judged} of {found} judged)."


class _FromConfig:
    def __repr__(self) -> str:
        return "FROM_CONFIG"


FROM_CONFIG: Any = _FromConfig()   # score_photos' default: the face crop the detector's config carries


@dataclass(frozen=True)
class FaceScore:
    """One face in a photo and, when it is big enough to judge, its own score.

    ``box`` is (x0, y0, x1, y1) in the original photo's pixels. ``score`` is
    the face detector's confidence; ``p_fake``/``verdict`` are the fake
    detector's, None for a face too small to judge. ``index`` counts from 1,
    largest face first (as labelled on the image).
    """

    index: int
    box: tuple[int, int, int, int]
    score: float
    size_px: float
    p_fake: float | None
    verdict: str | None
    too_small: bool
    cut_by_border: bool
    experts: Mapping[str, float] | None = None   # a panel's experts, each its own p(fake)
    evidence: str | None = None                  # a panel's sentence on what decided this face's verdict

    def to_dict(self) -> dict[str, Any]:
        return {"face": self.index, "box": list(self.box), "score": round(float(self.score), 4),
                "size_px": round(float(self.size_px), 1),
                "p_fake": None if self.p_fake is None else round(float(self.p_fake), 6), "verdict": self.verdict,
                "too_small": self.too_small, "cut_by_border": self.cut_by_border,
                "experts": _rounded(self.experts), "evidence": self.evidence}


def _rounded(experts: Mapping[str, float] | None) -> dict[str, float] | None:
    return None if experts is None else {k: round(float(v), 6) for k, v in experts.items()}


@dataclass(frozen=True)
class PhotoScore:
    """A photo's verdict and where it came from.

    ``mode`` is "faces" when the verdict is a face's (``most_suspicious`` is
    its position in ``faces``), "whole-image" when the whole image was scored
    (no face, only faces too small, or no face stage). ``scored_image`` is the
    image the verdict was computed on (that face's crop, or the photo), for
    evidence such as Grad-CAM or a robustness re-check.
    """

    faces: tuple[FaceScore, ...]
    photo_p_fake: float
    verdict: str
    mode: Mode
    notes: tuple[str, ...]
    image_size: tuple[int, int]
    most_suspicious: int | None = None
    scored_image: Image.Image | None = field(default=None, repr=False, compare=False)
    scan: FaceScan | None = field(default=None, repr=False, compare=False)
    experts: Mapping[str, float] | None = None   # the deciding crop's per-expert p(fake) (a panel), else None
    evidence: str | None = None                  # the deciding crop's sentence (a panel), else None

    @property
    def judged(self) -> tuple[FaceScore, ...]:
        return tuple(f for f in self.faces if not f.too_small)

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "photo_p_fake": round(float(self.photo_p_fake), 6), "verdict": self.verdict,
                "faces": [f.to_dict() for f in self.faces], "most_suspicious_face":
                None if self.most_suspicious is None else self.faces[self.most_suspicious].index,
                "notes": list(self.notes), "image_size": list(self.image_size),
                "experts": _rounded(self.experts), "evidence": self.evidence}


def resolve_face_crop(detector: Any) -> FaceCrop | None:
    """The face crop a detector's config carries (None: no face stage).

    Reads ``detector.config`` (a :class:`DetectorConfig`) when there is one,
    else resolves the config of ``detector.model``.
    """
    config = getattr(detector, "config", None)
    if isinstance(config, DetectorConfig):
        return config.face_crop
    model = getattr(detector, "model", None)
    if model is None:
        raise TypeError(f"{type(detector).__name__} carries no config or model to read its face crop from; "
                        "pass face_crop= explicitly")
    return resolve_detector_config(model).face_crop


def scan_photos(images: Sequence[Image.Image], face_crop: FaceCrop, *, threads: int | None = None) -> list[FaceScan]:
    """The face stage on each photo (shared by several models that use the same face crop)."""
    return [crop_faces(image, face_crop, threads=threads) for image in images]


@dataclass(frozen=True)
class FaceStageDown:
    """The face stage could not run (no detector graph, or no runtime): photos are scored whole."""

    reason: str
    fix: str

    @property
    def note(self) -> str:
        return NOTE_FACE_STAGE_DOWN.format(reason=self.reason, fix=self.fix.rstrip("."))


def run_face_stage(images: Sequence[Image.Image], face_crop: FaceCrop, *,
                   threads: int | None = None) -> list[FaceScan] | FaceStageDown:
    """:func:`scan_photos`, or why it could not run: a missing face detector never fails a request."""
    try:
        return scan_photos(images, face_crop, threads=threads)
    except FaceDetectorUnavailable as error:
        return FaceStageDown(error.reason, error.fix)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class _Scored:
    """Every input crop's score, in order (experts and evidence only for a panel)."""
    p_fake: np.ndarray
    verdicts: list[str]
    experts: list[dict[str, float] | None]
    evidence: list[str | None]

    def span(self, a: int, b: int) -> "_Scored":
        return _Scored(self.p_fake[a:b], self.verdicts[a:b], self.experts[a:b], self.evidence[a:b])


def _score_all(detector: Any, inputs: Sequence[Image.Image]) -> _Scored:
    """Score ``inputs`` in model calls of at most SCORE_BATCH images."""
    p_fake, verdicts, experts, evidence = [], [], [], []
    for start in range(0, len(inputs), SCORE_BATCH):
        chunk = list(inputs[start:start + SCORE_BATCH])
        scores = detector.score(chunk)
        p_fake.extend(float(p) for p in np.asarray(scores.p_fake).reshape(-1))
        verdicts.extend(scores.verdicts)
        by_expert = getattr(scores, "experts", None)
        experts.extend([None] * len(chunk) if by_expert is None else
                       [{k: float(v[i]) for k, v in by_expert.items()} for i in range(len(chunk))])
        evidence.extend(getattr(scores, "evidence", None) or [None] * len(chunk))
    return _Scored(np.asarray(p_fake, dtype=np.float64), list(verdicts), experts, evidence)


def score_photos(detector: Any, images: Sequence[Image.Image], *, face_crop: FaceCrop | None = FROM_CONFIG,
                 scans: Sequence[FaceScan] | FaceStageDown | None = None,
                 threads: int | None = None) -> list[PhotoScore]:
    """Decoded photos -> one :class:`PhotoScore` each, in order (see the module docstring).

    ``detector`` is anything with ``score(images) -> Scores`` (``p_fake``,
    ``verdicts``): a :class:`fakeface.modeling.inference.Detector` or its fast
    path. ``face_crop`` defaults to the detector's own; pass a
    :class:`FaceCrop` to override it, or None to score whole images.
    ``scans`` are the face stage's results for ``images`` when already known
    (several models sharing one face crop); they must use that face crop.
    When the face stage cannot run (:class:`FaceStageDown`), every photo is
    scored whole and its notes say why and how to fix it.
    """
    images = list(images)
    if face_crop is FROM_CONFIG:
        face_crop = resolve_face_crop(detector)
    if face_crop is not None and scans is None:
        scans = run_face_stage(images, face_crop, threads=threads)
    down = scans if isinstance(scans, FaceStageDown) else None
    if face_crop is None or down is not None:
        found: list[FaceScan | None] = [None] * len(images)
    else:
        found = list(scans)
        if len(found) != len(images):
            raise ValueError(f"got {len(found)} face scans for {len(images)} photos")
        if any(scan.face_crop != face_crop for scan in found):
            raise ValueError("the face scans were made with another face crop than the one scored")

    # Everything to score, in one list: the judgeable face crops of every photo, or the photo itself.
    inputs: list[Image.Image] = []
    spans: list[tuple[int, int]] = []
    for image, scan in zip(images, found):
        start = len(inputs)
        judgeable = scan.judgeable if scan is not None else ()
        if judgeable:
            inputs.extend(c.image for c in judgeable)
        else:
            inputs.append(image)
        spans.append((start, len(inputs)))
    scored = _score_all(detector, inputs) if inputs else _Scored(np.zeros(0), [], [], [])

    return [_photo_score(image, scan, face_crop, inputs[a:b], scored.span(a, b), down)
            for image, scan, (a, b) in zip(images, found, spans)]


def _photo_score(image: Image.Image, scan: FaceScan | None, face_crop: FaceCrop | None,
                 inputs: Sequence[Image.Image], scored: _Scored, down: FaceStageDown | None = None) -> PhotoScore:
    photo = _photo_score_core(image, scan, face_crop, inputs, scored.p_fake, scored.verdicts, down)
    k = 0 if photo.most_suspicious is None else [f.index for f in photo.judged].index(
        photo.faces[photo.most_suspicious].index)
    if not scored.experts or scored.experts[0] is None:
        return photo
    faces, judged = [], iter(zip(scored.experts, scored.evidence))
    for face in photo.faces:
        if photo.mode == "faces" and not face.too_small:
            experts, evidence = next(judged)   # judgeable faces were scored in order, one input each
            face = replace(face, experts=experts, evidence=evidence)
        faces.append(face)
    return replace(photo, faces=tuple(faces), experts=scored.experts[k], evidence=scored.evidence[k])


def _photo_score_core(image: Image.Image, scan: FaceScan | None, face_crop: FaceCrop | None,
                      scored: Sequence[Image.Image], p_fake: np.ndarray, verdicts: Sequence[str],
                      down: FaceStageDown | None = None) -> PhotoScore:
    size = (int(image.size[0]), int(image.size[1]))
    if scan is None:
        note = NOTE_NO_FACE_STAGE if down is None else down.note
        return PhotoScore((), float(p_fake[0]), verdicts[0], "whole-image", (note,), size, scored_image=scored[0])
    if scan.no_face:
        notes = [NOTE_NO_FACE, NOTE_MISSABLE]
        if image.mode != "RGB":
            notes.append(f"The image was {image.mode}; converted to RGB.")
        return PhotoScore((), float(p_fake[0]), verdicts[0], "whole-image", tuple(notes), size,
                          scored_image=scored[0], scan=scan)
    faces, judged = [], iter(zip(p_fake, verdicts))
    for index, crop in enumerate(scan.faces, start=1):
        face = crop.face
        p, verdict = (None, None) if face.too_small else next(judged)
        faces.append(FaceScore(index, tuple(int(v) for v in face.box), float(face.score), float(face.size_px),
                               None if p is None else float(p), verdict, bool(face.too_small),
                               bool(face.cut_by_border)))
    stage_notes = tuple(_sentence(n) for n in scan.notes)
    judgeable = [i for i, f in enumerate(faces) if not f.too_small]
    if not judgeable:
        headline = NOTE_ONLY_TOO_SMALL.format(px=face_crop.min_face_px)
        return PhotoScore(tuple(faces), float(p_fake[0]), verdicts[0], "whole-image", (headline, *stage_notes),
                          size, scored_image=scored[0], scan=scan)
    # The most suspicious face decides: one fake face in a group photo makes the photo suspect.
    worst = max(judgeable, key=lambda i: faces[i].p_fake)
    headline = NOTE_FROM_FACE.format(index=faces[worst].index, judged=len(judgeable), found=len(faces))
    return PhotoScore(tuple(faces), float(faces[worst].p_fake), str(faces[worst].verdict), "faces",
                      (headline, *stage_notes), size, most_suspicious=worst,
                      scored_image=scored[judgeable.index(worst)], scan=scan)
