"""68 facial landmarks (iBUG 300-W order): one heatmap per point, soft-argmax to crop pixels."""
from __future__ import annotations

import cv2
import numpy as np

from .. import align
from .._lazy import torch  # torch on first use (head, loss); post-processing is numpy
from ..config import ModelConfig
from .base import Geometry, HeadInputs, MapHead, Task, finite_rows, masked_mean

NUM_POINTS = 68
#: point permutation under a horizontal flip
FLIP_PERM = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30] + [35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55] + [64, 63, 62, 61, 60, 67, 66, 65]
)
# index pairs of the outer eye corners (36, 45): the 300-W inter-ocular normaliser
OUTER_EYES = (36, 45)
CONTOURS = [range(0, 17), range(17, 22), range(22, 27), range(27, 31), range(31, 36), list(range(36, 42)) + [36],
            list(range(42, 48)) + [42], list(range(48, 60)) + [48], list(range(60, 68)) + [60]]


def soft_argmax(heatmaps: torch.Tensor, crop_size: int) -> torch.Tensor:
    """``(B, K, h, w)`` logits -> ``(B, K, 2)`` expected (x, y) in crop pixels (pixel centres)."""
    b, k, h, w = heatmaps.shape
    prob = heatmaps.reshape(b, k, h * w).float().softmax(-1).reshape(b, k, h, w)
    xs = (torch.arange(w, dtype=prob.dtype, device=prob.device) + 0.5) * (crop_size / w) - 0.5
    ys = (torch.arange(h, dtype=prob.dtype, device=prob.device) + 0.5) * (crop_size / h) - 0.5
    x = (prob.sum(2) * xs).sum(-1)
    y = (prob.sum(3) * ys).sum(-1)
    return torch.stack([x, y], -1)


def nme(pred: np.ndarray, gt: np.ndarray, norm: np.ndarray | None = None) -> np.ndarray:
    """Per-image mean point error divided by ``norm`` (default: outer-eye-corner distance of ``gt``)."""
    if norm is None:
        norm = np.linalg.norm(gt[:, OUTER_EYES[0]] - gt[:, OUTER_EYES[1]], axis=-1)
    return np.linalg.norm(pred - gt, axis=-1).mean(-1) / norm


class LandmarksTask(Task):
    name = "landmarks"
    num_tokens = NUM_POINTS
    outputs = {"landmarks": ("68 x 2", "x, y in crop pixels (0-based pixel centres), iBUG 68 order")}

    def build_head(self, cfg: ModelConfig):
        head = MapHead(cfg.embed_dim, cfg.pixel_dim)
        head.crop_size = cfg.input_size
        return head

    def head_forward(self, head, x: HeadInputs):
        return {"landmarks": soft_argmax(head(x), head.crop_size)}

    def empty_target(self, size):
        return {"points": np.full((NUM_POINTS, 2), np.nan, np.float32), "weight": np.float32(0)}

    def warp_target(self, target, geo: Geometry):
        pts = align.transform_points(target["points"], geo.matrix)
        if geo.flip:
            pts = pts[FLIP_PERM]
            pts[:, 0] = geo.size - 1 - pts[:, 0]
        return {"points": pts.astype(np.float32), "weight": np.float32(target["weight"])}

    def unflip(self, out, size):
        pts = out["landmarks"][:, FLIP_PERM].copy()
        pts[..., 0] = size - 1 - pts[..., 0]
        return {"landmarks": pts}

    def loss(self, raw, target):
        pts = target["points"]
        keep = finite_rows(pts) & (target["weight"] > 0)
        if not keep.any():
            return None
        pred = raw["landmarks"][keep]
        gt = pts[keep]
        # L1 normalised by the ground truth's inter-ocular distance (an NME surrogate)
        iod = (gt[:, OUTER_EYES[0]] - gt[:, OUTER_EYES[1]]).norm(dim=-1).clamp(min=4.0)
        err = (pred - gt).abs().sum(-1).mean(-1) / iod
        return masked_mean(err, target["weight"][keep])

    def metrics(self, pred, target):
        keep = np.isfinite(target["points"]).reshape(len(target["points"]), -1).all(1) & (target["weight"] > 0)
        if not keep.any():
            return {}
        return {"nme_io": float(nme(pred["landmarks"][keep], target["points"][keep]).mean() * 100)}

    def to_face(self, out, matrix, image_shape, pre):
        return {"landmarks": align.transform_points(out["landmarks"], align.invert(matrix))}

    def draw(self, canvas, face, style=None):
        """Contours (translucent on small faces) and one dot per point, sized by the face."""
        from ..draw import SUBPIXEL, face_style

        if face.landmarks is None:
            return
        style = style or face_style(face)
        h, w = canvas.shape[:2]
        # work on the points' neighbourhood only (the contour layer is blended in)
        m = style.line + int(np.ceil(style.point_radius)) + 2
        lo = np.floor(np.nanmin(face.landmarks, 0)).astype(int) - m
        hi = np.ceil(np.nanmax(face.landmarks, 0)).astype(int) + m + 1
        x0, y0, x1, y1 = max(lo[0], 0), max(lo[1], 0), min(hi[0], w), min(hi[1], h)
        if x1 <= x0 or y1 <= y0:
            return
        roi = canvas[y0:y1, x0:x1]
        shift = int(np.log2(SUBPIXEL))
        pts = np.round((np.asarray(face.landmarks, np.float64) - (x0, y0)) * SUBPIXEL).astype(np.int32)
        lines = roi.copy()
        for idx in CONTOURS:
            cv2.polylines(lines, [pts[list(idx)]], False, (0, 255, 128), style.line, cv2.LINE_AA, shift)
        # a 1 px line is heavy next to the points of a small face: fade it with the face size
        a = float(np.clip(style.size / 200.0, 0.45, 1.0))
        roi[:] = cv2.addWeighted(lines, a, roi, 1.0 - a, 0.0)
        r = int(round(style.point_radius * SUBPIXEL))
        for p in pts:
            cv2.circle(roi, (int(p[0]), int(p[1])), r, (255, 255, 255), -1, cv2.LINE_AA, shift)
