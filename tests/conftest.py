"""Shared fixtures. Real data comes from the data pack (``../shared/data``); nothing is downloaded."""
from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest
import torch

from faceanalysis.config import FaceAnalysisConfig, ModelConfig, PreprocessConfig
from faceanalysis.data.sources import default_data_root
from faceanalysis.model import FaceModel
from faceanalysis.preprocess import load_image
from faceanalysis.weights import DEFAULT_WEIGHTS, save_weights

TINY = dict(embed_dim=64, depth=2, num_heads=2, decoder_depth=1, decoder_heads=2, decoder_mlp_dim=128, pixel_dim=16,
            stem_channels=(8, 16, 32, 48), input_size=64)


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = default_data_root()
    if not (root / "README.md").is_file():
        pytest.fail(f"data pack not found at {root}: tests need ../shared/data (or FACEANALYSIS_DATA)")
    return root


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A small randomly initialised checkpoint (tests only; never the shipped default)."""
    torch.manual_seed(0)
    cfg = FaceAnalysisConfig(model=ModelConfig(**TINY), preprocess=PreprocessConfig(input_size=TINY["input_size"]))
    model = FaceModel(cfg.model).eval()
    return save_weights(model, cfg, tmp_path_factory.mktemp("w") / "tiny.safetensors")


@pytest.fixture(scope="session")
def default_weights() -> Path:
    assert DEFAULT_WEIGHTS.is_file(), f"shipped weights missing: {DEFAULT_WEIGHTS}"
    return DEFAULT_WEIGHTS


@pytest.fixture(scope="session")
def face_photo(data_root) -> np.ndarray:
    """A real 256x256 photo with one face (CelebAMask-HQ test image)."""
    path = sorted(glob.glob(str(data_root / "celebamask_mini" / "images" / "*.jpg")))[0]
    return load_image(path)


# ---- fixtures for the core API tests (test_api / test_inputs / test_cli) ----------------------------------------
@pytest.fixture(scope="session")
def celeba_photo_paths(data_root) -> list[Path]:
    """Paths of real 256x256 one-face photos (the pack's CelebAMask-HQ images, train and test splits), sorted."""
    paths = [Path(p) for p in sorted(glob.glob(str(data_root / "celebamask_mini" / "images" / "*.jpg")))]
    assert len(paths) >= 12, f"expected CelebAMask-HQ images under {data_root / 'celebamask_mini' / 'images'}"
    return paths


@pytest.fixture(scope="session")
def tiny_analyzer(tiny_weights):
    """FaceAnalyzer on the random tiny model: real detection/alignment, cheap (untrained) heads."""
    from faceanalysis import FaceAnalyzer

    return FaceAnalyzer(weights=tiny_weights)


@pytest.fixture(scope="session")
def default_analyzer(default_weights):
    """FaceAnalyzer on the shipped weights (trained behaviour)."""
    from faceanalysis import FaceAnalyzer

    return FaceAnalyzer(weights=default_weights)
