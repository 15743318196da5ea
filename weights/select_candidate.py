"""Compare a finished training stage's weight candidates on the VALIDATION splits (never on test):

    python weights/select_candidate.py runs/stage4 --ref shipped=faceanalysis/assets/faceanalysis_s128.safetensors

reads ``RUN/checkpoint.safetensors`` and writes three candidates next to it as fp16 safetensors (config embedded,
``extra`` recording the run, its start weights and the candidate's validation metrics; the trainer's own
``ema_fp16.safetensors`` is left as it is):

- ``candidate_ema.safetensors``: the plain EMA of the weights (decay ``ema_decay``), starting weights' share included;
- ``candidate_ema_debiased.safetensors``: the same EMA with the start weights' share ``decay^(n-1)`` removed (what the
  trainer saves when ``ema_debias`` is on; bias correction as in Adam, Kingma & Ba 2015);
- ``candidate_raw.safetensors``: the last optimiser iterate;
- with ``--soup REF``, ``candidate_soup.safetensors``: the midpoint of the raw candidate and the ``--ref`` weights REF
  (tensors REF lacks, such as a grown model's parsing refiner, are the raw candidate's); ``--soup-weights 0.5,0.7``
  adds ``candidate_soup70`` (0.3 x REF + 0.7 x raw) and so on.

Every ``--ref NAME=PATH`` (the shipped weights, the previous stage) is validated beside them. Writes
``RUN/validation_candidates.json`` (every metric of every model) and prints a Markdown table of the headline
validation metrics, the numbers the choice is made on. The validation sets are the training config's
``val_sets`` (the same ``val_max`` images per set, drawn with ``val_seed``, as the trainer's periodic validation).
"""
from __future__ import annotations

import argparse
import math
import dataclasses
import json
import sys
from pathlib import Path

from faceanalysis._lazy import exit_without_torch

exit_without_torch("select_candidate")  # one line, not a traceback, without torch

import faceanalysis._compat  # noqa: F401, E402  (torch import order)
import torch

from faceanalysis.config import FaceAnalysisConfig, PreprocessConfig
from faceanalysis.data.sources import load_source
from faceanalysis.errors import FaceAnalysisError, run_command
from faceanalysis.model import FaceModel
from faceanalysis.tasks import get_tasks
from faceanalysis.train import (TrainConfig, _grown_only, _init_state_from, build_val, debias_ema, make_ema,
                                 read_checkpoint, validate)
from faceanalysis.weights import read_config, save_weights

#: (metric key, label, higher is better): the headline validation numbers of each task
HEADLINE = (
    ("celeba_more/identity/tar_far1e-2", "unseen celeba_more people, TAR@FAR=1e-2 (%)", True),
    ("celeba_attr/identity/teacher_cos", "cosine to the SFace teacher, CelebA val", True),
    ("fer2013/expression/acc_fer2013", "FER2013 PublicTest accuracy, FER2013 labels (%)", True),
    ("fer2013/expression/acc_ferplus", "FER2013 PublicTest accuracy, FER+ vote argmax (%)", True),
    ("celebamask_mini/parsing/mean_f1", "CelebAMask held-out mean F1 (%)", True),
    ("300w_partial/landmarks/nme_io", "300-W AFW val NME inter-ocular (%)", False),
    ("utkface/attributes/age_mae", "UTKFace val age MAE (years)", False),
    ("celeba_attr/attributes/mean_acc", "CelebA val attributes mean accuracy (%)", True),
    ("utkface/pose/mae_yaw", "UTKFace val yaw MAE vs teacher (deg)", False),
)


def regressions(results: dict[str, dict[str, float]], name: str, refs, allow: dict[str, float] | None = None) -> list[str]:
    """The headline metrics on which candidate ``name`` is worse than a reference in ``refs`` (by more than
    ``allow[key]`` where given), as ``"label vs ref"``; metrics missing from either side are skipped, a
    non-finite candidate value counts as worse."""
    allow = allow or {}
    out = []
    for key, label, higher in HEADLINE:
        for r in refs:
            a, b = results[name].get(key), results[r].get(key)
            if a is None or b is None:
                continue
            if not math.isfinite(a) or ((b - a) if higher else (a - b)) > allow.get(key, 0.0):
                out.append(f"{label} vs {r}")
    return out


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
    p.add_argument("--soup-weights", default="0.5", metavar="T[,T...]",
                   help="with --soup, the raw candidate's share of each soup (0 < T < 1; default 0.5, named "
                        "candidate_soup; others candidate_soupNN with NN = 100 T)")
    p.add_argument("--allow-drop", action="append", default=[], metavar="KEY=AMOUNT",
                   help="a headline metric (its validation key) that may be worse than the references by up to "
                        "AMOUNT: a trade decided before the stage ran (say so in the model card)")
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
    try:
        soup_weights = [float(t) for t in a.soup_weights.split(",")]
    except ValueError:
        soup_weights = []
    soup_names = ["soup" if t == 0.5 else f"soup{round(t * 100):02d}" for t in soup_weights]
    if not soup_weights or not all(0.005 <= t <= 0.995 for t in soup_weights) or len(set(soup_names)) < len(soup_names):
        raise FaceAnalysisError(f"--soup-weights {a.soup_weights!r}: expected distinct numbers between 0.01 and 0.99 "
                                "(two decimals), e.g. 0.5,0.7")
    if a.soup_weights != "0.5" and a.soup is None:
        raise FaceAnalysisError("--soup-weights needs --soup REF (the weights to mix the raw candidate with)")
    keys = {key for key, _, _ in HEADLINE}
    allow: dict[str, float] = {}
    for r in a.allow_drop:
        key, _, amount = r.partition("=")
        try:
            allow[key] = float(amount)
        except ValueError:
            allow[key] = float("nan")
        if key not in keys or not allow[key] >= 0:
            raise FaceAnalysisError(f"--allow-drop {r!r}: expected KEY=AMOUNT with KEY one of {sorted(keys)} and "
                                    "AMOUNT >= 0")
    refs = {}
    for r in a.ref:
        name, _, path = r.partition("=")
        if not path or not Path(path).is_file():
            raise FaceAnalysisError(f"--ref {r!r}: expected NAME=PATH of an existing .safetensors file")
        refs[name] = path
    if a.soup is not None and a.soup not in refs:
        raise FaceAnalysisError(f"--soup {a.soup}: name one of the --ref weights ({', '.join(refs) or 'none given'})")
    if allow and not refs:
        raise FaceAnalysisError("--allow-drop needs --ref: it relaxes the comparison with the reference weights")
    soup_model = read_config(refs[a.soup]).model if a.soup is not None else None
    if soup_model is not None and dataclasses.asdict(soup_model) != dataclasses.asdict(cfg.model) \
            and not _grown_only(soup_model, cfg.model):
        raise FaceAnalysisError(f"--soup {a.soup}: {refs[a.soup]} has another architecture than the run; a soup "
                                "averages tensors of the same model")

    pre = PreprocessConfig(input_size=cfg.model.input_size)
    tasks = get_tasks(cfg.model.tasks)
    val = build_val({n: load_source(n, s, a.data_root) for n, s in cfg.val_sets.items()}, tasks, pre, cfg.val_max,
                    cfg.val_seed)

    raw = _model_from(model_state, cfg)
    ema = make_ema(FaceModel(cfg.model), cfg.ema_decay)
    ema.load_state_dict(ema_state)
    models: dict[str, torch.nn.Module] = {}
    for name, path in refs.items():  # each reference with its own architecture (a stage may grow the model)
        ref_model = FaceModel(read_config(path).model)
        state = {k: v.detach().clone() for k, v in ref_model.state_dict().items()}
        _init_state_from(state, path)
        ref_model.load_state_dict(state)
        models[name] = ref_model.eval()
    models["ema"] = ema.module.eval()
    if cfg.init:  # as the trainer: tensors the start file lacks (a grown model's new layers) stay the plain EMA
        init = {k: v.detach().clone() for k, v in raw.state_dict().items()}
        filled = _init_state_from(init, cfg.init)
        init = {k: v for k, v in init.items() if k in filled}
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
    if a.soup is not None:  # from the saved fp16 files, so a soup is exactly the mix of what would ship
        ends = []
        for path in (refs[a.soup], a.run / "candidate_raw.safetensors"):
            state = {k: v.detach().clone() for k, v in raw.state_dict().items()}
            _init_state_from(state, path)
            ends.append(state)
        for t, name in zip(soup_weights, soup_names):
            soup = _model_from({k: ((1 - t) * v + t * ends[1][k]).half().float() if v.is_floating_point() else ends[1][k]
                                for k, v in ends[0].items()}, cfg)  # rounded to fp16 as shipped
            results[name] = validate(soup, val, tasks, pre, "cpu")
            what = "weight-space midpoint" if t == 0.5 else "weight-space mix"
            extra = {"run": str(a.run), "steps": step, "init_weights": cfg.init, "validation": results[name],
                     "averaging": f"soup: {1 - t:g} x {refs[a.soup]} + {t:g} x candidate_raw ({what})"}
            save_weights(soup, dataclasses.replace(full, extra=extra), a.run / f"candidate_{name}.safetensors")
    (a.run / "validation_candidates.json").write_text(json.dumps(results, indent=1))

    names = list(results)
    print("| validation metric | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key, label, higher in HEADLINE:
        vals = [results[n].get(key) for n in names]
        if all(v is None for v in vals):
            continue  # a stage validated on some tasks only (e.g. parsing masks alone)
        best = (max if higher else min)(v for v in vals if v is not None)
        cells = [("-" if v is None else (f"**{v:g}**" if v == best else f"{v:g}")) for v in vals]
        print(f"| {label} | " + " | ".join(cells) + " |")
    if refs:  # the model card's rule since stage 10: choose only among candidates no worse than the references
        print("\nno worse than every --ref on every headline metric"
              + "".join(f"; {k} may drop by up to {v:g}" for k, v in allow.items()) + ":")
        for n in names:
            if n in refs:
                continue
            worse = regressions(results, n, refs, allow)
            print(f"- {n}: " + ("yes" if not worse else "no, worse on " + "; ".join(worse)))
    print(f"\nwrote {a.run / 'validation_candidates.json'} and the candidates' .safetensors in {a.run}")
    return 0


if __name__ == "__main__":
    sys.exit(run_command("select_candidate", main))
