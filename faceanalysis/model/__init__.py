"""The multi-task face model."""
from .face_model import ExportWrapper, FaceModel

__all__ = ["FaceModel", "ExportWrapper"]
