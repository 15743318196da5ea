"""CoreML export (iOS): ``torch.export`` + ``coremltools.convert`` to an ML program ``.mlpackage``.

Two input kinds (``--coreml-input``):

* ``tensor`` (default): an MLMultiArray ``(N, 3, S, S)`` float32, normalised by the caller
  (``pixel * scale + bias``). ``N`` is 1, or 1..``batch`` with ``--coreml-batch N`` (a flexible batch: the graph
  is exported with a dynamic batch axis and the input gets a shape range).
* ``image``: an ``ImageType`` (a ``CVPixelBuffer`` / ``PIL.Image``, RGB, S x S): the normalisation
  ``pixel * scale + bias`` (scale = 1 / (255 std), bias = -mean / std, from the weights' preprocessing config) is
  baked into the program, so an app hands over the aligned crop as it is. A Core ML image input is one picture: its
  feature description can carry a size range but no batch axis (coremltools drops a batch ``RangeDim`` on an
  ``ImageType``), so images are batched with Core ML's batch API instead
  (``MLModel.predictions(fromBatch:)`` / ``model.predict([{...}, ...])``), which runs a list of crops in one call.

Prediction needs macOS; on Linux the package is written with ``skip_model_load=True`` and can only be
inspected (see ``export/check_coreml_macos.py`` for the numerics check on a Mac).
"""
from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import torch

from . import INPUT_NAME, require
from ..config import FaceAnalysisConfig, PreprocessConfig
from ..errors import FaceAnalysisError

MAX_BATCH = 64
INPUT_KINDS = ("tensor", "image")


def image_normalisation(pre: PreprocessConfig) -> tuple[float, list[float]]:
    """``(scale, bias)`` of a CoreML ``ImageType`` for ``x = (pixel / 255 - mean) / std``: CoreML has one scale for
    all channels and a bias per channel, so the stds must be equal (they are: 0.5)."""
    scales = [1.0 / (255.0 * sd) for sd in pre.std]
    if max(scales) - min(scales) > 1e-12 * max(scales):
        raise FaceAnalysisError(f"--coreml-input image needs one std for all channels (CoreML images have one scale); "
                                f"these weights use std={list(pre.std)}: export with --coreml-input tensor")
    return scales[0], [-m / sd for m, sd in zip(pre.mean, pre.std)]


def input_info(cfg: FaceAnalysisConfig, input_kind: str = "tensor", batch: int = 1) -> dict:
    """What the package's input is (for the sidecar and the user metadata)."""
    s = cfg.model.input_size
    if input_kind == "image":
        scale, bias = image_normalisation(cfg.preprocess)
        return {"kind": "image", "color_layout": "RGB", "width": s, "height": s, "scale": scale, "bias": bias,
                "batch": "one image per prediction; batch with MLModel.predictions(fromBatch:) "
                         "(coremltools: model.predict([dict, ...]))",
                "normalisation": "baked in: x = pixel * scale + bias"}
    return {"kind": "tensor", "shape": [1 if batch == 1 else f"1..{batch}", 3, s, s], "dtype": "float32",
            "normalisation": "by the caller: x = pixel * scale + bias (see input.scale / input.bias)"}


def export(model: torch.nn.Module, cfg: FaceAnalysisConfig, path: Path, precision: str,
           metadata: dict[str, str], descriptions: dict[str, str], input_kind: str = "tensor",
           batch: int = 1) -> Path:
    """Write ``path`` (.mlpackage): fp32 / fp16 compute, or fp16 compute with int8 per-channel weights.

    ``input_kind``: ``"tensor"`` (MLMultiArray, batch 1 or a flexible batch 1..``batch``) or ``"image"``
    (``ImageType``, RGB, normalisation baked in, one image per prediction); see the module docstring."""
    ct = require("coremltools", "CoreML export")
    from ..model import ExportWrapper

    if input_kind not in INPUT_KINDS:
        raise FaceAnalysisError(f"--coreml-input must be one of {INPUT_KINDS} (got {input_kind!r})")
    if not 1 <= batch <= 1024:
        raise FaceAnalysisError(f"--coreml-batch must lie in 1..1024 (got {batch})")
    if input_kind == "image" and batch != 1:
        raise FaceAnalysisError("--coreml-batch needs --coreml-input tensor: a CoreML image input is one picture "
                                "(its description has no batch axis); batch images with "
                                "MLModel.predictions(fromBatch:)")
    s = cfg.model.input_size
    wrapper = ExportWrapper(model).eval()
    if input_kind == "image":
        scale, bias = image_normalisation(cfg.preprocess)
        ml_input = ct.ImageType(name=INPUT_NAME, shape=(1, 3, s, s), scale=scale, bias=bias,
                                color_layout=ct.colorlayout.RGB)
    else:
        n = 1 if batch == 1 else ct.RangeDim(1, batch, default=1)
        ml_input = ct.TensorType(name=INPUT_NAME, shape=(n, 3, s, s))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # torch.export folds the shape arithmetic (jit.trace keeps it as int ops that coremltools cannot invert);
        # a static batch of 1 unless a flexible batch is asked for (then a dynamic batch axis)
        if batch == 1:
            program = torch.export.export(wrapper, (torch.zeros(1, 3, s, s),)).run_decompositions({})
        else:
            dim = torch.export.Dim("batch", min=1, max=batch)
            program = torch.export.export(wrapper, (torch.zeros(2, 3, s, s),),
                                          dynamic_shapes=({0: dim},)).run_decompositions({})
        mlmodel = ct.convert(
            program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
            inputs=[ml_input],
            outputs=[ct.TensorType(name=n) for n in model.output_names],
            compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
            skip_model_load=True)
        if precision == "int8":
            from coremltools.optimize.coreml import OpLinearQuantizerConfig, OptimizationConfig, linear_quantize_weights

            op = OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
            mlmodel = linear_quantize_weights(mlmodel, config=OptimizationConfig(global_config=op))
    pre = cfg.preprocess
    scale = [1.0 / (255.0 * sd) for sd in pre.std]
    bias = [-m / sd for m, sd in zip(pre.mean, pre.std)]
    mlmodel.short_description = "faceanalysis multi-task face model (aligned face crop -> 8 named outputs)"
    if input_kind == "image":
        mlmodel.input_description[INPUT_NAME] = (
            f"{s}x{s} RGB aligned face crop (the 5-point similarity warp onto the template in the metadata); "
            f"normalisation built in (pixel * {scale[0]:.8g} + {[round(v, 8) for v in bias]})")
    else:
        n = "1" if batch == 1 else f"N=1..{batch}"
        mlmodel.input_description[INPUT_NAME] = (
            f"({n}, 3, {s}, {s}) float32 RGB aligned face crop, normalised per channel as pixel * scale + bias with "
            f"pixel in 0..255, scale={[round(v, 8) for v in scale]}, bias={[round(v, 8) for v in bias]}")
    metadata = {**metadata, "coreml_input": json.dumps(input_info(cfg, input_kind, batch))}
    for n in model.output_names:
        mlmodel.output_description[n] = descriptions.get(n, n)
    mlmodel.user_defined_metadata.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    mlmodel.version = cfg.version
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    mlmodel.save(str(path))
    return path


def inspect(path: str | Path) -> dict[str, list[str]]:
    """Input and output names of a saved .mlpackage (works on Linux: no prediction)."""
    ct = require("coremltools", "reading a CoreML package")
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    return {"inputs": [i.name for i in spec.description.input], "outputs": [o.name for o in spec.description.output],
            "metadata": dict(spec.description.metadata.userDefined)}


def input_spec(path: str | Path) -> dict:
    """The first input of a saved .mlpackage as stored (works on Linux): kind, size, colour layout, batch range,
    and for an image input the scale / bias the program applies to it (read from its ``mul`` / ``add`` ops)."""
    ct = require("coremltools", "reading a CoreML package")
    spec = ct.models.MLModel(str(path), skip_model_load=True).get_spec()
    inp = spec.description.input[0]
    which = inp.type.WhichOneof("Type")
    out: dict = {"name": inp.name, "kind": {"imageType": "image", "multiArrayType": "tensor"}.get(which, which)}
    if which == "imageType":
        t = inp.type.imageType
        from coremltools.proto import FeatureTypes_pb2 as ft

        out.update(width=t.width, height=t.height, color_layout=ft.ImageFeatureType.ColorSpace.Name(t.colorSpace))
        out.update(_image_preprocessing(spec, inp.name))
    else:
        t = inp.type.multiArrayType
        out["shape"] = list(t.shape)
        if t.WhichOneof("ShapeFlexibility") == "shapeRange":
            out["shape_range"] = [(r.lowerBound, r.upperBound) for r in t.shapeRange.sizeRanges]
        elif t.WhichOneof("ShapeFlexibility") == "enumeratedShapes":
            out["enumerated_shapes"] = [list(sh.shape) for sh in t.enumeratedShapes.shapes]
    return out


def _image_preprocessing(spec, name: str) -> dict:
    """The scale and bias that an ML program multiplies / adds to its image input (coremltools inserts ``mul`` and
    ``add`` ops on it, after a cast to the compute precision)."""
    import numpy as np

    ops = list(spec.mlProgram.functions["main"].block_specializations.values())[0].operations
    consts: dict = {}
    for op in ops:
        if op.type == "const":
            v = op.attributes["val"]
            consts[op.outputs[0].name] = v
    feeds = {name}  # the input and the ops that only re-type it
    found: dict = {}
    for op in ops:
        args = {k: [b.name for b in v.arguments] for k, v in op.inputs.items()}
        x = args.get("x", [None])[0]
        if x not in feeds:
            continue
        if op.type == "cast":
            feeds.add(op.outputs[0].name)
        elif op.type in ("mul", "add") and "y" in args:
            found["scale" if op.type == "mul" else "bias"] = _const_value(consts[args["y"][0]], np)
            feeds.add(op.outputs[0].name)
    return found


def _const_value(v, np) -> list[float] | float:
    """A MIL const's value (scalar or small tensor, fp16 / fp32)."""
    t = v.immediateValue.tensor
    if t.WhichOneof("value") == "floats":
        arr = np.asarray(t.floats.values, np.float32)
    elif t.WhichOneof("value") == "bytes":  # fp16 constants are stored as raw bytes
        arr = np.frombuffer(t.bytes.values, np.float16).astype(np.float32)
    else:
        arr = np.asarray(getattr(t, t.WhichOneof("value")).values, np.float32)
    return float(arr[0]) if arr.size == 1 else arr.tolist()
