"""Finding, aligning and cropping faces: the stage before the detector.

``crop_faces(image, face_crop) -> FaceScan`` is the one entry point; see docs/faces.md.
"""
from fakeface.faces.align import CroppedFace, FaceScan, crop_face, crop_faces, draw_face_boxes
from fakeface.faces.crop import FaceCrop
from fakeface.faces.detect import MAX_FACES, Face, detect_faces, prepare_face_session
from fakeface.faces.graph import FaceDetectorUnavailable, FaceGraph, FaceGraphRecord, bundle_face_graph, resolve_face_graph

__all__ = [
    "CroppedFace", "Face", "FaceCrop", "FaceDetectorUnavailable", "FaceGraph", "FaceGraphRecord", "FaceScan",
    "MAX_FACES", "bundle_face_graph", "crop_face", "crop_faces", "detect_faces", "draw_face_boxes",
    "prepare_face_session", "resolve_face_graph",
]
