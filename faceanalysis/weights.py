"""Weights: safetensors files with the full config embedded in the metadata. Nothing is unpickled."""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import FaceAnalysisConfig
from .errors import FaceAnalysisError

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "faceanalysis_s128.safetensors"
CONFIG_KEY = "faceanalysis_config"


def save_weights(model: torch.nn.Module, cfg: FaceAnalysisConfig, path: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write ``model``'s state dict (floating tensors cast to ``dtype``) with ``cfg`` embedded."""
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
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        hint = "" if path.suffix == ".safetensors" else (
            "; the torch backend reads .safetensors files (for .onnx / .tflite pass backend='onnx' / 'tflite')")
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
    from .model import FaceModel

    path = _check(path if path is not None else DEFAULT_WEIGHTS)
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
