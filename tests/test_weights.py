"""Weights files: round trip, embedded config, and a clear error naming the file for every broken one."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from faceanalysis import FaceAnalysisError, FaceAnalyzer
from faceanalysis.config import FaceAnalysisConfig
from faceanalysis.weights import CONFIG_KEY, load_model, read_config, save_weights


def _meta(path):
    with safe_open(str(path), "pt") as f:
        return f.metadata()


def test_round_trip(tiny_weights, tmp_path):
    model, cfg = load_model(tiny_weights)
    assert cfg.model.input_size == 64 and cfg.preprocess.input_size == 64
    again = save_weights(model, cfg, tmp_path / "sub" / "again.safetensors")
    model2, cfg2 = load_model(again)
    assert cfg2.to_json() == cfg.to_json()
    for (k, a), (k2, b) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert k == k2
        torch.testing.assert_close(a, b)  # fp16 -> fp32 -> fp16 is exact
    assert read_config(again).model == cfg.model


def test_weights_are_fp16_and_carry_the_config(tiny_weights):
    state = load_file(str(tiny_weights))
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}
    cfg = FaceAnalysisConfig.from_json(_meta(tiny_weights)[CONFIG_KEY])
    assert cfg.model.embed_dim == 64


def _expect_error(path, match=None, **kw):
    with pytest.raises(FaceAnalysisError) as info:
        FaceAnalyzer(weights=path, **kw)
    msg = str(info.value)
    assert str(path) in msg, f"message does not name the file: {msg}"
    if match:
        assert match in msg, msg
    return msg


def test_missing_file(tmp_path):
    _expect_error(tmp_path / "nope.safetensors", "does not exist")


def test_folder_instead_of_file(tmp_path):
    _expect_error(tmp_path, "folder")


@pytest.mark.parametrize("cut", [0.5, 0.999, 0.0, 5])
def test_truncated_file(tiny_weights, tmp_path, cut):
    data = tiny_weights.read_bytes()
    n = cut if isinstance(cut, int) else int(len(data) * cut)
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[:n])
    _expect_error(bad, "truncated")


def test_not_a_safetensors_file(tmp_path):
    bad = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(3)}, bad)
    msg = _expect_error(bad)
    assert "safetensors" in msg


def test_file_without_embedded_config(tiny_weights, tmp_path):
    bad = tmp_path / "nocfg.safetensors"
    save_file(load_file(str(tiny_weights)), str(bad))
    _expect_error(bad, "no embedded faceanalysis config")


@pytest.mark.parametrize("edit", [
    lambda c: c["model"].update(depth=3),  # one more block than the tensors have
    lambda c: c["model"].update(embed_dim=96, num_heads=2),  # every tensor the wrong shape
    lambda c: c["model"].update(tasks=["pose"]),  # tensors of heads the config lacks
])
def test_tensors_do_not_match_config(tiny_weights, tmp_path, edit):
    cfg = json.loads(_meta(tiny_weights)[CONFIG_KEY])
    edit(cfg)
    bad = tmp_path / "mismatch.safetensors"
    save_file(load_file(str(tiny_weights)), str(bad), metadata={CONFIG_KEY: json.dumps(cfg)})
    _expect_error(bad, "does not match its config")


def test_missing_tensor(tiny_weights, tmp_path):
    state = load_file(str(tiny_weights))
    state.pop(sorted(state)[0])
    bad = tmp_path / "missing.safetensors"
    save_file(state, str(bad), metadata=_meta(tiny_weights))
    _expect_error(bad, "1 missing")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", json.dumps({"model": {"bogus": 1}}),
                                  json.dumps({"model": {"depth": "six"}}),
                                  json.dumps({"model": {"embed_dim": 65}})])  # 65 not divisible by the heads
def test_invalid_embedded_config(tiny_weights, tmp_path, text):
    bad = tmp_path / "badcfg.safetensors"
    save_file(load_file(str(tiny_weights)), str(bad), metadata={CONFIG_KEY: text})
    _expect_error(bad, "config")


def test_cuda_without_cuda(tiny_weights):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")  # the check is for CPU-only installs
    with pytest.raises(FaceAnalysisError, match="CUDA is not available"):
        FaceAnalyzer(weights=tiny_weights, device="cuda")
    with pytest.raises(FaceAnalysisError, match="unknown device"):
        FaceAnalyzer(weights=tiny_weights, device="gpu0")


def test_default_weights_load_without_arguments(default_weights):
    fa = FaceAnalyzer()
    assert fa.config.to_json() == read_config(default_weights).to_json()
    out = fa.run_crops(np.zeros((1, 128, 128, 3), np.uint8))
    assert out["landmarks"].shape == (1, 68, 2)
