"""Refit the identity head on frozen features, each training face seen as itself and as its mirror image.

    python weights/refit_identity_head.py faceanalysis/assets/faceanalysis_s128.safetensors --data-root ../shared/data
    python weights/refit_identity_head.py WEIGHTS --branch 2 --epochs 3 --batch 256 --lr 2e-4 --threads 2  # stage 23

The identity head is an MLP (``VectorHead``: the identity token joined with the mean of the face tokens, 384 -> 384
-> 128) whose output, L2-normalised, is the embedding. During the training stages it chased features that moved
under it (every task trains the shared encoder) and saw one randomly mirrored view per step. This script runs the
frozen model once over the training splits that carry SFace teacher embeddings (UTKFace, CelebA; ``celeba_more``
train is read too and skipped while the pack has no teacher labels for it; aligned crops, no other augmentation)
and their mirror images, stores the head's inputs, and then fits the head alone on them with the identity task's own
distillation loss (:meth:`IdentityTask.distillation_loss`: cosine to the teacher, the batch's relational term and
the bank term over every training teacher embedding), the mirror view's target being the teacher embedding of the
unmirrored face (a person's identity does not change in a mirror), from the trained weights with ``--l2`` pull toward
them. AdamW, ``--epochs`` passes.

Validation (never test): after each epoch, one-pass embeddings of the clean validation crops give the cosine to
the teacher (UTKFace + CelebA val) and all-pairs verification on ``celeba_more`` val, 33 people who occur nowhere
in training (best-threshold accuracy and TAR@FAR=1e-2, :func:`faceanalysis.tasks.identity._pair_metrics`, the
trainer's validation metrics). The epoch with the highest unseen-people TAR@FAR=1e-2 is kept and written as
``OUT_DIR/<stem>_idrefit.safetensors`` (fp16, config embedded, ``extra["identity_head_refit"]`` recording how);
every other tensor is copied, so every other output is bit-identical. Prints a Markdown table of each epoch and
writes it to ``OUT_DIR/<stem>_idrefit.json``; the weights of the best epoch so far are written after each epoch, so an
interrupted run keeps them. An existing output is replaced only with ``--overwrite``.

``--branch K`` (stage 23) fits more than the head: the weights grow an identity branch (``ModelConfig.identity_branch``
K, ``faceanalysis/model/identity_branch.py``: identity's own copy of the encoder's last K ViT blocks and of the two-way
decoder, starting equal to the shared ones, so the grown model answers exactly as its input), the cached features are
the frozen trunk's tokens where the branch forks off (``(T, D)`` float16 per view: 1.3 GB for the 53,910 training
views), and the branch and the head are fitted together on them. Written as ``OUT_DIR/<stem>_idbranch.safetensors`` /
``.json`` (``extra["identity_branch_refit"]``); every tensor outside ``identity_branch`` and ``heads.identity`` is
copied, so every other output is bit-identical. 15 min per epoch on 2 threads of an AVX2 CPU (K = 2, batch 256).
``--branch-tokens identity`` (stage 26) makes the branch's decoder carry the identity token alone
(``ModelConfig.identity_branch_tokens``): the same tensors, less work per face, refitted the same way.

Outputs go to ``--out-dir`` (default ``runs/identity_refit``, never the weights' own folder, which for the shipped
weights is the package's assets).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from faceanalysis._lazy import exit_without_torch

exit_without_torch("refit_identity_head")  # one line, not a traceback, without torch

import faceanalysis._compat  # noqa: F401, E402  (torch import order)
import numpy as np
import torch
from tqdm import tqdm

from faceanalysis.config import PreprocessConfig
from faceanalysis.data.batches import collate, make_sample
from faceanalysis.data.sources import default_data_root, load_source
from faceanalysis.errors import FaceAnalysisError, run_command
from faceanalysis.model import FaceModel
from faceanalysis.preprocess import to_tensor
from faceanalysis.tasks import HeadInputs, get_tasks
from faceanalysis.tasks.identity import _pair_metrics
from faceanalysis.train import _init_from
from faceanalysis.weights import load_model, save_weights

TRAIN = (("utkface", "train"), ("celeba_attr", "train"), ("celeba_more", "train"))
VAL_TEACHER = (("utkface", "val"), ("celeba_attr", "val"))
VAL_UNSEEN = ("celeba_more", "val")


def crops_and_targets(src, pre: PreprocessConfig) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Aligned uint8 crops ``(N, S, S, 3)`` of every image of ``src`` (no augmentation) and their identity targets
    (``embedding`` (N, 128), NaN rows where the teacher failed; ``label`` (N,), NaN where unknown)."""
    tasks = get_tasks(["identity"])
    samples = [make_sample(src, i, tasks, pre, None, None)
               for i in tqdm(range(len(src)), desc=f"crops {src.name}", leave=False, mininterval=2)]
    crops, targets = collate(samples, tasks)
    return crops, targets["identity"]


def head_inputs(model: FaceModel, crops: np.ndarray, pre: PreprocessConfig, flip: bool = False,
                batch: int = 128) -> np.ndarray:
    """``(N, 2 * D)`` inputs of the identity head's MLP (identity token and mean face token) for uint8 crops;
    ``flip``: of their mirror images."""
    mlp = model.heads["identity"].mlp
    got: list[torch.Tensor] = []
    hook = mlp.register_forward_pre_hook(lambda m, inp: got.append(inp[0].detach().float()))
    try:
        with torch.no_grad():
            for i in tqdm(range(0, len(crops), batch), desc="features" + (" (mirrored)" if flip else ""),
                          leave=False, mininterval=5):
                x = to_tensor(crops[i:i + batch], pre)
                model(torch.flip(x, dims=[-1]) if flip else x, tasks=["identity"], raw=True)
    finally:
        hook.remove()
    return torch.cat(got).numpy()


def branch_inputs(model: FaceModel, crops: np.ndarray, pre: PreprocessConfig, flip: bool = False,
                  batch: int = 128) -> np.ndarray:
    """``(N, T, D)`` float16 face tokens where the identity branch forks off the shared encoder (``--branch``), for
    uint8 crops; ``flip``: of their mirror images."""
    got: list[np.ndarray] = []
    with torch.no_grad():
        for i in tqdm(range(0, len(crops), batch), desc="trunk" + (" (mirrored)" if flip else ""), leave=False,
                      mininterval=5):
            x = to_tensor(crops[i:i + batch], pre)
            got.append(model.encoder.trunk(torch.flip(x, dims=[-1]) if flip else x, model.fork)[0].half().numpy())
    return np.concatenate(got)


class BranchEmbedding(torch.nn.Module):
    """The identity branch and head as one module: fork tokens ``(B, T, D)`` -> raw embeddings ``(B, E)``; the
    task tokens and image position embeddings it reads are the shared model's, frozen (buffers here)."""

    def __init__(self, model: FaceModel) -> None:
        super().__init__()
        self.branch = copy.deepcopy(model.identity_branch).float()
        self.head = copy.deepcopy(model.heads["identity"]).float()
        self.register_buffer("task_tokens", model.task_tokens.detach().clone().float())
        self.register_buffer("image_pe", model.image_pe.detach().clone().float())

    def forward(self, mid: torch.Tensor) -> torch.Tensor:
        token, face = self.branch(mid.float(), self.task_tokens, self.image_pe)
        return self.head(HeadInputs(tokens=token, image=face, pixels=None))


def embed(mlp: torch.nn.Module, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """L2-normalised embeddings ``(N, E)`` of head (or branch) inputs ``x``."""
    with torch.no_grad():
        return np.concatenate([torch.nn.functional.normalize(mlp(torch.from_numpy(x[i:i + batch])), dim=-1).numpy()
                               for i in range(0, len(x), batch)])


def validate(mlp: torch.nn.Module, val: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]) -> dict[str, float]:
    """Teacher cosine on the teacher-labelled validation sets and unseen-people verification on ``celeba_more``."""
    out: dict[str, float] = {}
    cos = []
    for name, (x, t) in val.items():
        e = embed(mlp, x)
        if name == VAL_UNSEEN[0]:
            m = _pair_metrics(e, t["label"])
            out["unseen_pair_acc"], out["unseen_tar_far1e-2"] = m["pair_acc"], m["tar_far1e-2"]
            continue
        keep = np.isfinite(t["embedding"]).all(1)
        te = t["embedding"][keep] / np.linalg.norm(t["embedding"][keep], axis=1, keepdims=True)
        cos.append((e[keep] * te).sum(1))
    out["teacher_cos"] = float(np.concatenate(cos).mean())
    return out


def fit_head(mlp: torch.nn.Module, x: torch.Tensor, target: torch.Tensor, task, *, epochs: int, lr: float,
             batch: int, l2: float, on_epoch=None) -> list[float]:
    """Fit ``mlp`` (in place) on head inputs ``x`` (N, H) to teacher embeddings ``target`` (N, E) with ``task``'s
    distillation loss plus ``l2`` x the squared distance to the starting weights; AdamW with a one-cycle schedule
    peaking at ``lr``. Calls ``on_epoch(epoch, mean_loss)`` after each epoch (the head in eval mode); returns the
    epochs' mean losses."""
    init = {k: v.detach().clone() for k, v in mlp.state_dict().items()}
    opt = torch.optim.AdamW(mlp.parameters(), lr=lr, weight_decay=0.0)
    n = len(x)
    per_epoch = max(1, n // batch)
    total = epochs * per_epoch
    warm = max(0.1, 2.0 / total)  # OneCycleLR divides by its warm-up length in steps - 1: keep that >= 1
    sched = (torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=warm) if warm < 0.5
             else torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0))  # a few steps (quick checks): constant lr
    means = []
    for ep in range(1, epochs + 1):
        mlp.train()
        perm = torch.randperm(n)
        losses = []
        for i in tqdm(range(per_epoch), desc=f"epoch {ep}", leave=False, mininterval=5):
            idx = perm[i * batch:(i + 1) * batch]
            loss = task.distillation_loss({"embedding": mlp(x[idx])}, {"embedding": target[idx]})
            pull = sum(((p - init[k]) ** 2).sum() for k, p in mlp.named_parameters())
            opt.zero_grad()
            (loss + l2 * pull).backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        mlp.eval()
        means.append(float(np.mean(losses)))
        if on_epoch is not None:
            on_epoch(ep, means[-1])
    return means


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as it is written, and each option's default (none shown for ``None``: its help says)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument("weights", type=Path, help="a weights file (safetensors, config embedded)")
    p.add_argument("--epochs", type=int, default=8, help="passes over the cached training views")
    p.add_argument("--lr", type=float, default=3e-4, help="AdamW peak learning rate (one-cycle)")
    p.add_argument("--batch", type=int, default=256, help="views per step")
    p.add_argument("--l2", type=float, default=1e-2, help="pull toward the trained head")
    p.add_argument("--no-mirror", action="store_true", help="clean crops only (the ablation)")
    p.add_argument("--branch", type=int, default=0,
                   help="0..depth (6 for the shipped model): > 0 grows an identity branch over the encoder's last "
                        "BRANCH blocks and the decoder (ModelConfig.identity_branch; see above) and fits it with the "
                        "head; weights that already have a branch refit it with the same BRANCH; 0: the head alone")
    p.add_argument("--branch-tokens", choices=("all", "identity"), default=None,
                   help="the task tokens the branch's decoder carries (ModelConfig.identity_branch_tokens); 'identity' "
                        "makes it carry the identity token alone (lighter; see model/identity_branch.py). Default: "
                        "the weights' own setting")
    p.add_argument("--out-dir", type=Path, default=Path("runs/identity_refit"), help="where the refitted weights go")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output of the same name")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of each split (quick checks)")
    p.add_argument("--data-root", default=str(default_data_root()), help="the data pack")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--seed", type=int, default=0, help="shuffling seed")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    if not a.weights.is_file():
        raise FaceAnalysisError(f"{a.weights}: no such weights file")
    if a.epochs < 1 or a.batch < 2 or a.lr <= 0 or a.l2 < 0:
        raise FaceAnalysisError("--epochs >= 1, --batch >= 2, --lr > 0 and --l2 >= 0, please")
    if a.limit is not None and a.limit < 20:
        raise FaceAnalysisError(f"--limit {a.limit}: give at least 20 images")
    model, cfg = load_model(a.weights)
    if "identity" not in cfg.model.tasks:
        raise FaceAnalysisError(f"{a.weights} has no identity head")
    if a.branch < 0 or a.branch > cfg.model.depth:
        raise FaceAnalysisError(f"--branch {a.branch}: give 0..{cfg.model.depth} (the encoder's depth)")
    if a.branch and cfg.model.identity_branch not in (0, a.branch):
        raise FaceAnalysisError(f"{a.weights} already has an identity branch over {cfg.model.identity_branch} "
                                f"blocks, not {a.branch}: pass --branch {cfg.model.identity_branch} to refit it "
                                "(or --branch 0 for the head alone)")
    if a.branch and not cfg.model.identity_branch:  # grow the branch: the same answers until it is fitted
        grown = FaceModel(dataclasses.replace(cfg.model, identity_branch=a.branch))
        _init_from(grown, a.weights)  # the trainer's --init: shared tensors loaded, the branch copied from them
        model, cfg = grown.eval(), dataclasses.replace(cfg, model=grown.cfg)
    if a.branch_tokens is not None and not a.branch:
        raise FaceAnalysisError("--branch-tokens needs --branch (it sets how the identity branch runs)")
    if a.branch_tokens is not None and a.branch_tokens != cfg.model.identity_branch_tokens:
        light = FaceModel(dataclasses.replace(cfg.model, identity_branch_tokens=a.branch_tokens))
        light.load_state_dict(model.state_dict())  # the same tensors: only which tokens the branch carries changes
        model, cfg = light.eval(), dataclasses.replace(cfg, model=light.cfg)
    features = branch_inputs if a.branch else head_inputs
    out_dir = a.out_dir
    kind = "idbranch" if a.branch else "idrefit"
    path = out_dir / f"{a.weights.stem}_{kind}.safetensors"
    if path.exists() and not a.overwrite:  # checked before the features: they take minutes
        raise FaceAnalysisError(f"{path} exists; pass --overwrite to replace it (or --out-dir elsewhere)")
    out_dir.mkdir(parents=True, exist_ok=True)
    pre = PreprocessConfig(input_size=cfg.model.input_size)

    def load(name: str, split: str):
        src = load_source(name, split, a.data_root)
        return src.subset(np.arange(min(a.limit, len(src)))) if a.limit is not None else src

    t0 = time.time()
    xs, ts, used = [], [], []
    for name, split in TRAIN:
        crops, t = crops_and_targets(load(name, split), pre)
        keep = np.isfinite(t["embedding"]).all(1)
        if not keep.any():
            print(f"{name}/{split}: no face with a teacher embedding, skipped", file=sys.stderr)
            continue
        used.append(f"{name}/{split}")
        crops, t = crops[keep], {k: v[keep] for k, v in t.items()}
        views = [False] if a.no_mirror else [False, True]
        for flip in views:
            xs.append(features(model, crops, pre, flip))
            ts.append(t["embedding"])
        print(f"{name}/{split}: {int(keep.sum())} faces with a teacher embedding, {len(views)} view(s), "
              f"{time.time() - t0:.0f} s", file=sys.stderr)
    if not xs:
        raise FaceAnalysisError("no training face has a teacher embedding")
    x_train = torch.from_numpy(np.concatenate(xs))
    t_train = torch.from_numpy(np.concatenate(ts).astype(np.float32))
    val = {}
    for name, split in (*VAL_TEACHER, VAL_UNSEEN):
        crops, t = crops_and_targets(load(name, split), pre)
        val[name] = (features(model, crops, pre), t)
    feat_s = time.time() - t0

    task = get_tasks(["identity"])[0]
    # the bank term's anchors: every training face's teacher embedding once (the mirror views share them)
    task = task.fit({"train": SimpleNamespace(targets={"identity": {"embedding": np.unique(t_train.numpy(), axis=0)}})})
    mlp = BranchEmbedding(model) if a.branch else copy.deepcopy(model.heads["identity"].mlp).float()
    rows = [{"epoch": 0, **validate(mlp, val)}]
    best = [rows[0]["unseen_tar_far1e-2"], copy.deepcopy(mlp.state_dict()), 0]

    def on_epoch(ep: int, loss: float) -> None:
        r = {"epoch": ep, "train_loss": loss, **validate(mlp, val)}
        rows.append(r)
        print(json.dumps(r), file=sys.stderr)
        if r["unseen_tar_far1e-2"] > best[0]:
            best[:] = [r["unseen_tar_far1e-2"], copy.deepcopy(mlp.state_dict()), ep]
            save(time.time() - t0 - feat_s)  # an interrupted run keeps its best epoch so far
        else:
            write_rows(time.time() - t0 - feat_s)

    def write_rows(fit_s: float) -> None:
        (out_dir / f"{a.weights.stem}_{kind}.json").write_text(json.dumps(
            {"rows": rows, "kept_epoch": best[2], "features_s": feat_s, "fit_s": fit_s}, indent=1))

    def save(fit_s: float) -> None:
        refit = FaceModel(cfg.model)
        refit.load_state_dict(model.state_dict())
        if a.branch:
            keep = BranchEmbedding(model)
            keep.load_state_dict(best[1])
            refit.identity_branch.load_state_dict(keep.branch.state_dict())
            refit.heads["identity"].load_state_dict(keep.head.state_dict())
        else:
            refit.heads["identity"].mlp.load_state_dict(best[1])
        extra = dict(cfg.extra)
        extra["identity_branch_refit" if a.branch else "identity_head_refit"] = {
            "from": str(a.weights), "epoch": best[2], "epochs": a.epochs, "lr": a.lr, "l2": a.l2, "batch": a.batch,
            "mirror": not a.no_mirror, "branch": a.branch, "train": used,
            "train_views": len(x_train), "validation": rows[best[2]], "input_validation": rows[0]}
        save_weights(refit, dataclasses.replace(cfg, extra=extra), path)
        write_rows(fit_s)

    fit_head(mlp, x_train, t_train, task, epochs=a.epochs, lr=a.lr, batch=a.batch, l2=a.l2, on_epoch=on_epoch)
    fit_s = time.time() - t0 - feat_s
    save(fit_s)

    print(f"wrote {path} (epoch {best[2]}); features {feat_s:.0f} s, fit {fit_s:.0f} s", file=sys.stderr)
    print("| epoch | teacher cosine, UTKFace + CelebA val | unseen celeba_more pairs: accuracy (%) | TAR@FAR=1e-2 (%) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['epoch']}{' (input)' if r['epoch'] == 0 else ''}{' (kept)' if r['epoch'] == best[2] else ''} "
              f"| {r['teacher_cos']:.4f} | {r['unseen_pair_acc']:.2f} | {r['unseen_tar_far1e-2']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(run_command("refit_identity_head", main))
