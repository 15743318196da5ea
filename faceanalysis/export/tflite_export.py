"""TFLite export (Android / ARM) with litert-torch: fp32, PT2E int8 (static or dynamic).

The model gets one signature ``face`` with input ``input`` (1, 3, S, S) float32 and one output per
model output, named as in ONNX. ``int8`` is static PT2E quantization (per-channel symmetric int8
weights, int8 activations calibrated on aligned training crops) of conv / linear / add; attention
matmuls, softmax, LayerNorm, resize and the output activations stay float. ``int8-dynamic`` quantises
weights only (activations on the fly).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import INPUT_NAME, require
from ..config import FaceAnalysisConfig
from ..errors import FaceAnalysisError

SIGNATURE = "face"


class _DictWrapper(torch.nn.Module):
    """Keyword input ``input`` -> dict of named outputs (names become signature output names)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.names = list(model.output_names)

    def forward(self, input: torch.Tensor) -> dict[str, torch.Tensor]:  # noqa: A002 - signature input name
        out = self.model(input)
        return {n: out[n] for n in self.names}


def export(model: torch.nn.Module, cfg: FaceAnalysisConfig, path: Path, precision: str,
           calib: np.ndarray | None = None) -> Path:
    """Convert ``model`` to ``path`` (.tflite) at ``precision`` (fp32 | int8 | int8-dynamic)."""
    litert_torch = require("litert_torch", "TFLite export")
    if precision == "int8-full":
        raise FaceAnalysisError("TFLite int8-full (integer-only input) is not available with litert-torch "
                                f"{getattr(litert_torch, '__version__', '')}; use --precision int8")
    s = cfg.model.input_size
    wrapper = _DictWrapper(model).eval()
    x = torch.from_numpy(calib[:1]) if calib is not None else torch.zeros(1, 3, s, s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if precision == "fp32":
            edge = litert_torch.signature(SIGNATURE, wrapper, sample_kwargs={INPUT_NAME: x}).convert()
        else:
            edge = _convert_pt2e(litert_torch, wrapper, x, precision, calib)
    edge.export(str(path))
    _smoke_test(path, x.numpy())
    return path


def _smoke_test(path: Path, x: np.ndarray) -> None:
    """Run the written model once; delete it and raise when the interpreter cannot prepare it."""
    interp = require("ai_edge_litert.interpreter", "TFLite export (checking the result)")
    try:
        interp.Interpreter(str(path), num_threads=1).get_signature_runner(SIGNATURE)(**{INPUT_NAME: x})
    except (RuntimeError, ValueError) as err:
        path.unlink(missing_ok=True)
        raise FaceAnalysisError(
            f"the converted TFLite model does not run in ai_edge_litert ({str(err).splitlines()[0][:200]}); "
            "known with litert-torch 0.10.0 PT2E int8 on this model (a quantized softmax / fully-connected "
            "kernel rejects its quantization params): use --precision fp32 for TFLite, or ONNX int8") from err


def _convert_pt2e(litert_torch, wrapper: torch.nn.Module, x: torch.Tensor, precision: str,
                  calib: np.ndarray | None):
    from litert_torch.quantize import pt2e_quantizer as pq
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    dynamic = precision == "int8-dynamic"
    if not dynamic and (calib is None or len(calib) == 0):
        raise FaceAnalysisError("static int8 TFLite export needs calibration crops")
    quantizer = pq.PT2EQuantizer().set_global(pq.get_symmetric_quantization_config(is_per_channel=True,
                                                                                   is_dynamic=dynamic))
    for head_type in {type(h) for h in wrapper.model.heads.values()}:  # task heads stay float
        quantizer.set_module_type(head_type, None)
    graph = torch.export.export(wrapper, (), {INPUT_NAME: x}).module()
    graph = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for i in tqdm(range(len(calib) if not dynamic else 1), desc="calibrate (tflite)", leave=False):
            graph(**{INPUT_NAME: torch.from_numpy(calib[i:i + 1]) if not dynamic else x})
    graph = convert_pt2e(graph, fold_quantize=False)
    move_exported_model_to_eval(graph)
    return litert_torch.signature(SIGNATURE, graph, sample_kwargs={INPUT_NAME: x}).convert(
        quant_config=QuantConfig(pt2e_quantizer=quantizer))
