"""Full-image parsing scores on a celebamask_mini split for several weights files, as faceanalysis eval scores them.

The path ``faceanalysis eval`` takes: the pack's detector keypoints, alignment, ``to_face``, masks scored at 256 px.

    python weights/parsing_val.py val faceanalysis/assets/faceanalysis_s128.safetensors runs/stage22/candidate_ema.safetensors

Selection rules use the ``val`` split (50 held-out masks, never trained on); ``test`` is for the one read after a
choice. Prints one JSON line per weights file: mean F1 and mIoU over the non-background classes present (%), and
each class's F1.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from faceanalysis._lazy import exit_without_torch

exit_without_torch("parsing_val")  # one line, not a traceback, without torch

import faceanalysis._compat  # noqa: F401, E402  (torch import order)
import numpy as np

from faceanalysis import FaceAnalyzer
from faceanalysis.data.sources import default_data_root, load_source
from faceanalysis.errors import FaceAnalysisError, run_command
from faceanalysis.evaluation.protocols import predict, to_faces
from faceanalysis.tasks.parsing import CLASSES, parsing_scores


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("split", choices=("train", "val", "test"), help="the celebamask_mini split (rules use val)")
    p.add_argument("weights", nargs="+", type=Path, help="weights files (safetensors, config embedded)")
    p.add_argument("--data-root", default=str(default_data_root()), help="the data pack")
    a = p.parse_args(argv)
    for w in a.weights:
        if not w.is_file():
            raise FaceAnalysisError(f"{w}: no such weights file")
    src = load_source("celebamask_mini", a.split, a.data_root)
    gt = np.stack(src.masks)
    for w in a.weights:
        fa = FaceAnalyzer(weights=w, tasks=["parsing"])
        out, mats = predict(fa, src.images, src.kps5, "cm")
        faces = to_faces(fa, "parsing", out, mats, [m.shape[:2] for m in src.masks])
        pred = np.stack([f["parsing"].full(m.shape[:2]) for f, m in zip(faces, src.masks)])
        f1, iou, present = parsing_scores(pred, gt, len(CLASSES))
        fg = present & (np.arange(len(CLASSES)) > 0)
        print(json.dumps({"weights": str(w), "split": a.split, "mean_f1": round(float(f1[fg].mean() * 100), 2),
                          "miou": round(float(iou[fg].mean() * 100), 2),
                          "f1": {c: round(float(v) * 100, 1) for c, v, u in zip(CLASSES, f1, present) if u}}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_command("parsing_val", main))
