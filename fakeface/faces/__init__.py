"""Finding, aligning and cropping faces: the stage before the detector.

``crop_faces(image, face_crop) -> FaceScan`` is the one entry point; see docs/faces.md.
"""
from fakeface.faces.align import CroppedFace, FaceScan, crop_face, crop_faces, draw_face_boxes
from fakeface.faces.crop import FaceCrop
from fakeface.faces.detect import MAX_FACES, Face, FaceDetectorUnavailable, detect_faces

__all__ = [
    "CroppedFace", "Face", "FaceCrop", "FaceDetectorUnavailable", "FaceScan", "MAX_FACES",
    "crop_face", "crop_faces", "detect_faces", "draw_face_boxes",
]
