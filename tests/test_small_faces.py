"""Issue 11, case 4: small faces in a large photo are found by default (adaptive detection size)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from faceanalysis import YuNetDetector
from faceanalysis.detect import AUTO_MAX_SIDE
from faceanalysis.preprocess import load_image


def group_photo(portraits: list[np.ndarray], face_px: float, shape=(3024, 4032), seed: int = 0):
    """Portraits pasted on a textured background so that their faces are about ``face_px`` wide; returns the
    photo and each pasted portrait's (x0, y0, x1, y1)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    canvas = cv2.GaussianBlur(rng.integers(60, 200, (h // 16, w // 16, 3), dtype=np.uint8), (5, 5), 0)
    canvas = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_LINEAR)
    side = int(round(face_px / 0.54))  # YuNet's box is ~54 % of a 256 px CelebAMask-HQ portrait
    boxes = []
    cols = 4
    rows = -(-len(portraits) // cols)
    for i, ph in enumerate(portraits):
        r, c = divmod(i, cols)
        y = int((r + 0.5) * h / rows - side / 2 + rng.integers(-h // (4 * rows), h // (4 * rows)))
        x = int((c + 0.5) * w / cols - side / 2 + rng.integers(-w // (4 * cols), w // (4 * cols)))
        canvas[y:y + side, x:x + side] = cv2.resize(ph, (side, side), interpolation=cv2.INTER_AREA)
        boxes.append((x, y, x + side, y + side))
    return canvas, boxes


@pytest.fixture(scope="module")
def portraits(celeba_photo_paths):
    return [load_image(p) for p in celeba_photo_paths[:12]]


def _matched(dets, boxes) -> int:
    """Pasted portraits that contain exactly one detection's centre."""
    n = 0
    for x0, y0, x1, y1 in boxes:
        inside = [d for d in dets if x0 <= (d.bbox[0] + d.bbox[2]) / 2 <= x1 and y0 <= (d.bbox[1] + d.bbox[3]) / 2 <= y1]
        n += len(inside) == 1
    return n


@pytest.mark.parametrize("face_px", [75, 40])
def test_small_faces_in_a_12mp_photo_are_found_by_default(portraits, face_px):
    """Before: the default (640 px detection) found 8 of 12 faces of ~75 px and dropped 4 silently."""
    photo, boxes = group_photo(portraits, face_px)
    det = YuNetDetector()
    dets = det.detect(photo)
    assert det.detection_side(photo.shape) == 2048
    assert _matched(dets, boxes) == 12 and len(dets) == 12, (face_px, len(dets), _matched(dets, boxes))
    widths = np.array([d.bbox[2] - d.bbox[0] for d in dets])
    assert np.abs(np.median(widths) - face_px) < 0.25 * face_px  # boxes in original pixels


def test_fixed_detection_size_still_available(portraits):
    photo, boxes = group_photo(portraits, 40)
    assert _matched(YuNetDetector(max_side=640).detect(photo), boxes) < 12  # what the old default gave
    assert YuNetDetector().detection_side(photo.shape, max_side=640) == 640


def test_adaptive_detection_size():
    det = YuNetDetector()
    assert det.detection_side((256, 256)) == 256  # never upscaled
    assert det.detection_side((720, 1280)) == 768
    assert det.detection_side((1080, 1920)) == 1152
    assert det.detection_side((3024, 4032)) == AUTO_MAX_SIDE == 2048
    assert det.detection_side((6000, 8000)) == AUTO_MAX_SIDE
    assert YuNetDetector(small_face=80).detection_side((3024, 4032)) == 1210
    assert YuNetDetector(max_side=1280).detection_side((3024, 4032)) == 1280


def test_analyzer_default_finds_small_faces(tiny_analyzer, portraits):
    photo, boxes = group_photo(portraits[:4], 45, shape=(1512, 2016))
    faces = tiny_analyzer.analyze(photo)
    assert len(faces) == 4
    for f in faces:
        assert f.landmarks.shape == (68, 2) and np.isfinite(f.landmarks).all()


def test_a_face_filling_a_large_photo_is_found_whole(portraits):
    """The adaptive size must not lose big faces: a 2000 px photo is detected at 1200 px, where YuNet finds only
    parts of its ~1000 px face (its anchors are too small: a 0.78 box on the lower face and a 0.64 one), so the
    photo is also detected at 640 px and the whole face wins."""
    side = 2000
    photo = cv2.resize(portraits[0], (side, side), interpolation=cv2.INTER_CUBIC)
    dets = YuNetDetector().detect(photo)
    ref = YuNetDetector(max_side=640).detect(photo)[0]  # the face, found at the coarse size
    assert len(dets) == 1, [(d.bbox.round(), round(d.score, 3)) for d in dets]
    np.testing.assert_allclose(dets[0].bbox, ref.bbox, atol=0.02 * side)
