"""Face parsing: 19 CelebAMask-HQ classes, per-pixel logits at half the crop resolution (at the full resolution
with ``ModelConfig.parsing_stride`` 1), and with ``ModelConfig.parsing_field`` > 1 over a square wider than the crop
(``parsing_wide``, the context ring of ``model/parsing_context.py``)."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .. import align
from .._lazy import F, torch  # torch on first use (losses); post-processing is numpy
from ..config import ModelConfig, PreprocessConfig
from ..errors import FaceAnalysisError
from .base import Geometry, HeadInputs, ParsingHead, Task, weighted_terms

CLASSES = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)
#: class permutation under a horizontal flip (l_/r_ are the subject's sides)
FLIP_PERM = np.array([0, 1, 2, 3, 5, 4, 7, 6, 9, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18])
IGNORE = 255
#: the subject's (left, right) class pairs (eyes, brows, ears: the pairs FLIP_PERM swaps); in an aligned crop the
#: subject's right side is the crop's left half
SIDED_PAIRS = tuple((i, int(j)) for i, j in enumerate(FLIP_PERM) if j > i)
#: rare parsing classes that CelebA attributes tag at image level (class -> CelebA attribute, Liu et al. 2015):
#: weak supervision for the four classes with under 210 of the 850 training masks (issue 10)
TAG_ATTRIBUTES = {"eye_g": "Eyeglasses", "hat": "Wearing_Hat", "ear_r": "Wearing_Earrings",
                  "neck_l": "Wearing_Necklace"}
TAG_CLASSES = [CLASSES.index(c) for c in TAG_ATTRIBUTES]
#: longest side (pixels) at which a face's mask is labelled; larger faces are labelled at this size and
#: upscaled (the logits are 64x64 per face, 128x128 with parsing_stride 1, so finer grids add little but time)
MAX_MASK_SIDE = 512
#: drawing: opacity of the class colours, and the width of their fade toward the crop border (fraction of
#: the crop side)
DRAW_ALPHA = 0.45
FEATHER = 0.12
# colours for drawing (RGB), background transparent
PALETTE = np.array(
    [[0, 0, 0], [255, 204, 153], [255, 128, 0], [128, 128, 128], [0, 128, 255], [0, 200, 255], [128, 64, 0],
     [180, 90, 20], [255, 0, 128], [255, 80, 160], [200, 0, 0], [255, 60, 60], [255, 100, 100], [90, 50, 20],
     [0, 160, 0], [255, 255, 0], [255, 0, 255], [255, 230, 200], [0, 0, 200]], dtype=np.uint8)

_DRAW_LUT = np.concatenate([PALETTE * DRAW_ALPHA, np.full((len(PALETTE), 1), DRAW_ALPHA)], 1).astype(np.float32)
_DRAW_LUT[0] = 0


@dataclass
class ParsingMask:
    """A face's class-id mask in image coordinates, stored for the region ``box`` = (x0, y0, x1, y1)
    (exclusive ends) that the face's parsing field covers (its aligned crop, widened to ``field`` crop sides about
    the crop's centre when the model has the context ring, ``ModelConfig.parsing_field``), clipped to the image;
    pixels outside it are background."""

    mask: np.ndarray  # (y1 - y0, x1 - x0) uint8 class ids
    box: tuple[int, int, int, int]
    class_names: tuple[str, ...] = CLASSES
    #: side of the square the mask covers, as a multiple of the face's crop side (``ModelConfig.parsing_field``)
    field: float = 1.0

    def full(self, shape: tuple[int, int]) -> np.ndarray:
        """The mask pasted into an all-background image of ``shape`` (H, W)."""
        out = np.zeros(shape[:2], np.uint8)
        x0, y0, x1, y1 = self.box
        out[y0:y1, x0:x1] = self.mask
        return out

    def area(self, name: str) -> int:
        """Number of pixels of class ``name``."""
        return int((self.mask == self.class_names.index(name)).sum())


def tags_from_attributes(attrs: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Image-level parsing tags ``(N, 4)`` (1 = the class is worn, 0 = not, NaN = unknown) for the classes of
    :data:`TAG_ATTRIBUTES`, from CelebA attribute rows ``attrs`` ``(N, len(names))`` in 0/1 (``names``: their
    attribute names in column order)."""
    cols = [names.index(a) for a in TAG_ATTRIBUTES.values()]
    tags = np.asarray(attrs, np.float32)[:, cols]
    return np.where(np.isfinite(tags), (tags > 0.5).astype(np.float32), np.nan).astype(np.float32)


def parsing_scores(pred: np.ndarray, gt: np.ndarray, num_classes: int, ignore: int = IGNORE):
    """Per-class F1 and IoU from TP/FP/FN accumulated over all pixels; also which classes occur in ``gt``.

    Returns ``(f1, iou, present)``, each of length ``num_classes``.
    """
    valid = gt != ignore
    p, g = pred[valid].astype(np.int64), gt[valid].astype(np.int64)
    conf = np.bincount(g * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)
    tp = np.diag(conf).astype(np.float64)
    fp = conf.sum(0) - tp
    fn = conf.sum(1) - tp
    f1 = np.where(tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    iou = np.where(tp + fp + fn > 0, tp / np.maximum(tp + fp + fn, 1), 0.0)
    return f1, iou, conf.sum(1) > 0


def class_balance_weights(masks: list[np.ndarray], num_classes: int, power: float = 0.5,
                          clip: tuple[float, float] = (0.5, 4.0)) -> np.ndarray:
    """Per-class loss weights ``(median_freq / freq) ** power`` clipped to ``clip``, from pixel counts of
    ``masks`` (``IGNORE`` skipped); classes that never occur get weight 1."""
    counts = np.zeros(num_classes, np.float64)
    for m in masks:
        counts += np.bincount(m[m != IGNORE].ravel(), minlength=num_classes)[:num_classes]
    freq = counts / max(counts.sum(), 1)
    seen = freq > 0
    w = np.ones(num_classes)
    if seen.any():
        w[seen] = np.clip((np.median(freq[seen]) / freq[seen]) ** power, *clip)
    return w.astype(np.float32)


def assign_sides(logits: np.ndarray, pre: PreprocessConfig, field: float = 1.0) -> np.ndarray:
    """Decide the subject's left / right of the eye, brow and ear classes by position in the aligned crop.

    ``logits``: ``(..., 19, h, w)`` parsing logits over the crop (any map resolution); returns a copy in which,
    for each pair of :data:`SIDED_PAIRS`, both classes get the larger of the two logits on their own side of
    the crop's midline (the midpoint of the template's eye centres, ``PreprocessConfig.template``) and -1e4 on
    the other. The model then decides *eye* (brow, ear) against the other classes; the side follows from the
    alignment, which puts the subject's right eye (the image-left eye of an unmirrored photo) on the crop's left.
    CelebAMask-HQ's ``l_`` / ``r_`` classes are the subject's sides (Lee et al., CVPR 2020). Measured on the
    shipped stage-16 weights, CelebAMask mini test: mean F1 69.37 -> 69.89 %, ``l_eye`` / ``r_eye`` F1
    73.2 / 72.8 -> 75.4 / 75.3 %; the model alone labelled both eyes of some frontal test faces with the wrong
    side. (10 of the 97 test masks with both eyes, and 54 of 821 training masks, have the pair the other way
    round, as whole images: label noise that no decoder can match.) ``field``: the maps cover that many crop
    sides, centred on the crop (``parsing_wide``)."""
    out = np.array(logits, np.float32, copy=True)
    s, w = pre.input_size, out.shape[-1]
    mid = (pre.template[0][0] + pre.template[1][0]) / 2 * s  # crop pixels
    ring = (field - 1.0) / 2.0 * s
    subject_left = ((np.arange(w) + 0.5) * s * field / w - ring) >= mid  # column centres; crop right = subject's left
    for left, right in SIDED_PAIRS:
        both = np.maximum(out[..., left, :, :], out[..., right, :, :])
        out[..., left, :, :] = np.where(subject_left, both, -1e4)
        out[..., right, :, :] = np.where(subject_left, -1e4, both)
    return out


def _mirror_mask(mask: np.ndarray) -> np.ndarray:
    """A class-id mask mirrored left-right, its l_ / r_ classes swapped (:data:`FLIP_PERM`); 255 stays 255."""
    mask = mask[:, ::-1]
    return np.where(mask == IGNORE, IGNORE, FLIP_PERM[np.minimum(mask, 18)]).astype(np.uint8)


def parsing_field(out: dict[str, np.ndarray]) -> float:
    """How many crop sides one face's parsing maps cover: the side of ``parsing_wide`` over that of ``parsing``
    (``ModelConfig.parsing_field``), 1 without the context ring."""
    wide = out.get("parsing_wide")
    return 1.0 if wide is None else wide.shape[-1] / out["parsing"].shape[-1]


def _argmax_warp(logits: np.ndarray, inverse: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Class ids on an output grid of ``size`` (W, H) whose pixel p reads the logit maps at ``inverse @ p``:
    each class's logits are warped bilinearly (smooth boundaries at the output resolution) and the running
    argmax kept, one channel at a time so a large face never needs all maps at full size. Outside the maps
    is background. The running argmax uses OpenCV's compare / max / masked copy (no temporaries): about 2x
    faster than the numpy form on a 140-300 px face (issue 14)."""
    best = best_id = ids = None
    for c in range(len(logits)):
        fill = 1e4 if c == 0 else -1e4
        v = cv2.warpAffine(logits[c], inverse, size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=fill)
        if best is None:
            best, best_id, ids = v, np.zeros(v.shape, np.uint8), np.empty(v.shape, np.uint8)
            continue
        better = cv2.compare(v, best, cv2.CMP_GT)  # 255 where class c beats the best so far
        cv2.max(v, best, dst=best)
        ids.fill(c)
        cv2.copyTo(ids, better, best_id)  # in place: best_id[better] = c
    return best_id


class ParsingTask(Task):
    name = "parsing"
    num_tokens = len(CLASSES)
    outputs = {"parsing": ("19 x S/p x S/p", "per-class logits on the crop at 1/p of its resolution (p = "
                                           "parsing_stride, 2 or 1); argmax = class id"),
               "parsing_wide": ("19 x fS/p x fS/p", "the same logits over a square f = parsing_field times the crop's "
                                                   "side, centred on it: the crop's maps in the middle, the "
                                                   "ParsingContext ring's predictions around them")}
    optional_outputs = frozenset({"parsing_wide"})
    #: the parsing field (ModelConfig.parsing_field) the training targets are made for, set by :meth:`for_model`
    field = 1.0
    #: cross-entropy class weights (softened median-frequency balancing), set by :meth:`fit` from the training
    #: masks as ``clip((median_freq / freq) ** balance_power, 0.5, balance_max)``
    class_weights: torch.Tensor | None = None
    balance_power = 0.5
    balance_max = 4.0
    #: weight of the image-tag term (images without masks whose CelebA attributes say whether glasses, a hat,
    #: earrings or a necklace are worn; 0 = off) and how many of a class's most confident pixels it pools (counted
    #: on a 64x64 map; scaled with the map's area)
    tag_weight = 0.0
    tag_topk = 8

    def fit(self, sources):
        masks = [m for s in sources.values() if s.masks is not None for m in s.masks]
        if not masks:
            return self
        task = copy.copy(self)
        task.class_weights = torch.from_numpy(class_balance_weights(masks, len(CLASSES), power=self.balance_power,
                                                                    clip=(0.5, self.balance_max)))
        return task

    def output_names(self, cfg: ModelConfig) -> list[str]:
        return ["parsing"] + (["parsing_wide"] if cfg.parsing_field != 1.0 else [])

    def for_model(self, cfg: ModelConfig) -> "ParsingTask":
        if cfg.parsing_field == self.field:
            return self
        task = copy.copy(self)
        task.field = cfg.parsing_field
        return task

    def build_head(self, cfg: ModelConfig):
        return ParsingHead(cfg, len(CLASSES))

    def head_forward(self, head, x: HeadInputs):
        if x.fine_pixels is None:
            logits = head(x)
            if head.context is None:
                return {"parsing": logits}
            return {"parsing": logits, "parsing_wide": head.context(logits, x.image)}
        fine = HeadInputs(tokens=x.tokens, image=x.image, pixels=x.fine_pixels)
        if x.fine_rows is None:  # parsing_stride 1: the same class vectors over full-resolution features
            return {"parsing": head(fine)}
        # training with row-restricted refinement: stride-2 maps for every row (the image-tag term), full
        # resolution for the rows with a mask (see fine_rows)
        fine = HeadInputs(tokens=x.tokens[x.fine_rows], image=x.image[x.fine_rows], pixels=x.fine_pixels)
        return {"parsing": head(x), "parsing_fine": head(fine)}

    def ring_pixels(self, size: int) -> int:
        """Crop pixels the parsing field adds on each side of a ``size`` crop."""
        return int(round((self.field - 1.0) / 2.0 * size))

    def empty_target(self, size):
        out = {"mask": np.full((size, size), IGNORE, np.uint8), "tags": np.full(len(TAG_CLASSES), np.nan, np.float32)}
        if self.field != 1.0:  # the ring around the crop (its middle, the crop itself, is left to "mask")
            r = self.ring_pixels(size)
            out["mask_wide"] = np.full((size + 2 * r, size + 2 * r), IGNORE, np.uint8)
        return out

    def warp_target(self, target, geo: Geometry):
        """``target``: a class-id ``mask`` in the source frame and/or image-level ``tags`` (see
        :func:`tags_from_attributes`; the tagged classes have no side, so a flip keeps them)."""
        out = self.empty_target(geo.size)
        if "tags" in target:
            out["tags"] = np.asarray(target["tags"], np.float32).copy()
        if "mask" in target:
            mask = align.warp_mask(target["mask"], geo.matrix, geo.size, fill=IGNORE)
            if geo.flip:
                mask = _mirror_mask(mask)
            out["mask"] = np.ascontiguousarray(mask)
            if self.field != 1.0:
                r = self.ring_pixels(geo.size)
                shift = np.array([[1.0, 0.0, r], [0.0, 1.0, r]])
                wide = align.warp_mask(target["mask"], align.compose(shift, geo.matrix), geo.size + 2 * r, fill=IGNORE)
                if geo.flip:  # the field is centred on the crop, so the crop's flip is the field's
                    wide = _mirror_mask(wide)
                wide[r:r + geo.size, r:r + geo.size] = IGNORE
                out["mask_wide"] = np.ascontiguousarray(wide)
        return out

    def unflip(self, out, size):
        return {k: np.ascontiguousarray(v[:, FLIP_PERM, :, ::-1]) for k, v in out.items()}

    def loss(self, raw, target):
        if "parsing_wide" in raw and not raw["parsing"].requires_grad:
            # the crop's maps are frozen (a stage that trains the context ring alone, TrainConfig.trainable): their
            # terms could not train anything, and the mask term is a third of such a step
            return self.ring_loss(raw["parsing_wide"], target["mask_wide"])
        tag = self.tag_loss(raw["parsing"], target["tags"]) if "tags" in target and self.tag_weight > 0 else None
        ring = self.ring_loss(raw["parsing_wide"], target["mask_wide"]) if "parsing_wide" in raw else None
        return weighted_terms((1.0, self.mask_loss(raw, target)), (self.tag_weight, tag), (1.0, ring))

    def ring_loss(self, wide: torch.Tensor, mask: torch.Tensor) -> torch.Tensor | None:
        """Class-weighted cross-entropy of the ``parsing_wide`` logits ``(B, 19, M, M)`` on the ring around the crop
        (``mask``: ``(B, F, F)`` class ids over the field, a multiple of ``M``, sampled at the map's pixels; the crop
        and missing pixels 255); ``None`` when no row has a labelled ring pixel."""
        step = mask.shape[-1] // wide.shape[-1]  # the target at the map's resolution (nearest): the ring is coarse,
        mask = mask[:, step // 2::step, step // 2::step].long()  # and upsampling 19 maps to the crop is slow on a CPU
        keep = (mask != IGNORE).flatten(1).any(1)
        if not keep.any():
            return None
        logits = wide[keep].float()
        w = None if self.class_weights is None else self.class_weights.to(logits.device)
        return F.cross_entropy(logits, mask[keep], weight=w, ignore_index=IGNORE)

    def tag_loss(self, logits: torch.Tensor, tags: torch.Tensor) -> torch.Tensor | None:
        """Multiple-instance loss from image-level tags: binary cross-entropy between each tag and the mean
        probability of the class's ``tag_topk`` most confident pixels (a worn class must appear somewhere;
        a class not worn must appear nowhere). ``logits``: (B, 19, h, w); ``tags``: (B, 4), NaN = unknown.
        Returns ``None`` when no tag is known."""
        known = torch.isfinite(tags)
        rows = known.any(1)
        if not rows.any():
            return None
        pooled = self.pooled_tag_probs(logits[rows]).clamp(1e-4, 1 - 1e-4)
        t = tags[rows]
        bce = F.binary_cross_entropy(pooled, torch.nan_to_num(t, nan=0.0), reduction="none")
        return bce[known[rows]].mean()

    def pooled_tag_probs(self, logits: torch.Tensor) -> torch.Tensor:
        """(N, 4): the mean probability of each tagged class's ``tag_topk`` most confident pixels, from parsing
        logits (N, 19, h, w); what :meth:`tag_loss` trains and :meth:`tag_metrics` scores."""
        prob = logits.float().softmax(1)[:, TAG_CLASSES].flatten(2)  # (N, 4, h*w)
        k = max(1, round(self.tag_topk * prob.shape[-1] / 64 ** 2))  # the same share of the crop at any map size
        return prob.topk(min(k, prob.shape[-1]), dim=-1).values.mean(-1)

    def fine_rows(self, target):
        """The rows with a mask: only the mask term needs full-resolution maps (the tag term pools stride-2 ones)."""
        return (target["mask"] != IGNORE).flatten(1).any(1).nonzero().flatten()

    def mask_loss(self, raw, target):
        """Class-weighted cross-entropy plus soft Dice on the rows with a mask; ``None`` when none has one.
        Reads ``parsing_fine`` (the mask rows only, see :meth:`fine_rows`) when the model gave it."""
        mask = target["mask"].long()
        keep = (mask != IGNORE).flatten(1).any(1)
        if not keep.any():
            return None
        logits = raw["parsing_fine"] if "parsing_fine" in raw else raw["parsing"][keep]
        if len(logits) != int(keep.sum()):
            raise FaceAnalysisError(f"parsing loss: {len(logits)} full-resolution maps for {int(keep.sum())} "
                                    "masked rows; pass fine_rows=ParsingTask.fine_rows(target) to the model")
        logits = F.interpolate(logits, size=mask.shape[-2:], mode="bilinear", align_corners=False)
        mask = mask[keep]
        w = None if self.class_weights is None else self.class_weights.to(logits.device)
        ce = F.cross_entropy(logits.float(), mask, weight=w, ignore_index=IGNORE)
        # soft Dice over classes present in the batch (helps thin and rare classes)
        valid = (mask != IGNORE).unsqueeze(1)
        prob = logits.float().softmax(1) * valid
        onehot = F.one_hot(mask.clamp(max=len(CLASSES) - 1), len(CLASSES)).permute(0, 3, 1, 2) * valid
        inter = (prob * onehot).sum((0, 2, 3))
        denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
        present = onehot.sum((0, 2, 3)) > 0
        dice = 1 - (2 * inter[present] + 1) / (denom[present] + 1)
        return ce + dice.mean()

    def metrics(self, pred, target):
        out = self.tag_metrics(pred["parsing"], target["tags"]) if "tags" in target else {}
        mask = target["mask"]
        keep = (mask != IGNORE).reshape(len(mask), -1).any(1)
        if not keep.any():
            return out
        # the model's own l_ / r_ choice: validation stays comparable across stages (to_face uses assign_sides)
        logits = torch.from_numpy(pred["parsing"][keep]).float()
        ids = F.interpolate(logits, size=mask.shape[-2:], mode="bilinear", align_corners=False).argmax(1).numpy()
        f1, iou, present = parsing_scores(ids, mask[keep], len(CLASSES))
        fg = present & (np.arange(len(CLASSES)) > 0)
        out = {**out, "mean_f1": float(f1[fg].mean() * 100), "miou": float(iou[fg].mean() * 100)}
        if "parsing_wide" in pred and "mask_wide" in target:  # the ring around the crop: pixel accuracy
            ring = target["mask_wide"][keep]
            wide = torch.from_numpy(pred["parsing_wide"][keep]).float()
            ids = F.interpolate(wide, size=ring.shape[-2:], mode="bilinear", align_corners=False).argmax(1).numpy()
            known = ring != IGNORE
            if known.any():
                out["ring_acc"] = float((ids[known] == ring[known]).mean() * 100)
        return out

    def tag_metrics(self, logits: np.ndarray, tags: np.ndarray) -> dict[str, float]:
        """How well the parsing maps find the tagged classes on images without masks: ROC AUC (%) of the
        :meth:`tag_loss` pooled probability against each tag, averaged over the classes with both worn and
        not-worn images (``tag_auc``). ``logits``: (N, 19, h, w); ``tags``: (N, 4), NaN = unknown."""
        from ..evaluation.metrics import roc_auc

        known = np.isfinite(tags)
        if not known.any():
            return {}
        rows = known.any(1)
        pooled = self.pooled_tag_probs(torch.from_numpy(np.ascontiguousarray(logits[rows]))).numpy()
        aucs = []
        for j in range(len(TAG_CLASSES)):
            ok = known[rows, j]
            y = tags[rows, j][ok] > 0.5
            if y.any() and not y.all():
                aucs.append(roc_auc(pooled[ok, j], y))
        return {"tag_auc": float(np.mean(aucs) * 100)} if aucs else {}

    def to_face(self, out, matrix, image_shape, pre: PreprocessConfig) -> dict[str, Any]:
        """The class-id mask over the face's region. With ``parsing_wide`` (``ModelConfig.parsing_field`` > 1) the
        region is the field around the crop, so hair, neck and cloth beyond the crop are labelled too."""
        fine = out["parsing"]  # (19, m, m): m = S/2, or S with parsing_stride 1
        wide = out.get("parsing_wide")
        field = parsing_field(out)
        logits = assign_sides(fine if wide is None else wide, pre, field)
        s = pre.input_size
        ring = (field - 1.0) / 2.0 * s  # crop pixels the field adds on each side
        h, w = image_shape
        inv = align.invert(matrix)
        corners = align.transform_points(
            np.array([[-ring, -ring], [s + ring, -ring], [-ring, s + ring], [s + ring, s + ring]], np.float32) - 0.5, inv)
        x0, y0 = np.floor(corners.min(0)).astype(int)
        x1, y1 = np.ceil(corners.max(0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            return {"parsing": ParsingMask(np.zeros((0, 0), np.uint8), (0, 0, 0, 0), field=field)}
        # image pixel -> logit-map pixel (the maps are k = m / S of the crop resolution, pixel centres aligned:
        # u = k (x + ring + 0.5) - 0.5; plus one replicated pixel of padding so the outer ring keeps its class)
        k = fine.shape[-1] / s
        to_map = np.array([[k, 0, k * (ring + 0.5) + 0.5], [0, k, k * (ring + 0.5) + 0.5]])
        shifted = align.compose(to_map, align.compose(matrix, np.array([[1.0, 0, x0], [0, 1.0, y0]])))
        padded = np.pad(logits, ((0, 0), (1, 1), (1, 1)), mode="edge")
        w_r, h_r = x1 - x0, y1 - y0
        f = min(1.0, MAX_MASK_SIDE / max(w_r, h_r))  # big faces: label a coarser grid, then upscale (nearest)
        if f < 1.0:
            gw, gh = max(1, round(w_r * f)), max(1, round(h_r * f))
            sx, sy = w_r / gw, h_r / gh
            grid_to_region = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5]])
            small = _argmax_warp(padded, align.compose(shifted, grid_to_region), (gw, gh))
            region = cv2.resize(small, (w_r, h_r), interpolation=cv2.INTER_NEAREST)
        else:
            region = _argmax_warp(padded, shifted, (w_r, h_r))
        return {"parsing": ParsingMask(region, (int(x0), int(y0), int(x1), int(y1)), field=field)}

    def draw(self, canvas, face, style=None):
        """Translucent class colours (background left alone) with soft class edges, fading out toward the
        border of the face's crop so the crop's straight edges never show."""
        from ..draw import face_style

        pm = face.parsing
        if pm is None or pm.mask.size == 0:
            return
        style = style or face_style(face)
        x0, y0, x1, y1 = pm.box
        w, h = x1 - x0, y1 - y0
        # work on a grid of at most MAX_MASK_SIDE px (big faces' masks are upscaled from one anyway), then
        # upsample the colour layer bilinearly: bounded cost and no blocky edges
        f = min(1.0, MAX_MASK_SIDE / max(w, h))
        gw, gh = max(1, round(w * f)), max(1, round(h * f))
        grid_to_region = np.array([[w / gw, 0, 0.5 * w / gw - 0.5], [0, h / gh, 0.5 * h / gh - 0.5]])
        mask = pm.mask if f == 1.0 else cv2.resize(pm.mask, (gw, gh), interpolation=cv2.INTER_NEAREST)
        layer = _DRAW_LUT[mask]  # premultiplied colour + opacity, background transparent
        fade = crop_fade(face.crop_matrix, face.keypoints5, (x0, y0), (gw, gh), grid_to_region, field=pm.field)
        if fade is not None:
            layer *= fade[..., None]
        layer = cv2.GaussianBlur(layer, (0, 0), max(0.6, style.size * f / 250.0))  # soft class edges
        alpha = np.ascontiguousarray(layer[..., 3])
        colour = (layer[..., :3] * (1.0 / np.maximum(alpha, 1e-6))[..., None] + 0.5).clip(0, 255).astype(np.uint8)
        if f < 1.0:
            colour = cv2.resize(colour, (w, h), interpolation=cv2.INTER_LINEAR)
            alpha = cv2.resize(alpha, (w, h), interpolation=cv2.INTER_LINEAR)
        region = canvas[y0:y1, x0:x1]
        region[:] = cv2.blendLinear(np.ascontiguousarray(region), colour, 1.0 - alpha, alpha)


def crop_fade(matrix: np.ndarray, keypoints5: np.ndarray, origin: tuple[int, int], size: tuple[int, int],
              grid_to_region: np.ndarray | None = None, feather: float = FEATHER,
              field: float = 1.0) -> np.ndarray | None:
    """Weights ``(H, W)`` = ``size[::-1]`` over an image region whose top-left pixel is ``origin``: 1 well
    inside the face's aligned crop widened to ``field`` x its side about its centre (the parsing field), easing to
    0 at that square's border over ``feather`` x the crop side (0 outside it). ``grid_to_region`` maps the output
    grid to region pixels when it is coarser. The crop side is read from how ``matrix`` maps ``keypoints5`` onto
    the alignment template; ``None`` when that fails."""
    m = np.asarray(matrix, np.float64)
    t = np.asarray(PreprocessConfig().template, np.float64)
    p = align.transform_points(np.asarray(keypoints5, np.float64), m).astype(np.float64) + 0.5
    side = float((p * t).sum() / (t * t).sum())
    if not np.isfinite(side) or side < 8 or side > 1e5 or min(size) < 1:
        return None
    ring = (field - 1.0) / 2.0 * side
    full = side + 2 * ring
    c = np.arange(int(np.ceil(full))) + 0.5  # field pixel centres, from the field's edge
    edge = np.minimum(c, full - c)
    ramp = np.clip(np.minimum(edge[:, None], edge[None, :]) / (feather * side), 0.0, 1.0)
    ramp = (ramp * ramp * (3.0 - 2.0 * ramp)).astype(np.float32)
    to_crop = align.compose(m, np.array([[1.0, 0.0, origin[0]], [0.0, 1.0, origin[1]]]))  # region px -> crop px
    to_crop = align.compose(np.array([[1.0, 0.0, ring], [0.0, 1.0, ring]]), to_crop)  # crop px -> field px
    if grid_to_region is not None:
        to_crop = align.compose(to_crop, grid_to_region)
    return cv2.warpAffine(ramp, to_crop, tuple(int(v) for v in size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
