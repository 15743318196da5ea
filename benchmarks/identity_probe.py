"""Where does the identity embedding lose the teacher? A linear-probe diagnostic (issue 10).

    python benchmarks/identity_probe.py [--weights W] [--data-root ../shared/data] [--train-n 9000] [--out docs/identity_probe.md]

For clean aligned crops of training and validation images (UTKFace + CelebA, the pack's stored SFace
embeddings as targets) it extracts the encoder's face tokens, the decoder's face tokens, the decoder's task
tokens and the model's own embedding, fits a ridge regression from each to the teacher embedding on the
training images and reports the cosine to the teacher on training and validation images. Reading:

- model embedding: train ~= validation  -> the model under-fits (not a data or overfitting problem);
- ridge from the token grids only slightly above the head -> the information is missing in the features
  (the encoder), not lost by the head.

Prints the table and writes it as Markdown. Costs about 5 minutes on 2 CPU threads (14k crops, 4 passes).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from faceanalysis.config import PreprocessConfig
from faceanalysis.data.batches import collate, make_sample
from faceanalysis.data.sources import load_source
from faceanalysis.preprocess import to_tensor
from faceanalysis.tasks import get_tasks
from faceanalysis.weights import DEFAULT_WEIGHTS, file_sha256, load_model

FEATURES = ("encoder face tokens (flattened)", "decoder face tokens (flattened)", "decoder task tokens (flattened)",
            "model embedding")


def features(model, name: str, split: str, n: int, root: str, pre: PreprocessConfig):
    """(list of (N, D) feature arrays in FEATURES order, (N, 128) unit teacher embeddings) for ``n`` crops."""
    tasks = get_tasks(("identity",))
    src = load_source(name, split, root)
    idx = np.sort(np.random.default_rng(0).permutation(len(src))[:n])
    crops, tg = collate([make_sample(src, int(i), tasks, pre, None, None) for i in idx], tasks)
    t = tg["identity"]["embedding"]
    parts: list[list[np.ndarray]] = [[] for _ in FEATURES]
    with torch.no_grad():
        for i in range(0, len(crops), 128):
            x = to_tensor(crops[i:i + 128], pre)
            face, _ = model.encoder(x)
            b = face.shape[0]
            tok, dec = model.decoder(model.task_tokens.expand(b, -1, -1), face, model.task_tokens, model.image_pe)
            emb = model(x, tasks=["identity"])["embedding"]
            for p, v in zip(parts, (face, dec, tok, emb)):
                p.append(v.reshape(b, -1).numpy())
    keep = np.isfinite(t).all(1)
    t = t[keep] / np.linalg.norm(t[keep], axis=1, keepdims=True)
    return [np.concatenate(p)[keep] for p in parts], t


def ridge_cos(x: np.ndarray, y: np.ndarray, xv: np.ndarray, yv: np.ndarray, lam: float) -> tuple[float, float]:
    """Ridge regression x -> y (standardised features, dual form when D > N); mean cosine on train and val."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x, xv = ((x - mu) / sd).astype(np.float32), ((xv - mu) / sd).astype(np.float32)
    if x.shape[1] > x.shape[0]:
        w = x.T @ np.linalg.solve(x @ x.T + lam * np.eye(len(x), dtype=np.float32), y)
    else:
        w = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1], dtype=np.float32), x.T @ y)

    def cos(a, b):
        p = a @ w
        return float((p / np.linalg.norm(p, axis=1, keepdims=True) * b).sum(1).mean())
    return cos(x, y), cos(xv, yv)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--train-n", type=int, default=9000, help="UTKFace training crops (CelebA: 5/9 of it)")
    ap.add_argument("--val-n", type=int, default=1000, help="validation crops per dataset")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="docs/identity_probe.md")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    model, cfg = load_model(a.weights)
    pre = cfg.preprocess
    t0 = time.time()
    tr = [features(model, "utkface", "train", a.train_n, a.data_root, pre),
          features(model, "celeba_attr", "train", a.train_n * 5 // 9, a.data_root, pre)]
    va = [features(model, "utkface", "val", a.val_n, a.data_root, pre),
          features(model, "celeba_attr", "val", a.val_n, a.data_root, pre)]
    xt = [np.concatenate([p[0][k] for p in tr]) for k in range(len(FEATURES))]
    yt = np.concatenate([p[1] for p in tr])
    xv = [np.concatenate([p[0][k] for p in va]) for k in range(len(FEATURES))]
    yv = np.concatenate([p[1] for p in va])
    rows = []
    own = lambda e, y: float((e / np.linalg.norm(e, axis=1, keepdims=True) * y).sum(1).mean())  # noqa: E731
    rows.append(("model embedding, as trained (no fit)", 128, "-", own(xt[3], yt), own(xv[3], yv)))
    for name, x, v in zip(FEATURES, xt, xv):
        for lam in (1e3, 1e4):
            rows.append((f"ridge from {name}", x.shape[1], f"{lam:g}", *ridge_cos(x, yt, v, yv, lam)))
    lines = [
        "# Identity linear probe: cosine to the SFace teacher (generated by `benchmarks/identity_probe.py`)", "",
        f"Weights `{Path(a.weights).name}` (sha256 {file_sha256(a.weights)[:12]}); {len(yt)} training crops (UTKFace + "
        f"CelebA train), {len(yv)} validation crops (their val splits); clean aligned crops, the pack's stored SFace "
        f"embeddings as targets; {time.time() - t0:.0f} s on {a.threads} threads.", "",
        "| features | dims | ridge lambda | train cos | validation cos |", "|---|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.3f} | {r[4]:.3f} |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
