"""TFLite export (Android / ARM) with litert-torch: fp32, PT2E int8 (static), dynamic-range int8.

The model gets one signature ``face`` with input ``input`` (1, 3, S, S) float32 and one output per
model output, named as in ONNX. ``int8`` is static PT2E quantization of the Linear / Conv2d layers only
(per-channel symmetric int8 weights, per-tensor int8 activations calibrated on aligned training crops;
BatchNorm is folded into its conv). Everything else stays float: attention matmuls, softmax, LayerNorm,
GELU, adds, bilinear resize, the landmark soft-argmax, the output activations (sigmoid / softmax /
L2 normalise). Some layers stay float on purpose (:data:`FLOAT_MODULES`): the first stem conv (else the
converter turns the model input into int8; likewise the parsing refiner's conv on the input), the pixel decoder's
output conv (its int8 output ruins the landmark heatmaps: 28 px error), the parsing refiner's output conv (its
counterpart for parsing) and every layer whose input does not depend on the image (the decoder's
first self-attention over the constant task tokens, folded to constants).

``int8-dynamic`` is the fp32 conversion followed by post-training dynamic-range quantization of the
``.tflite`` with ai-edge-quantizer (Google's LiteRT quantizer): per-channel int8 weights of every
FULLY_CONNECTED and CONV_2D op, activations quantized on the fly by the kernels, nothing calibrated.
(litert-torch's own PT2E dynamic route fails in the converter: its dynamic-range pass quantizes the
decoder's constant task-token queries into an int8 ``batch_matmul`` that fails verification; the
quantizer's stock ``dynamic_wi8_afp32`` recipe, which also takes BATCH_MATMUL and the constant task-token
operands, gives NaN outputs.) ``int8-full`` (integer-only input) is refused with a clear error.

Why not the quantizer's default annotation: it also quantizes softmax / sigmoid with fixed int8 output
params, add, mul and cat; the interpreter then rejects the int8 SOFTMAX over 4096 heatmap cells.
"""
from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from . import INPUT_NAME, require
from ..config import FaceAnalysisConfig
from ..errors import FaceAnalysisError

SIGNATURE = "face"
#: module-path fragments whose Linear / Conv2d layers stay float in the int8 exports (see module doc)
FLOAT_MODULES = ("encoder.stem.s2.", "pixel_decoder.out", "parsing_refiner.image.", "parsing_refiner.out")
_QUANT_MODULE_TYPES = ("torch.nn.modules.linear.Linear", "torch.nn.modules.conv.Conv2d")


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
    """Convert ``model`` to ``path`` (.tflite) at ``precision`` (fp32 | int8)."""
    litert_torch = require("litert_torch", "TFLite export")
    version = getattr(litert_torch, "__version__", "")
    if precision == "int8-full":
        raise FaceAnalysisError(f"TFLite int8-full (integer-only input) is not available with litert-torch {version}; "
                                "use --precision int8 (int8 weights and activations, float input / outputs)")
    s = cfg.model.input_size
    wrapper = _DictWrapper(model).eval()
    x = torch.from_numpy(calib[:1]) if calib is not None else torch.zeros(1, 3, s, s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if precision in ("fp32", "int8-dynamic"):
                edge = litert_torch.signature(SIGNATURE, wrapper, sample_kwargs={INPUT_NAME: x}).convert()
            else:
                edge = _convert_pt2e(litert_torch, wrapper, x, calib)
        except (RuntimeError, ValueError) as err:  # converter-pass failures surface as ValueError
            raise FaceAnalysisError(f"litert-torch {version} could not convert the model at {precision} "
                                    f"({str(err).splitlines()[0][:300]})") from err
    if precision == "int8-dynamic":
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = Path(tmp) / "fp32.tflite"
            edge.export(str(fp32))
            _dynamic_range_int8(fp32, path)
    else:
        edge.export(str(path))
    _smoke_test(path, x.numpy())
    return path


#: TFLite ops whose constant weights the int8-dynamic export quantizes (per channel, 8 bits)
DYNAMIC_OPS = ("FULLY_CONNECTED", "CONV_2D")


def _dynamic_range_int8(src: Path, dst: Path) -> Path:
    """Dynamic-range int8 of the fp32 ``src`` with ai-edge-quantizer: int8 per-channel weights of
    :data:`DYNAMIC_OPS`, float activations (quantized per run by the kernels), every other op float."""
    quantizer = require("ai_edge_quantizer.quantizer", "TFLite int8-dynamic export")
    from ai_edge_quantizer import qtyping

    qt = quantizer.Quantizer(str(src))
    for op in DYNAMIC_OPS:
        qt.add_dynamic_config(".*", getattr(qtyping.TFLOperationName, op), 8)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qt.quantize().export_model(str(dst), overwrite=True)
        dst.chmod(0o644)  # the quantizer writes it executable
    except (RuntimeError, ValueError, KeyError) as err:
        raise FaceAnalysisError(f"ai-edge-quantizer could not quantize the TFLite model "
                                f"({str(err).splitlines()[0][:300]})") from err
    return dst


def _smoke_test(path: Path, x: np.ndarray) -> None:
    """Run the written model once; delete it and raise when the interpreter cannot prepare it."""
    interp = require("ai_edge_litert.interpreter", "TFLite export (checking the result)")
    try:
        interp.Interpreter(str(path), num_threads=1).get_signature_runner(SIGNATURE)(**{INPUT_NAME: x})
    except (RuntimeError, ValueError) as err:
        path.unlink(missing_ok=True)
        raise FaceAnalysisError(
            f"the converted TFLite model does not run in ai_edge_litert ({str(err).splitlines()[0][:200]}); "
            "a quantized kernel rejected its quantization params (e.g. an int8 SOFTMAX when more than the "
            "Linear / Conv2d layers get quantized); use --precision fp32 for TFLite, or ONNX int8") from err


def _convert_pt2e(litert_torch, wrapper: torch.nn.Module, x: torch.Tensor, calib: np.ndarray | None):
    from litert_torch.quantize import pt2e_quantizer as pq
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if calib is None or len(calib) == 0:
        raise FaceAnalysisError("static int8 TFLite export needs calibration crops")
    qconfig = pq.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    quantizer = _layer_quantizer(pq, qconfig)
    graph = torch.export.export(wrapper, (), {INPUT_NAME: x}).module()
    graph = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for i in tqdm(range(len(calib)), desc="calibrate (tflite)", leave=False):
            graph(**{INPUT_NAME: torch.from_numpy(calib[i:i + 1])})
    graph = convert_pt2e(graph, fold_quantize=False)
    move_exported_model_to_eval(graph)
    # QuantConfig only reads the global config to pick the converter's STATIC / DYNAMIC QDQ mode
    return litert_torch.signature(SIGNATURE, graph, sample_kwargs={INPUT_NAME: x}).convert(
        quant_config=QuantConfig(pt2e_quantizer=pq.PT2EQuantizer().set_global(qconfig)))


def _layer_quantizer(pq, qconfig):
    """A PT2E quantizer that annotates only image-dependent Linear / Conv2d layers outside FLOAT_MODULES.

    (``set_module_type`` cannot express this: torch.export stores module types as strings in
    ``nn_module_stack``, so the stock type filter never matches.)
    """
    from litert_torch.quantize.pt2e_quantizer_utils import OP_TO_ANNOTATOR

    class LayerQuantizer(pq.PT2EQuantizer):
        def annotate(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
            live = _input_dependent(model)

            def keep(n: torch.fx.Node) -> bool:
                if n.op in ("get_attr", "placeholder"):  # weight / bias operands of an annotated layer
                    return True
                stack = n.meta.get("nn_module_stack") or {}
                paths = [p for p, _ in stack.values()]
                types = [t if isinstance(t, str) else f"{t.__module__}.{t.__qualname__}" for _, t in stack.values()]
                return (n in live and any(t in _QUANT_MODULE_TYPES for t in types)
                        and not any(f in p + "." for p in paths for f in FLOAT_MODULES))

            for op in ("linear", "addmm", "conv"):
                OP_TO_ANNOTATOR[op](model, qconfig, keep)
            return model

    q = LayerQuantizer()
    q.global_config = qconfig
    return q


def _input_dependent(model: torch.fx.GraphModule) -> set:
    """Call nodes whose activation input depends on the graph input (others fold to constants)."""
    live: set = set()
    for n in model.graph.nodes:
        if n.op == "placeholder" or (n.op == "call_function" and any(a in live for a in n.all_input_nodes)):
            live.add(n)
    return {n for n in live if n.op == "call_function" and n.args and n.args[0] in live}
