"""40 CelebA attributes (probabilities), age in years and gender as P(male), from one token."""
from __future__ import annotations

import numpy as np

from .._lazy import F, torch  # torch on first use (losses); post-processing is numpy
from ..config import ModelConfig
from .base import Task, VectorHead, masked_mean

ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips", "Big_Nose",
    "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin", "Eyeglasses",
    "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache",
    "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks",
    "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick",
    "Wearing_Necklace", "Wearing_Necktie", "Young",
)
AGE_SIGMA = 2.5  # years, width of the Gaussian label distribution for the age bins


class AttributesTask(Task):
    name = "attributes"
    outputs = {
        "attributes": ("40", "P(attribute) in CelebA order"),
        "age": ("1", "expected age in years (0-100)"),
        "gender": ("1", "P(male)"),
    }

    def build_head(self, cfg: ModelConfig):
        head = VectorHead(cfg.embed_dim, len(ATTRIBUTES) + cfg.age_bins + 1)
        head.age_bins = cfg.age_bins
        return head

    def head_forward(self, head, x):
        y = head(x)
        n = len(ATTRIBUTES)
        return {"attributes": y[:, :n], "age": y[:, n:n + head.age_bins], "gender": y[:, -1]}

    def activate(self, raw):
        bins = torch.arange(raw["age"].shape[1], dtype=raw["age"].dtype, device=raw["age"].device)
        return {
            "attributes": raw["attributes"].sigmoid(),
            "age": (raw["age"].softmax(-1) * bins).sum(-1),
            "gender": raw["gender"].sigmoid(),
        }

    def empty_target(self, size):
        return {"attrs": np.full(len(ATTRIBUTES), np.nan, np.float32), "age": np.float32(np.nan),
                "age_weight": np.float32(0), "gender": np.float32(np.nan)}

    def loss(self, raw, target):
        losses = []
        attrs = target["attrs"]
        ok = torch.isfinite(attrs)
        if ok.any():
            losses.append(F.binary_cross_entropy_with_logits(raw["attributes"][ok].float(), attrs[ok]))
        age = target["age"]
        ok = torch.isfinite(age) & (target["age_weight"] > 0)
        if ok.any():
            logits = raw["age"][ok].float()
            bins = torch.arange(logits.shape[1], dtype=logits.dtype, device=logits.device)
            prob = logits.softmax(-1)
            expected = (prob * bins).sum(-1)
            dist = torch.exp(-0.5 * ((bins - age[ok, None]) / AGE_SIGMA) ** 2)
            dist = dist / dist.sum(-1, keepdim=True)
            kl = -(dist * logits.log_softmax(-1)).sum(-1)
            per = (expected - age[ok]).abs() / 10.0 + 0.2 * kl
            losses.append(masked_mean(per, target["age_weight"][ok]))
        g = target["gender"]
        ok = torch.isfinite(g)
        if ok.any():
            losses.append(F.binary_cross_entropy_with_logits(raw["gender"][ok].float(), g[ok]))
        return sum(losses) if losses else None

    def metrics(self, pred, target):
        out = {}
        a = target["attrs"]
        rows = np.isfinite(a).all(1)
        if rows.any():
            out["mean_acc"] = float(((pred["attributes"][rows] > 0.5) == (a[rows] > 0.5)).mean() * 100)
        ok = np.isfinite(target["age"]) & (target["age_weight"] >= 1)
        if ok.any():
            out["age_mae"] = float(np.abs(pred["age"][ok] - target["age"][ok]).mean())
        ok = np.isfinite(target["gender"])
        if ok.any():
            out["gender_acc"] = float(((pred["gender"][ok] > 0.5) == (target["gender"][ok] > 0.5)).mean() * 100)
        return out

    def to_face(self, out, matrix, image_shape, pre):
        return {
            "attributes": {n: float(p) for n, p in zip(ATTRIBUTES, out["attributes"])},
            "age": float(np.squeeze(out["age"])),
            "gender": float(np.squeeze(out["gender"])),
        }

    def labels(self, face, style=None):
        """Gender and age, then up to three attributes above 0.5 (most likely first), right of the face."""
        from ..draw import Label

        if face.age is None:
            return []
        top = sorted(((p, n) for n, p in (face.attributes or {}).items() if n != "Male" and p > 0.5), reverse=True)[:3]
        first = f"{face.age:.0f}y" if face.gender is None else f"{'M' if face.gender >= 0.5 else 'F'} {face.age:.0f}y"
        return [Label([first] + [n.replace("_", " ") for _, n in top], side="right")]
