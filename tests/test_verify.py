"""Issue 11, similarity kind: verify(a, b) -> (same, score) with a threshold calibrated on LFW for the shipped
weights, documented in the README, and tied to the weights' SHA-256."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceanalysis import FaceAnalysisError, FaceAnalyzer
from faceanalysis.preprocess import load_image
from faceanalysis.verification import (MARK_END, MARK_START, best_threshold, calibrate, calibration_path,
                                       readme_block, threshold_at_far)
from faceanalysis.weights import DEFAULT_WEIGHTS, file_sha256

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def shipped_calibration():
    path = calibration_path(DEFAULT_WEIGHTS)
    assert path.is_file(), f"missing {path}: run python -m faceanalysis.verification --data-root ../shared/data"
    return json.loads(path.read_text())


def test_shipped_weights_have_a_current_calibration(shipped_calibration):
    """Fails whenever the shipped weights change until the threshold is recomputed (one command)."""
    assert shipped_calibration["weights_sha256"] == file_sha256(DEFAULT_WEIGHTS), \
        "weights changed: python -m faceanalysis.verification --data-root ../shared/data --update-readme README.md"
    cal = shipped_calibration
    assert -1 < cal["threshold"] < 1 and cal["pairs"] == 6000
    assert 0 <= cal["far"] <= 1 and 0 <= cal["tar"] <= 1
    assert cal["accuracy"] == pytest.approx((cal["tar"] + 1 - cal["far"]) / 2, abs=2e-3)  # 3000 + 3000 pairs


def test_readme_states_the_current_numbers(shipped_calibration):
    text = README.read_text()
    assert MARK_START in text and MARK_END in text
    block = text[text.index(MARK_START):text.index(MARK_END) + len(MARK_END)]
    assert block == readme_block(shipped_calibration), "README out of date: rerun with --update-readme README.md"


def test_verify_same_and_different_people(default_analyzer, celeba_photo_paths, shipped_calibration):
    fa = default_analyzer
    assert fa.verify_threshold == pytest.approx(shipped_calibration["threshold"])
    img = load_image(celeba_photo_paths[0])
    # the same person: another "photo" (scaled, shifted, brightened, recompressed)
    other = cv2.resize(img, (200, 200))
    other = np.clip(other.astype(int) * 1.1 + 8, 0, 255).astype(np.uint8)
    other = cv2.imdecode(cv2.imencode(".jpg", other, [cv2.IMWRITE_JPEG_QUALITY, 70])[1], cv2.IMREAD_COLOR)[:, :, ::-1]
    same, score = fa.verify(img, np.ascontiguousarray(other))
    assert same and score >= fa.verify_threshold
    # faces, embeddings and images are all accepted
    (fa_face,) = fa.analyze(img)
    assert fa.verify(fa_face, fa_face.embedding)[0]
    # different people: most pairs of distinct pack portraits are rejected at the calibrated threshold
    faces = [fa.analyze(p)[0] for p in celeba_photo_paths[:8]]
    verdicts = [fa.verify(a, b)[0] for i, a in enumerate(faces) for b in faces[i + 1:]]
    assert sum(verdicts) <= 0.3 * len(verdicts), verdicts
    same, s2 = fa.verify(faces[0], faces[1], threshold=-1.0)
    assert same and s2 == pytest.approx(FaceAnalyzer.similarity(faces[0], faces[1]))


def test_verify_errors(default_analyzer, tiny_weights, tmp_path):
    with pytest.raises(FaceAnalysisError, match="no face"):
        default_analyzer.verify(np.full((64, 64, 3), 90, np.uint8), np.full((64, 64, 3), 90, np.uint8))
    e = np.eye(128, dtype=np.float32)[0]
    for bad in (-3, 1.5, float("nan"), "high"):  # a cosine threshold lies in [-1, 1], as the CLI's --threshold
        with pytest.raises(FaceAnalysisError, match="outside \\[-1, 1\\]"):
            default_analyzer.verify(e, e, threshold=bad)
    fa = FaceAnalyzer(weights=tiny_weights, tasks=["pose"])
    with pytest.raises(FaceAnalysisError, match="identity"):
        fa.verify(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 3), np.uint8))
    # other weights: no calibration for them (even with a copy of the shipped file next to them)
    w = tmp_path / "mine.safetensors"
    shutil.copy(tiny_weights, w)
    calibration_path(w).write_text(json.dumps({"weights_sha256": "0" * 64, "threshold": 0.5}))
    fa = FaceAnalyzer(weights=w)
    e = np.ones(128) / np.sqrt(128)
    with pytest.raises(FaceAnalysisError, match="python -m faceanalysis.verification"):
        fa.verify(e, e)
    assert fa.verify(e, e, threshold=0.5) == (True, pytest.approx(1.0))
    calibration_path(w).write_text(json.dumps({"weights_sha256": file_sha256(w), "threshold": 0.25}))
    assert FaceAnalyzer(weights=w).verify_threshold == 0.25


def test_threshold_choice_on_synthetic_scores():
    rng = np.random.default_rng(0)
    same = np.r_[np.ones(3000, bool), np.zeros(3000, bool)]
    scores = np.r_[rng.normal(0.6, 0.1, 3000), rng.normal(0.2, 0.1, 3000)]
    t = best_threshold(scores, same)
    assert abs(t - 0.4) < 0.03
    cal = calibrate(scores, same, np.arange(6000) % 10)
    assert cal["accuracy"] > 0.97 and abs(cal["accuracy_10fold"] - cal["accuracy"]) < 0.01
    t2 = threshold_at_far(scores, same, 1e-2)
    assert (scores[~same] >= t2).mean() <= 1e-2 and (scores[~same] >= t2 - 0.02).mean() > 5e-3


def test_exported_model_uses_the_calibration_of_its_source_weights(shipped_calibration):
    pytest.importorskip("onnxruntime")
    fa = FaceAnalyzer(backend="onnx")  # the shipped ONNX export: its sidecar names the weights' SHA-256
    assert fa.verify_threshold == pytest.approx(shipped_calibration["threshold"])


def test_verify_command(celeba_photo_paths, tmp_path, tiny_weights, capsys):
    """``faceanalysis verify A B``: exit 0 same person, 1 different people, 2 errors (one line, no traceback)."""
    from faceanalysis.cli import main

    a = celeba_photo_paths[0]
    img = cv2.imread(str(a))
    b = tmp_path / "same person, smaller.jpg"
    cv2.imwrite(str(b), cv2.resize(img, (200, 200)), [cv2.IMWRITE_JPEG_QUALITY, 70])
    assert main(["verify", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("same person: cosine similarity") and "LFW View-2" in out
    assert main(["verify", str(a), str(b), "--json", "--threshold", "0.99"]) == 1
    rec = json.loads(capsys.readouterr().out)
    assert rec["same"] is False and rec["threshold"] == 0.99 and 0.3 < rec["cosine"] < 0.99
    assert rec["threshold_source"] == "given with --threshold"
    # different people mostly fall below the calibrated threshold (as in the API test above)
    rcs = [main(["verify", str(celeba_photo_paths[i]), str(celeba_photo_paths[j])]) for i, j in ((0, 1), (2, 3), (4, 5))]
    capsys.readouterr()
    assert rcs.count(1) >= 2, rcs
    noface = tmp_path / "noface.png"
    cv2.imwrite(str(noface), np.full((120, 160, 3), 80, np.uint8))
    for args, msg in ((["verify", str(a), str(tmp_path / "missing.jpg")], "no such file"),
                      (["verify", str(a), str(tmp_path)], "is not a file"),
                      (["verify", str(a), str(noface)], "no face"),
                      (["verify", str(a), str(b), "--threshold", "2"], "outside [-1, 1]"),
                      (["verify", str(a), str(b), "--weights", str(tiny_weights)], "calibrat")):
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert "Traceback" not in err and msg in err and err.count("\n") == 1, (args, err)
