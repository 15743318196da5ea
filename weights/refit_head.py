"""Refit the expression head's last layer on frozen features, at a chosen FER2013 / FER+ target mix:

    python weights/refit_head.py runs/stage18/candidate_ema.safetensors --vote-weights 0.5,0.6,0.75 \
        --data-root ../shared/data --threads 2

The expression head is an MLP on the expression token; its last ``Linear`` (384 -> 7) turns the token's features into
the class logits. This script runs the frozen model once over the FER2013 Training images (aligned crops, no
augmentation) and the PublicTest images (validation), then fits that layer alone by soft-target cross-entropy
(L-BFGS, from its trained values, a little L2 toward them) for each ``--vote-weights`` value ``w``: targets
``(1 - w) * onehot(FER2013 label) + w * FER+ votes``, as :class:`faceanalysis.tasks.expression.ExpressionTask`.
Everything else in the weights is untouched, so every other output is bit-identical.

Why: a training stage's target mix (``vote_weight``) moves the whole model, and the FER2013 and FER+ label sets pull
the expression decision opposite ways (they agree on 63 % of PublicTest); refitting the last layer picks the point of
that trade on validation without another training run. Prints, for each ``w``, PublicTest accuracy against the
FER2013 labels and against the FER+ majority (tied votes left out), for the input weights too, and writes
``OUT_DIR/<stem>_vw<NN>.safetensors`` (fp16, config embedded, ``extra["expression_head_refit"]`` recording how).
Test splits are never read.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
from pathlib import Path

from faceanalysis._lazy import exit_without_torch

exit_without_torch("refit_head")  # one line, not a traceback, without torch

import faceanalysis._compat  # noqa: F401, E402  (torch import order)
import numpy as np
import torch
from tqdm import tqdm

from faceanalysis.config import PreprocessConfig
from faceanalysis.data.batches import collate, make_sample
from faceanalysis.data.sources import load_source
from faceanalysis.errors import FaceAnalysisError, run_command
from faceanalysis.model import FaceModel
from faceanalysis.preprocess import to_tensor
from faceanalysis.tasks import get_tasks
from faceanalysis.weights import load_model, save_weights


def _crops_and_targets(src, pre: PreprocessConfig) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    tasks = get_tasks(["expression"])
    samples = [make_sample(src, i, tasks, pre, None, None)
               for i in tqdm(range(len(src)), desc=f"crops {src.name}", leave=False, mininterval=2)]
    crops, targets = collate(samples, tasks)
    return crops, targets["expression"]


def features(model: FaceModel, crops: np.ndarray, pre: PreprocessConfig, batch: int = 256) -> np.ndarray:
    """``(N, H)`` inputs of the expression head's last Linear (the frozen model's features) for uint8 crops."""
    last = model.heads["expression"].mlp.layers[-1]
    got: list[torch.Tensor] = []
    hook = last.register_forward_hook(lambda m, inp, out: got.append(inp[0].detach().float()))
    try:
        with torch.no_grad():
            for i in tqdm(range(0, len(crops), batch), desc="features", leave=False, mininterval=2):
                model(to_tensor(crops[i:i + batch], pre), tasks=["expression"], raw=True)
    finally:
        hook.remove()
    return torch.cat(got).numpy()


def soft_targets(t: dict[str, np.ndarray], w: float) -> np.ndarray:
    """The expression task's training target at vote weight ``w`` (:meth:`ExpressionTask.target_probs`)."""
    task = copy.copy(get_tasks(["expression"])[0])
    task.vote_weight = w
    return task.target_probs({k: torch.from_numpy(np.asarray(v)) for k, v in t.items()}).numpy()


def accuracies(logits: np.ndarray, t: dict[str, np.ndarray]) -> dict[str, float]:
    """PublicTest accuracy against the FER2013 labels and the FER+ majority (ties left out), in %: the expression
    task's validation metrics."""
    m = get_tasks(["expression"])[0].metrics({"expression": logits}, t)
    return {"acc_fer2013": m["acc_fer2013"], "acc_ferplus": m["acc_ferplus"]}


def fit_last_layer(x: np.ndarray, y: np.ndarray, weight: torch.Tensor, bias: torch.Tensor, l2: float,
                   iters: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-target cross-entropy on features ``x`` (N, H) and targets ``y`` (N, 7), from ``weight`` / ``bias``,
    plus ``l2`` x the squared distance to them (L-BFGS with strong-Wolfe line search)."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    w0, b0 = weight.detach().float().clone(), bias.detach().float().clone()
    w, b = w0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=iters, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logp = torch.log_softmax(xt @ w.T + b, -1)
        loss = -(yt * logp).sum(-1).mean() + l2 * (((w - w0) ** 2).sum() + ((b - b0) ** 2).sum())
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0].rstrip(":") + ".")
    p.add_argument("weights", type=Path, help="a weights file (safetensors, config embedded)")
    p.add_argument("--vote-weights", default="0.5", metavar="W[,W...]", help="FER+ share(s) of the target, 0..1")
    p.add_argument("--l2", type=float, default=1e-3, help="pull toward the trained layer (default 1e-3)")
    p.add_argument("--out-dir", type=Path, default=Path("runs/expression_refit"),
                   help="where to write the refitted weights (default runs/expression_refit: never the weights' own "
                        "folder, which for the shipped weights is the package's assets)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of each split (quick checks)")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    try:
        vws = [float(v) for v in a.vote_weights.split(",")]
    except ValueError:
        vws = []
    if not vws or not all(0 <= v <= 1 for v in vws):
        raise FaceAnalysisError(f"--vote-weights {a.vote_weights!r}: expected numbers between 0 and 1, e.g. 0.5,0.6")
    if not a.weights.is_file():
        raise FaceAnalysisError(f"{a.weights}: no such weights file")
    model, cfg = load_model(a.weights)
    if "expression" not in cfg.model.tasks:
        raise FaceAnalysisError(f"{a.weights} has no expression head")
    pre = PreprocessConfig(input_size=cfg.model.input_size)

    if a.limit is not None and a.limit < 10:
        raise FaceAnalysisError(f"--limit {a.limit}: give at least 10 images")
    srcs = [load_source("fer2013", split, a.data_root) for split in ("Training", "PublicTest")]
    if a.limit is not None:
        srcs = [s.subset(np.arange(min(a.limit, len(s)))) for s in srcs]
    (train_crops, train_t), (val_crops, val_t) = (_crops_and_targets(s, pre) for s in srcs)
    x_train, x_val = features(model, train_crops, pre), features(model, val_crops, pre)
    last = model.heads["expression"].mlp.layers[-1]
    keep = train_t["weight"] >= 1
    rows = {"input": accuracies(x_val @ last.weight.detach().float().numpy().T + last.bias.detach().float().numpy(),
                                val_t)}
    out_dir = a.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    for vw in vws:
        w, b = fit_last_layer(x_train[keep], soft_targets(train_t, vw)[keep], last.weight, last.bias, a.l2)
        rows[f"vote_weight {vw:g}"] = accuracies(x_val @ w.numpy().T + b.numpy(), val_t)
        with torch.no_grad():
            refit = FaceModel(cfg.model)
            refit.load_state_dict(model.state_dict())
            refit.heads["expression"].mlp.layers[-1].weight.copy_(w)
            refit.heads["expression"].mlp.layers[-1].bias.copy_(b)
        extra = dict(cfg.extra)
        extra["expression_head_refit"] = {"from": str(a.weights), "vote_weight": vw, "l2": a.l2,
                                          "data": "fer2013 Training, no augmentation",
                                          "publictest": rows[f"vote_weight {vw:g}"]}
        path = out_dir / f"{a.weights.stem}_vw{round(vw * 100):02d}.safetensors"
        save_weights(refit, dataclasses.replace(cfg, extra=extra), path)
        print(f"wrote {path}", file=sys.stderr)
    print("| head | PublicTest, FER2013 labels (%) | PublicTest, FER+ majority (%) |")
    print("|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['acc_fer2013']:.2f} | {r['acc_ferplus']:.2f} |")
    (out_dir / f"{a.weights.stem}_refit.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(run_command("refit_head", main))
