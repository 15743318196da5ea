"""faceanalysis: one small transformer for six face-analysis tasks.

>>> from faceanalysis import FaceAnalyzer
>>> faces = FaceAnalyzer().analyze("photo.jpg")
"""
from . import _compat  # noqa: F401  (torchvision shim before anything imports timm)
from .api import Face, FaceAnalyzer
from .detect import Detection, YuNetDetector
from .draw import draw
from .errors import FaceAnalysisError
from .tasks import TASKS

__version__ = "0.1.0"
__all__ = ["FaceAnalyzer", "Face", "FaceAnalysisError", "Detection", "YuNetDetector", "draw", "TASKS", "__version__"]
