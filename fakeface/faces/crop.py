"""THE face-crop definition: how a face found in a photo becomes the image the model sees.

It is stored in the detector's ``config.json`` (``fakeface.face_crop``) beside
the preprocessing, and read back by :func:`fakeface.modeling.config.resolve_detector_config`,
so the dataset build, training, evaluation, the app and scans cut the same crop.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping

from fakeface.faces.graph import FaceGraph

FACE_DETECTORS = ("retinaface",)


@dataclass(frozen=True)
class FaceCrop:
    """Where a face crop starts and ends, and which faces are worth judging.

    Crops are cut at the photo's native resolution (no resize): the generator
    traces the detector reads are high-frequency and a resize erases them.
    """

    detector: str = "retinaface"
    # Extra context on every side, as a fraction of the face's size (from its landmarks, by FFHQ's rule:
    # max(2 x eye distance, 1.8 x eyes-to-mouth); see fakeface.faces.detect.face_geometry). 0.5 gives a
    # square of 2 x size, FFHQ's own framing, so an aligned FFHQ/CelebA-HQ photo is cut to about itself.
    margin: float = 0.5
    align: bool = True             # rotate about the eye centre so the eyes are level (from the landmarks)
    min_face_px: int = 64          # faces smaller than this (px, the landmark size above) are too small to judge
    score_threshold: float = 0.6   # detector confidence needed to count as a face
    detect_size: int = 320         # the photo is downscaled to at most this (longer side) for detection only
    # Added with the face stage: eye-levelling turns smaller than this are skipped, because resampling
    # blurs the pixel-level traces the classifier reads (quarter turns are lossless and always done).
    # 5: on aligned FFHQ/StyleGAN faces, whose eyes are level by construction, the landmarks still read
    # up to ~5 degrees (p90 3-4.6); at 3 a fifth of ffhq-140k would be resampled for nothing.
    align_min_deg: float = 5.0
    # Added with the face stage: with no face found upright, also search the photo turned by 90/270/180
    # degrees (a phone photo whose orientation was lost); costs three more detector runs on faceless photos.
    try_turned: bool = True
    # Which detector graph runs: where the crop is cut, not how, so it is neither saved in the config's
    # face_crop block nor compared (the release records its graph in its own block; see faces.graph).
    # None: the installed package's graph.
    graph: FaceGraph | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.detector not in FACE_DETECTORS:
            raise ValueError(f"face detector must be one of {FACE_DETECTORS}, got {self.detector!r}")
        if not 0.0 <= self.margin <= 2.0:
            raise ValueError(f"face-crop margin must be in [0, 2], got {self.margin}")
        if self.min_face_px < 1:
            raise ValueError(f"min_face_px must be >= 1, got {self.min_face_px}")
        if not 0.0 < self.score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {self.score_threshold}")
        if not 0.0 <= self.align_min_deg <= 45.0:
            raise ValueError(f"align_min_deg must be in [0, 45], got {self.align_min_deg}")
        if self.detect_size < 64:
            raise ValueError(f"detect_size must be >= 64, got {self.detect_size}")

    def to_cfg(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "graph"}

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any] | None) -> "FaceCrop | None":
        """``None`` (no face stage: the whole image is scored) when the config has no face crop."""
        if not cfg:
            return None
        known = {f.name for f in fields(cls)} - {"graph"}
        return cls(**{k: v for k, v in cfg.items() if k in known})
