"""Overlay geometry: text sized by the face, inside the image, off other faces; no ghost letters; parsing
without hard crop edges. The checks read the same layout that :func:`faceanalysis.draw.draw` renders."""
from __future__ import annotations

import glob

import cv2
import numpy as np
import pytest

from faceanalysis import Face, draw
from faceanalysis.draw import (BACKING, MIN_FONT_SCALE, PlacedLabel, face_box, face_size, face_style, layout,
                               render_label)

CAPTIONS = ["#1 Ada Lovelace (0.82)", "#2 Grace Hopper (0.77)"]


@pytest.fixture(scope="module")
def scenes(default_analyzer, data_root) -> dict[str, tuple[np.ndarray, list[Face]]]:
    """A 112 px UTKFace photo, a 2000 px photo (CelebAMask-HQ upscaled) and two photos side by side."""
    def load_image(path: str) -> np.ndarray:  # OpenCV's decoder: these tests are about drawing
        return np.ascontiguousarray(cv2.imread(path, cv2.IMREAD_COLOR)[:, :, ::-1])

    utk = sorted(glob.glob(str(data_root / "utkface" / "images" / "*")))
    celeb = sorted(glob.glob(str(data_root / "celebamask_mini" / "images" / "*.jpg")))
    images = {
        "small": load_image(utk[0]),
        "large": cv2.resize(load_image(celeb[0]), (2000, 2000), interpolation=cv2.INTER_CUBIC),
        "two": np.concatenate([load_image(celeb[1]), load_image(celeb[2])], 1),
    }
    out = {}
    for name, img in images.items():
        found = default_analyzer.analyze(img)
        # the best face per photo (these tests are about drawing, not about duplicate detections)
        halves = [0, 1] if name == "two" else [0]
        faces = []
        for half in halves:
            mine = [f for f in found if int((f.bbox[0] + f.bbox[2]) / 2 >= img.shape[1] / 2) == half or name != "two"]
            assert mine, f"{name}: no face found in photo {half}"
            faces.append(max(mine, key=lambda f: f.score))
        out[name] = (img, faces)
    assert max(out["small"][0].shape) <= 120 and max(out["large"][0].shape) == 2000
    return out


def _overlap(a, b) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _placed(img, faces) -> list[PlacedLabel]:
    return layout(img, faces, labels=CAPTIONS[:len(faces)])


@pytest.mark.parametrize("name", ["small", "large", "two"])
def test_text_boxes_inside_image_and_off_other_faces(scenes, name):
    img, faces = scenes[name]
    h, w = img.shape[:2]
    placed = _placed(img, faces)
    # every face gets its attribute block, expression label and caption
    assert sorted(p.face for p in placed) == sorted(list(range(len(faces))) * 3)
    boxes = [face_box(f.bbox, img.shape) for f in faces]
    for p in placed:
        x0, y0, x1, y1 = p.box
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, (name, p.lines, p.box)
        for t in p.text_boxes + ([p.bar_box] if p.bar_box else []):
            assert x0 <= t[0] < t[2] <= x1 and y0 <= t[1] < t[3] <= y1, (name, p.lines, t, p.box)
        for j, b in enumerate(boxes):
            if j != p.face:
                assert _overlap(p.box, b) == 0, f"{name}: {p.lines} covers face {j}"
    for i, a in enumerate(placed):
        for b in placed[i + 1:]:
            assert _overlap(a.box, b.box) == 0, f"{name}: {a.lines} and {b.lines} overlap"
    assert all(len(p.lines) == len(p.label.lines) for p in placed), "no line had to be dropped"


def test_text_size_follows_the_face_not_the_image(scenes):
    ratios = {}
    for name, (img, faces) in scenes.items():
        for p in _placed(img, faces):
            size = face_size(faces[p.face].bbox)
            wanted = face_style(faces[p.face]).font_scale
            if p.font_scale < wanted - 1e-9:  # shrunk only when the image is narrower than the line
                assert p.box[2] - p.box[0] >= img.shape[1] - 2, (name, p.lines, p.box)
            else:
                assert p.font_scale == pytest.approx(wanted)
                if wanted > MIN_FONT_SCALE + 1e-9:
                    ratios[(name, p.face)] = p.font_scale / size
            # measured text: a line's height is a fixed fraction of the face size (6-14 %), and a text
            # block (attributes: 4 lines) is smaller than the face
            line_h = p.text_boxes[0][3] - p.text_boxes[0][1]
            assert 0.06 * size <= line_h <= 0.14 * size, (name, p.lines, line_h, size)
            assert p.box[3] - p.box[1] < 0.75 * size and p.box[2] - p.box[0] < 1.1 * size, (name, p.lines, p.box)
    # font scale / face size is one constant from a 112 px photo to a 2000 px one (above the legibility
    # floor, which the 112 px face is not at with OpenCV 5's font)
    opencv5 = int(cv2.__version__.split(".")[0]) >= 5
    assert {n for n, _ in ratios} >= {"large", "two"} | ({"small"} if opencv5 else set())
    values = np.array(list(ratios.values()))
    np.testing.assert_allclose(values, values.mean(), rtol=1e-6, err_msg=str(ratios))
    small = face_size(scenes["small"][1][0].bbox)
    large = face_size(scenes["large"][1][0].bbox)
    assert large > 8 * small
    assert face_style(scenes["large"][1][0]).line > face_style(scenes["small"][1][0]).line


def test_draw_renders_the_layout_without_ghost_letters(scenes):
    """Text pixels lie inside their label's text extents (an outline measured at another thickness than
    the text, which OpenCV 5 fonts widen, shows as a ghost letter beyond them)."""
    for name in ("small", "two"):
        img, faces = scenes[name]
        black = np.zeros_like(img)
        drawn = draw(black, faces, layers=["attributes", "expression"], labels=CAPTIONS[:len(faces)])
        placed = _placed(black, faces)
        inside = np.zeros(img.shape[:2], bool)
        for p in placed:
            inside[p.box[1]:p.box[3], p.box[0]:p.box[2]] = True
            # on grey, the backing darkens the box evenly; every other change (text, an outline, a shadow)
            # must lie within the measured text / bar extents
            one = np.full_like(img, 200)
            render_label(one, p)
            backing = np.zeros(img.shape[:2], bool)
            backing[p.box[1]:p.box[3], p.box[0]:p.box[2]] = True
            expected = np.where(backing, int(200 * BACKING), 200)
            ink = np.abs(one.astype(int) - expected[..., None]).max(-1) > 0
            text = np.zeros_like(ink)
            for t in p.text_boxes + ([p.bar_box] if p.bar_box else []):
                text[t[1]:t[3], t[0]:t[2]] = True
            assert ink.any() and not (ink & ~text).any(), f"{name}: ink outside the text of {p.lines}"
        assert (drawn.max(-1) > 0).any() and not ((drawn.max(-1) > 0) & ~inside).any(), name


def test_markers_scale_with_the_face(scenes):
    """On a 112 px photo the 68 landmark dots stay apart (they merged at a fixed 2-3 px radius)."""
    img, faces = scenes["small"]
    grey = np.full_like(img, 60)
    out = draw(grey, faces, layers=["landmarks"])
    white = ((out.min(-1) > 200)).astype(np.uint8)
    n, _ = cv2.connectedComponents(white)
    assert n - 1 >= 52, f"only {n - 1} separate dots of 68"  # inner and outer lips may touch
    s_small, s_large = face_style(faces[0]), face_style(scenes["large"][1][0])
    assert s_large.point_radius / s_small.point_radius == pytest.approx(s_large.size / s_small.size, rel=0.01)


def test_labels_keep_off_avoided_regions(scenes):
    from faceanalysis.demo import readout_layout

    img, faces = scenes["two"]
    hud = readout_layout(img.shape, "torch").box
    assert 0 <= hud[0] < hud[2] <= img.shape[1] and 0 <= hud[1] < hud[3] <= img.shape[0]
    placed = layout(img, faces, labels=CAPTIONS[:2], avoid=[hud])
    assert all(_overlap(p.box, hud) == 0 for p in placed)
    small = readout_layout((80, 160, 3), "onnx", 12.3, {"detect": 1.0, "model": 2.0, "draw": 3.0})
    assert small is not None and small.box[2] <= 160 and small.box[3] <= 80  # shrunk to fit
    assert readout_layout((8, 8, 3), "onnx") is None  # no room for legible text: not drawn


def test_parsing_fades_out_at_the_crop_border():
    """A mask that is foreground over the whole (rotated) crop leaves no edge where the crop ends."""
    from faceanalysis import align
    from faceanalysis.config import PreprocessConfig
    from faceanalysis.tasks import TASKS

    pre = PreprocessConfig()
    s = pre.input_size
    rot = cv2.getRotationMatrix2D((s / 2, s / 2), 20, 2.2)  # crop -> image: rotated, 2.2x larger, centred
    rot[:, 2] += 200 - s / 2
    kps = align.transform_points(align.template_points(pre), rot)
    m = align.alignment_matrix(kps, pre)
    logits = np.full((19, s // 2, s // 2), -5.0, np.float32)
    logits[1] = 5.0  # skin everywhere in the crop
    fields = TASKS["parsing"].to_face({"parsing": logits}, m, (400, 400), pre)
    bbox = np.concatenate([kps.min(0), kps.max(0)]).astype(np.float32)
    face = Face(bbox=bbox, score=1.0, keypoints5=kps, crop_matrix=m, **fields)
    grey = np.full((400, 400, 3), 128, np.uint8)
    diff = np.abs(draw(grey, [face], layers=["parsing"]).astype(int) - 128).max(-1)
    inside = align.crop_to_image_mask(np.ones((s, s), np.uint8), m, (400, 400)) > 0
    edge = inside & ~cv2.erode(inside.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)  # 2 px band
    assert edge.sum() > 1000
    centre = align.transform_points(np.array([[s / 2, s / 2]]), align.invert(m))[0].round().astype(int)
    assert diff[centre[1], centre[0]] > 30  # the class colour shows in the middle
    assert diff[edge].max() <= 6, "parsing colour stops with a hard edge at the crop border"
    assert diff[~inside].max() <= 3
