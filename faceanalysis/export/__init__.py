"""Export the multi-task model to ONNX, TFLite and CoreML, with a JSON sidecar and measured parity.

Entry points: :func:`export_artifact` (one format / precision), :mod:`faceanalysis.export.cli`
(``faceanalysis export ...``) and :mod:`faceanalysis.export.runners` (run an artifact with the same
contract as the torch backend). Optional toolchains are imported lazily; a missing one raises a
:class:`~faceanalysis.FaceAnalysisError` naming the extra to install.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from ..errors import FaceAnalysisError

FORMATS: dict[str, tuple[str, ...]] = {
    "onnx": ("fp32", "fp16", "int8"),
    "tflite": ("fp32", "int8", "int8-dynamic", "int8-full"),
    "coreml": ("fp32", "fp16", "int8"),
}
EXTENSIONS = {"onnx": "onnx", "tflite": "tflite", "coreml": "mlpackage"}
#: the six artifacts of the release: (format, precision)
RELEASE = (("onnx", "fp32"), ("onnx", "fp16"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8"),
           ("coreml", "fp16"))
INPUT_NAME = "input"
#: default output folder of ``faceanalysis export`` (relative to the working directory, never inside the package)
DEFAULT_OUTPUT = Path("export_out")
SIDECAR_SUFFIX = ".json"
PRECISION_NOTES = {
    "fp32": "float32 weights and activations",
    "fp16": "float16 weights and activations (float32 input/outputs)",
    "int8": "int8 weights (per-channel) and activations for Linear/Conv2d, static calibration on aligned training "
            "crops; softmax, LayerNorm, GELU and the output activations stay float",
    "int8-dynamic": "int8 weights (per-channel), activations quantised on the fly (float I/O)",
    "int8-full": "full-integer: int8 weights and activations for every op, int8 input and outputs "
                 "(for integer-only accelerators; larger drift)",
}
#: the notes that differ by format (the sidecar reads :func:`precision_note`)
FORMAT_PRECISION_NOTES = {
    ("onnx", "int8"): "dynamic quantization of the weight MatMul/Gemm layers (int8 weights, uint8 activations "
                      "quantized per run, reduce_range); attention matmuls, Conv, softmax, LayerNorm and the output "
                      "activations stay float",
    ("onnx", "int8-static"): "static QDQ quantization of the MatMul/Gemm/Conv layers (per-channel int8 weights, int8 "
                             "activations calibrated (MinMax) on aligned face crops); the task heads stay float",
    ("tflite", "int8-dynamic"): "int8 per-channel weights of every FULLY_CONNECTED / CONV_2D op (ai-edge-quantizer "
                                "dynamic range), activations quantised on the fly by the kernels (float I/O)",
    ("coreml", "int8"): "fp16 compute with int8 per-channel weights (linear_quantize_weights)",
}


def precision_note(fmt: str, precision: str, onnx_int8_method: str = "dynamic") -> str:
    """What ``precision`` means for ``fmt`` (the sidecar's ``precision_note``)."""
    key = (fmt, "int8-static" if (fmt, precision, onnx_int8_method) == ("onnx", "int8", "static") else precision)
    return FORMAT_PRECISION_NOTES.get(key, PRECISION_NOTES[precision])


#: what to install for a missing module: runtimes name the light package, toolchains the export extra
INSTALL_HINTS = {
    "onnxruntime": "pip install onnxruntime (a dependency of faceanalysis; or pip install 'faceanalysis[onnx]')",
    "ai_edge_litert": "pip install ai-edge-litert (the TFLite runtime; also in 'faceanalysis[export]')",
}


def require(module: str, what: str) -> Any:
    """Import an optional module or raise an actionable error naming what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        hint = INSTALL_HINTS.get(top, "install the export extra: pip install 'faceanalysis[export]' "
                                      "(CPU torch: see the README's install section)")
        raise FaceAnalysisError(f"{what} needs the package providing {module!r}, which is not installed ({err}); "
                                f"{hint}") from err


#: what ``faceanalysis export`` says when torch is missing (every format converts from the PyTorch model)
EXPORT_HINT = ("pip install 'faceanalysis[export]' (install a CPU build of torch first: see the README's install "
               "section)")


def require_export_extra(what: str = "faceanalysis export") -> None:
    """Raise, before any other check or output, when torch / timm (the ``[export]`` extra's core) are missing."""
    from .. import _lazy

    if not _lazy.torch_available():
        raise FaceAnalysisError(f"{what} needs the export extra (torch, timm, onnx, ...), which is not installed: "
                                f"{EXPORT_HINT}")


#: the int8 routes of ONNX export (:func:`faceanalysis.export.onnx_export.to_int8`): ``dynamic`` (the default; int8
#: weights, activations quantized per run, nothing calibrated) or ``static`` (QDQ, activations calibrated on crops)
ONNX_INT8_METHODS = ("dynamic", "static")


def needs_calibration(fmt: str, precision: str, onnx_int8_method: str = "dynamic") -> bool:
    """Whether exporting ``fmt`` at ``precision`` reads calibration crops: static int8 ONNX
    (``onnx_int8_method="static"``) and TFLite int8 / int8-full (activation ranges calibrated ahead). Dynamic int8
    ONNX (the default) and TFLite int8-dynamic quantize activations per run, and CoreML int8 quantizes the weights
    only: they use no calibration crops, so none are collected for them."""
    if fmt == "onnx":
        return precision == "int8" and onnx_int8_method == "static"
    return fmt == "tflite" and precision in ("int8", "int8-full")


def check_choice(fmt: str, precision: str) -> None:
    """Raise for an unknown format or a precision the format does not offer."""
    if fmt not in FORMATS:
        raise FaceAnalysisError(f"unknown export format {fmt!r}; choose from {sorted(FORMATS)}")
    if precision not in FORMATS[fmt]:
        raise FaceAnalysisError(f"precision {precision!r} is not available for {fmt}; choose from {FORMATS[fmt]}")


def artifact_name(weights: str | Path, fmt: str, precision: str) -> str:
    """``<weights stem>.<precision>.<ext>``, e.g. ``faceanalysis_s128.int8.onnx``."""
    return f"{Path(weights).stem}.{precision}.{EXTENSIONS[fmt]}"


def sidecar_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SIDECAR_SUFFIX)


def read_sidecar(artifact: str | Path) -> dict[str, Any] | None:
    """The JSON sidecar of an artifact, or ``None`` when there is none."""
    p = sidecar_path(artifact)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError as err:
        raise FaceAnalysisError(f"sidecar {p} is not valid JSON ({err}); re-export the artifact") from err


def export_artifact(*args: Any, **kwargs: Any) -> Path:
    """See :func:`faceanalysis.export.pipeline.export_artifact`."""
    from .pipeline import export_artifact as run

    return run(*args, **kwargs)


__all__ = ["FORMATS", "RELEASE", "EXTENSIONS", "DEFAULT_OUTPUT", "export_artifact", "check_choice", "artifact_name", "sidecar_path",
           "read_sidecar", "require", "require_export_extra", "ONNX_INT8_METHODS", "needs_calibration",
           "precision_note"]
