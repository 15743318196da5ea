"""CoreML for app developers: image input (normalisation baked in) and a flexible batch, checked on the saved
package's spec (CoreML cannot predict on Linux; export/check_coreml_macos.py checks the numbers on a Mac)."""
from __future__ import annotations

import json

import pytest

from faceanalysis.config import PreprocessConfig
from faceanalysis.errors import FaceAnalysisError
from faceanalysis.export import export_artifact, read_sidecar
from faceanalysis.weights import load_model


@pytest.fixture(scope="module")
def ct():
    return pytest.importorskip("coremltools", reason="pip install 'faceanalysis[export]'")


def test_image_input_spec(ct, tiny_weights, tmp_path):
    from faceanalysis.export.coreml_export import input_spec, inspect

    model, cfg = load_model(tiny_weights)
    pre, s = cfg.preprocess, cfg.model.input_size
    path = export_artifact("coreml", "fp16", tiny_weights, tmp_path / "tiny.image.mlpackage", coreml_input="image")
    spec = input_spec(path)
    assert spec["kind"] == "image" and spec["name"] == "input"
    assert (spec["width"], spec["height"]) == (s, s)
    assert spec["color_layout"] == "RGB"
    # the normalisation x = (pixel / 255 - mean) / std, as the program applies it (fp16 constants)
    assert spec["scale"] == pytest.approx(1.0 / (255.0 * pre.std[0]), rel=1e-3)
    assert spec["bias"] == pytest.approx([-m / sd for m, sd in zip(pre.mean, pre.std)], abs=1e-3)
    names = inspect(path)
    assert names["outputs"] == model.output_names
    info = json.loads(names["metadata"]["coreml_input"])
    assert info["kind"] == "image" and info["scale"] == pytest.approx(spec["scale"], rel=1e-3)
    side = read_sidecar(path)
    assert side["input"]["coreml"]["kind"] == "image" and side["input"]["coreml"]["color_layout"] == "RGB"
    assert side["input"]["shape"] == [1, 3, s, s]


def test_tensor_flexible_batch_spec(ct, tiny_weights, tmp_path):
    from faceanalysis.export.coreml_export import input_spec

    _, cfg = load_model(tiny_weights)
    s = cfg.model.input_size
    path = export_artifact("coreml", "fp16", tiny_weights, tmp_path / "tiny.batch.mlpackage", coreml_batch=8)
    spec = input_spec(path)
    assert spec["kind"] == "tensor"
    assert spec["shape_range"] == [(1, 8), (3, 3), (s, s), (s, s)]
    side = read_sidecar(path)
    assert side["input"]["shape"] == ["1..8", 3, s, s]
    assert side["input"]["coreml"]["shape"][0] == "1..8"


def test_image_normalisation_needs_one_std():
    from faceanalysis.export.coreml_export import image_normalisation

    scale, bias = image_normalisation(PreprocessConfig())
    assert scale == pytest.approx(1 / 127.5) and bias == pytest.approx([-1.0, -1.0, -1.0])
    with pytest.raises(FaceAnalysisError, match="one std for all channels"):
        image_normalisation(PreprocessConfig(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))


@pytest.mark.parametrize("extra,msg", [
    (["--format", "coreml", "--coreml-input", "image", "--coreml-batch", "4"], "image input is one picture"),
    (["--format", "onnx", "--precision", "fp32", "--coreml-input", "image"], "need --format coreml"),
    (["--format", "coreml", "--coreml-batch", "0"], "1..1024"),
])
def test_cli_coreml_option_errors(tiny_weights, tmp_path, capsys, extra, msg):
    from faceanalysis.export.cli import main

    assert main([*extra, "--weights", str(tiny_weights), "--no-check", "-o", str(tmp_path)]) == 2
    assert msg in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_cli_help_names_coreml_options(capsys):
    from faceanalysis.export.cli import build_parser

    text = build_parser().format_help()
    assert "--coreml-input" in text and "--coreml-batch" in text


def test_macos_check_feeds_pil_images_and_batches():
    """export/check_coreml_macos.py's feeding logic, with a stand-in for MLModel (no CoreML on Linux)."""
    import importlib.util
    from pathlib import Path

    import numpy as np
    from PIL import Image

    path = Path(__file__).resolve().parents[1] / "export" / "check_coreml_macos.py"
    mod_spec = importlib.util.spec_from_file_location("check_coreml_macos", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)

    class Fake:
        def __init__(self):
            self.calls = []

        def predict(self, feed):
            v = feed["input"]
            self.calls.append(v)
            n = 1 if isinstance(v, Image.Image) else len(v)
            mean = np.asarray(v, np.float32).mean() if isinstance(v, Image.Image) else v.mean(axis=(1, 2, 3))[:, None]
            return {"age": np.broadcast_to(np.float32(mean), (n, 1)), "embedding": np.zeros((n, 4), np.float32)}

    crops = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    x = (crops.astype(np.float32).transpose(0, 3, 1, 2) / 255 - 0.5) / 0.5
    fake = Fake()
    out = mod.predict_all(fake, crops, x, {"kind": "image", "name": "input"})
    assert all(isinstance(c, Image.Image) and c.mode == "RGB" and c.size == (8, 8) for c in fake.calls)
    assert len(fake.calls) == 5 and out["age"].shape == (5, 1) and out["embedding"].shape == (5, 4)
    assert np.array_equal(np.asarray(fake.calls[2]), crops[2])
    fake = Fake()
    out = mod.predict_all(fake, crops, x, {"kind": "tensor", "name": "input", "shape_range": [(1, 2), (3, 3)]})
    assert [len(c) for c in fake.calls] == [2, 2, 1] and out["age"].shape == (5, 1)
    fake = Fake()
    out = mod.predict_all(fake, crops, x, {"kind": "tensor", "name": "input", "shape": [1, 3, 8, 8]})
    assert len(fake.calls) == 5 and out["embedding"].shape == (5, 4)
