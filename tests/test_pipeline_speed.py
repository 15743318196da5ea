"""Issue 14 (fast pipeline): YuNet on onnxruntime with the same detections as OpenCV, the fast area shrink, the
parsing mask mapped back on first use, one-thread runners."""
from __future__ import annotations

import hashlib
import pickle

import cv2
import numpy as np
import pytest

from faceanalysis import FaceAnalysisError
from faceanalysis.detect import (AUTO_MIN_SIDE, YUNET_ORT_PATH, YUNET_ORT_SHA256, YUNET_PATH, YuNetDetector,
                                 build_float_yunet, shrink)
from faceanalysis.lazy_parsing import LazyParsingMask
from faceanalysis.tasks.parsing import ParsingMask


def _frame(face: np.ndarray, w: int = 640, h: int = 480) -> np.ndarray:
    img = np.full((h, w, 3), 90, np.uint8)
    img[100:100 + face.shape[0], 200:200 + face.shape[1]] = face
    return img


def test_onnxruntime_yunet_matches_opencv(face_photo):
    ort_det, cv_det = YuNetDetector(runtime="onnxruntime"), YuNetDetector(runtime="opencv")
    assert ort_det.runtime == "onnxruntime" and YuNetDetector().runtime == "onnxruntime"
    for img in (face_photo, _frame(face_photo), cv2.resize(_frame(face_photo), (384, 288))):
        a, b = ort_det._run(img), cv_det._run(img)
        assert len(a) == len(b) >= 1
        b = b[np.argsort(-b[:, 14])]
        np.testing.assert_allclose(a, b, atol=0.02)  # measured 1e-4 px on 161 detections
    da, db = ort_det.detect(_frame(face_photo)), cv_det.detect(_frame(face_photo))
    assert len(da) == len(db) == 1
    np.testing.assert_allclose(da[0].kps5, db[0].kps5, atol=0.05)


def test_float_yunet_is_the_bundled_model_rebuilt(tmp_path):
    pytest.importorskip("onnx")
    out = build_float_yunet(YUNET_PATH, tmp_path / "y.onnx")
    assert hashlib.sha256(YUNET_ORT_PATH.read_bytes()).hexdigest() == YUNET_ORT_SHA256
    assert hashlib.sha256(out.read_bytes()).hexdigest() == YUNET_ORT_SHA256


def test_runtime_errors(tmp_path):
    with pytest.raises(FaceAnalysisError, match="runtime must be one of"):
        YuNetDetector(runtime="tensorrt")
    other = tmp_path / "yunet_copy.onnx"
    other.write_bytes(YUNET_PATH.read_bytes())
    assert YuNetDetector(model_path=other).runtime == "opencv"  # a custom model runs on OpenCV
    with pytest.raises(FaceAnalysisError, match="runtime='opencv'"):
        YuNetDetector(model_path=other, runtime="onnxruntime")


def test_adaptive_side_of_a_vga_frame_keeps_40px_faces():
    det = YuNetDetector()
    assert det.detection_side((480, 640)) == AUTO_MIN_SIDE == 384  # 40 px faces -> 24 px at YuNet's input
    assert det.detection_side((720, 1280)) == 768 and det.detection_side((200, 300)) == 300


def test_shrink_is_area_averaging():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (480, 640, 3), np.uint8)
    np.testing.assert_array_equal(shrink(img, (320, 240)), cv2.resize(img, (320, 240), interpolation=cv2.INTER_AREA))
    out = shrink(img, (384, 288))
    assert out.shape == (288, 384, 3)
    ref = cv2.resize(img, (384, 288), interpolation=cv2.INTER_AREA).astype(float)
    assert np.abs(out.astype(float) - ref).mean() < 25  # noise image: the two filters differ only in detail
    smooth = cv2.GaussianBlur(img, (0, 0), 3)
    ref = cv2.resize(smooth, (150, 113), interpolation=cv2.INTER_AREA).astype(float)
    assert np.abs(shrink(smooth, (150, 113)).astype(float) - ref).mean() < 1.5
    assert shrink(img, (640, 480)) is img


def test_parsing_mask_is_mapped_back_on_first_use(tiny_analyzer, face_photo):
    (face,) = tiny_analyzer.analyze(face_photo)
    pm = face.parsing
    assert isinstance(pm, LazyParsingMask) and isinstance(pm, ParsingMask) and not pm.computed
    task = next(t for t in tiny_analyzer.tasks if t.name == "parsing")
    crops, _ = __import__("faceanalysis.preprocess", fromlist=["crop_faces"]).crop_faces(
        face_photo, [face.keypoints5], tiny_analyzer.pre)
    out = tiny_analyzer.run_crops(crops)
    eager = task.to_face({k: v[0] for k, v in out.items()}, face.crop_matrix, face_photo.shape[:2],
                         tiny_analyzer.pre)["parsing"]
    assert pm.box == eager.box and np.array_equal(pm.mask, eager.mask) and pm.computed
    assert pm == eager and pm.full(face_photo.shape).shape == face_photo.shape[:2]
    d = face.to_dict()["parsing"]
    assert d["box"] == list(eager.box)
    back = pickle.loads(pickle.dumps(pm))
    assert type(back) is ParsingMask and np.array_equal(back.mask, eager.mask)


def test_make_runner_threads(tiny_weights):
    from faceanalysis.runtime import make_runner

    with pytest.raises(FaceAnalysisError, match="threads must be >= 1"):
        make_runner("onnx", None, "cpu", None, threads=0)
    r = make_runner("onnx", None, "cpu", None, threads=1)
    assert r.session.get_session_options().intra_op_num_threads == 1
