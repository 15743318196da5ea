"""Head pose: yaw, pitch, roll in degrees.

Convention (MediaPipe's, as in the data pack's teacher labels): yaw > 0 = the subject turns to
their own left (nose toward the image's right); pitch > 0 = looking down; roll > 0 = head rotated
counter-clockwise as displayed. The model predicts pose in the aligned crop; roll is mapped back
to the image by undoing the alignment's in-plane rotation.
"""
from __future__ import annotations

import math

import cv2
import numpy as np


from .. import align
from .._lazy import F  # torch on first use (loss); post-processing is numpy
from ..config import ModelConfig
from .base import Geometry, Task, VectorHead, finite_rows

SCALE = 45.0  # raw head units -> degrees


class PoseTask(Task):
    name = "pose"
    outputs = {"pose": ("3", "yaw, pitch, roll in degrees, crop frame (roll relative to the aligned crop)")}

    def build_head(self, cfg: ModelConfig):
        return VectorHead(cfg.embed_dim, 3)

    def activate(self, raw):
        return {"pose": raw["pose"] * SCALE}

    def empty_target(self, size):
        return {"ypr": np.full(3, np.nan, np.float32)}

    def warp_target(self, target, geo: Geometry):
        ypr = target["ypr"].astype(np.float32).copy()
        ypr[2] += align.rotation_ccw_deg(geo.matrix)
        if geo.flip:
            ypr[0], ypr[2] = -ypr[0], -ypr[2]
        return {"ypr": ypr}

    def unflip(self, out, size):
        ypr = out["pose"].copy()
        ypr[:, 0], ypr[:, 2] = -ypr[:, 0], -ypr[:, 2]
        return {"pose": ypr}

    def loss(self, raw, target):
        keep = finite_rows(target["ypr"])
        if not keep.any():
            return None
        return F.smooth_l1_loss(raw["pose"][keep], target["ypr"][keep] / SCALE, beta=0.05)

    def metrics(self, pred, target):
        keep = np.isfinite(target["ypr"]).all(1)
        if not keep.any():
            return {}
        err = np.abs(pred["pose"][keep] - target["ypr"][keep]).mean(0)
        return {"mae_yaw": float(err[0]), "mae_pitch": float(err[1]), "mae_roll": float(err[2])}

    def to_face(self, out, matrix, image_shape, pre):
        yaw, pitch, roll = (float(v) for v in out["pose"])
        roll -= align.rotation_ccw_deg(matrix)
        roll = (roll + 180.0) % 360.0 - 180.0
        return {"pose": (yaw, pitch, roll)}

    def draw(self, canvas, face, style=None):
        """Head axes from the nose tip, half the face box's width long."""
        from ..draw import face_style

        if face.pose is None:
            return
        style = style or face_style(face)
        yaw, pitch, roll = (math.radians(v) for v in face.pose)
        # rotation of the head in camera coordinates (x right, y down, z away from the camera)
        cy, sy, cp, sp, cr, sr = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch), math.cos(-roll), math.sin(-roll)
        ry = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
        rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        r = ry @ rx @ rz
        x0, y0, x1, y1 = face.bbox
        centre = face.keypoints5[2] if face.keypoints5 is not None else ((x0 + x1) / 2, (y0 + y1) / 2)
        length = 0.5 * (x1 - x0)
        thick = style.line
        # axes: x (subject's left, red), y (down, green), z (toward the camera, blue)
        for axis, colour in ((np.array([1, 0, 0]), (255, 0, 0)), (np.array([0, 1, 0]), (0, 255, 0)),
                             (np.array([0, 0, -1]), (0, 0, 255))):
            d = r @ axis
            end = (int(centre[0] + length * d[0]), int(centre[1] + length * d[1]))
            cv2.arrowedLine(canvas, (int(centre[0]), int(centre[1])), end, colour, thick, cv2.LINE_AA, tipLength=0.15)
