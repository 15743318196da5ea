"""Runners for exported artifacts: same contract as :class:`faceanalysis.runtime.TorchRunner`.

``__call__(x)`` takes normalised crops ``(N, 3, S, S)`` float32 and returns ``{output name: array}``.
The config comes from the artifact (ONNX metadata_props) or its JSON sidecar. Running an ONNX model needs
only onnxruntime (no torch, no onnx package).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from . import INPUT_NAME, read_sidecar, require
from ..config import FaceAnalysisConfig
from ..errors import FaceAnalysisError, option
from ..weights import ASSETS, DEFAULT_STEM

CONFIG_KEY = "faceanalysis_config"
CPU_API, CUDA_API = "device='cpu'", "device='cuda'"
#: precisions looked for in the package's assets per backend, most preferred first (the wheel ships the
#: fp32 ONNX model: exact parity with torch and faster than int8 on x86)
DEFAULTS = {"onnx": ("fp32", "int8", "fp16"), "tflite": ("int8", "fp32")}


def default_artifact(backend: str, folder: Path | None = None) -> Path:
    """The shipped artifact of ``backend`` exported from the shipped weights (``faceanalysis/assets/``)."""
    folder = ASSETS if folder is None else folder
    for p in DEFAULTS[backend]:
        path = folder / f"{DEFAULT_STEM}.{p}.{backend}"
        if path.is_file():
            return path
    weights = option(f"weights='my_export/{DEFAULT_STEM}.int8.{backend}'",
                     f"--weights my_export/{DEFAULT_STEM}.int8.{backend}")
    raise FaceAnalysisError(
        f"no {backend} model ships with this install (looked in {folder}); export one with: faceanalysis export "
        f"--format {backend} --precision int8 -o my_export, then pass {weights}")


def _config_from(path: Path, meta: dict[str, str] | None = None) -> FaceAnalysisConfig:
    text = (meta or {}).get(CONFIG_KEY)
    if text is None:
        side = read_sidecar(path)
        if side is None or "config" not in side:
            raise FaceAnalysisError(f"{path} carries no faceanalysis config and has no sidecar {path.name}.json; "
                                    f"re-export it with faceanalysis export")
        text = json.dumps(side["config"])
    try:
        return FaceAnalysisConfig.from_json(text)
    except (ValueError, TypeError) as err:
        raise FaceAnalysisError(f"the config stored with {path} is invalid ({err}); re-export it") from err


def _check_path(path: str | Path, ext: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FaceAnalysisError(f"model file {path} does not exist")
    if path.suffix != ext:
        raise FaceAnalysisError(f"{path} is not a {ext} file; the {ext[1:]} backend needs an exported {ext} model "
                                f"(faceanalysis export --format {ext[1:]})")
    return path


def _select(names: list[str], tasks: list[str] | None) -> list[str]:
    if tasks is None:
        return list(names)
    from ..tasks import get_tasks

    wanted = {n for t in get_tasks(tasks) for n in t.outputs}
    return [n for n in names if n in wanted]


class OnnxRunner:
    """onnxruntime session on an exported ``.onnx`` file (CPU; CUDA when available and asked for)."""

    def __init__(self, path: str | Path, device: str = "cpu", tasks: list[str] | None = None,
                 threads: int | None = None, config: FaceAnalysisConfig | None = None) -> None:
        ort = require("onnxruntime", "the onnx backend")

        self.path = _check_path(path, ".onnx")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise FaceAnalysisError("device 'cuda' requested but onnxruntime has no CUDA provider; "
                                        f"install onnxruntime-gpu or use {option(CPU_API, '--device cpu')}")
            providers.insert(0, "CUDAExecutionProvider")
        elif device != "cpu":
            raise FaceAnalysisError(f"unknown device {device!r} for the onnx backend; use "
                                    f"{option(CPU_API, '--device cpu')} or {option(CUDA_API, '--device cuda')}")
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=providers)
            meta = dict(self.session.get_modelmeta().custom_metadata_map)
        except Exception as err:  # onnxruntime raises its own Fail / InvalidGraph types
            raise FaceAnalysisError(f"{self.path} is not a readable ONNX model ({err}); re-export it") from err
        self.config = config or _config_from(self.path, meta)
        names = [o.name for o in self.session.get_outputs()]
        self.output_names = _select(names, tasks)

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, np.float32)
        outs = self.session.run(self.output_names, {INPUT_NAME: x})
        return {n: np.asarray(v, np.float32) for n, v in zip(self.output_names, outs)}


class TFLiteRunner:
    """``ai_edge_litert`` interpreter on an exported ``.tflite`` file (batch-1 signature, looped)."""

    def __init__(self, path: str | Path, device: str = "cpu", tasks: list[str] | None = None,
                 threads: int | None = None, config: FaceAnalysisConfig | None = None) -> None:
        interp = require("ai_edge_litert.interpreter", "the tflite backend")
        from .tflite_export import SIGNATURE

        if device != "cpu":
            raise FaceAnalysisError(f"the tflite backend runs on the CPU only (got {device!r}); use "
                                    f"{option(CPU_API, '--device cpu')}")
        self.path = _check_path(path, ".tflite")
        self.config = config or _config_from(self.path)
        try:
            self.interpreter = interp.Interpreter(str(self.path), num_threads=threads or os.cpu_count() or 1)
            self.runner = self.interpreter.get_signature_runner(SIGNATURE)
        except (ValueError, RuntimeError) as err:
            raise FaceAnalysisError(f"{self.path} is not a runnable faceanalysis TFLite model ({err}); re-export it") from err
        self.input_detail = self.runner.get_input_details()[INPUT_NAME]
        names = list(self.runner.get_output_details())
        from .pipeline import cfg_output_names

        order = [n for n in cfg_output_names(self.config) if n in names]
        self.output_names = _select(order or names, tasks)

    def _quant_in(self, x: np.ndarray) -> np.ndarray:
        d = self.input_detail
        if d["dtype"] == np.float32:
            return x
        scale, zero = d["quantization"]
        info = np.iinfo(d["dtype"])
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(d["dtype"])

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.ascontiguousarray(x, np.float32)
        details = self.runner.get_output_details()
        parts: dict[str, list[np.ndarray]] = {n: [] for n in self.output_names}
        for i in range(len(x)):
            out = self.runner(**{INPUT_NAME: self._quant_in(x[i:i + 1])})
            for n in self.output_names:
                v = out[n]
                if v.dtype != np.float32:
                    scale, zero = details[n]["quantization"]
                    v = (v.astype(np.float32) - zero) * scale
                parts[n].append(v)
        if not len(x):
            return {n: np.zeros((0,), np.float32) for n in self.output_names}
        return {n: np.concatenate(v) for n, v in parts.items()}


def load_runner(backend: str, path: str | Path, device: str = "cpu", tasks: list[str] | None = None,
                threads: int | None = None, config: FaceAnalysisConfig | None = None):
    """A runner for an artifact file of ``backend`` ('onnx' | 'tflite')."""
    if backend == "onnx":
        return OnnxRunner(path, device, tasks, threads, config)
    if backend == "tflite":
        return TFLiteRunner(path, device, tasks, threads, config)
    raise FaceAnalysisError(f"no runner for {backend!r} artifacts on this platform (CoreML runs on macOS/iOS only)")


def make(backend: str, weights: str | Path | None, device: str, tasks: list[str] | None, threads: int | None = None):
    """Entry point of :func:`faceanalysis.runtime.make_runner` for 'onnx' / 'tflite' (``threads``: intra-op
    threads, ``None`` = the runtime's default)."""
    if weights is not None and Path(weights).suffix == ".safetensors":
        raise FaceAnalysisError(f"backend {backend!r} runs an exported model, not {weights}; export it first: "
                                f"faceanalysis export --format {backend} --precision int8 --weights {weights} "
                                f"-o my_export")
    path = default_artifact(backend) if weights is None else Path(weights)
    return load_runner(backend, path, device, tasks, threads)
