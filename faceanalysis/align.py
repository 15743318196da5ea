"""Five-point similarity alignment to the canonical crop, and mapping results back.

Every caller (API, training, evaluation, export parity, demo) uses these functions, so a face is
cropped the same way everywhere. Coordinates are 0-based pixel centres, as in OpenCV.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .config import PreprocessConfig

# iBUG 68 -> 5 key points (subject's right eye, left eye, nose tip, right / left mouth corner).
KPS5_FROM_68 = ((36, 37, 38, 39, 40, 41), (42, 43, 44, 45, 46, 47), (30,), (48,), (54,))


def kps5_from_68(points: np.ndarray) -> np.ndarray:
    """Five key points from 68 iBUG landmarks ``(68, 2)``."""
    points = np.asarray(points, dtype=np.float64)
    return np.stack([points[list(idx)].mean(0) for idx in KPS5_FROM_68]).astype(np.float32)


def template_points(pre: PreprocessConfig) -> np.ndarray:
    """The canonical 5 key points in crop pixels ``(5, 2)``."""
    return np.asarray(pre.template, dtype=np.float64) * pre.input_size - 0.5


def similarity_matrix(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, shift) sending ``src`` to ``dst``.

    Returns a 2x3 float64 matrix (Umeyama's closed form, no reflection).
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0**2).sum() / len(src)
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / max(var_s, 1e-12)
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def alignment_matrix(kps5: np.ndarray, pre: PreprocessConfig) -> np.ndarray:
    """2x3 matrix mapping source-image pixels to canonical-crop pixels."""
    return similarity_matrix(kps5, template_points(pre))


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 matrix of ``outer(inner(x))``."""
    a = np.vstack([outer, [0, 0, 1]])
    b = np.vstack([inner, [0, 0, 1]])
    return (a @ b)[:2]


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    return cv2.invertAffineTransform(np.asarray(m, dtype=np.float64))


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a 2x3 matrix to points ``(..., 2)``."""
    points = np.asarray(points, dtype=np.float64)
    return (points @ m[:, :2].T + m[:, 2]).astype(np.float32)


def rotation_ccw_deg(m: np.ndarray) -> float:
    """Counter-clockwise rotation (as displayed, y pointing down) that ``m`` applies to image content."""
    return -math.degrees(math.atan2(m[1, 0], m[0, 0]))


def scale_of(m: np.ndarray) -> float:
    """Uniform scale factor of a similarity matrix."""
    return float(math.hypot(m[0, 0], m[1, 0]))


def warp_image(image: np.ndarray, m: np.ndarray, pre: PreprocessConfig, border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    """Canonical crop ``(S, S, 3)`` uint8 RGB of ``image`` under ``m`` (bilinear; outside the image:
    ``pre.border_value``, or another OpenCV ``border`` mode, which training uses as augmentation)."""
    s = pre.input_size
    flags = cv2.INTER_AREA if scale_of(m) < 0.5 else cv2.INTER_LINEAR
    if flags == cv2.INTER_AREA:
        # warpAffine has no area filter: pre-shrink, then warp with the adjusted matrix.
        f = scale_of(m) * 1.5
        small = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        pre_m = np.array([[small.shape[1] / image.shape[1], 0, 0], [0, small.shape[0] / image.shape[0], 0]])
        # resize maps pixel centres by x' = (x + 0.5) * f - 0.5
        pre_m[:, 2] = 0.5 * pre_m[:, :2].sum(1) - 0.5
        m = compose(m, invert(pre_m))
        image = small
    return cv2.warpAffine(
        image, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=pre.border_value
    )


def warp_mask(mask: np.ndarray, m: np.ndarray, size: int, fill: int = 255) -> np.ndarray:
    """Nearest-neighbour warp of a class-id mask; pixels from outside the source get ``fill``."""
    return cv2.warpAffine(
        mask, m, (size, size), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=fill
    )


def crop_to_image_mask(probs_or_ids: np.ndarray, m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Warp a crop-space class-id map back onto the source image (nearest); outside the crop = 0."""
    h, w = shape
    return cv2.warpAffine(
        probs_or_ids, m, (w, h), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )
