"""Running the bundled detector for evaluation: one face per image (the largest, most central one)."""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from ..detect import Detection, YuNetDetector


def pick_face(dets: list[Detection], shape: tuple[int, ...]) -> Detection | None:
    """The face maximising ``area * exp(-(d / 0.25)^2)``, ``d`` = distance of the box centre to the image
    centre / longer image side (the rule the data pack's teacher run used); ``None`` if there is none."""
    if not dets:
        return None
    h, w = shape[:2]
    centre = np.array([w / 2.0, h / 2.0])

    def score(d: Detection) -> float:
        x0, y0, x1, y1 = d.bbox
        dist = np.linalg.norm(np.array([(x0 + x1) / 2, (y0 + y1) / 2]) - centre) / max(h, w)
        return float((x1 - x0) * (y1 - y0) * np.exp(-((dist / 0.25) ** 2)))

    return max(dets, key=score)


def detect_rows(images: list[np.ndarray], desc: str, detector: YuNetDetector | None = None) -> np.ndarray:
    """``(N, 15)`` float32 rows in YuNet's layout (x, y, w, h, 5 x (x, y), score) of the picked face of
    each RGB image; all-NaN rows where no face is found."""
    det = detector or YuNetDetector()
    rows = np.full((len(images), 15), np.nan, np.float32)
    for i, im in enumerate(tqdm(images, desc=f"detect {desc}", leave=False, mininterval=2, unit="img")):
        d = pick_face(det.detect(im), im.shape)
        if d is not None:
            x0, y0, x1, y1 = d.bbox
            rows[i] = np.r_[x0, y0, x1 - x0, y1 - y0, d.kps5.reshape(-1), d.score]
    return rows


def rows_to_kps(rows: np.ndarray) -> np.ndarray:
    """``(N, 5, 2)`` key points of detection rows (NaN where none)."""
    return rows[:, 4:14].reshape(-1, 5, 2).astype(np.float32)
