"""Identity: an L2-normalised embedding (cosine similarity = dot product).

Trained by distillation from a teacher embedding (SFace, 128-d): cosine to the teacher, a relational
term that matches the batch's pairwise similarity matrix to the teacher's and, when the task is fitted
to the training data, a similarity-distribution term against a fixed bank of every training image's
teacher embedding (CompRess-style: the student's softmax over its similarities to the bank must match
the teacher's), which gives each sample thousands of anchors instead of the batch's few dozen.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
from torch.nn import functional as F

from ..config import ModelConfig
from .base import Task, VectorHead, finite_rows


class IdentityTask(Task):
    name = "identity"
    outputs = {"embedding": ("E", "L2-normalised identity embedding")}
    #: softmax temperature of the bank term and its weight relative to the cosine term
    bank_temperature = 0.1
    bank_weight = 0.5
    bank: torch.Tensor | None = None

    def fit(self, sources):
        rows = [s.targets["identity"]["embedding"] for s in sources.values() if "identity" in s.targets]
        emb = np.concatenate(rows) if rows else np.zeros((0, 128), np.float32)
        emb = emb[np.isfinite(emb).all(1)]
        if len(emb) < 2:
            return self
        task = copy.copy(self)
        task.bank = F.normalize(torch.from_numpy(emb.astype(np.float32)), dim=-1)
        return task

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
        if self.bank is not None:
            self.bank = self.bank.to(s.device)
            tau = self.bank_temperature
            log_p_s = F.log_softmax(s @ self.bank.T / tau, dim=-1)
            p_t = F.softmax(t @ self.bank.T / tau, dim=-1)
            loss = loss + self.bank_weight * F.kl_div(log_p_s, p_t, reduction="batchmean")
        return loss

    def metrics(self, pred, target):
        keep = np.isfinite(target["embedding"]).all(1)
        if not keep.any():
            return {}
        t = target["embedding"][keep] / np.linalg.norm(target["embedding"][keep], axis=1, keepdims=True)
        return {"teacher_cos": float((pred["embedding"][keep] * t).sum(1).mean())}

    def to_face(self, out, matrix, image_shape, pre):
        return {"embedding": out["embedding"].astype(np.float32)}
