"""Runners: run the model (or an exported artifact) on normalised crops ``(N, 3, S, S)`` float32.

Every backend takes the same input and returns the same named outputs, so the API, demo and
evaluation share one contract. ``torch`` is built in; ``onnx`` and ``tflite`` live in
:mod:`faceanalysis.export.runners` and need the export extras.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from .config import FaceAnalysisConfig
from .errors import FaceAnalysisError
from .weights import load_model

BACKENDS = ("torch", "onnx", "tflite")


class Runner(Protocol):
    config: FaceAnalysisConfig
    output_names: list[str]

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]: ...


class TorchRunner:
    """PyTorch model from a safetensors weights file."""

    def __init__(self, weights: str | Path | None = None, device: str = "cpu", tasks: list[str] | None = None) -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise FaceAnalysisError(f"device {device!r} requested but CUDA is not available in this torch build; "
                                    "use device='cpu'")
        if not (device == "cpu" or device.startswith("cuda") or device == "mps"):
            raise FaceAnalysisError(f"unknown device {device!r}; use 'cpu' or 'cuda'")
        self.model, self.config = load_model(weights, device)
        self.device = device
        self.tasks = tasks
        names = {n for t in self.model.tasks if tasks is None or t.name in tasks for n in t.outputs}
        self.output_names = [n for n in self.model.output_names if n in names]

    @torch.inference_mode()
    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        out = self.model(torch.from_numpy(x).to(self.device), tasks=self.tasks)
        return {k: v.float().cpu().numpy() for k, v in out.items()}


def make_runner(backend: str, weights: str | Path | None, device: str, tasks: list[str] | None) -> Runner:
    """A runner for ``backend`` (torch | onnx | tflite)."""
    if backend == "torch":
        return TorchRunner(weights, device, tasks)
    if backend in ("onnx", "tflite"):
        try:
            from .export import runners
        except ImportError as err:
            raise FaceAnalysisError(f"backend {backend!r} needs the export extras: pip install 'faceanalysis[export]' "
                                    f"({err})") from err
        return runners.make(backend, weights, device, tasks)
    raise FaceAnalysisError(f"unknown backend {backend!r}; choose from {BACKENDS}")
