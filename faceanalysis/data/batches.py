"""Training batches: aligned, augmented crops from a mixture of sources, with per-task targets.

Geometric augmentation is folded into the alignment warp (one interpolation); labels move with it
through each task's ``warp_target``. Missing labels stay NaN / ignore and are masked in the loss.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from .. import align
from ..config import PreprocessConfig
from ..tasks import Geometry, Task
from .sources import Source


@dataclass
class AugmentConfig:
    """Augmentation strengths (probabilities and ranges)."""

    scale: float = 0.12  # log-uniform zoom in [1/(1+s), 1+s]
    rotate: float = 20.0  # degrees, uniform
    shift: float = 0.05  # fraction of the crop side
    flip: float = 0.5
    color: float = 0.3  # brightness / contrast / saturation jitter
    grayscale: float = 0.25  # LFW-a and FER are grey
    blur: float = 0.15
    lowres: float = 0.2  # downscale to 24-64 px and back
    occlude: float = 0.15
    border: float = 0.5  # fill outside the source by replicate / reflect instead of black


def similarity_about(center: float, scale: float, angle_deg: float, shift: tuple[float, float]) -> np.ndarray:
    """Rotate by ``angle_deg`` (counter-clockwise as displayed) and scale about ``(center, center)``, then shift."""
    m = cv2.getRotationMatrix2D((center, center), angle_deg, scale)
    m[:, 2] += shift
    return m


def photometric(img: np.ndarray, rng: np.random.Generator, aug: AugmentConfig, gray: bool) -> tuple[np.ndarray, tuple | None]:
    """Colour, grayscale, blur, low resolution and occlusion. Returns the image and the occluded box."""
    out = img.astype(np.float32)
    if aug.color > 0:
        c = aug.color
        out = out * rng.uniform(1 - c, 1 + c) + rng.uniform(-c, c) * 64
        mean = out.mean()
        out = (out - mean) * rng.uniform(1 - c, 1 + c) + mean
        if not gray:
            g = out.mean(2, keepdims=True)
            out = g + (out - g) * rng.uniform(1 - c, 1 + c)
    if gray or rng.random() < aug.grayscale:
        out = np.repeat(out @ np.array([0.299, 0.587, 0.114], np.float32), 3).reshape(out.shape)
    out = np.clip(out, 0, 255).astype(np.uint8)
    if rng.random() < aug.blur:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(0.5, 1.5))
    if rng.random() < aug.lowres:
        s = out.shape[0]
        small = int(rng.integers(24, 65))
        out = cv2.resize(cv2.resize(out, (small, small), interpolation=cv2.INTER_AREA), (s, s),
                         interpolation=cv2.INTER_LINEAR)
    box = None
    if rng.random() < aug.occlude:
        s = out.shape[0]
        w, h = (int(s * rng.uniform(0.15, 0.4)) for _ in range(2))
        x, y = int(rng.integers(0, s - w)), int(rng.integers(0, s - h))
        out[y:y + h, x:x + w] = rng.integers(0, 256, 3, dtype=np.uint8)
        box = (x, y, w, h)
    return out, box


def make_sample(src: Source, i: int, tasks: list[Task], pre: PreprocessConfig, rng: np.random.Generator | None,
                aug: AugmentConfig | None) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """One aligned (and, with ``rng``, augmented) crop and its targets for every task."""
    s = pre.input_size
    m = align.alignment_matrix(src.kps5[i], pre)
    flip = False
    if rng is not None and aug is not None:
        scale = math.exp(rng.uniform(-math.log1p(aug.scale), math.log1p(aug.scale)))
        a = similarity_about((s - 1) / 2, scale, rng.uniform(-aug.rotate, aug.rotate),
                             tuple(rng.uniform(-aug.shift, aug.shift, 2) * s))
        m = align.compose(a, m)
        flip = rng.random() < aug.flip
    border = cv2.BORDER_CONSTANT
    if rng is not None and aug is not None and rng.random() < aug.border:
        border = (cv2.BORDER_REPLICATE, cv2.BORDER_REFLECT_101)[int(rng.integers(2))]
    crop = align.warp_image(src.images[i], m, pre, border)
    if flip:
        crop = np.ascontiguousarray(crop[:, ::-1])
    box = None
    if rng is not None and aug is not None:
        crop, box = photometric(crop, rng, aug, src.gray)
    geo = Geometry(matrix=m, flip=flip, size=s)
    targets = {}
    for t in tasks:
        if t.name == "parsing" and src.masks is not None:
            tgt = t.warp_target({"mask": src.masks[i]}, geo)
            if box is not None:
                x, y, w, h = box
                tgt["mask"][y:y + h, x:x + w] = 255
        elif t.name in src.targets:
            raw = {k: v[i] for k, v in src.targets[t.name].items()}
            tgt = t.warp_target(raw, geo)
        else:
            tgt = t.empty_target(s)
        targets[t.name] = tgt
    return crop, targets


def collate(samples, tasks: list[Task]) -> tuple[np.ndarray, dict[str, dict[str, np.ndarray]]]:
    images = np.stack([c for c, _ in samples])
    targets = {t.name: {k: np.stack([np.asarray(tg[t.name][k]) for _, tg in samples])
                        for k in samples[0][1][t.name]} for t in tasks}
    return images, targets


class MixtureSampler:
    """Endless batches mixing sources by ``ratios`` (deterministic given ``seed``).

    With ``identity_k >= 2``, a source whose samples carry identity labels (``targets["identity"]["label"]``)
    is drawn as ``identity_k`` images of each of several identities (P x K sampling, identities with at
    least ``identity_k`` images in the split), so each labelled image meets a positive in its batch.
    With ``teacher`` (e.g. :class:`faceanalysis.teachers.CropTeacher`), every sample's identity target is the
    teacher's embedding of the augmented crop itself, replacing the stored (clean-image) pseudo-label.
    """

    def __init__(self, sources: dict[str, Source], ratios: dict[str, float], tasks: list[Task], pre: PreprocessConfig,
                 batch_size: int, seed: int, aug: AugmentConfig, identity_k: int = 0,
                 teacher: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.names = [n for n in ratios if n in sources and ratios[n] > 0]
        p = np.array([ratios[n] for n in self.names], np.float64)
        self.p = p / p.sum()
        self.sources, self.tasks, self.pre, self.batch_size, self.aug = sources, tasks, pre, batch_size, aug
        self.rng = np.random.default_rng(seed)
        self.identity_k = identity_k
        self.teacher = teacher  # online identity teacher on the augmented crops (consistent distillation)
        self.groups: dict[str, list[np.ndarray]] = {}
        for name in self.names:
            label = sources[name].targets.get("identity", {}).get("label")
            if identity_k < 2 or label is None:
                continue
            ok = np.isfinite(label)
            ids, inverse, counts = np.unique(label[ok], return_inverse=True, return_counts=True)
            rows = np.where(ok)[0]
            groups = [rows[inverse == j] for j in np.where(counts >= identity_k)[0]]
            if groups:
                self.groups[name] = groups

    def _indices(self, name: str, k: int) -> np.ndarray:
        groups = self.groups.get(name)
        if groups is None or k < self.identity_k:
            return self.rng.integers(0, len(self.sources[name]), k)
        n_ids = min(k // self.identity_k, len(groups))
        picked = [self.rng.choice(groups[g], self.identity_k, replace=False)
                  for g in self.rng.choice(len(groups), n_ids, replace=False)]
        rest = self.rng.integers(0, len(self.sources[name]), k - n_ids * self.identity_k)
        return np.concatenate(picked + [rest]).astype(np.int64)

    def state(self) -> dict:
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        self.rng.bit_generator.state = state

    def next(self):
        counts = self.rng.multinomial(self.batch_size, self.p)
        samples = []
        for name, k in zip(self.names, counts):
            src = self.sources[name]
            for i in self._indices(name, int(k)):
                samples.append(make_sample(src, int(i), self.tasks, self.pre, self.rng, self.aug))
        images, targets = collate(samples, self.tasks)
        if self.teacher is not None and "identity" in targets:
            # the teacher's target belongs to the exact view the student sees, for every sample
            targets["identity"]["embedding"] = self.teacher(images).astype(np.float32)
        return images, targets
