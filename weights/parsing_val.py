"""Full-image parsing scores on a ``celebamask_mini`` split for several weights files, by the path
``faceanalysis eval`` takes (detector keypoints from the pack, alignment, ``to_face``, masks scored at 256 px):

    python weights/parsing_val.py val faceanalysis/assets/faceanalysis_s128.safetensors runs/stage22/candidate_ema.safetensors

Selection rules use the ``val`` split (50 held-out masks, never trained on); ``test`` is for the one read after a
choice. Prints one JSON line per weights file: mean F1 and mIoU over the non-background classes present (%), and
each class's F1.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import faceanalysis._compat  # noqa: F401  (torch import order)
import numpy as np

from faceanalysis import FaceAnalyzer
from faceanalysis.data.sources import load_source
from faceanalysis.errors import FaceAnalysisError, run_command
from faceanalysis.evaluation.protocols import predict, to_faces
from faceanalysis.tasks.parsing import CLASSES, parsing_scores


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] not in ("train", "val", "test"):
        raise FaceAnalysisError("usage: parsing_val.py {train,val,test} WEIGHTS [WEIGHTS ...]")
    split, paths = argv[0], argv[1:]
    src = load_source("celebamask_mini", split, Path("../shared/data"))
    gt = np.stack(src.masks)
    for p in paths:
        if not Path(p).is_file():
            raise FaceAnalysisError(f"{p}: no such weights file")
        fa = FaceAnalyzer(weights=p, tasks=["parsing"])
        out, mats = predict(fa, src.images, src.kps5, "cm")
        faces = to_faces(fa, "parsing", out, mats, [m.shape[:2] for m in src.masks])
        pred = np.stack([f["parsing"].full(m.shape[:2]) for f, m in zip(faces, src.masks)])
        f1, iou, present = parsing_scores(pred, gt, len(CLASSES))
        fg = present & (np.arange(len(CLASSES)) > 0)
        print(json.dumps({"weights": p, "split": split, "mean_f1": round(float(f1[fg].mean() * 100), 2),
                          "miou": round(float(iou[fg].mean() * 100), 2),
                          "f1": {c: round(float(v) * 100, 1) for c, v, u in zip(CLASSES, f1, present) if u}}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run_command("parsing_val", main))
