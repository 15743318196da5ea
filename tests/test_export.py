"""Export layer: ONNX / TFLite / CoreML artifacts, sidecars, runners, parity floors and bad input."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from faceanalysis import FaceAnalysisError
from faceanalysis.export import export_artifact, read_sidecar
from faceanalysis.export.calibration import parity_crops, training_crops
from faceanalysis.export.parity import compare, failures, run_batched, torch_reference
from faceanalysis.preprocess import normalise_array
from faceanalysis.weights import load_model, read_config

PARITY_N = 64


@pytest.fixture(scope="module")
def tiny_inputs(tiny_weights, data_root):
    pre = read_config(tiny_weights).preprocess
    return normalise_array(training_crops(pre, 16), pre), normalise_array(parity_crops(pre, 8), pre)


@pytest.fixture(scope="module")
def tiny_onnx(tiny_weights, tiny_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    calib, par = tiny_inputs
    return {p: export_artifact("onnx", p, tiny_weights, out, calib=calib, parity_x=par) for p in ("fp32", "fp16", "int8")}


def test_onnx_contract(tiny_onnx, tiny_weights, tiny_inputs):
    import onnx

    from faceanalysis.export.runners import OnnxRunner

    model, cfg = load_model(tiny_weights)
    path = tiny_onnx["fp32"]
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["faceanalysis_config"])["model"]["embed_dim"] == cfg.model.embed_dim
    assert json.loads(meta["preprocessing"])["mean"] == list(cfg.preprocess.mean)
    assert [o.name for o in m.graph.output] == model.output_names
    runner = OnnxRunner(path)  # config read back from metadata_props
    assert runner.config.to_json() == cfg.to_json()
    x = tiny_inputs[1][:3]  # batch 3: the batch axis is dynamic (exported with batch 2)
    out, ref = runner(x), torch_reference(model, x)
    for k in model.output_names:
        assert out[k].shape == ref[k].shape
        np.testing.assert_allclose(out[k], ref[k], atol=1e-3)
    only = OnnxRunner(path, tasks=["pose", "identity"])
    assert list(only(x)) == ["pose", "embedding"]


def test_sidecars(tiny_onnx, tiny_weights):
    from faceanalysis.weights import file_sha256

    sizes = {}
    for prec, path in tiny_onnx.items():
        side = read_sidecar(path)
        assert side["format"] == "onnx" and side["precision"] == prec
        assert side["weights"]["sha256"] == file_sha256(tiny_weights)
        assert side["input"]["mean"] and side["input"]["std"] and side["input"]["shape"][1:] == [3, 64, 64]
        assert [o["name"] for o in side["outputs"]][:2] == ["parsing", "landmarks"]
        assert len(side["class_names"]["parsing"]) == 19 and len(side["class_names"]["expression"]) == 7
        assert side["parity"]["measured"] and "embedding_cosine_mean" in side["parity"]["metrics"]
        sizes[prec] = side["size_bytes"]
    # dynamic int8, the default ONNX route, is not calibrated: the crops given are not used or recorded
    assert read_sidecar(tiny_onnx["int8"])["calibration"] is None
    assert sizes["fp16"] < 0.6 * sizes["fp32"]


def test_fp16_near_exact(tiny_onnx):
    side = read_sidecar(tiny_onnx["fp16"])
    assert side["parity"]["failures"] == [], side["parity"]


def test_parity_metrics_can_fail():
    rng = np.random.default_rng(0)
    ref = {"embedding": rng.normal(size=(8, 16)), "landmarks": rng.uniform(0, 64, (8, 68, 2)),
           "parsing": rng.normal(size=(8, 19, 4, 4)), "expression": rng.dirichlet(np.ones(7), 8)}
    assert failures(compare(ref, ref), "int8") == []
    bad = {k: v + rng.normal(size=v.shape) * 5 for k, v in ref.items()}
    assert len(failures(compare(ref, bad), "int8")) >= 3


# ---- shipped weights: int8 floors -----------------------------------------------------------
@pytest.fixture(scope="module")
def shipped_int8(default_weights, data_root, tmp_path_factory):
    pre = read_config(default_weights).preprocess
    out = tmp_path_factory.mktemp("int8")
    return export_artifact("onnx", "int8", default_weights, out, calib=normalise_array(training_crops(pre, 300), pre),
                           parity_n=PARITY_N)


def test_expression_parity_counts_decided_faces_only():
    """A swap of two near-tied expressions (reference margin < DECIDED_MARGIN) is reported in the raw top-1
    agreement but does not fail the int8 floor; a swap on a face the reference decides clearly does."""
    from faceanalysis.export.parity import DECIDED_MARGIN

    ref = np.tile(np.array([[0.8, 0.1, 0.1]], np.float32), (20, 1))
    ref[0] = [0.40, 0.40 - DECIDED_MARGIN / 2, 0.2 + DECIDED_MARGIN / 2]  # near-tie
    tie_swap = ref.copy()
    tie_swap[0] = [0.39, 0.41, 0.2]
    m = compare({"expression": ref}, {"expression": tie_swap})
    assert m["expression_top1_agreement"] == pytest.approx(0.95) and m["expression_decided_n"] == 19
    assert m["expression_top1_agreement_decided"] == 1.0 and failures(m, "int8") == []
    clear_swaps = tie_swap.copy()
    clear_swaps[1:3] = [0.1, 0.8, 0.1]  # two clearly decided faces change class
    m = compare({"expression": ref}, {"expression": clear_swaps})
    assert m["expression_top1_agreement_decided"] == pytest.approx(17 / 19)
    assert any(f.startswith("expression_top1_agreement_decided") for f in failures(m, "int8"))


def test_onnx_int8_parity_floors(shipped_int8, default_weights, data_root):
    from faceanalysis.export.runners import OnnxRunner

    model, cfg = load_model(default_weights)
    x = normalise_array(parity_crops(cfg.preprocess, PARITY_N), cfg.preprocess)
    m = compare(torch_reference(model, x), run_batched(OnnxRunner(shipped_int8), x))
    assert m["embedding_cosine_mean"] >= 0.98
    assert m["landmarks_mean_px"] <= 1.0
    assert m["parsing_agreement"] >= 0.97
    assert m["expression_top1_agreement_decided"] >= 0.95 and m["expression_top1_agreement"] >= 0.9
    assert failures(m, "int8") == []
    assert read_sidecar(shipped_int8)["parity"]["failures"] == []
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    # int8 = dynamic quantization of the weight matmuls: Conv layers and the task heads keep float weights
    assert shipped_int8.stat().st_size <= fp32_bytes / 2.8


def test_analyzer_onnx_backend_matches_torch(shipped_int8, default_weights, face_photo):
    from faceanalysis import FaceAnalyzer

    ft = FaceAnalyzer(default_weights).analyze(face_photo)
    fo = FaceAnalyzer(shipped_int8, backend="onnx").analyze(face_photo)
    assert len(ft) == len(fo) >= 1
    a, b = ft[0], fo[0]
    assert FaceAnalyzer.similarity(a, b) >= 0.98
    assert np.linalg.norm(a.landmarks - b.landmarks, axis=1).mean() <= 3.0  # image px (crop px x scale)
    assert a.expression == b.expression
    assert (a.parsing.mask == b.parsing.mask).mean() >= 0.95


# ---- TFLite / CoreML (optional toolchains) ----------------------------------------------------
def test_tflite_fp32_tiny(tiny_weights, tiny_inputs, tmp_path):
    pytest.importorskip("litert_torch", reason="pip install 'faceanalysis[export]'")
    from faceanalysis.export.runners import TFLiteRunner

    path = export_artifact("tflite", "fp32", tiny_weights, tmp_path, parity_x=tiny_inputs[1])
    runner = TFLiteRunner(path)
    model, _ = load_model(tiny_weights)
    assert runner.output_names == model.output_names
    m = compare(torch_reference(model, tiny_inputs[1]), run_batched(runner, tiny_inputs[1]))
    assert failures(m, "fp32") == [], m


def test_tflite_int8_parity_floors(default_weights, data_root, tmp_path):
    """The real int8 route on the shipped weights (static PT2E, Linear/Conv2d only): floors, size, float I/O."""
    pytest.importorskip("litert_torch", reason="pip install 'faceanalysis[export]'")
    from faceanalysis.export.runners import TFLiteRunner

    model, cfg = load_model(default_weights)
    pre = cfg.preprocess
    x = normalise_array(parity_crops(pre, 32), pre)
    path = export_artifact("tflite", "int8", default_weights, tmp_path,
                           calib=normalise_array(training_crops(pre, 32), pre), parity_x=x)
    side = read_sidecar(path)
    assert side["parity"]["measured"] and side["parity"]["failures"] == [], side["parity"]
    runner = TFLiteRunner(path, threads=1)
    assert runner.input_detail["dtype"] == np.float32
    m = compare(torch_reference(model, x), run_batched(runner, x))
    assert failures(m, "int8") == [], m
    assert m["embedding_cosine_mean"] >= 0.98 and m["landmarks_mean_px"] <= 1.0
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert path.stat().st_size <= fp32_bytes / 2.5  # weights really are int8


def test_tflite_int8_full_refused(tiny_weights, tiny_inputs, tmp_path):
    pytest.importorskip("litert_torch", reason="pip install 'faceanalysis[export]'")
    with pytest.raises(FaceAnalysisError, match="use --precision int8"):
        export_artifact("tflite", "int8-full", tiny_weights, tmp_path, calib=tiny_inputs[0], parity_x=tiny_inputs[1])
    assert not list(tmp_path.glob("*.tflite"))


def test_tflite_int8_dynamic_without_calibration(tiny_weights, tiny_inputs, tmp_path):
    """fp32 conversion + ai-edge-quantizer dynamic range: int8 weights, no calibration crops, parity floors met."""
    pytest.importorskip("litert_torch", reason="pip install 'faceanalysis[export]'")
    pytest.importorskip("ai_edge_quantizer", reason="pip install 'faceanalysis[export]'")
    from faceanalysis.export.runners import TFLiteRunner

    model, _ = load_model(tiny_weights)
    path = export_artifact("tflite", "int8-dynamic", tiny_weights, tmp_path, calib=None, parity_x=tiny_inputs[1])
    x = tiny_inputs[1]
    m = compare(torch_reference(model, x), run_batched(TFLiteRunner(path, threads=1), x))
    assert failures(m, "int8") == [], m
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    assert path.stat().st_size <= fp32_bytes / 1.8  # the FC / conv weights really are int8 (fp32 file: >= 1x)


def test_coreml_spec_tiny(tiny_weights, tmp_path):
    pytest.importorskip("coremltools", reason="pip install 'faceanalysis[export]'")
    from faceanalysis.export.coreml_export import inspect

    model, _ = load_model(tiny_weights)
    path = export_artifact("coreml", "fp16", tiny_weights, tmp_path)
    assert path.suffix == ".mlpackage" and path.is_dir()
    spec = inspect(path)
    assert spec["inputs"] == ["input"] and spec["outputs"] == model.output_names
    assert "faceanalysis_config" in spec["metadata"]
    assert read_sidecar(path)["parity"]["measured"] is False


# ---- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt,prec,msg", [("pb", "fp32", "unknown export format"), ("onnx", "int4", "not available"),
                                          ("tflite", "fp16", "not available")])
def test_bad_format_or_precision(tiny_weights, tmp_path, fmt, prec, msg):
    with pytest.raises(FaceAnalysisError, match=msg):
        export_artifact(fmt, prec, tiny_weights, tmp_path)


def test_cli_errors(tiny_weights, tmp_path, capsys):
    from faceanalysis.export.cli import main

    assert main(["--format", "pb", "--weights", str(tiny_weights), "-o", str(tmp_path)]) == 2
    assert "unknown export format" in capsys.readouterr().err
    assert main(["--format", "onnx", "--precision", "int8", "--weights", str(tiny_weights),
                 "--calib-data", str(tmp_path / "missing"), "-o", str(tmp_path)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_cli_refuses_to_overwrite(tiny_weights, tmp_path, capsys):
    from faceanalysis.export.cli import main

    target = tmp_path / "tiny.fp32.onnx"
    target.write_bytes(b"user data")
    assert main(["--format", "onnx", "--precision", "fp32", "--weights", str(tiny_weights), "-o", str(target)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert target.read_bytes() == b"user data"


def test_calibration_folder_without_faces(tiny_weights, tmp_path):
    import cv2

    folder = tmp_path / "calib"
    folder.mkdir()
    cv2.imwrite(str(folder / "wall.png"), np.full((200, 200, 3), 127, np.uint8))
    with pytest.raises(FaceAnalysisError, match="no detectable face"):
        export_artifact("onnx", "int8", tiny_weights, tmp_path / "o", calib_data=folder, onnx_int8_method="static")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FaceAnalysisError, match="contains no images"):
        export_artifact("onnx", "int8", tiny_weights, tmp_path / "o", calib_data=empty, onnx_int8_method="static")


def test_dynamic_int8_onnx_collects_no_calibration_crops(tiny_weights, photo_folders, data_root, tmp_path,
                                                         monkeypatch, capsys):
    """Dynamic int8 ONNX (the default route) does not use calibration crops, so export does not collect them
    (detection over the calibration photos is slow); static int8 ONNX and TFLite int8 still do."""
    from faceanalysis.export import calibration
    from faceanalysis.export.cli import main

    def collect(*a, **k):
        raise FaceAnalysisError("calibration crops collected")

    for name in ("calibration_inputs", "training_crops", "folder_crops"):
        monkeypatch.setattr(calibration, name, collect)
    calib, _ = photo_folders
    out = tmp_path / "out"
    # the CLI, with the data pack present and with --calib-data
    assert main(["--format", "onnx", "--precision", "int8", "--weights", str(tiny_weights), "--no-check",
                 "-o", str(out)]) == 0, capsys.readouterr().err
    side = read_sidecar(out / "tiny.int8.onnx")
    assert side["calibration"] is None and side["int8_method"] == "dynamic"
    assert main(["--format", "onnx", "--precision", "int8", "--weights", str(tiny_weights), "--no-check",
                 "--calib-data", str(calib), "--overwrite", "-o", str(out)]) == 0, capsys.readouterr().err
    assert "--calib-data is not used for onnx int8" in capsys.readouterr().out
    # the Python API
    path = export_artifact("onnx", "int8", tiny_weights, tmp_path / "api", calib_data=calib, measure_parity=False)
    assert read_sidecar(path)["calibration"] is None
    # static int8 does collect them
    assert main(["--format", "onnx", "--precision", "int8", "--onnx-int8", "static", "--weights", str(tiny_weights),
                 "--no-check", "--overwrite", "-o", str(out)]) == 2
    assert "calibration crops collected" in capsys.readouterr().err
    from faceanalysis.export import needs_calibration

    assert [needs_calibration(f, p) for f, p in [("onnx", "int8"), ("onnx", "fp32"), ("tflite", "int8"),
                                                  ("tflite", "int8-dynamic"), ("coreml", "int8")]] == \
        [False, False, True, False, False]
    assert needs_calibration("onnx", "int8", "static")


def test_weights_not_matching_config(tiny_weights, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    cfg = read_config(tiny_weights)
    cfg.model.embed_dim = 96
    bad = tmp_path / "bad.safetensors"
    with safe_open(str(tiny_weights), "pt") as f:
        meta = dict(f.metadata())
    meta["faceanalysis_config"] = cfg.to_json()
    save_file(load_file(str(tiny_weights)), str(bad), metadata=meta)
    with pytest.raises(FaceAnalysisError, match="does not match its config"):
        export_artifact("onnx", "fp32", bad, tmp_path)


def test_output_not_writable(tiny_weights, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(FaceAnalysisError, match="cannot write"):
        export_artifact("onnx", "fp32", tiny_weights, blocker / "sub")


def test_runner_errors(tiny_weights, tmp_path, monkeypatch):
    from faceanalysis.export import runners
    from faceanalysis.runtime import make_runner

    monkeypatch.setattr(runners, "ASSETS", tmp_path / "none")
    with pytest.raises(FaceAnalysisError, match="faceanalysis export") as info:
        make_runner("onnx", None, "cpu", None)
    assert "site-packages" not in str(info.value) and "-o my_export" in str(info.value)  # never into the install
    with pytest.raises(FaceAnalysisError, match="export it first"):
        make_runner("onnx", tiny_weights, "cpu", None)
    with pytest.raises(FaceAnalysisError, match="does not exist"):
        make_runner("tflite", tmp_path / "x.tflite", "cpu", None)


# ---- export on the user's own photos, without the data pack (issue 12) -------------------------------------
@pytest.fixture()
def photo_folders(tmp_path, celeba_photo_paths):
    import shutil

    calib, check = tmp_path / "calib", tmp_path / "check"
    calib.mkdir(), check.mkdir()
    for p in celeba_photo_paths[:6]:
        shutil.copy(p, calib / p.name)
    for p in celeba_photo_paths[6:9]:
        shutil.copy(p, check / p.name)
    return calib, check


def test_export_on_user_photos_needs_no_data_pack(tiny_weights, photo_folders, tmp_path, monkeypatch, capsys):
    from faceanalysis.export.cli import main

    calib, check = photo_folders
    monkeypatch.setenv("FACEANALYSIS_DATA", str(tmp_path / "no_pack"))
    monkeypatch.chdir(tmp_path)  # ../shared/data must not be found relative to the working directory either
    rc = main(["--format", "onnx", "--precision", "int8", "--onnx-int8", "static", "--weights", str(tiny_weights),
               "--calib-data", str(calib), "--check-data", str(check), "-o", str(tmp_path / "out")])
    assert rc == 0, capsys.readouterr().err
    side = read_sidecar(tmp_path / "out" / "tiny.int8.onnx")
    assert side["calibration"] == {"images": 6, "source": "calib/ (--calib-data)"} and side["int8_method"] == "static"
    assert side["parity"]["measured"] and side["parity"]["images"] == "3 faces from check/ (--check-data)"
    assert side["parity"]["metrics"]["n"] == 3


def test_export_without_pack_or_photos(tiny_weights, photo_folders, tmp_path, monkeypatch, capsys):
    from faceanalysis.export.cli import main

    monkeypatch.setenv("FACEANALYSIS_DATA", str(tmp_path / "no_pack"))
    monkeypatch.chdir(tmp_path)
    base = ["--weights", str(tiny_weights), "-o", str(tmp_path / "out")]
    # static int8 cannot be calibrated: the error names --calib-data
    assert main(["--format", "onnx", "--precision", "int8", "--onnx-int8", "static", *base]) == 2
    assert "--calib-data" in capsys.readouterr().err and not (tmp_path / "out" / "tiny.int8.onnx").exists()
    # dynamic int8 (the default) needs no calibration photos
    assert main(["--format", "onnx", "--precision", "int8", "--no-check", *base]) == 0
    assert read_sidecar(tmp_path / "out" / "tiny.int8.onnx")["calibration"] is None
    # --onnx-int8 is for the ONNX int8 artifact only
    assert main(["--format", "onnx", "--precision", "fp32", "--onnx-int8", "static", *base]) == 2
    assert "--onnx-int8" in capsys.readouterr().err
    # --check cannot check: exit 2 before any work
    assert main(["--format", "onnx", "--precision", "fp32", "--check", *base]) == 2
    assert "--check-data" in capsys.readouterr().err and not (tmp_path / "out" / "tiny.fp32.onnx").exists()
    # fp32 without check photos: exported, parity skipped with a note that says how to measure it
    assert main(["--format", "onnx", "--precision", "fp32", *base]) == 0
    assert "parity: not measured" in capsys.readouterr().out
    assert "--check-data" in read_sidecar(tmp_path / "out" / "tiny.fp32.onnx")["parity"]["note"]
    # --no-check: skipped on purpose
    assert main(["--format", "onnx", "--precision", "fp16", "--no-check", *base]) == 0
    assert read_sidecar(tmp_path / "out" / "tiny.fp16.onnx")["parity"] == {"measured": False,
                                                                           "note": "not measured (--no-check)"}
    assert main(["--format", "onnx", "--precision", "fp16", "--no-check", "--check-data", str(tmp_path), *base]) == 2
    with pytest.raises(SystemExit):  # mutually exclusive (argparse usage error)
        main(["--format", "onnx", "--precision", "fp16", "--no-check", "--check", *base])
    capsys.readouterr()


def test_check_data_overrides_the_pack(tiny_weights, photo_folders, data_root, tmp_path, capsys):
    """With the pack present, --check-data is what the parity check reads (it used to read the pack always)."""
    from faceanalysis.export.cli import main

    _, check = photo_folders
    assert main(["--format", "onnx", "--precision", "fp32", "--weights", str(tiny_weights), "--check-data", str(check),
                 "-o", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    assert read_sidecar(tmp_path / "out" / "tiny.fp32.onnx")["parity"]["images"].endswith("(--check-data)")


def test_full_resolution_parsing_exports_and_maps_back(tmp_path, tiny_inputs, face_photo):
    """Weights with parsing_stride 1 (the parsing refiner, its last conv non-zero) export to ONNX with (19, S, S)
    parsing logits that match torch, and analyze() maps them back onto the photo alike on both backends."""
    import dataclasses

    import torch

    from faceanalysis import FaceAnalyzer
    from faceanalysis.config import FaceAnalysisConfig, ModelConfig, PreprocessConfig
    from faceanalysis.export.runners import OnnxRunner
    from faceanalysis.model import FaceModel
    from faceanalysis.weights import save_weights

    from conftest import TINY

    torch.manual_seed(5)
    cfg = FaceAnalysisConfig(model=ModelConfig(**TINY, parsing_stride=1),
                             preprocess=PreprocessConfig(input_size=TINY["input_size"]))
    model = FaceModel(cfg.model).eval()
    torch.nn.init.normal_(model.parsing_refiner.out.weight, std=0.2)
    weights = save_weights(model, cfg, tmp_path / "fine.safetensors")
    path = export_artifact("onnx", "fp32", weights, tmp_path / "onnx", parity_x=tiny_inputs[1])
    s = TINY["input_size"]
    assert read_sidecar(path)["outputs"][0]["shape"] == f"19 x {s} x {s}"
    model, _ = load_model(weights)
    x = tiny_inputs[1][:2]
    out, ref = OnnxRunner(path)(x), torch_reference(model, x)
    assert out["parsing"].shape == (2, 19, s, s)
    np.testing.assert_allclose(out["parsing"], ref["parsing"], atol=1e-3)
    faces = {b: FaceAnalyzer(weights=w, backend=b, tasks=["parsing"]).analyze(face_photo)
             for b, w in (("torch", weights), ("onnx", path))}
    a, b = (f[0].parsing.full(face_photo.shape[:2]) for f in (faces["torch"], faces["onnx"]))
    assert (a == b).mean() > 0.99 and (a != 0).mean() > 0.2
    assert dataclasses.asdict(read_config(weights).model)["parsing_stride"] == 1


def test_parsing_context_ring_exports_to_every_format(tmp_path, tiny_inputs, face_photo):
    """Weights with the parsing context ring (``parsing_field`` 1.5, its last conv non-zero) export to ONNX and TFLite
    with a ``parsing_wide`` output matching torch, to CoreML with it in the spec, and analyze() maps the wider field
    back onto the photo alike on the torch and ONNX backends."""
    import dataclasses

    import torch

    from faceanalysis import FaceAnalyzer
    from faceanalysis.config import FaceAnalysisConfig, ModelConfig, PreprocessConfig
    from faceanalysis.export.runners import OnnxRunner, load_runner
    from faceanalysis.model import FaceModel
    from faceanalysis.weights import save_weights

    from conftest import TINY

    torch.manual_seed(6)
    cfg = FaceAnalysisConfig(model=ModelConfig(**TINY, parsing_field=1.5),
                             preprocess=PreprocessConfig(input_size=TINY["input_size"]))
    model = FaceModel(cfg.model).eval()
    torch.nn.init.normal_(model.heads.parsing.context.out.weight, std=0.2)
    weights = save_weights(model, cfg, tmp_path / "ring.safetensors")
    m = TINY["input_size"] // 2
    side = int(m * 1.5)
    x = tiny_inputs[1][:2]
    model, _ = load_model(weights)
    ref = torch_reference(model, x)
    assert ref["parsing_wide"].shape == (2, 19, side, side)
    onnx = export_artifact("onnx", "fp32", weights, tmp_path / "onnx", parity_x=tiny_inputs[1])
    info = {o["name"]: o["shape"] for o in read_sidecar(onnx)["outputs"]}
    assert info["parsing"] == f"19 x {m} x {m}" and info["parsing_wide"] == f"19 x {side} x {side}"
    assert "parsing_wide_agreement" in read_sidecar(onnx)["parity"]["metrics"]
    np.testing.assert_allclose(OnnxRunner(onnx)(x)["parsing_wide"], ref["parsing_wide"], atol=1e-3)
    tfl = export_artifact("tflite", "fp32", weights, tmp_path / "tfl", parity_x=tiny_inputs[1])
    np.testing.assert_allclose(load_runner("tflite", tfl)(x)["parsing_wide"], ref["parsing_wide"], atol=1e-3)
    if importlib.util.find_spec("coremltools") is not None:
        from faceanalysis.export.coreml_export import inspect

        assert "parsing_wide" in inspect(export_artifact("coreml", "fp16", weights, tmp_path / "ml"))["outputs"]
    faces = {b: FaceAnalyzer(weights=w, backend=b, tasks=["parsing"]).analyze(face_photo)
             for b, w in (("torch", weights), ("onnx", onnx))}
    pa, pb = faces["torch"][0].parsing, faces["onnx"][0].parsing
    assert pa.field == pb.field == 1.5 and pa.box == pb.box
    a, b = (p.full(face_photo.shape[:2]) for p in (pa, pb))
    assert (a == b).mean() > 0.99
    assert dataclasses.asdict(read_config(weights).model)["parsing_field"] == 1.5


def test_identity_branch_exports_with_parity(tmp_path, tiny_inputs):
    """Weights with an identity branch (``identity_branch`` 1, moved away from the shared layers) export to ONNX and
    TFLite; the exported embedding matches torch's, and so do the shared layers' outputs."""
    import torch

    from faceanalysis.config import FaceAnalysisConfig, ModelConfig, PreprocessConfig
    from faceanalysis.export.runners import OnnxRunner, load_runner
    from faceanalysis.model import FaceModel
    from faceanalysis.weights import save_weights

    from conftest import TINY

    torch.manual_seed(7)
    cfg = FaceAnalysisConfig(model=ModelConfig(**TINY, identity_branch=1),
                             preprocess=PreprocessConfig(input_size=TINY["input_size"]))
    model = FaceModel(cfg.model).eval()
    weights = save_weights(model, cfg, tmp_path / "branch.safetensors")
    x = tiny_inputs[1][:2]
    model, _ = load_model(weights)
    ref = torch_reference(model, x)
    onnx = export_artifact("onnx", "fp32", weights, tmp_path / "onnx", parity_x=tiny_inputs[1])
    got = OnnxRunner(onnx)(x)
    for name in ("embedding", "landmarks", "pose"):
        np.testing.assert_allclose(got[name], ref[name], atol=1e-3)
    tfl = export_artifact("tflite", "fp32", weights, tmp_path / "tfl", parity_x=tiny_inputs[1])
    np.testing.assert_allclose(load_runner("tflite", tfl)(x)["embedding"], ref["embedding"], atol=1e-3)
