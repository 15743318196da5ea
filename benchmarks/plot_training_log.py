"""Plot training logs (per-task running losses and validation metrics) to a PNG.

One log:
    python benchmarks/plot_training_log.py weights/train.log docs/training_curves.png
A campaign (stages run one after another, each from the previous shipped weights) on one step axis, with a
line where each stage starts:
    python benchmarks/plot_training_log.py weights/train.log weights/train_stage2.log weights/train_stage3.log \
        weights/train_stage5.log docs/training_curves.png
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SHOWN = {"celebamask_mini/parsing/mean_f1": "parsing F1 (%)", "300w_partial/landmarks/nme_io": "AFW NME x10 (%)",
         "celeba_attr/attributes/mean_acc": "attributes acc (%)", "utkface/attributes/age_mae": "age MAE x5 (y)",
         "fer2013/expression/acc": "FER acc (%)", "utkface/identity/teacher_cos": "teacher cos x100",
         "celeba_more/identity/tar_far1e-2": "unseen people TAR@FAR=1e-2 (%)"}
SCALE = {"300w_partial/landmarks/nme_io": 10, "utkface/attributes/age_mae": 5, "utkface/identity/teacher_cos": 100}


def read_log(path: str) -> tuple[list[dict], list[dict]]:
    """The ``{"step": ...}`` and ``{"val_step": ...}`` JSON lines of one ``train.log``; a resumed run's repeated
    steps keep their last record."""
    steps: dict[int, dict] = {}
    val: dict[int, dict] = {}
    for line in open(path):
        if line.startswith('{"step"'):
            rec = json.loads(line)
            steps[rec["step"]] = rec
        elif line.startswith('{"val_step"'):
            rec = json.loads(line)
            val[rec["val_step"]] = rec
    return [steps[k] for k in sorted(steps)], [val[k] for k in sorted(val)]


def main(logs: list[str], out: str) -> None:
    if not logs:
        raise SystemExit("usage: plot_training_log.py LOG [LOG ...] OUT.png")
    steps, val, starts = [], [], []
    offset = 0
    for log in logs:
        s, v = read_log(log)
        name = Path(log).stem.replace("train_", "")
        starts.append((offset, "base" if name == "train" else name))
        steps += [{**r, "step": r["step"] + offset} for r in s]
        val += [{**r, "val_step": r["val_step"] + offset} for r in v]
        offset += max([r["step"] for r in s] + [r["val_step"] for r in v] + [0])
    fig, axes = plt.subplots(1, 2, figsize=(15, 4.8))
    keys = [k for k in steps[-1] if k not in ("step", "lr", "s_per_step", "total")]
    for k in keys:
        axes[0].plot([s["step"] for s in steps if k in s], [s[k] for s in steps if k in s], label=k, lw=0.8)
    axes[0].set_yscale("log")
    axes[0].set_title("running training losses (per task, unweighted)\n"
                      "a loss's definition can change between stages (e.g. identity)", fontsize=10)
    for k, name in SHOWN.items():
        pts = [(v["val_step"], v[k] * SCALE.get(k, 1)) for v in val if k in v]
        if pts:
            axes[1].plot(*zip(*pts), marker="o", ms=3, label=name)
    axes[1].set_ylim(0, 105)
    axes[1].set_title("validation during training\n(held-out splits, EMA weights)", fontsize=10)
    axes[1].set_ylabel("value (scaled as in the legend)")
    for ax in axes:
        ax.set_xlabel("training step" + (" (stages one after another)" if len(logs) > 1 else ""))
        for x, name in starts[1:] if len(logs) > 1 else []:
            ax.axvline(x, color="grey", ls=":", lw=1)
    axes[0].legend(fontsize=7, loc="lower left")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if len(logs) > 1:
        for ax, top in ((axes[0], axes[0].get_ylim()[1]), (axes[1], 104)):
            for x, name in starts:
                ax.text(x, top, " " + name, fontsize=7, color="grey", va="top", rotation=90)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out} ({len(steps)} loss records, {len(val)} validations, {len(logs)} log(s))")


if __name__ == "__main__":
    main(sys.argv[1:-1], sys.argv[-1] if len(sys.argv) > 1 else "")
