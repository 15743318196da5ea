"""What a model change costs, in one run: the full-resolution parsing maps (``ModelConfig.parsing_stride`` 1, the
parsing refiner; ``benchmarks/parsing_cost_refiner.md``), the parsing context ring (``ModelConfig.parsing_field`` > 1;
``benchmarks/parsing_cost_ring.md``) or the identity branch (``ModelConfig.identity_branch`` > 0, in either
``identity_branch_tokens`` form; ``benchmarks/identity_branch_cost.md``):

    python benchmarks/parsing_cost.py --before OLD.safetensors --before-tflite OLD.int8.tflite \
        [--after faceanalysis/assets/faceanalysis_s128.safetensors] [--after-tflite weights/export/...int8.tflite] \
        [--out benchmarks/parsing_cost_ring.md]

Measures, for the weights before and after (e.g. the stage-18 release and the stage-19 or stage-21 one):
parameters, GMACs per face (``torch.utils.flop_counter``), PyTorch latency at batch 1 on 1 and 2 threads, the
int8 TFLite model's latency at batch 1 on 1 and 2 threads (the issue-10 budget: int8 TFLite at most 1.5x the earlier
latency) and the parsing outputs' size per face. The two models are timed alternately, round by round, so load on the
machine hits both alike; the ratios are the numbers to read. Writes ``--out``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import faceanalysis._compat  # noqa: F401  (torch import order)
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from faceanalysis.export.runners import load_runner
from faceanalysis.weights import DEFAULT_WEIGHTS, file_sha256, load_model

ROOT = Path(__file__).resolve().parents[1]


def _gmacs(model: torch.nn.Module, s: int) -> float:
    model.requires_grad_(False)  # FlopCounterMode needs parameters without grad here (as model_bench.py)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 3, s, s))
    return fc.get_total_flops() / 2e9


def _torch_fn(model: torch.nn.Module, threads: int):
    def fn(x: np.ndarray):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            return model(torch.from_numpy(x))
    return fn


def _alternate(fns: list, x: np.ndarray, rounds: int, per_round: int = 5, warmup: int = 5) -> list[float]:
    """Median seconds per call of each function, timed in alternating rounds."""
    for fn in fns:
        for _ in range(warmup):
            fn(x)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            for _ in range(per_round):
                t = time.perf_counter()
                fn(x)
                times[i].append(time.perf_counter() - t)
    return [statistics.median(t) for t in times]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--before", required=True, help="weights before (e.g. the previous release)")
    ap.add_argument("--before-tflite", required=True, help="their int8 TFLite export")
    ap.add_argument("--after", default=str(DEFAULT_WEIGHTS), help="weights after (default: the shipped ones)")
    ap.add_argument("--after-tflite", default=str(ROOT / "weights" / "export" / "faceanalysis_s128.int8.tflite"))
    ap.add_argument("--rounds", type=int, default=10, help="alternating rounds of 5 timed calls each")
    ap.add_argument("--out", default=str(Path(__file__).with_name("parsing_cost.md")), help="Markdown table to write")
    args = ap.parse_args(argv)
    for p in (args.before, args.before_tflite, args.after, args.after_tflite):
        if not Path(p).is_file():
            raise SystemExit(f"no such file: {p}")
    models = [load_model(w) for w in (args.before, args.after)]
    s = models[0][1].model.input_size
    x1 = np.random.default_rng(0).normal(size=(1, 3, s, s)).astype(np.float32)
    rows: dict[str, list[str]] = {}
    rows["weights sha256"] = [file_sha256(w)[:12] for w in (args.before, args.after)]
    rows["parsing stride (map side per 128 px crop)"] = [
        f"{m[1].model.parsing_stride} ({s // m[1].model.parsing_stride})" for m in models]
    rows["parsing field (crop sides)"] = [f"{m[1].model.parsing_field:g}" for m in models]
    rows["identity branch (encoder blocks + decoder copied)"] = [
        (f"{m[1].model.identity_branch} + decoder"
         + (" (identity token alone)" if m[1].model.identity_branch_tokens == "identity" else ""))
        if m[1].model.identity_branch else "none" for m in models]
    n_params = [sum(p.numel() for p in m[0].parameters()) for m in models]
    rows["parameters (M)"] = [f"{n / 1e6:.4f}" for n in n_params]
    g = [_gmacs(m[0], s) for m in models]
    rows["GMACs per face"] = [f"{v:.3f}" for v in g]
    ratios = {"GMACs per face": g[1] / g[0]}
    for t in (1, 2):
        lat = _alternate([_torch_fn(m[0], t) for m in models], x1, args.rounds)
        rows[f"PyTorch fp32, batch 1, {t} thread(s) (ms)"] = [f"{v * 1e3:.2f}" for v in lat]
        ratios[f"PyTorch fp32, batch 1, {t} thread(s) (ms)"] = lat[1] / lat[0]
    for t in (1, 2):
        runners = [load_runner("tflite", p, threads=t) for p in (args.before_tflite, args.after_tflite)]
        lat = _alternate(runners, x1, args.rounds)
        rows[f"int8 TFLite, batch 1, {t} thread(s) (ms)"] = [f"{v * 1e3:.2f}" for v in lat]
        ratios[f"int8 TFLite, batch 1, {t} thread(s) (ms)"] = lat[1] / lat[0]
    with torch.no_grad():
        par = [sum(v[0].numel() for v in m[0](torch.from_numpy(x1), tasks=["parsing"]).values()) for m in models]
    rows["parsing outputs per face (floats)"] = [f"{p:,}" for p in par]
    ratios["parsing outputs per face (floats)"] = par[1] / par[0]
    rows["int8 TFLite size (MB)"] = [f"{Path(p).stat().st_size / 1e6:.2f}" for p in (args.before_tflite, args.after_tflite)]
    lines = ["# What the model change costs\n",
             f"`python benchmarks/parsing_cost.py {' '.join(argv if argv is not None else sys.argv[1:])}` "
             f"({os.cpu_count()} CPUs; the two models timed alternately, "
             f"{args.rounds} rounds of 5 calls each, medians; 1-minute load average at the end "
             f"{os.getloadavg()[0]:.2f}). Issue 10's budget: at most 0.8 GMACs per face and int8 TFLite at most 1.5x "
             "the earlier latency.\n",
             "| | before | after | after / before |", "|---|---|---|---|"]
    for k, (a, b) in rows.items():
        r = f"{ratios[k]:.2f}x" if k in ratios else ""
        lines.append(f"| {k} | {a} | {b} | {r} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
