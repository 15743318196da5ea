"""faceanalysis: one small transformer for six face-analysis tasks.

>>> from faceanalysis import FaceAnalyzer
>>> faces = FaceAnalyzer().analyze("photo.jpg")

The public names are imported on first use, so ``import faceanalysis`` (and ``faceanalysis --help``) stays
fast and needs neither torch nor OpenCV until something runs.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> submodule that defines it
_EXPORTS = {
    "FaceAnalyzer": "api", "Face": "api", "FaceAnalysisError": "errors", "Detection": "detect",
    "YuNetDetector": "detect", "draw": "draw", "TASKS": "tasks",
}
__all__ = ["FaceAnalyzer", "Face", "FaceAnalysisError", "Detection", "YuNetDetector", "draw", "TASKS", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from .api import Face, FaceAnalyzer
    from .detect import Detection, YuNetDetector
    from .draw import draw
    from .errors import FaceAnalysisError
    from .tasks import TASKS


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Keeps ``faceanalysis.draw`` the :func:`~faceanalysis.draw.draw` function: importing the submodule of the
    same name would otherwise replace the package attribute with the module."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "draw" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
