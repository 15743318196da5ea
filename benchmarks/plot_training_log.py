"""Plot a training log (per-task running losses and validation metrics) to a PNG.

    python benchmarks/plot_training_log.py weights/train.log docs/training_curves.png
"""
from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(log: str, out: str) -> None:
    steps, val = [], []
    for line in open(log):
        if line.startswith('{"step"'):
            steps.append(json.loads(line))
        elif line.startswith('{"val_step"'):
            val.append(json.loads(line))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    keys = [k for k in steps[-1] if k not in ("step", "lr", "s_per_step")]
    for k in keys:
        axes[0].plot([s["step"] for s in steps if k in s], [s[k] for s in steps if k in s], label=k)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("running training losses")
    axes[0].legend(fontsize=8)
    shown = {"celebamask_mini/parsing/mean_f1": "parsing F1 (%)", "300w_partial/landmarks/nme_io": "AFW NME x10 (%)",
             "celeba_attr/attributes/mean_acc": "attributes acc (%)", "utkface/attributes/age_mae": "age MAE x5 (y)",
             "fer2013/expression/acc": "FER acc (%)", "utkface/identity/teacher_cos": "teacher cos x100"}
    scale = {"300w_partial/landmarks/nme_io": 10, "utkface/attributes/age_mae": 5, "utkface/identity/teacher_cos": 100}
    for k, name in shown.items():
        pts = [(v["val_step"], v[k] * scale.get(k, 1)) for v in val if k in v]
        if pts:
            axes[1].plot(*zip(*pts), marker="o", label=name)
    axes[1].set_ylim(0, 105)
    axes[1].set_xlabel("step")
    axes[1].set_title("validation (held-out splits, EMA weights)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:3])
