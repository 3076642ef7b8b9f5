"""Training on face crops: each dataset image replaced by the face the app would judge.

By default (``TrainingConfig.face_crop``; ``--no-face-crop`` turns it off) every split goes through
the face stage (:func:`fakeface.faces.crop_faces` with the model's
:class:`FaceCrop`) before training, validation, calibration and the test
report, and the :class:`FaceCrop` is written into the release's config, so the
app and scans cut the same crops. The largest judgeable face of each image is
kept (faces-dev's fakes show one person); an image with no judgeable face is
kept whole, as the app scores it. Crops keep their native pixels and are
stored losslessly (PNG), so nothing is resampled or re-compressed here.
"""
from __future__ import annotations

import io
from typing import Any

from fakeface.data.images import load_image
from fakeface.faces import FaceCrop, crop_faces

FACE_FOUND_COLUMN = "face_found"


def _largest_face_png(data: bytes | str, face_crop: FaceCrop) -> bytes | None:
    """PNG bytes of the largest judgeable face's crop, or None when there is none."""
    faces = crop_faces(load_image(data).image, face_crop, threads=1).judgeable
    if not faces:
        return None
    buffer = io.BytesIO()
    faces[0].image.save(buffer, format="PNG")
    return buffer.getvalue()


def crop_split_to_faces(split: Any, face_crop: FaceCrop) -> Any:
    """A ``datasets`` split whose images are face crops (encoded), plus a ``face_found`` column."""
    from datasets import Image as ImageFeature  # heavy; only when training on face crops

    split = split.cast_column("image", ImageFeature(decode=False))

    def crop(example: dict) -> dict:
        image = example["image"]
        png = _largest_face_png(image.get("bytes") or image.get("path"), face_crop)
        if png is not None:
            example["image"] = {"bytes": png, "path": None}
        example[FACE_FOUND_COLUMN] = png is not None
        return example

    return split.map(crop, desc="face stage")


def face_crop_notes(splits: dict[str, Any]) -> list[str]:
    """One note per split with images that had no judgeable face (scored whole)."""
    notes = []
    for name, split in splits.items():
        missing = len(split) - sum(split[FACE_FOUND_COLUMN])
        if missing:
            notes.append(f"{missing} of {len(split)} {name} images had no judgeable face and were used whole")
    return notes
