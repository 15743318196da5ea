"""Identity: an L2-normalised embedding (cosine similarity = dot product).

Trained by distillation from a teacher embedding (SFace, 128-d): cosine to the teacher plus a
relational term that matches the batch's pairwise similarity matrix to the teacher's.
"""
from __future__ import annotations

import numpy as np
from torch.nn import functional as F

from ..config import ModelConfig
from .base import Task, VectorHead, finite_rows


class IdentityTask(Task):
    name = "identity"
    outputs = {"embedding": ("E", "L2-normalised identity embedding")}

    def build_head(self, cfg: ModelConfig):
        return VectorHead(cfg.embed_dim, cfg.embedding_dim, pool_image=True)

    def head_forward(self, head, x):
        return {"embedding": head(x)}

    def activate(self, raw):
        return {"embedding": F.normalize(raw["embedding"], dim=-1)}

    def empty_target(self, size):
        return {"embedding": np.full(128, np.nan, np.float32)}

    def loss(self, raw, target):
        keep = finite_rows(target["embedding"])
        if not keep.any():
            return None
        s = F.normalize(raw["embedding"][keep].float(), dim=-1)
        t = F.normalize(target["embedding"][keep], dim=-1)
        loss = (1 - (s * t).sum(-1)).mean()
        if s.shape[0] > 1:
            loss = loss + 2.0 * F.mse_loss(s @ s.T, t @ t.T)
        return loss

    def metrics(self, pred, target):
        keep = np.isfinite(target["embedding"]).all(1)
        if not keep.any():
            return {}
        t = target["embedding"][keep] / np.linalg.norm(target["embedding"][keep], axis=1, keepdims=True)
        return {"teacher_cos": float((pred["embedding"][keep] * t).sum(1).mean())}

    def to_face(self, out, matrix, image_shape, pre):
        return {"embedding": out["embedding"].astype(np.float32)}
