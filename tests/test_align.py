"""Alignment maths: similarity fit, matrices, pixel-centre conventions, warps in both directions."""
from __future__ import annotations

import csv
import math

import cv2
import numpy as np
import pytest

from faceanalysis import align
from faceanalysis.config import PreprocessConfig

PRE = PreprocessConfig()


def _sim(angle_deg, scale, tx, ty):
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]])


@pytest.mark.parametrize("angle,scale,tx,ty", [(0, 1, 0, 0), (17, 0.4, 12, -30), (-75, 2.5, 100, 3), (170, 0.05, -4, 8)])
def test_similarity_matrix_recovers_a_known_transform(angle, scale, tx, ty):
    src = np.random.default_rng(1).uniform(0, 300, (5, 2))
    m = _sim(angle, scale, tx, ty)
    dst = src @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(align.similarity_matrix(src, dst), m, atol=1e-8)


def test_similarity_matrix_never_reflects():
    src = np.random.default_rng(3).uniform(0, 100, (5, 2))
    dst = src @ np.array([[-1.0, 0], [0, 1.0]]) + 7  # a mirror image cannot be reached by a similarity
    m = align.similarity_matrix(src, dst)
    assert np.linalg.det(m[:, :2]) > 0
    assert m[0, 0] == pytest.approx(m[1, 1]) and m[0, 1] == pytest.approx(-m[1, 0])


def test_alignment_matrix_sends_key_points_to_the_template():
    tpl = align.template_points(PRE)
    np.testing.assert_allclose(tpl, np.asarray(PRE.template) * PRE.input_size - 0.5)
    m_true = _sim(12, 1.7, 40, 25)
    kps = align.transform_points(tpl, align.invert(m_true))  # a face that the template fits exactly
    m = align.alignment_matrix(kps, PRE)
    np.testing.assert_allclose(align.transform_points(kps, m), tpl, atol=1e-3)
    assert align.scale_of(m) == pytest.approx(1.7, rel=1e-5)
    assert align.rotation_ccw_deg(m) == pytest.approx(-12, abs=1e-5)  # +12 deg y-down = 12 deg clockwise


def test_compose_and_invert():
    a, b = _sim(30, 2, 5, 6), _sim(-10, 0.5, -3, 9)
    pts = np.random.default_rng(2).uniform(-50, 50, (10, 2))
    np.testing.assert_allclose(align.transform_points(pts, align.compose(a, b)),
                               align.transform_points(align.transform_points(pts, b), a), atol=1e-3)
    np.testing.assert_allclose(align.compose(a, align.invert(a)), [[1, 0, 0], [0, 1, 0]], atol=1e-12)


def test_kps5_from_68_on_real_labels(data_root):
    with open(data_root / "300w_partial" / "labels.csv", newline="") as f:
        row = next(csv.DictReader(f))
    pts = np.array([[float(row[f"x{i}"]), float(row[f"y{i}"])] for i in range(68)], np.float32)
    k = align.kps5_from_68(pts)
    assert k.shape == (5, 2)
    np.testing.assert_allclose(k[0], pts[36:42].mean(0), atol=1e-4)
    np.testing.assert_allclose(k[2], pts[30], atol=1e-4)
    # image-left eye first, mouth below the eyes
    assert k[0, 0] < k[1, 0] and k[3, 0] < k[4, 0] and k[3:, 1].min() > k[:2, 1].max()


def _blob_image(size, centre, radius):
    img = np.zeros((size, size, 3), np.uint8)
    cv2.circle(img, (int(centre[0]), int(centre[1])), radius, (255, 255, 255), -1)
    return img


def _centroid(img):
    w = img[..., 0].astype(np.float64)
    ys, xs = np.mgrid[: w.shape[0], : w.shape[1]]
    return np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])


@pytest.mark.parametrize("scale", [1.3, 0.6, 0.2, 0.04])  # >= 0.5: direct warp; < 0.5: pre-shrink path
def test_warp_image_maps_pixel_centres_like_transform_points(scale):
    size = 2000 if scale < 0.1 else 600
    centre = np.array([size * 0.37, size * 0.61])
    img = _blob_image(size, centre, int(size * 0.08))
    m = _sim(20, scale, 0, 0)
    m[:, 2] = PRE.input_size / 2 - (m[:, :2] @ centre)  # blob centre -> crop centre
    crop = align.warp_image(img, m, PRE)
    assert crop.shape == (PRE.input_size, PRE.input_size, 3) and crop.dtype == np.uint8
    expected = align.transform_points(_centroid(img)[None], m)[0]
    np.testing.assert_allclose(_centroid(crop), expected, atol=0.35)


def test_warp_image_fills_outside_with_border_value():
    img = np.full((50, 50, 3), 200, np.uint8)
    m = np.array([[1.0, 0, 100], [0, 1.0, 100]])  # the image lands outside the crop's top-left quarter
    crop = align.warp_image(img, m, PRE)
    assert (crop[:90, :90] == 0).all() and (crop[110:150, 110:140] == 200).all()


def test_crop_to_image_mask_inverts_warp_mask():
    ids = np.zeros((300, 400), np.uint8)
    ids[100:200, 150:260] = 7
    m = _sim(8, 0.8, 10, -20)
    crop = align.warp_mask(ids, m, 256, fill=0)
    back = align.crop_to_image_mask(crop, m, ids.shape)
    inner = np.zeros_like(ids, bool)
    inner[105:195, 155:255] = True
    assert (back[inner] == 7).mean() > 0.99
    assert (back[ids == 0] == 0).mean() > 0.99
