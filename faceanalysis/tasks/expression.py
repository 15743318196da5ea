"""Facial expression: 7 classes with probabilities (FER+ order, contempt left out)."""
from __future__ import annotations

import numpy as np

from ..config import ModelConfig
from ..errors import FaceAnalysisError
from .base import Task, VectorHead, finite_rows, masked_mean

CLASSES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear")


class ExpressionTask(Task):
    """Expression head, loss and metrics.

    Training target: on FER2013 images (which carry ``label`` and ``votes``) the soft target is
    ``(1 - vote_weight) * onehot(label) + vote_weight * votes``: the FER2013 label (one annotator, Goodfellow et
    al. 2013) mixed with the FER+ vote distribution (ten annotators, Barsoum et al. 2016). Elsewhere (teacher
    pseudo-labels, FER2013 images without votes) ``probs`` is used as stored. ``vote_weight`` 0.5 reproduces
    the stored 1/2 + 1/2 mix; it is a ``task_options`` setting of the training config."""

    name = "expression"
    outputs = {"expression": ("7", "class probabilities, order " + ", ".join(CLASSES))}
    vote_weight = 0.5

    def build_head(self, cfg: ModelConfig):
        return VectorHead(cfg.embed_dim, len(CLASSES))

    def activate(self, raw):
        return {"expression": raw["expression"].softmax(-1)}

    def empty_target(self, size):
        return {"probs": np.full(len(CLASSES), np.nan, np.float32), "weight": np.float32(0),
                "label": np.float32(np.nan), "votes": np.full(len(CLASSES), np.nan, np.float32)}

    def warp_target(self, target, geo):
        """Every source's target gets the same keys (a batch stacks them): ``label`` / ``votes`` NaN where the
        source has none (teacher pseudo-labels)."""
        if "votes" in target:
            return target
        return {**target, "label": np.float32(np.nan), "votes": np.full(len(CLASSES), np.nan, np.float32)}

    def target_probs(self, target: dict) -> "torch.Tensor":
        """(B, 7) soft targets: the FER2013 / FER+ mix at ``vote_weight`` where a row has both parts, else the
        stored ``probs``."""
        from .._lazy import torch

        if not 0.0 <= self.vote_weight <= 1.0:
            raise FaceAnalysisError(f"expression vote_weight must be between 0 and 1, got {self.vote_weight}")
        probs = target["probs"]
        if "votes" not in target:
            return probs
        label, votes = target["label"], target["votes"]
        both = torch.isfinite(label) & finite_rows(votes)
        if not both.any():
            return probs
        onehot = torch.nn.functional.one_hot(torch.nan_to_num(label).long().clamp(0, len(CLASSES) - 1),
                                             len(CLASSES)).to(probs.dtype)
        mixed = (1 - self.vote_weight) * onehot + self.vote_weight * torch.nan_to_num(votes)
        return torch.where(both[:, None], mixed, probs)

    def loss(self, raw, target):
        probs = self.target_probs(target)
        keep = finite_rows(probs) & (target["weight"] > 0)
        if not keep.any():
            return None
        logp = raw["expression"][keep].float().log_softmax(-1)
        ce = -(probs[keep] * logp).sum(-1)
        return masked_mean(ce, target["weight"][keep])

    def metrics(self, pred, target):
        """``acc``: against the argmax of the stored 1/2 + 1/2 mix (comparable across stages); ``acc_fer2013``:
        against the FER2013 label; ``acc_ferplus``: against the FER+ majority over the 7 classes (images whose top
        vote share is tied left out).
        Rows with a full-weight label only (human labels, not teacher pseudo-labels)."""
        keep = np.isfinite(target["probs"]).all(1) & (target["weight"] >= 1)
        if not keep.any():
            return {}
        top = pred["expression"].argmax(1)
        out = {"acc": float((top[keep] == target["probs"][keep].argmax(1)).mean() * 100)}
        if "label" in target:
            has = keep & np.isfinite(target["label"])
            if has.any():
                out["acc_fer2013"] = float((top[has] == target["label"][has]).mean() * 100)
            votes = target["votes"]
            has = keep & np.isfinite(votes).all(1)
            top2 = np.sort(np.nan_to_num(votes), 1)[:, -2:]
            has &= top2[:, 1] > top2[:, 0]  # a clear majority only (FER+'s majority protocol): ties left out
            if has.any():
                out["acc_ferplus"] = float((top[has] == votes[has].argmax(1)).mean() * 100)
        return out

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
