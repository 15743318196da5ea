"""Latency per face of exported faceanalysis artifacts on the machine it runs on (meant for real ARM64 boards and
phones; see export/arm/README.md).

Needs only Python 3.9+, numpy and the runtimes of the artifacts given (onnxruntime for .onnx, ai-edge-litert for
.tflite); no faceanalysis, torch or OpenCV. Each artifact runs at batch 1 on a fixed random input (the model's
cost does not depend on the pixels), after warm-up runs, with 1 and 4 threads (``--threads``). Prints ms per face
(median, p90) and a Markdown row per artifact and thread count for the results table in export/arm/README.md.

    python3 latency.py faceanalysis_s128.int8.onnx faceanalysis_s128.int8.tflite [--runs 50] [--threads 1,4]

Do not run it under emulation (qemu): those timings are not latencies; it refuses unless --allow-emulated.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

INPUT_NAME = "input"
SIGNATURE = "face"


def _machine() -> str:
    """Board / SoC model when the kernel names it, else the CPU model."""
    for path in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            with open(path, "rb") as f:
                return f.read().rstrip(b"\0").decode(errors="replace").strip()
        except OSError:
            pass
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _emulated() -> bool:
    """True under qemu-user (its /proc/self/maps shows no [vdso] ... best effort) or when QEMU_* is set."""
    if any(k.startswith("QEMU_") for k in os.environ):
        return True
    try:
        with open("/proc/self/maps") as f:
            maps = f.read()
        return platform.machine() in ("aarch64", "arm64") and "[vdso]" not in maps and "[vvar]" not in maps
    except OSError:
        return False


def _onnx(path: str, threads: int, size: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    shape = sess.get_inputs()[0].shape
    size = shape[-1] if isinstance(shape[-1], int) else size
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
    return (lambda: sess.run(None, {INPUT_NAME: x})), f"onnxruntime {ort.__version__}"


def _tflite(path: str, threads: int, size: int):
    try:
        from ai_edge_litert import interpreter as litert
        version = "ai-edge-litert " + __import__("importlib.metadata", fromlist=["version"]).version("ai-edge-litert")
    except ImportError:  # older boards: the tflite-runtime wheel has the same Interpreter
        import tflite_runtime.interpreter as litert
        version = "tflite-runtime " + getattr(litert, "__version__", "?")
    it = litert.Interpreter(path, num_threads=threads)
    runner = it.get_signature_runner(SIGNATURE)
    d = runner.get_input_details()[INPUT_NAME]
    x = np.random.default_rng(0).uniform(-1, 1, tuple(d["shape"])).astype(np.float32)
    if d["dtype"] != np.float32:
        scale, zero = d["quantization"]
        x = np.clip(np.round(x / scale + zero), -128, 127).astype(d["dtype"])
    return (lambda: runner(**{INPUT_NAME: x})), version


def measure(path: str, threads: int, runs: int, warmup: int, size: int) -> dict:
    make = _onnx if path.endswith(".onnx") else _tflite if path.endswith(".tflite") else None
    if make is None:
        raise SystemExit(f"{path}: give .onnx or .tflite artifacts")
    fn, runtime = make(path, threads, size)
    for _ in range(warmup):
        fn()
    ms = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ms.append((time.perf_counter() - t0) * 1e3)
    ms.sort()
    return {"median": statistics.median(ms), "p90": ms[min(len(ms) - 1, int(0.9 * len(ms)))], "runtime": runtime}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifacts", nargs="+", help=".onnx / .tflite files")
    p.add_argument("--threads", default="1,4", help="comma-separated thread counts")
    p.add_argument("--runs", type=int, default=50, help="timed runs per artifact and thread count")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--size", type=int, default=128, help="input size when the artifact has a dynamic one")
    p.add_argument("--machine", help="name for the table (default: the board / CPU model the kernel reports)")
    p.add_argument("--allow-emulated", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if _emulated() and not a.allow_emulated:
        print("this looks like an emulated CPU (qemu): its timings are not latencies; run on real hardware",
              file=sys.stderr)
        return 2
    machine = a.machine or _machine()
    threads = [int(t) for t in a.threads.split(",") if t.strip()]
    cpus = os.cpu_count() or 1
    print(f"machine: {machine} ({platform.machine()}, {cpus} CPUs, {platform.system()} {platform.release()}); "
          f"python {platform.python_version()}, numpy {np.__version__}")
    rows = []
    for path in a.artifacts:
        for t in threads:
            r = measure(path, t, a.runs, a.warmup, a.size)
            print(f"{os.path.basename(path)}: {t} thread(s): {r['median']:.2f} ms per face (p90 {r['p90']:.2f}, "
                  f"{r['runtime']})", flush=True)
            rows.append(f"| {machine} | {platform.machine()} | {os.path.basename(path)} | {t} | {r['median']:.2f} | "
                        f"{r['p90']:.2f} | {r['runtime']} | {time.strftime('%Y-%m-%d')} |")
    print("\nrows for export/arm/README.md (machine | arch | artifact | threads | ms/face median | p90 | runtime | date):")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
