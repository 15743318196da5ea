"""Flip test-time augmentation: each task's mapping of a mirrored crop's outputs, and FaceAnalyzer(tta="flip")."""
from __future__ import annotations

import json

import numpy as np
import pytest

from faceanalysis import FaceAnalysisError, FaceAnalyzer
from faceanalysis.preprocess import crop_faces, normalise_array
from faceanalysis.runtime import FlipAveraged, with_tta
from faceanalysis.tasks import TASKS
from faceanalysis.tasks.landmarks import OUTER_EYES
from faceanalysis.tasks.parsing import CLASSES


def test_landmarks_unflip_by_hand():
    pts = np.zeros((1, 68, 2), np.float32)
    pts[0, 0] = (10, 20)  # jaw start (subject's right) -> jaw end after the mirror
    pts[0, OUTER_EYES[0]] = (40, 50)
    back = TASKS["landmarks"].unflip({"landmarks": pts}, 128)["landmarks"]
    assert back[0, 16].tolist() == [117, 20]
    assert back[0, OUTER_EYES[1]].tolist() == [87, 50]
    assert pts[0, 0].tolist() == [10, 20], "the input must not be changed"


def test_pose_unflip_by_hand():
    back = TASKS["pose"].unflip({"pose": np.array([[30.0, 5.0, -10.0]], np.float32)}, 128)["pose"]
    assert back.tolist() == [[-30.0, 5.0, 10.0]]


def test_parsing_unflip_by_hand():
    logits = np.zeros((1, len(CLASSES), 4, 4), np.float32)
    logits[0, CLASSES.index("l_eye"), 1, 0] = 5.0  # the mirror's left eye, left column
    logits[0, CLASSES.index("hair"), 0, 3] = 3.0
    back = TASKS["parsing"].unflip({"parsing": logits}, 8)["parsing"]
    assert back[0, CLASSES.index("r_eye"), 1, 3] == 5.0 and back[0, CLASSES.index("l_eye")].max() == 0
    assert back[0, CLASSES.index("hair"), 0, 0] == 3.0


@pytest.mark.parametrize("name", list(TASKS))
def test_unflip_twice_is_the_identity(name):
    rng = np.random.default_rng(0)
    task = TASKS[name]
    shapes = {"landmarks": (2, 68, 2), "pose": (2, 3), "parsing": (2, len(CLASSES), 6, 6), "parsing_wide": (2, len(CLASSES), 9, 9), "attributes": (2, 40),
              "age": (2,), "gender": (2,), "expression": (2, 7), "embedding": (2, 16)}
    out = {k: rng.normal(size=shapes[k]).astype(np.float32) for k in task.outputs}
    twice = task.unflip(task.unflip(out, 12), 12)
    for k in out:
        np.testing.assert_allclose(twice[k], out[k], atol=1e-5)


def test_identity_combine_is_unit_norm_mean():
    a, b = np.array([[1.0, 0.0]], np.float32), np.array([[0.0, 1.0]], np.float32)
    e = TASKS["identity"].combine([{"embedding": a}, {"embedding": b}])["embedding"]
    np.testing.assert_allclose(e, [[2 ** -0.5, 2 ** -0.5]], rtol=1e-6)
    p = TASKS["expression"].combine([{"expression": np.array([[0.2, 0.8]])}, {"expression": np.array([[0.6, 0.4]])}])
    np.testing.assert_allclose(p["expression"], [[0.4, 0.6]])


class _Mirror:
    """A runner whose 'model' reads only the crop's left half: mirrored inputs give other answers, so the wrapper's
    second pass must really see the mirror."""

    def __init__(self, config):
        self.config = config
        self.output_names = ["pose", "expression"]
        self.calls: list[np.ndarray] = []

    def __call__(self, x):
        self.calls.append(x)
        left = x[..., : x.shape[-1] // 2].mean(axis=(1, 2, 3))
        pose = np.stack([left, np.zeros_like(left), 2 * left], 1).astype(np.float32)
        expr = np.tile(np.array([[1.0, 0, 0, 0, 0, 0, 0]], np.float32), (len(x), 1))
        return {"pose": pose, "expression": expr}


def test_flip_wrapper_runs_the_mirror_and_maps_it_back(default_analyzer):
    inner = _Mirror(default_analyzer.config)
    runner = with_tta(inner, "flip", [TASKS["pose"], TASKS["expression"]])
    assert isinstance(runner, FlipAveraged) and with_tta(inner, None, []) is inner
    x = np.zeros((1, 3, 4, 4), np.float32)
    x[..., :2] = 1.0  # bright left half: the mirror's left half is dark
    out = runner(x)
    assert len(inner.calls) == 2 and inner.calls[1][0, 0, 0].tolist() == [0, 0, 1, 1]
    # plain: yaw 1, roll 2; the mirror: 0, 0 (negated back: still 0) -> their mean
    np.testing.assert_allclose(out["pose"], [[0.5, 0.0, 1.0]])
    np.testing.assert_allclose(out["expression"][0, 0], 1.0)


def test_real_model_mirror_agrees_once_mapped_back(default_analyzer, face_photo):
    """On the shipped model, the mirrored crop's landmarks / pose / parsing mapped back agree with the plain crop's
    (the model was trained with flips); without the mapping they would not."""
    fa = default_analyzer
    det = fa.detect(face_photo)
    crops, _ = crop_faces(face_photo, [d.kps5 for d in det[:1]], fa.pre)
    x = normalise_array(crops, fa.pre)
    plain, mirror = fa.runner(x), fa.runner(np.ascontiguousarray(x[..., ::-1]))
    size = x.shape[-1]
    lm_back = TASKS["landmarks"].unflip({"landmarks": mirror["landmarks"]}, size)["landmarks"]
    err_back = np.linalg.norm(lm_back - plain["landmarks"], axis=-1).mean()
    err_raw = np.linalg.norm(mirror["landmarks"] - plain["landmarks"], axis=-1).mean()
    assert err_back < 2.0 < err_raw, (err_back, err_raw)
    pose_back = TASKS["pose"].unflip({"pose": mirror["pose"]}, size)["pose"]
    assert np.abs(pose_back - plain["pose"]).max() < 5.0
    parse_back = TASKS["parsing"].unflip({"parsing": mirror["parsing"]}, size)["parsing"].argmax(1)
    assert (parse_back == plain["parsing"].argmax(1)).mean() > 0.9


def test_analyzer_with_flip(default_weights, face_photo, default_analyzer):
    fa = FaceAnalyzer(weights=default_weights, tta="flip")
    assert fa.tta == "flip" and default_analyzer.tta is None
    a, b = fa.analyze(face_photo)[0], default_analyzer.analyze(face_photo)[0]
    assert abs(np.linalg.norm(a.embedding) - 1) < 1e-4
    assert 0.9 < FaceAnalyzer.similarity(a, b) < 1.0  # close, but really another answer
    assert np.abs(np.asarray(a.landmarks) - np.asarray(b.landmarks)).mean() < 2.0
    assert a.expression_probs != b.expression_probs
    assert abs(sum(a.expression_probs.values()) - 1) < 1e-4


def test_unknown_tta_is_a_clear_error(default_weights):
    with pytest.raises(FaceAnalysisError, match="unknown tta 'mirror'"):
        FaceAnalyzer(weights=default_weights, tta="mirror")
    with pytest.raises(FaceAnalysisError, match="unknown test-time augmentation"):
        with_tta(object(), "rotate", [])


def test_verify_uses_the_flip_threshold(default_weights, tmp_path):
    from faceanalysis.verification import calibration_path, load_calibration

    cal = load_calibration(default_weights, "torch", "flip")
    assert cal["tta_mode"] == "flip" and cal["threshold"] == json.loads(
        calibration_path(default_weights).read_text())["tta"]["flip"]["threshold"]
    # a calibration written before flip calibration existed: a clear error, not the plain threshold
    w = tmp_path / "w.safetensors"
    w.write_bytes(default_weights.read_bytes())
    plain = json.loads(calibration_path(default_weights).read_text())
    plain.pop("tta")
    calibration_path(w).write_text(json.dumps(plain))
    with pytest.raises(FaceAnalysisError, match="no threshold for tta='flip'"):
        load_calibration(w, "torch", "flip")
    assert load_calibration(w, "torch")["threshold"] == plain["threshold"]


def test_cli_analyze_with_flip(celeba_photo_paths, tmp_path, tiny_weights, capsys):
    from faceanalysis.cli import main

    out = tmp_path / "r.json"
    assert main(["analyze", str(celeba_photo_paths[0]), "--tta", "flip", "--json", str(out), "--weights",
                 str(tiny_weights), "--quiet"]) == 0
    (faces,) = json.loads(out.read_text()).values()
    assert len(faces) == 1 and len(faces[0]["landmarks"]) == 68
    with pytest.raises(SystemExit):
        main(["analyze", str(celeba_photo_paths[0]), "--tta", "rotate"])
    assert "invalid choice: 'rotate'" in capsys.readouterr().err


def test_parquet_settings_record_tta_only_when_on(tiny_weights):
    from faceanalysis.batch import run_settings

    assert "tta" not in run_settings(FaceAnalyzer(weights=tiny_weights), None)  # older datasets still resume
    assert run_settings(FaceAnalyzer(weights=tiny_weights, tta="flip"), None)["tta"] == "flip"
