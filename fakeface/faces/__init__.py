"""Finding, aligning and cropping faces: the stage before the detector."""
from fakeface.faces.crop import FaceCrop

__all__ = ["FaceCrop"]
