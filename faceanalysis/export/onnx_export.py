"""ONNX export: legacy TorchScript exporter (opset 17, dynamic batch), fp16 and int8.

int8 (:func:`to_int8`) is dynamic quantization of the MatMul / Gemm layers with constant weights (int8 weights,
uint8 activations quantized per run, ``reduce_range`` for x86 CPUs without VNNI), the route that measured fastest
on this x86 AVX2 CPU among the variants in ``benchmarks/export_bench.md`` (static QDQ s8s8 -- the former route --
was 1.5x *slower* than fp32) with the smallest drift; ``method="static"`` keeps the static QDQ route
(``faceanalysis export --onnx-int8 static``), the only ONNX route that reads calibration crops, so the exporter
collects them for it alone."""
from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import INPUT_NAME, ONNX_INT8_METHODS, require
from ..errors import FaceAnalysisError

OPSET = 17
#: op types quantised in the int8 artifact; everything else (softmax, LayerNorm, resize, ...) stays float
QUANT_OPS = ["MatMul", "Gemm", "Conv"]
#: ONNX node-name fragments of layers kept in float in int8 (heads: small, and drift-sensitive; the parsing
#: refiner's conv on the model input and its output conv, as in the TFLite export)
FLOAT_NODES = ("/heads/", "/parsing_refiner/image/", "/parsing_refiner/out/")


def export_fp32(model: torch.nn.Module, path: Path, metadata: dict[str, str]) -> Path:
    """Export ``model`` (a FaceModel) to ONNX with a dynamic batch axis and named outputs."""
    onnx = require("onnx", "ONNX export")
    from ..model import ExportWrapper

    wrapper = ExportWrapper(model).eval()
    names = list(model.output_names)
    s = model.cfg.input_size
    x = torch.zeros(2, 3, s, s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (x,), str(path), dynamo=False, opset_version=OPSET, input_names=[INPUT_NAME],
                          output_names=names, do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in names}})
    m = onnx.load(str(path))
    set_metadata(m, metadata)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return path


def set_metadata(m: Any, metadata: dict[str, str]) -> None:
    """Replace the model's metadata_props with ``metadata`` (string values)."""
    del m.metadata_props[:]
    for k, v in metadata.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v if isinstance(v, str) else json.dumps(v)
    m.producer_name = "faceanalysis"


def to_fp16(src: Path, dst: Path) -> Path:
    """fp16 weights and activations, float32 input/outputs (onnxruntime.transformers.float16)."""
    onnx = require("onnx", "ONNX fp16 conversion")
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    m = onnx.load(str(src))
    m16 = OnnxModel(convert_float_to_float16(m, keep_io_types=True))
    m16.topological_sort()  # the input/output casts are appended at the end of the graph
    m16 = m16.model
    onnx.checker.check_model(m16)
    onnx.save(m16, str(dst))
    return dst


class _Reader:
    """onnxruntime CalibrationDataReader over normalised crops, batch 1."""

    def __init__(self, x: np.ndarray) -> None:
        self.x, self.i = x, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.x):
            return None
        self.i += 1
        return {INPUT_NAME: self.x[self.i - 1:self.i]}

    def rewind(self) -> None:
        self.i = 0


#: op types of the dynamic route (Conv stays float: dynamic int8 Conv ran 1.9x slower than fp32 here)
DYNAMIC_OPS = ["MatMul", "Gemm"]


def to_int8(src: Path, dst: Path, calib: np.ndarray | None = None, float_nodes: tuple[str, ...] = FLOAT_NODES,
            op_types: list[str] | None = None, method: str = "dynamic") -> Path:
    """int8 ONNX from the fp32 export ``src``.

    ``method="dynamic"`` (default): dynamic quantization (QOperator: ``DynamicQuantizeLinear`` + ``MatMulInteger``)
    of ``op_types`` (default MatMul / Gemm) whose B input is a constant weight: int8 weights, uint8 activations
    quantized on the fly, ``reduce_range`` (7-bit weights, so the u8 x s8 products of AVX2 without VNNI cannot
    saturate). Attention matmuls (two activations), Conv, softmax, LayerNorm, the landmark soft-argmax and the
    output activations stay float; ``calib`` is not used. Measured on this CPU (export_bench.md): 1.2-1.3x faster
    than fp32 at batch 1 on one thread, embedding cosine 0.9996, parsing agreement 99.7 %.

    ``method="static"``: static QDQ, per-channel int8 weights and int8 activations calibrated (MinMax) on
    ``calib`` crops, ``op_types`` default MatMul / Gemm / Conv (the former route: 0.7x the fp32 speed here).

    Nodes whose name contains one of ``float_nodes`` (the task heads) stay float in both.
    """
    onnx = require("onnx", "ONNX int8 quantization")
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in ONNX_INT8_METHODS:
        raise FaceAnalysisError(f"unknown int8 method {method!r}; choose from {ONNX_INT8_METHODS}")
    if method == "static" and (calib is None or len(calib) == 0):
        raise FaceAnalysisError("static int8 ONNX quantization needs calibration crops")
    m = onnx.load(str(src))
    exclude = [n.name for n in m.graph.node if any(f in n.name for f in float_nodes)]
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        if method == "dynamic":
            quantize_dynamic(str(pre), str(dst), op_types_to_quantize=op_types or DYNAMIC_OPS, per_channel=False,
                             reduce_range=True, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
                             extra_options={"MatMulConstBOnly": True})
        else:
            quantize_static(str(pre), str(dst), _Reader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=op_types or QUANT_OPS, nodes_to_exclude=exclude,
                            calibrate_method=CalibrationMethod.MinMax,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    q = onnx.load(str(dst))
    set_metadata(q, {p.key: p.value for p in m.metadata_props})
    onnx.checker.check_model(q)
    onnx.save(q, str(dst))
    return dst


def read_metadata(path: str | Path) -> dict[str, str]:
    """metadata_props of an ONNX file (without loading the weights)."""
    onnx = require("onnx", "reading ONNX metadata")
    m = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in m.metadata_props}
