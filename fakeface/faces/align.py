"""From a photo to aligned face crops at native resolution: :func:`crop_faces`.

Each face is cut as a square of side ``size x (1 + 2 x margin)`` about its
centre, both read off the landmarks by FFHQ's rule
(:func:`fakeface.faces.detect.face_geometry`). With ``FaceCrop.align`` the
crop is turned so the eyes are level, about the eye centre. Rotations by a
multiple of 90 degrees are done by transposing pixels (lossless); only the
remainder is resampled, and not at all when it is under
``FaceCrop.align_min_deg``, because resampling blurs exactly the pixel-level
traces a fake detector reads. The crop is never resized. Where the square
would leave the photo it is first shifted inside, and where the photo is too
small for it its side shrinks (``margin_used`` records the margin it really
has), so no crop carries invented pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fakeface.faces.crop import FaceCrop
from fakeface.faces.detect import (
    MAX_FACES, QUARTER_TURNS, DetectionView, Face, create_detection_view, detect_faces, detect_in_view,
)

__all__ = ["CroppedFace", "FaceScan", "crop_face", "crop_faces", "draw_face_boxes"]

_REMEASURE_DEG = 10.0   # tilts from this on are measured a second time in the levelled crop



@dataclass(frozen=True)
class CroppedFace:
    """A found face and its aligned crop.

    ``image`` is RGB, square, at the photo's native resolution.
    ``crop_landmarks`` are the face's landmarks in the crop's pixels.
    ``rotation_deg`` is how far the photo was turned (counter-clockwise) to level the eyes.
    ``padding`` is the fraction of the crop's area that lies outside the photo and was mirrored in
    (0 but for a rounding rim: the side shrinks instead, see ``margin_used``).
    """

    face: Face
    image: Image.Image = field(repr=False)
    rotation_deg: float
    padding: float
    crop_landmarks: tuple[tuple[float, float], ...]
    margin_used: float       # the margin the crop really has: below FaceCrop.margin where the photo ends

    @property
    def box(self) -> tuple[int, int, int, int]:
        return self.face.box

    def to_record(self) -> dict[str, Any]:
        return {**self.face.to_record(), "crop_size": self.image.size[0],
                "rotation_deg": round(self.rotation_deg, 2), "padding": round(self.padding, 4),
                "margin_used": round(self.margin_used, 3)}


@dataclass(frozen=True)
class FaceScan:
    """What the face stage found in one photo.

    ``faces`` are largest first. ``no_face`` is true when none was found (the
    caller then scores the whole image and says so). ``notes`` say, in words
    a user can read, what was odd: no face, faces too small to judge, faces cut
    by the border, a photo found only when turned, a converted colour mode.
    """

    faces: tuple[CroppedFace, ...]
    image_size: tuple[int, int]
    face_crop: FaceCrop
    notes: tuple[str, ...] = ()
    turned_deg: int = 0      # the photo had to be turned by this much (0/90/180/270, ccw) to find its faces

    @property
    def no_face(self) -> bool:
        return not self.faces

    @property
    def judgeable(self) -> tuple[CroppedFace, ...]:
        """The faces big enough to judge."""
        return tuple(f for f in self.faces if not f.face.too_small)

    def to_record(self) -> dict[str, Any]:
        return {"no_face": self.no_face, "image_size": list(self.image_size), "turned_deg": self.turned_deg,
                "faces": [f.to_record() for f in self.faces], "notes": list(self.notes)}


# --------------------------------------------------------------------------- geometry

def _eye_angle(landmarks: Sequence[tuple[float, float]]) -> float:
    """Angle (degrees, image coordinates: y down) of the line from the image-left eye to the other."""
    (xa, ya), (xb, yb) = landmarks[0], landmarks[1]
    return math.degrees(math.atan2(yb - ya, xb - xa))


def _quarter_turns_to_upright(landmarks: Sequence[tuple[float, float]]) -> int:
    """Quarter turns (ccw) that bring the face's eyes above its mouth.

    Read from the eyes-to-mouth direction, not the eye line: the detector names
    the eyes by their side in the image, so on an upside-down face the eye line
    still looks level.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    down = points[3:5].mean(axis=0) - points[0:2].mean(axis=0)       # eyes -> mouth; (0, +) when upright
    tilt = math.degrees(math.atan2(-down[0], down[1]))                 # 0 upright, 90 when lying on its right
    return round(tilt / 90.0) % 4


def _split_rotation(angle: float, face_crop: FaceCrop) -> tuple[int, float]:
    """(quarter turns, residual degrees) that level a face whose eye line is at ``angle``."""
    if not face_crop.align:
        return 0, 0.0
    turns = round(angle / 90.0)
    residual = angle - 90.0 * turns
    if abs(residual) < face_crop.align_min_deg:
        residual = 0.0
    return turns % 4, residual


def _turn_points(points: np.ndarray, turns: int, size: tuple[int, int]) -> np.ndarray:
    """Where pixel-centre points land after PIL's ``transpose(ROTATE_{90*turns})`` (counter-clockwise)."""
    width, height = size
    x, y = points[:, 0], points[:, 1]
    if turns == 1:
        return np.stack([y, width - x], axis=1)
    if turns == 2:
        return np.stack([width - x, height - y], axis=1)
    if turns == 3:
        return np.stack([height - y, x], axis=1)
    return points.copy()


def _cut_mirrored(photo: Image.Image, x0: int, y0: int, x1: int, y1: int) -> tuple[Image.Image, int]:
    """The region [x0, x1) x [y0, y1) of the photo, the part outside it mirrored in; and how many pixels were filled.

    Only the filter rim of a rotated crop (2 px) normally lies outside; the
    mirror keeps the resampling filter from pulling in a flat colour there.
    """
    width, height = photo.size
    cx0, cy0 = min(max(x0, 0), width - 1), min(max(y0, 0), height - 1)
    cx1, cy1 = max(min(x1, width), cx0 + 1), max(min(y1, height), cy0 + 1)
    inside = photo.crop((cx0, cy0, cx1, cy1))
    filled = (x1 - x0) * (y1 - y0) - (cx1 - cx0) * (cy1 - cy0)
    if (cx0, cy0, cx1, cy1) == (x0, y0, x1, y1):
        return inside, 0
    pads = ((max(0, cy0 - y0), max(0, y1 - cy1)), (max(0, cx0 - x0), max(0, x1 - cx1)), (0, 0))
    # "symmetric" repeats the edge row, then mirrors; it accepts pads wider than the region, unlike "reflect"
    return Image.fromarray(np.pad(np.asarray(inside), pads, mode="symmetric")), max(0, filled)


def _fit(start: float, side: float, length: int) -> float:
    """Shift a crop of ``side`` to lie inside [0, length) where it fits: real pixels beat mirrored ones."""
    if side > length:
        return start
    return min(max(start, 0), length - side)


def crop_face(image: Image.Image, face: Face, face_crop: FaceCrop, *, threads: int | None = None) -> CroppedFace:
    """The aligned square crop of one face from an RGB photo (see the module docstring)."""
    turns, residual = _split_rotation(_eye_angle(face.landmarks), face_crop)
    crop = _cut(image, face, face_crop, turns, residual)
    if abs(residual) >= _REMEASURE_DEG:
        # The detector reads a large tilt short (a face at 30 degrees comes out near 21), so the eye
        # line is measured again in the levelled crop and the rest of the tilt is taken out.
        again = detect_faces(crop.image, replace(face_crop, try_turned=False), threads=threads)
        if again:
            middle = np.asarray(crop.image.size) / 2
            nearest = min(again, key=lambda f: float(np.hypot(*(np.asarray(f.centre) - middle))))
            delta = _eye_angle(nearest.landmarks)
            if face_crop.align_min_deg <= abs(delta) < 45.0:
                crop = _cut(image, face, face_crop, turns, residual + delta)
    return crop


def _cut(image: Image.Image, face: Face, face_crop: FaceCrop, turns: int, residual: float) -> CroppedFace:
    photo = image.transpose(QUARTER_TURNS[turns]) if turns else image
    points = _turn_points(np.asarray(face.landmarks + (face.centre,), dtype=np.float64), turns, image.size)
    landmarks, centre = points[:5], points[5]
    # The square never needs pixels from outside the photo: where the margin would leave it, the
    # side shrinks (margin_used says by how much). Invented pixels (mirrored or flat) would mark
    # exactly the crops of large, close-up faces, a shortcut a classifier would learn.
    theta = math.radians(residual)
    spread = abs(math.cos(theta)) + abs(math.sin(theta))     # photo-space extent of a unit square turned by theta
    fits = min(photo.size) / spread
    side = max(1, min(int(round(face.size_px * (1.0 + 2.0 * face_crop.margin))), int(fits)))
    if residual == 0.0:
        # side <= the photo's shorter side, so after the shift the square lies inside: a plain pixel copy
        x0 = int(_fit(round(centre[0] - side / 2), side, photo.size[0]))
        y0 = int(_fit(round(centre[1] - side / 2), side, photo.size[1]))
        out, padding = photo.crop((x0, y0, x0 + side, y0 + side)), 0.0
        crop_points = landmarks - (x0, y0)
    else:
        out, crop_points, padding = _rotated_crop(photo, landmarks, centre, residual, side)
    return CroppedFace(
        face=face, image=out, rotation_deg=float(90.0 * turns + residual) % 360.0, padding=float(padding),
        crop_landmarks=tuple((float(x), float(y)) for x, y in crop_points),
        margin_used=float((side / max(face.size_px, 1e-9) - 1.0) / 2.0),
    )


def _rotated_crop(photo: Image.Image, landmarks: np.ndarray, face_centre: np.ndarray, residual: float,
                  side: int) -> tuple[Image.Image, np.ndarray, float]:
    """Turn by ``residual`` degrees about the eye centre and cut the square centred on the face."""
    eye_centre = landmarks[:2].mean(axis=0)
    theta = math.radians(residual)
    cos, sin = math.cos(theta), math.sin(theta)
    rot = np.array([[cos, -sin], [sin, cos]])   # levelled -> photo (image coordinates, y down)
    # The crop is centred on the box centre as seen in the levelled frame (it sits below the eyes).
    centre_level = eye_centre + rot.T @ (face_centre - eye_centre)
    origin_level = centre_level - side / 2
    corners = np.array([[0, 0], [side, 0], [0, side], [side, side]], dtype=np.float64)
    corners_photo = (corners + origin_level - eye_centre) @ rot.T + eye_centre
    # As for unturned crops, shift the square to lie inside the photo where its photo-space extent fits.
    low, high = corners_photo.min(axis=0), corners_photo.max(axis=0)
    width, height = photo.size
    shift = np.array([_fit(low[0], high[0] - low[0], width) - low[0], _fit(low[1], high[1] - low[1], height) - low[1]])
    origin_level = origin_level + rot.T @ shift
    corners_photo = corners_photo + shift
    # Photo-space bounding box of the square, cut (mirrored where needed) with a 2 px rim for the filter.
    bx0, by0 = np.floor(corners_photo.min(axis=0)).astype(int) - 2
    bx1, by1 = np.ceil(corners_photo.max(axis=0)).astype(int) + 2
    patch, _ = _cut_mirrored(photo, bx0, by0, bx1, by1)
    # PIL's affine maps each output pixel (u, v) to the input point (a u + b v + c, d u + e v + f).
    offset = rot @ (origin_level - eye_centre) + eye_centre - (bx0, by0)
    coeffs = (rot[0, 0], rot[0, 1], offset[0], rot[1, 0], rot[1, 1], offset[1])
    out = patch.transform(
        (side, side), Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BICUBIC)
    crop_points = (landmarks - eye_centre) @ rot + eye_centre - origin_level     # photo -> levelled
    padding = _outside_fraction((height, width), rot, origin_level, eye_centre, side)
    return out, crop_points, padding


def _outside_fraction(shape: tuple[int, int], rot: np.ndarray, origin_level: np.ndarray,
                      eye_centre: np.ndarray, side: int, grid: int = 32) -> float:
    """Fraction of the rotated square that falls outside the photo, measured on a grid x grid sample."""
    steps = (np.arange(grid) + 0.5) * side / grid
    uu, vv = np.meshgrid(steps, steps)
    level = np.stack([uu.ravel(), vv.ravel()], axis=1) + origin_level
    photo = (level - eye_centre) @ rot.T + eye_centre
    height, width = shape
    outside = (photo[:, 0] < 0) | (photo[:, 0] >= width) | (photo[:, 1] < 0) | (photo[:, 1] >= height)
    return float(outside.mean())


# --------------------------------------------------------------------------- the public entry point

def crop_faces(image: Image.Image, face_crop: FaceCrop, *, threads: int | None = None) -> FaceScan:
    """Find every face in a decoded photo and cut its aligned crop.

    Accepts any PIL mode (grayscale, RGBA, palette...) and converts to RGB,
    saying so in the notes. With ``face_crop.try_turned``, a photo that lies
    on its side (a phone photo whose orientation was lost) is searched turned
    by 90 or 270 degrees; crops of faces found that way come out upright. Never raises for odd pixels; a
    missing detector raises :class:`fakeface.faces.detect.FaceDetectorUnavailable`.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"crop_faces needs a PIL image, got {type(image).__name__}")
    notes: list[str] = []
    if image.mode != "RGB":
        notes.append(f"the image was {image.mode}; converted to RGB for face detection and crops")
        image = image.convert("RGB")
    view = create_detection_view(image, face_crop.detect_size)
    faces = detect_in_view(view, face_crop, threads=threads)
    turned = 0
    if face_crop.try_turned:
        faces, turned = _orient(view, faces, face_crop, threads)
    crops = tuple(crop_face(image, face, face_crop, threads=threads) for face in faces)
    notes.extend(_scan_notes(crops, turned, face_crop))
    return FaceScan(faces=crops, image_size=image.size, face_crop=face_crop, notes=tuple(notes), turned_deg=turned)


def _orient(view: DetectionView, faces: list[Face], face_crop: FaceCrop,
            threads: int | None) -> tuple[list[Face], int]:
    """Faces found in the photo's most likely orientation, and the quarter turn (degrees) that found them.

    The detector was trained on upright faces: turned by 90 degrees it often
    still finds a face, but its landmarks are then off by tens of degrees. So
    when the largest face's eyes-to-mouth direction says it lies on its side,
    the photo is searched again turned that way; when nothing is found
    upright, both quarter turns are tried. (Not 180: an upside-down face is
    found upright, with wrong but upright-looking landmarks, so turning the
    photo over finds nothing the upright search missed.)
    """
    if faces:
        turns = _quarter_turns_to_upright(faces[0].landmarks)
        if not turns:
            return faces, 0
        found, turned = _detect_turned(view, face_crop, threads, (turns,))
        return (found, turned) if found else (faces, 0)
    return _detect_turned(view, face_crop, threads, (1, 3))


def _detect_turned(view: DetectionView, face_crop: FaceCrop, threads: int | None,
                   order: Sequence[int]) -> tuple[list[Face], int]:
    """Search the photo turned by each quarter turn in ``order``; faces come back in the photo's own pixels.

    The first turn that finds a face wins. (The detector's scores do not tell
    orientations apart: an upside-down face scores 0.65-0.99.) The small
    detection copy is what gets turned, never the full-size photo.
    """
    width, height = view.photo_size
    for turns in order:
        found = detect_in_view(view, face_crop, quarter_turns=turns, threads=threads)
        if found:
            turned_size = (height, width) if turns % 2 else (width, height)
            back = (4 - turns) % 4      # undo the turn: points in the turned photo -> the original
            return [_unturn_face(face, back, turned_size) for face in found], 90 * turns
    return [], 0


def _unturn_face(face: Face, turns: int, turned_size: tuple[int, int]) -> Face:
    points = _turn_points(np.asarray(face.landmarks + (face.centre,), dtype=np.float64), turns, turned_size)
    x0, y0, x1, y1 = face.box
    corners = _turn_points(np.array([[x0, y0], [x1, y1]], dtype=np.float64), turns, turned_size)
    (bx0, by0), (bx1, by1) = corners.min(axis=0), corners.max(axis=0)
    return Face(
        box=(int(round(bx0)), int(round(by0)), int(round(bx1)), int(round(by1))),
        landmarks=tuple((float(x), float(y)) for x, y in points[:5]),
        score=face.score, size_px=face.size_px, too_small=face.too_small, cut_by_border=face.cut_by_border,
        centre=(float(points[5, 0]), float(points[5, 1])),
    )


def _scan_notes(crops: Sequence[CroppedFace], turned: int, face_crop: FaceCrop) -> list[str]:
    if not crops:
        return ["no face found (a painting, a cartoon, a face in profile or one smaller than the detector "
                "sees can be missed): the whole image is scored instead"]
    notes = []
    if turned:
        notes.append(f"the faces were found with the photo turned by {turned} degrees (it may be lying on its "
                     f"side); their crops are upright")
    small = sum(c.face.too_small for c in crops)
    if small:
        notes.append(f"{small} of {len(crops)} face(s) are smaller than {face_crop.min_face_px} px: too small to judge")
    cut = sum(c.face.cut_by_border for c in crops)
    if cut:
        notes.append(f"{cut} face(s) are cut by the photo's border: part of the face is missing")
    padded = [c.padding for c in crops if c.padding > 0]
    if padded:
        notes.append(f"{len(padded)} crop(s) are larger than the photo; up to {max(padded):.0%} of a crop "
                     f"is the photo mirrored at its edge")
    if len(crops) >= MAX_FACES:
        notes.append(f"stopped at {MAX_FACES} faces; the photo may hold more")
    return notes


# --------------------------------------------------------------------------- drawing for the app

def draw_face_boxes(image: Image.Image, faces: Sequence[Face | CroppedFace], labels: Sequence[str] | None = None,
                    colours: Sequence[str | tuple[int, int, int]] | None = None) -> Image.Image:
    """A copy of ``image`` (RGB) with each face's box and label drawn on it.

    ``labels`` and ``colours`` go with ``faces`` one to one (defaults: "face 1",
    "face 2", ... in yellow). Lines and text scale with the photo's size.
    """
    faces = [f.face if isinstance(f, CroppedFace) else f for f in faces]
    labels = list(labels) if labels is not None else [f"face {i + 1}" for i in range(len(faces))]
    colours = list(colours) if colours is not None else ["#ffd400"] * len(faces)
    if not len(labels) == len(colours) == len(faces):
        raise ValueError(f"got {len(faces)} faces, {len(labels)} labels and {len(colours)} colours; they go one to one")
    canvas = image.convert("RGB") if image.mode != "RGB" else image.copy()
    draw = ImageDraw.Draw(canvas)
    width = max(2, round(max(canvas.size) / 300))
    font = ImageFont.load_default(size=max(12, round(max(canvas.size) / 45)))
    for face, label, colour in zip(faces, labels, colours):
        x0, y0, x1, y1 = face.box
        draw.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        if label:
            tx, ty = x0, max(0, y0 - font.size - 2 * width)
            left, top, right, bottom = draw.textbbox((tx, ty), label, font=font)
            draw.rectangle((left - width, top - width, right + width, bottom + width), fill=colour)
            draw.text((tx, ty), label, fill="black", font=font)
    return canvas
