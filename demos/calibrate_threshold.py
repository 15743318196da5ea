"""Pick the demo's gallery ``--match-threshold``: cosine similarity on LFW View-2 pairs from the data pack.

    python demos/calibrate_threshold.py --data-root ../shared/data [--weights W] [--folds 0 1]

Prints accuracy, true-accept rate and false-accept rate per threshold, the best-accuracy threshold and the
threshold with a 1 % false-accept rate. (LFW here is greyscale LFW-a; ~45 s per 2 folds on 2 CPU cores.)
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from faceanalysis import FaceAnalysisError, FaceAnalyzer


def similarities(data_root: Path, fa: FaceAnalyzer, folds: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity and same-person label of every pair in ``folds`` whose two photos have a face."""
    lfw = data_root / "lfw"
    if not (lfw / "pairs.csv").is_file():
        raise FaceAnalysisError(f"{lfw / 'pairs.csv'} not found: pass --data-root (the data pack)")
    rows = [r for r in csv.DictReader(open(lfw / "pairs.csv")) if int(r["fold"]) in folds]
    emb = {}
    for i in sorted({r["id1"] for r in rows} | {r["id2"] for r in rows}):
        faces = fa.analyze(lfw / "images" / f"{i}.jpg")
        if faces:
            emb[i] = max(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1])).embedding
    pairs = [(float(emb[r["id1"]] @ emb[r["id2"]]), int(r["same"])) for r in rows if r["id1"] in emb and r["id2"] in emb]
    s, y = np.array(pairs).T
    return s, y.astype(int)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--weights", default=None)
    p.add_argument("--backend", default="torch", choices=["torch", "onnx", "tflite"])
    p.add_argument("--folds", type=int, nargs="+", default=[0, 1])
    a = p.parse_args(argv)
    try:
        fa = FaceAnalyzer(weights=a.weights, backend=a.backend, tasks=["identity"])
        s, y = similarities(Path(a.data_root), fa, a.folds)
    except FaceAnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(s)} pairs ({y.sum()} same)\nthreshold  acc    TAR    FAR")
    for t in np.arange(0.2, 0.75, 0.05):
        print(f"{t:9.2f}  {((s >= t) == y).mean():.3f}  {(s[y == 1] >= t).mean():.3f}  {(s[y == 0] >= t).mean():.3f}")
    grid = np.arange(-1, 1, 0.005)
    best = grid[int(np.argmax([((s >= t) == y).mean() for t in grid]))]
    print(f"best-accuracy threshold {best:.3f}; 1% FAR threshold {np.quantile(s[y == 0], 0.99):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
