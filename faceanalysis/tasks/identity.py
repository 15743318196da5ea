"""Identity: an L2-normalised embedding (cosine similarity = dot product).

Trained by distillation from a teacher embedding (SFace, 128-d): cosine to the teacher, a relational
term that matches the batch's pairwise similarity matrix to the teacher's and, when the task is fitted
to the training data, a similarity-distribution term against a fixed bank of every training image's
teacher embedding (CompRess-style: the student's softmax over its similarities to the bank must match
the teacher's), which gives each sample thousands of anchors instead of the batch's few dozen.

Where images carry identity labels (CelebA identity numbers), a supervised margin term is added: a
supervised-contrastive loss (Khosla et al., NeurIPS 2020) with a CosFace-style additive cosine margin
on the positives (Wang et al., CVPR 2018), whose candidates are the other batch samples plus a
cross-batch memory of recent embeddings and labels (XBM, Wang et al., CVPR 2020). Batches hold at least
two images per sampled identity (see ``MixtureSampler``), so every labelled anchor has a positive; samples
without a label (other datasets) act as negatives only.
"""
from __future__ import annotations

import copy

import numpy as np

from .._lazy import F, torch  # torch on first use (losses); post-processing is numpy
from ..config import ModelConfig
from .base import Task, VectorHead, finite_rows, weighted_terms


class IdentityTask(Task):
    name = "identity"
    outputs = {"embedding": ("E", "L2-normalised identity embedding")}
    #: softmax temperature of the bank term and its weight relative to the cosine term
    bank_temperature = 0.1
    bank_weight = 0.5
    bank: torch.Tensor | None = None
    #: supervised margin term on identity labels: weight, cosine scale, additive margin, memory size
    sup_weight = 0.2
    sup_scale = 24.0
    sup_margin = 0.2
    memory_size = 8192

    def fit(self, sources):
        rows = [s.targets["identity"]["embedding"] for s in sources.values() if "identity" in s.targets]
        emb = np.concatenate(rows) if rows else np.zeros((0, 128), np.float32)
        emb = emb[np.isfinite(emb).all(1)]
        task = copy.copy(self)
        task._memory = None  # the cross-batch memory lives only on fitted copies
        if len(emb) >= 2:
            task.bank = F.normalize(torch.from_numpy(emb.astype(np.float32)), dim=-1)
        return task

    def build_head(self, cfg: ModelConfig):
        return VectorHead(cfg.embed_dim, cfg.embedding_dim, pool_image=True)

    def head_forward(self, head, x):
        return {"embedding": head(x)}

    def activate(self, raw):
        return {"embedding": F.normalize(raw["embedding"], dim=-1)}

    def empty_target(self, size):
        return {"embedding": np.full(128, np.nan, np.float32), "label": np.float32(np.nan)}

    def warp_target(self, target, geo):
        return {**self.empty_target(geo.size), **target}  # sources without identity labels

    def loss(self, raw, target):
        sup = self.supervised_loss(raw["embedding"], target["label"]) if "label" in target else None
        return weighted_terms((1.0, self.distillation_loss(raw, target)), (self.sup_weight, sup))

    def supervised_loss(self, embedding: torch.Tensor, label: torch.Tensor) -> torch.Tensor | None:
        """Margin supervised-contrastive loss over the batch and the cross-batch memory.

        ``embedding``: (B, E) raw student embeddings; ``label``: (B,) identity numbers, NaN = unlabelled.
        Returns the mean over labelled anchors that have at least one positive, ``None`` when none has.
        """
        s = F.normalize(embedding.float(), dim=-1)
        lab = torch.nan_to_num(label.float(), nan=-1.0)
        b = s.shape[0]
        cand, cand_lab = s, lab
        mem = self.__dict__.get("_memory")
        if mem is not None:
            cand = torch.cat([s, mem[0].to(s.device)])
            cand_lab = torch.cat([lab, mem[1].to(s.device)])
        if "_memory" in self.__dict__ and self.memory_size > 0:
            # remember this batch (detached) for later steps; unlabelled rows are useful negatives
            new = (s.detach(), lab.detach())
            self._memory = new if mem is None else tuple(
                torch.cat([a, m.to(a.device)])[: self.memory_size] for a, m in zip(new, mem))
        anchors = lab >= 0
        if not anchors.any():
            return None
        cos = s[anchors] @ cand.T  # (A, C)
        la = lab[anchors]
        pos = (la[:, None] == cand_lab[None, :]) & (cand_lab[None, :] >= 0)
        self_mask = torch.zeros_like(pos)
        self_mask[:, :b] = torch.eye(b, dtype=torch.bool, device=s.device)[anchors]
        pos = pos & ~self_mask
        has = pos.any(1)
        if not has.any():
            return None
        logits = self.sup_scale * (cos - self.sup_margin * pos.float())
        logits = logits.masked_fill(self_mask, float("-inf"))
        neg_lse = torch.logsumexp(logits.masked_fill(pos, float("-inf")), dim=1, keepdim=True)  # (A, 1)
        # each positive against all negatives: -log(e^p / (e^p + sum e^n))
        per_pos = torch.where(pos, F.softplus(neg_lse - logits.masked_fill(~pos, 0.0)), 0.0)  # log(1 + sum e^(n - p))
        per_anchor = per_pos.sum(1) / pos.sum(1).clamp(min=1)
        return per_anchor[has].mean()

    def distillation_loss(self, raw, target) -> torch.Tensor | None:
        """Cosine, relational and bank terms against the teacher embedding (rows with one)."""
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
        out = {}
        keep = np.isfinite(target["embedding"]).all(1)
        if keep.any():
            t = target["embedding"][keep] / np.linalg.norm(target["embedding"][keep], axis=1, keepdims=True)
            out["teacher_cos"] = float((pred["embedding"][keep] * t).sum(1).mean())
        if "label" in target:
            out.update(_pair_metrics(pred["embedding"], target["label"]))
        return out

    def combine(self, views):
        """The mean of the views' embeddings, L2-normalised again (the "flip test" of face recognition, e.g.
        ArcFace's evaluation: Deng et al., CVPR 2019)."""
        e = np.mean([v["embedding"] for v in views], axis=0)
        return {"embedding": (e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-12)).astype(np.float32)}

    def to_face(self, out, matrix, image_shape, pre):
        return {"embedding": out["embedding"].astype(np.float32)}


def _pair_metrics(emb: np.ndarray, label: np.ndarray) -> dict[str, float]:
    """All-pairs verification on labelled rows: best-threshold accuracy (%) and TAR (%) at FAR = 1e-2.
    Needs at least one genuine and one impostor pair; returns ``{}`` otherwise."""
    from ..evaluation.identity_pairs import all_pair_scores
    from ..evaluation.metrics import tar_at_far

    keep = np.isfinite(label)
    if keep.sum() < 3:
        return {}
    sim, same = all_pair_scores(emb[keep], label[keep])
    if same.all() or not same.any():
        return {}
    tar, _ = tar_at_far(sim, same, 1e-2)
    order = np.argsort(-sim)
    tp = np.cumsum(same[order])
    tn = (~same).sum() - np.cumsum(~same[order])
    acc = float(((tp + tn) / len(sim)).max() * 100)
    return {"pair_acc": acc, "tar_far1e-2": tar}
