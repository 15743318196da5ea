"""Facial expression: 7 classes with probabilities (FER+ order, contempt left out)."""
from __future__ import annotations

import numpy as np

from ..config import ModelConfig
from .attributes import put_lines
from .base import Task, VectorHead, finite_rows, masked_mean

CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear")


class ExpressionTask(Task):
    name = "expression"
    outputs = {"expression": ("7", "class probabilities, order " + ", ".join(CLASSES))}

    def build_head(self, cfg: ModelConfig):
        return VectorHead(cfg.embed_dim, len(CLASSES))

    def activate(self, raw):
        return {"expression": raw["expression"].softmax(-1)}

    def empty_target(self, size):
        return {"probs": np.full(len(CLASSES), np.nan, np.float32), "weight": np.float32(0)}

    def loss(self, raw, target):
        keep = finite_rows(target["probs"]) & (target["weight"] > 0)
        if not keep.any():
            return None
        logp = raw["expression"][keep].float().log_softmax(-1)
        ce = -(target["probs"][keep] * logp).sum(-1)
        return masked_mean(ce, target["weight"][keep])

    def metrics(self, pred, target):
        keep = np.isfinite(target["probs"]).all(1) & (target["weight"] >= 1)
        if not keep.any():
            return {}
        return {"acc": float((pred["expression"][keep].argmax(1) == target["probs"][keep].argmax(1)).mean() * 100)}

    def to_face(self, out, matrix, image_shape, pre):
        probs = out["expression"].astype(float)
        return {"expression": CLASSES[int(probs.argmax())],
                "expression_probs": {c: float(p) for c, p in zip(CLASSES, probs)}}

    def draw(self, canvas, face):
        if face.expression is None:
            return
        x0, y0, x1, y1 = (int(v) for v in face.bbox)
        p = face.expression_probs[face.expression]
        text = f"{face.expression} {p:.0%}"
        put_lines(canvas, [text], (x0, max(0, y0 - 30)), colour=(255, 230, 0))
        _prob_bar(canvas, text, p, (x0, max(0, y0 - 30)))


def _prob_bar(canvas: np.ndarray, text: str, p: float, origin: tuple[int, int]) -> None:
    """A small bar (filled to ``p``) right of the label that :func:`put_lines` drew at ``origin``."""
    import cv2

    scale = max(0.4, max(canvas.shape[:2]) / 1400)  # same text metrics as put_lines
    thick = max(1, round(scale * 1.5))
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    x = min(origin[0], canvas.shape[1] - tw - 2) if tw < canvas.shape[1] else 0
    baseline = origin[1] + int(22 * scale) + 2
    bw, bh = int(60 * scale) + 8, max(4, th - 2)
    bx0, by0 = x + tw + 6, baseline - th + (th - bh) // 2
    if bx0 + bw >= canvas.shape[1] or by0 < 0 or baseline >= canvas.shape[0]:
        return
    cv2.rectangle(canvas, (bx0, by0), (bx0 + bw, by0 + bh), (0, 0, 0), -1)
    cv2.rectangle(canvas, (bx0 + 1, by0 + 1), (bx0 + 1 + int(round((bw - 2) * float(p))), by0 + bh - 1),
                  (255, 230, 0), -1)
    cv2.rectangle(canvas, (bx0, by0), (bx0 + bw, by0 + bh), (255, 230, 0), 1)
