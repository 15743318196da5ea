"""Where the full-image parsing errors are: the shipped-style score next to three oracles, on a celebamask_mini split.

    python weights/parsing_oracle.py val faceanalysis/assets/faceanalysis_s128.safetensors

Scores the weights as ``faceanalysis eval`` does (the pack's key points, alignment, ``to_face``, masks at 256 px), then
the same predictions with the ground truth pasted in where an oracle knows it:

- ``ring oracle``: the true classes outside the aligned crop (what a perfect context ring would give);
- ``crop oracle``: the true classes inside the crop (what a perfect crop map would give);
- ``map-resolution oracle``: the true mask itself, area-averaged onto the model's logit grid (the crop's maps at
  half the crop's resolution, the field at ``ModelConfig.parsing_field``) and mapped back through ``to_face``:
  the ceiling of maps of that resolution, whatever the model.

Use the ``val`` split for decisions (50 held-out masks); prints one JSON line per score (mean F1 over the
non-background classes present, %, and each class's F1).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faceanalysis._lazy import exit_without_torch

exit_without_torch("parsing_oracle")  # one line, not a traceback, without torch

import faceanalysis._compat  # noqa: F401, E402  (torch import order)
import cv2
import numpy as np

from faceanalysis import FaceAnalyzer, align
from faceanalysis.data.sources import default_data_root, load_source
from faceanalysis.errors import FaceAnalysisError, run_command
from faceanalysis.evaluation.protocols import predict, to_faces
from faceanalysis.tasks.parsing import CLASSES, ParsingTask, parsing_field, parsing_scores


def crop_area(matrix: np.ndarray, shape: tuple[int, int], size: int) -> np.ndarray:
    """Boolean ``shape`` mask of the image pixels inside the aligned crop that ``matrix`` (image -> crop) cuts."""
    corners = align.transform_points(np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float32) - 0.5,
                                     align.invert(matrix))
    out = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(out, np.round(corners).astype(np.int32), 1)
    return out.astype(bool)


def grid_truth(mask: np.ndarray, matrix: np.ndarray, size: int, field: float, k: int) -> dict[str, np.ndarray]:
    """The true ``mask`` as log-probability maps on the model's grid: each class's area share of each map pixel
    (the crop's maps at 1/``k`` of the crop's resolution, the field ``field`` crop sides wide)."""
    r = int(round((field - 1.0) / 2.0 * size))
    side = size + 2 * r
    m = align.compose(np.array([[1.0, 0, r], [0, 1.0, r]]), matrix)
    onehot = np.stack([cv2.warpAffine((mask == c).astype(np.float32), m, (side, side), flags=cv2.INTER_LINEAR,
                                      borderValue=1.0 if c == 0 else 0.0) for c in range(len(CLASSES))])
    share = onehot.reshape(len(CLASSES), side // k, k, side // k, k).mean((2, 4))
    logits = np.log(share + 1e-3).astype(np.float32)
    out = {"parsing": logits[:, r // k:(r + size) // k, r // k:(r + size) // k]}
    if field != 1.0:
        out["parsing_wide"] = logits
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("split", choices=("train", "val", "test"), help="the celebamask_mini split (decisions use val)")
    p.add_argument("weights", type=Path, help="weights file (safetensors, config embedded)")
    p.add_argument("--data-root", default=str(default_data_root()), help="the data pack")
    a = p.parse_args(argv)
    if not a.weights.is_file():
        raise FaceAnalysisError(f"{a.weights}: no such weights file")
    src = load_source("celebamask_mini", a.split, a.data_root)
    gt = np.stack(src.masks)
    fa = FaceAnalyzer(weights=a.weights, tasks=["parsing"])
    out, mats = predict(fa, src.images, src.kps5, "cm")
    faces = to_faces(fa, "parsing", out, mats, [m.shape[:2] for m in src.masks])
    pred = np.stack([f["parsing"].full(m.shape[:2]) for f, m in zip(faces, src.masks)])
    size = fa.pre.input_size
    inside = np.stack([crop_area(m, g.shape, size) for m, g in zip(mats, gt)])
    field = parsing_field({k: v[0] for k, v in out.items()})
    k = size // out["parsing"].shape[-1]
    task = ParsingTask()
    grid = np.stack([task.to_face(grid_truth(g, m, size, field, k), m, g.shape, fa.pre)["parsing"].full(g.shape)
                     for m, g in zip(mats, gt)])
    lab = gt > 0
    print(json.dumps({"labelled_pixels_outside_crop_pct": round(float((lab & ~inside).sum() / lab.sum() * 100), 2)}))
    for name, p_ in (("model", pred), ("ring oracle", np.where(inside, pred, gt)),
                     ("crop oracle", np.where(inside, gt, pred)), ("map-resolution oracle", grid)):
        f1, iou, present = parsing_scores(p_, gt, len(CLASSES))
        fg = present & (np.arange(len(CLASSES)) > 0)
        print(json.dumps({"score": name, "split": a.split, "mean_f1": round(float(f1[fg].mean() * 100), 2),
                          "f1": {c: round(float(v) * 100, 1) for c, v, u in zip(CLASSES, f1, present) if u}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_command("parsing_oracle", main))
