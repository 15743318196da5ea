"""LFW View-2 loader (the data pack's ``lfw/``: LFW-a greyscale 160x160 crops, 6,000 pairs in 10 folds).

Key points come from the bundled detector (which retries with a padded border); where it finds no face
the crop is aligned with :data:`LFW_FIXED_KPS5`, a fixed transform: the median detector key points over
a 1-in-25 sample of the pack's LFW crops (309 images, all detected). The number of such fallbacks is
reported with the results.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..data.sources import _read_csv
from ..errors import FaceAnalysisError
from .detection import detect_rows, rows_to_kps

LFW_FIXED_KPS5 = np.array([[51.04, 66.63], [101.43, 64.59], [76.42, 92.01], [57.26, 113.70], [99.47, 112.89]],
                          np.float32)


@dataclass
class LfwPairs:
    """Images referenced by the selected pairs, their detections and the pairs (indices into ``ids``)."""

    ids: list[str]
    images: list[np.ndarray]  # RGB uint8 (grey replicated)
    det_rows: np.ndarray  # (N, 15) YuNet layout, fallback rows where ``detected`` is False
    kps5: np.ndarray  # (N, 5, 2)
    detected: np.ndarray  # (N,) bool
    fold: np.ndarray  # (P,)
    i1: np.ndarray  # (P,)
    i2: np.ndarray  # (P,)
    same: np.ndarray  # (P,) bool


def select_pairs(fold: np.ndarray, same: np.ndarray, limit: int | None) -> np.ndarray:
    """Indices of the pairs to use: all, or for ``limit`` about ``limit`` pairs spread over every fold
    (at least one genuine and one impostor pair per fold)."""
    if limit is None:
        return np.arange(len(fold))
    per = max(1, int(round(limit / (2 * len(np.unique(fold))))))
    keep = []
    for k in np.unique(fold):
        for s in (True, False):
            keep.extend(np.where((fold == k) & (same == s))[0][:per].tolist())
    return np.array(sorted(keep), np.int64)


def load_lfw(root: str | Path, limit: int | None = None) -> LfwPairs:
    """Load the View-2 pairs (optionally a ``limit``-ed subset) and detect every referenced face."""
    base = Path(root) / "lfw"
    if not base.is_dir():
        raise FaceAnalysisError(f"LFW folder not found at {base}; pass --data-root pointing at the data pack "
                                "(the folder holding lfw/pairs.csv and lfw/labels.csv)")
    labels = _read_csv(base / "labels.csv", ["id", "identity", "path"])
    pairs = _read_csv(base / "pairs.csv", ["fold", "id1", "id2", "same"])
    path_of = {r["id"]: base / r["path"] for r in labels}
    try:
        fold = np.array([int(r["fold"]) for r in pairs])
        same = np.array([int(r["same"]) for r in pairs]).astype(bool)
    except ValueError as err:
        raise FaceAnalysisError(f"{base / 'pairs.csv'} is malformed: fold/same must be integers ({err})") from err
    missing = sorted({r[c] for r in pairs for c in ("id1", "id2")} - set(path_of))
    if missing:
        raise FaceAnalysisError(f"{base / 'pairs.csv'} refers to {len(missing)} id(s) missing from labels.csv, "
                                f"e.g. {missing[:3]}")
    sel = select_pairs(fold, same, limit)
    ids = sorted({pairs[i][c] for i in sel for c in ("id1", "id2")})
    index = {k: j for j, k in enumerate(ids)}
    images = []
    for k in tqdm(ids, desc="decode lfw", leave=False, mininterval=2, unit="img"):
        g = cv2.imread(str(path_of[k]), cv2.IMREAD_GRAYSCALE)
        if g is None:
            raise FaceAnalysisError(f"cannot read LFW image {path_of[k]} (missing or corrupt)")
        images.append(np.ascontiguousarray(np.repeat(g[:, :, None], 3, 2)))
    rows = detect_rows(images, "lfw")
    detected = np.isfinite(rows).all(1)
    fb = _fallback_row()
    rows[~detected] = fb
    return LfwPairs(ids=ids, images=images, det_rows=rows, kps5=rows_to_kps(rows), detected=detected,
                    fold=fold[sel], i1=np.array([index[pairs[i]["id1"]] for i in sel], np.int64),
                    i2=np.array([index[pairs[i]["id2"]] for i in sel], np.int64), same=same[sel])


def _fallback_row() -> np.ndarray:
    """A YuNet-layout row for the fixed transform (box around the key points, score 0)."""
    k = LFW_FIXED_KPS5
    c = k.mean(0)
    side = 2.2 * np.linalg.norm(k[1] - k[0])
    return np.r_[c - side / 2, side, side, k.reshape(-1), 0.0].astype(np.float32)
