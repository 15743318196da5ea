"""Modules imported on first use.

torch (with timm and torchvision) is an optional dependency: the ONNX runtime, the CLI's ``--help`` and
everything that only post-processes model outputs work without it. Modules that need torch only inside
functions name it through these stand-ins, which import the real module the first time an attribute is
read (and raise :class:`~faceanalysis.FaceAnalysisError` naming the ``[torch]`` extra when it is missing).
"""
from __future__ import annotations

import importlib
import importlib.util
import types
from typing import Any

TORCH_HINT = "pip install 'faceanalysis[torch]' (CPU build: see the README's install section)"


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or blocked install counts as missing
        return False


def exit_without_torch(prog: str) -> None:
    """For scripts outside the CLI that need torch (``weights/*.py``): when torch or timm is missing, print the
    :func:`require_torch` message as one line (``prog: error: ...``, as :func:`~faceanalysis.errors.run_command`
    does) and exit with status 2 instead of failing at ``import torch`` with a traceback."""
    import sys

    from .errors import FaceAnalysisError

    try:
        require_torch(prog)
    except FaceAnalysisError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def torch_available() -> bool:
    """True when torch and timm are installed (checked without importing them)."""
    return all(_installed(m) for m in ("torch", "timm"))


def require_torch(what: str) -> None:
    """Raise an actionable error when torch / timm are not installed."""
    missing = [m for m in ("torch", "timm") if not _installed(m)]
    if missing:
        from .errors import FaceAnalysisError

        verb = "are" if len(missing) > 1 else "is"
        raise FaceAnalysisError(f"{what} needs {' and '.join(missing)}, which {verb} not installed: {TORCH_HINT}; "
                                f"or use the ONNX runtime (backend 'onnx'), which needs no torch")


class LazyModule(types.ModuleType):
    """Stands in for module ``name`` until an attribute is read, then becomes a copy of its namespace."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__["_lazy_target"] = name

    def __getattr__(self, attr: str) -> Any:
        name = self.__dict__["_lazy_target"]
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        if name.split(".")[0] == "torch":
            require_torch(f"{name}.{attr}")
        module = importlib.import_module(name)
        self.__dict__.update(module.__dict__)  # later reads skip __getattr__
        return getattr(module, attr)


torch = LazyModule("torch")
F = LazyModule("torch.nn.functional")

__all__ = ["torch", "F", "torch_available", "require_torch", "LazyModule", "TORCH_HINT"]
