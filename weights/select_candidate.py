"""Compare a finished training stage's weight candidates on the VALIDATION splits (never on test):

    python weights/select_candidate.py runs/stage4 --ref shipped=faceanalysis/assets/faceanalysis_s128.safetensors

reads ``RUN/checkpoint.safetensors`` and writes three candidates next to it as fp16 safetensors (config embedded,
``extra`` recording the run, its start weights and the candidate's validation metrics; the trainer's own
``ema_fp16.safetensors`` is left as it is):

- ``candidate_ema.safetensors``: the plain EMA of the weights (decay ``ema_decay``), starting weights' share included;
- ``candidate_ema_debiased.safetensors``: the same EMA with the start weights' share ``decay^(n-1)`` removed (what the
  trainer saves when ``ema_debias`` is on; bias correction as in Adam, Kingma & Ba 2015);
- ``candidate_raw.safetensors``: the last optimiser iterate;
- with ``--soup REF``, ``candidate_soup.safetensors``: the midpoint of the raw candidate and the ``--ref`` weights REF.

Every ``--ref NAME=PATH`` (the shipped weights, the previous stage) is validated beside them. Writes
``RUN/validation_candidates.json`` (every metric of every model) and prints a Markdown table of the headline
validation metrics, the numbers the choice is made on. The validation sets are the training config's
``val_sets`` (the same ``val_max`` images per set, drawn with ``val_seed``, as the trainer's periodic validation).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import faceanalysis._compat  # noqa: F401  (torch import order)
import torch

from faceanalysis.config import FaceAnalysisConfig, PreprocessConfig
from faceanalysis.data.sources import load_source
from faceanalysis.errors import FaceAnalysisError, run_command
from faceanalysis.model import FaceModel
from faceanalysis.tasks import get_tasks
from faceanalysis.train import (TrainConfig, _init_state_from, build_val, debias_ema, make_ema, read_checkpoint,
                                 validate)
from faceanalysis.weights import save_weights

#: (metric key, label, higher is better): the headline validation numbers of each task
HEADLINE = (
    ("celeba_more/identity/tar_far1e-2", "unseen celeba_more people, TAR@FAR=1e-2 (%)", True),
    ("celeba_attr/identity/teacher_cos", "cosine to the SFace teacher, CelebA val", True),
    ("fer2013/expression/acc", "FER2013 PublicTest accuracy (%)", True),
    ("celebamask_mini/parsing/mean_f1", "CelebAMask held-out mean F1 (%)", True),
    ("300w_partial/landmarks/nme_io", "300-W AFW val NME inter-ocular (%)", False),
    ("utkface/attributes/age_mae", "UTKFace val age MAE (years)", False),
    ("celeba_attr/attributes/mean_acc", "CelebA val attributes mean accuracy (%)", True),
    ("utkface/pose/mae_yaw", "UTKFace val yaw MAE vs teacher (deg)", False),
)


def _model_from(state: dict[str, torch.Tensor], cfg: TrainConfig) -> FaceModel:
    m = FaceModel(cfg.model)
    m.load_state_dict(state)
    return m.eval()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="the stage's --out folder (holds checkpoint.safetensors)")
    p.add_argument("--ref", action="append", default=[], metavar="NAME=PATH", help="reference weights to validate too")
    p.add_argument("--init", default=None, metavar="PATH",
                   help="the weights the stage started from (default: the --init the run recorded, relative to where it ran)")
    p.add_argument("--soup", default=None, metavar="REF",
                   help="also validate candidate_soup: the weight-space midpoint of the --ref named REF and the saved "
                        "raw candidate (both fp16 files, averaged in fp32; WiSE-FT, Wortsman et al., CVPR 2022)")
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    ckpt = a.run / "checkpoint.safetensors"
    if not ckpt.is_file():
        raise FaceAnalysisError(f"{ckpt} not found: give the training run's --out folder")
    meta, model_state, ema_state, _ = read_checkpoint(ckpt)
    cfg = TrainConfig.from_dict(json.loads(meta["train_config"]))
    step = int(meta["step"])
    if a.init:
        cfg.init = a.init
    if cfg.init and not Path(cfg.init).is_file():
        raise FaceAnalysisError(f"the run started from {cfg.init}, which is not there (from the folder it ran in; a stage's "
                                "start weights may be only in git history): restore it, or give it with --init PATH")
    refs = {}
    for r in a.ref:
        name, _, path = r.partition("=")
        if not path or not Path(path).is_file():
            raise FaceAnalysisError(f"--ref {r!r}: expected NAME=PATH of an existing .safetensors file")
        refs[name] = path
    if a.soup is not None and a.soup not in refs:
        raise FaceAnalysisError(f"--soup {a.soup}: name one of the --ref weights ({', '.join(refs) or 'none given'})")

    pre = PreprocessConfig(input_size=cfg.model.input_size)
    tasks = get_tasks(cfg.model.tasks)
    val = build_val({n: load_source(n, s, a.data_root) for n, s in cfg.val_sets.items()}, tasks, pre, cfg.val_max,
                    cfg.val_seed)

    raw = _model_from(model_state, cfg)
    ema = make_ema(FaceModel(cfg.model), cfg.ema_decay)
    ema.load_state_dict(ema_state)
    models: dict[str, torch.nn.Module] = {}
    for name, path in refs.items():
        state = {k: v.detach().clone() for k, v in raw.state_dict().items()}
        _init_state_from(state, path)
        models[name] = _model_from(state, cfg)
    models["ema"] = ema.module.eval()
    if cfg.init:
        init = {k: v.detach().clone() for k, v in raw.state_dict().items()}
        _init_state_from(init, cfg.init)
        models["ema_debiased"] = debias_ema(ema, init, cfg.ema_decay).eval()
    models["raw"] = raw

    full = FaceAnalysisConfig(model=cfg.model, preprocess=pre)
    results: dict[str, dict[str, float]] = {}
    for name, m in models.items():
        results[name] = validate(m, val, tasks, pre, "cpu")
        print(f"validated {name}", file=sys.stderr, flush=True)
        if name not in refs:
            extra = {"run": str(a.run), "steps": step, "init_weights": cfg.init,
                     "averaging": name, "validation": results[name]}
            save_weights(m, dataclasses.replace(full, extra=extra), a.run / f"candidate_{name}.safetensors")
    if a.soup is not None:  # from the saved fp16 files, so the soup is exactly the midpoint of what would ship
        ends = []
        for path in (refs[a.soup], a.run / "candidate_raw.safetensors"):
            state = {k: v.detach().clone() for k, v in raw.state_dict().items()}
            _init_state_from(state, path)
            ends.append(state)
        soup = _model_from({k: ((v + ends[1][k]) / 2).half().float() if v.is_floating_point() else ends[1][k]
                            for k, v in ends[0].items()}, cfg)  # rounded to fp16 as shipped
        results["soup"] = validate(soup, val, tasks, pre, "cpu")
        extra = {"run": str(a.run), "steps": step, "init_weights": cfg.init, "validation": results["soup"],
                 "averaging": f"soup: 0.5 x {refs[a.soup]} + 0.5 x candidate_raw (weight-space midpoint)"}
        save_weights(soup, dataclasses.replace(full, extra=extra), a.run / "candidate_soup.safetensors")
    (a.run / "validation_candidates.json").write_text(json.dumps(results, indent=1))

    names = list(results)
    print("| validation metric | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key, label, higher in HEADLINE:
        vals = [results[n].get(key) for n in names]
        best = (max if higher else min)(v for v in vals if v is not None)
        cells = [("-" if v is None else (f"**{v:g}**" if v == best else f"{v:g}")) for v in vals]
        print(f"| {label} | " + " | ".join(cells) + " |")
    if refs:  # the model card's rule since stage 10: choose only among candidates no worse than the references
        print("\nno worse than every --ref on every headline metric:")
        for n in names:
            if n in refs:
                continue
            worse = [f"{label} vs {r}" for key, label, higher in HEADLINE for r in refs
                     if results[n].get(key) is not None and results[r].get(key) is not None
                     and (results[n][key] < results[r][key] if higher else results[n][key] > results[r][key])]
            print(f"- {n}: " + ("yes" if not worse else "no, worse on " + "; ".join(worse)))
    print(f"\nwrote {a.run / 'validation_candidates.json'} and the candidates' .safetensors in {a.run}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command("select_candidate", main))
