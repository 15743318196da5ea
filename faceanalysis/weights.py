"""Weights: safetensors files with the full config embedded in the metadata. Nothing is unpickled.

The shipped weights, the ONNX export of them that the torch-free runtime uses and the model card are package
data in ``faceanalysis/assets/`` (:data:`ASSETS`), so they come with every install, editable or not.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from safetensors import SafetensorError

from ._lazy import require_torch, torch
from .config import FaceAnalysisConfig
from .errors import FaceAnalysisError, option

#: package data: shipped weights, their ONNX export (+ JSON sidecar) and MODEL_CARD.md
ASSETS = Path(__file__).resolve().parent / "assets"
DEFAULT_STEM = "faceanalysis_s128"
#: the shipped fp16 weights (torch backend); replace this file to ship new weights
DEFAULT_WEIGHTS = ASSETS / f"{DEFAULT_STEM}.safetensors"
#: the ONNX export of :data:`DEFAULT_WEIGHTS` used by the onnx backend (fp32: exact parity, faster than int8 on x86)
DEFAULT_ONNX = ASSETS / f"{DEFAULT_STEM}.fp32.onnx"
MODEL_CARD = ASSETS / "MODEL_CARD.md"
CONFIG_KEY = "faceanalysis_config"


def save_weights(model: torch.nn.Module, cfg: FaceAnalysisConfig, path: str | Path, dtype: torch.dtype | None = None) -> Path:
    """Write ``model``'s state dict (floating tensors cast to ``dtype``, default float16) with ``cfg`` embedded."""
    from safetensors.torch import save_file

    dtype = torch.float16 if dtype is None else dtype
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.detach().to(dtype) if v.is_floating_point() else v.detach()).contiguous().cpu()
             for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={CONFIG_KEY: cfg.to_json(), "format": "pt"})
    return path


def read_config(path: str | Path) -> FaceAnalysisConfig:
    """The config embedded in a weights file."""
    from safetensors import safe_open

    path = _check(path)
    try:
        with safe_open(str(path), "numpy") as f:  # metadata only: no torch needed
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        hint = "" if path.suffix == ".safetensors" else (
            "; the torch backend reads .safetensors files (exported .onnx / .tflite models run with "
            + option("backend='onnx' / 'tflite'", "--backend onnx / tflite") + ")")
        raise FaceAnalysisError(f"weights file {path} is not a readable safetensors file ({err}); "
                                f"it may be truncated: re-download or re-export it{hint}") from err
    if CONFIG_KEY not in meta:
        raise FaceAnalysisError(f"weights file {path} has no embedded faceanalysis config; "
                                f"save weights with faceanalysis.weights.save_weights")
    try:
        return FaceAnalysisConfig.from_json(meta[CONFIG_KEY])
    except (ValueError, TypeError, AttributeError) as err:
        raise FaceAnalysisError(f"weights file {path} has an invalid config: {err}") from err


def load_model(path: str | Path | None = None, device: str = "cpu"):
    """Build a :class:`~faceanalysis.model.FaceModel` from a weights file (fp32, eval mode) and its config."""
    path = _check(path if path is not None else DEFAULT_WEIGHTS)
    require_torch(f"loading {path.name} (the torch backend)")
    from safetensors.torch import load_file

    from .model import FaceModel

    cfg = read_config(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise FaceAnalysisError(f"weights file {path} cannot be read ({err}); it may be truncated") from err
    try:
        model = FaceModel(cfg.model)
    except (AssertionError, TypeError, ValueError, RuntimeError, ZeroDivisionError) as err:
        raise FaceAnalysisError(f"weights file {path} has an invalid model config ({type(err).__name__}: {err}); "
                                f"re-export it with faceanalysis.weights.save_weights") from err
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or bad_shape:
        raise FaceAnalysisError(
            f"weights file {path} does not match its config: {len(missing)} missing, {len(unexpected)} unexpected, "
            f"{len(bad_shape)} wrongly shaped tensors (e.g. {(missing + unexpected + bad_shape)[:3]})")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model.eval().to(device), cfg


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _check(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise FaceAnalysisError(f"weights file {path} is a folder; pass the .safetensors file inside it")
    if not path.is_file():
        hint = " (the shipped default is missing: reinstall faceanalysis)" if path == DEFAULT_WEIGHTS else ""
        raise FaceAnalysisError(f"weights file {path} does not exist{hint}")
    return path
