"""Runners: run the model (or an exported artifact) on normalised crops ``(N, 3, S, S)`` float32.

Every backend takes the same input and returns the same named outputs, so the API, demo and
evaluation share one contract. ``torch`` needs the ``[torch]`` extra; ``onnx`` (onnxruntime, a core
dependency) and ``tflite`` (``ai-edge-litert``, in the ``[export]`` extra) live in
:mod:`faceanalysis.export.runners`. Without a backend, :func:`resolve_backend` picks one: the file's
suffix when weights are given, else torch when it is installed, else onnx.
"""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from ._lazy import TORCH_HINT, torch, torch_available
from .config import TTA_MODES, FaceAnalysisConfig
from .errors import FaceAnalysisError, option

BACKENDS = ("torch", "onnx", "tflite")
#: weights suffix -> the backend that runs it
SUFFIX_BACKEND = {".safetensors": "torch", ".onnx": "onnx", ".tflite": "tflite"}


class Runner(Protocol):
    config: FaceAnalysisConfig
    output_names: list[str]

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]: ...


def resolve_backend(backend: str | None, weights: str | Path | None = None) -> str:
    """The backend to use: ``backend`` when given (``"auto"`` = not given); else the suffix of ``weights``
    (.safetensors torch, .onnx onnx, .tflite tflite); else torch when torch and timm are installed, else onnx.

    A backend that contradicts the file's suffix raises."""
    if backend not in (None, "auto") and backend not in BACKENDS:
        raise FaceAnalysisError(f"unknown backend {backend!r}; choose from {BACKENDS}")
    from_suffix = SUFFIX_BACKEND.get(Path(weights).suffix.lower()) if weights is not None else None
    if backend in (None, "auto"):
        if from_suffix is not None:
            return from_suffix
        return "torch" if torch_available() else "onnx"
    if from_suffix == "torch" and backend != "torch":
        raise FaceAnalysisError(
            f"backend {backend!r} runs an exported model, not {weights}; drop "
            f"{option(f'backend={backend!r}', f'--backend {backend}')} to run it on torch, or export it first: "
            f"faceanalysis export --format {backend} --precision fp32 --weights {weights} -o my_export")
    if from_suffix is not None and from_suffix != backend:
        raise FaceAnalysisError(
            f"{weights} is a {Path(weights).suffix} file, which the {from_suffix} backend runs, not {backend}; "
            f"drop {option(f'backend={backend!r}', f'--backend {backend}')} (the suffix picks the backend) or "
            f"pass a {'.safetensors' if backend == 'torch' else '.' + backend} file")
    return backend


class TorchRunner:
    """PyTorch model from a safetensors weights file."""

    def __init__(self, weights: str | Path | None = None, device: str = "cpu", tasks: list[str] | None = None) -> None:
        from .weights import load_model

        if not torch_available():
            onnx = option("backend='onnx'", "--backend onnx")
            raise FaceAnalysisError(f"the torch backend needs torch and timm, which are not installed: {TORCH_HINT}; "
                                    f"or run the shipped ONNX model without torch: {onnx}")
        cpu, cuda = option("device='cpu'", "--device cpu"), option("device='cuda'", "--device cuda")
        if not (device == "cpu" or device.startswith("cuda") or device == "mps"):
            raise FaceAnalysisError(f"unknown device {device!r}; use {cpu} or {cuda}")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise FaceAnalysisError(f"device {device!r} requested but CUDA is not available in this torch build; "
                                    f"use {cpu}")
        self.model, self.config = load_model(weights, device)
        self.device = device
        self.tasks = tasks
        names = {n for t in self.model.tasks if tasks is None or t.name in tasks for n in t.outputs}
        self.output_names = [n for n in self.model.output_names if n in names]

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = self.model(torch.from_numpy(x).to(self.device), tasks=self.tasks)
            return {k: v.float().cpu().numpy() for k, v in out.items()}


def make_runner(backend: str | None, weights: str | Path | None, device: str, tasks: list[str] | None,
                threads: int | None = None) -> Runner:
    """A runner for ``backend`` (torch | onnx | tflite; ``None`` = :func:`resolve_backend`). ``threads``: intra-op
    threads of an onnx / tflite runner (``None`` = the runtime's default; torch uses ``torch.set_num_threads``,
    which is process-wide, so it is left to the caller)."""
    backend = resolve_backend(backend, weights)
    if threads is not None and threads < 1:
        raise FaceAnalysisError(f"threads must be >= 1 (got {threads})")
    if backend == "torch":
        return TorchRunner(weights, device, tasks)
    from .export import runners

    if threads is None:
        return runners.make(backend, weights, device, tasks)
    return runners.make(backend, weights, device, tasks, threads)


class FlipAveraged:
    """Test-time augmentation around any runner: every crop and its horizontal mirror run through ``runner``;
    each task maps the mirror's outputs back into the crop's frame (:meth:`~faceanalysis.tasks.base.Task.unflip`:
    landmark x and the left/right point order, yaw and roll signs, the parsing map and its l_/r_ classes) and
    combines the two views (:meth:`~faceanalysis.tasks.base.Task.combine`: the mean; identity L2-normalises it
    again). Two model calls per batch (1.8-2.5x the model time per face, benchmarks/tta.md); same inputs and
    output names as ``runner``."""

    def __init__(self, runner: Runner, tasks: list) -> None:
        self.runner = runner
        self.config = runner.config
        self.output_names = runner.output_names
        self.tasks = tasks

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        y = self.runner(x)
        mirrored = self.runner(np.ascontiguousarray(x[..., ::-1]))
        out = dict(y)
        for task in self.tasks:
            names = [n for n in task.outputs if n in y]
            if names:
                back = task.unflip({n: mirrored[n] for n in names}, x.shape[-1])
                out.update(task.combine([{n: y[n] for n in names}, back]))
        return out


def with_tta(runner: Runner, tta: str | None, tasks: list) -> Runner:
    """``runner`` wrapped for test-time augmentation ``tta`` (``None``: as it is; ``"flip"``: :class:`FlipAveraged`)."""
    if tta is None:
        return runner
    if tta not in TTA_MODES:
        raise FaceAnalysisError(f"unknown test-time augmentation {tta!r}; choose from {TTA_MODES} or None (off)")
    return FlipAveraged(runner, tasks)
