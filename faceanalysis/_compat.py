"""Import timm next to the CPU build of torch.

timm imports torchvision; the PyPI torchvision wheel is built against a CUDA torch and, next to the
CPU torch 2.13 wheel, fails at import with "operator torchvision::nms does not exist" because its
compiled ops are missing. timm only needs torchvision's Python modules, so when (and only when) that
exact failure happens we declare the two op schemas torchvision's meta registrations expect and
import again. A working torchvision is left untouched.
"""
from __future__ import annotations

import sys

import torch

_LIB = None


def ensure_torchvision() -> None:
    """Make ``import torchvision`` (and therefore ``import timm``) work; idempotent."""
    global _LIB
    try:
        import torchvision  # noqa: F401

        return
    except RuntimeError as err:  # pragma: no cover - depends on the installed wheels
        if "torchvision::" not in str(err) or _LIB is not None:
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    _LIB = torch.library.Library("torchvision", "FRAGMENT")
    for op in ("nms", "qnms"):
        _LIB.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401,F811


ensure_torchvision()
