"""Facial expression: 7 classes with probabilities (FER+ order, contempt left out)."""
from __future__ import annotations

import numpy as np

from ..config import ModelConfig
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

    def labels(self, face, style=None):
        """The most likely expression with its probability and a bar filled to it, above the face."""
        from ..draw import Label

        if face.expression is None:
            return []
        p = face.expression_probs[face.expression]
        return [Label([f"{face.expression} {p:.0%}"], colour=(255, 230, 0), side="top", bar=p)]
