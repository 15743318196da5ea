"""Size, latency and throughput of every exported artifact next to the PyTorch model.

    python benchmarks/export_bench.py [--dir weights/export] [--runs 50]

Latency: batch 1, median of ``--runs`` runs after warm-up, on 1 and 2 threads. Throughput: batch 16
(TFLite runs its batch-1 signature 16 times). Writes benchmarks/export_bench.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from faceanalysis.export import read_sidecar
from pipeline_bench import cpu_description  # noqa: E402  (this folder is on sys.path when run as a script)
from faceanalysis.weights import DEFAULT_WEIGHTS, file_sha256, load_model

OUT = Path(__file__).with_name("export_bench.md")


def _time(fn, x: np.ndarray, runs: int, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn(x)
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def _torch_fn(model, threads: int):
    def fn(x):
        torch.set_num_threads(threads)
        with torch.inference_mode():
            return model(torch.from_numpy(x))
    return fn


LOAD_AT_START = os.getloadavg()[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default=str(Path(__file__).resolve().parents[1] / "weights" / "export"),
                    help="folder of exported artifacts (e.g. faceanalysis export --all -o DIR)")
    ap.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    ap.add_argument("--runs", type=int, default=50)
    args = ap.parse_args(argv)
    from faceanalysis.export.runners import load_runner

    model, cfg = load_model(args.weights)
    s = cfg.model.input_size
    rng = np.random.default_rng(0)
    x1, x16 = rng.normal(size=(1, 3, s, s)).astype(np.float32), rng.normal(size=(16, 3, s, s)).astype(np.float32)
    rows = []
    exported_from = set()  # weights sha256 of each artifact's sidecar: parity belongs to those weights
    wsize = Path(args.weights).stat().st_size
    r = {"artifact": f"PyTorch ({Path(args.weights).name}, fp16 storage)", "size": wsize}
    for t in (1, 2):
        r[f"lat{t}"] = _time(_torch_fn(model, t), x1, args.runs) * 1e3
    r["tput"] = 16 / _time(_torch_fn(model, 2), x16, max(5, args.runs // 5))
    rows.append(r)
    print(r, flush=True)
    for path in sorted(Path(args.dir).glob("*")):
        if path.suffix not in (".onnx", ".tflite", ".mlpackage"):
            continue
        side = read_sidecar(path) or {}
        exported_from.add(str(side.get("weights", {}).get("sha256", "unknown"))[:12])
        size = side.get("size_bytes", path.stat().st_size)
        r = {"artifact": path.name, "size": size}
        if path.suffix == ".mlpackage":
            r.update(lat1=None, lat2=None, tput=None)
        else:
            backend = path.suffix[1:]
            for t in (1, 2):
                r[f"lat{t}"] = _time(load_runner(backend, path, threads=t), x1, args.runs) * 1e3
            r["tput"] = 16 / _time(load_runner(backend, path, threads=2), x16, max(5, args.runs // 5))
        par = side.get("parity", {}).get("metrics", {})
        r["parity"] = (f"cos {par['embedding_cosine_mean']:.4f}, lmk {par['landmarks_mean_px']:.3f} px, "
                       f"parse {100 * par['parsing_agreement']:.1f}%, expr {100 * par['expression_top1_agreement']:.0f}%"
                       if par else "macOS only (export/check_coreml_macos.py)")
        rows.append(r)
        print(r, flush=True)
    lines = ["# Export benchmark\n",
             f"Machine: {cpu_description()}, {torch.get_num_threads()} torch threads available; "
             f"input {s}x{s}; latency = median of {args.runs} batch-1 runs after warm-up; throughput at batch 16, "
             f"2 threads. Parity vs PyTorch on held-out aligned faces (from each sidecar; PyTorch weights sha256 "
             f"{file_sha256(args.weights)[:12]}, artifacts exported from weights {', '.join(sorted(exported_from))}). "
             f"CoreML cannot run on "
             f"Linux. 1-minute load average when the run started: {LOAD_AT_START:.2f} (raised by any work on the 2 cores in "
             f"the last minutes: compare rows, not absolute numbers).\n",
             "| artifact | size (MB) | batch 1, 1 thread (ms) | batch 1, 2 threads (ms) | batch 16 (img/s) | parity |",
             "|---|---|---|---|---|---|"]
    fmt = lambda v, f: "n/a" if v is None else f.format(v)  # noqa: E731
    for r in rows:
        lines.append(f"| {r['artifact']} | {r['size'] / 1e6:.2f} | {fmt(r['lat1'], '{:.1f}')} | {fmt(r['lat2'], '{:.1f}')} "
                     f"| {fmt(r['tput'], '{:.0f}')} | {r.get('parity', 'reference')} |")
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
