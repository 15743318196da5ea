"""CoreML export (iOS): ``torch.jit.trace`` + ``coremltools.convert`` to an ML program ``.mlpackage``.

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
from ..config import FaceAnalysisConfig

MAX_BATCH = 64


def export(model: torch.nn.Module, cfg: FaceAnalysisConfig, path: Path, precision: str,
           metadata: dict[str, str], descriptions: dict[str, str]) -> Path:
    """Write ``path`` (.mlpackage): fp32 / fp16 compute, or fp16 compute with int8 per-channel weights."""
    ct = require("coremltools", "CoreML export")
    from ..model import ExportWrapper

    s = cfg.model.input_size
    wrapper = ExportWrapper(model).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # torch.export with a static batch of 1 folds the shape arithmetic (jit.trace keeps it as int ops
        # that coremltools cannot invert); a mobile app runs one face per call
        program = torch.export.export(wrapper, (torch.zeros(1, 3, s, s),)).run_decompositions({})
        mlmodel = ct.convert(
            program, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS17,
            inputs=[ct.TensorType(name=INPUT_NAME, shape=(1, 3, s, s))],
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
    mlmodel.input_description[INPUT_NAME] = (
        f"(N, 3, {s}, {s}) float32 RGB aligned face crop, normalised per channel as pixel * scale + bias with "
        f"pixel in 0..255, scale={[round(v, 8) for v in scale]}, bias={[round(v, 8) for v in bias]}")
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
