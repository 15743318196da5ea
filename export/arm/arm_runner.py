"""Run exported faceanalysis artifacts on saved crops and record what each runtime executed.

Standalone on purpose: it needs only numpy and the runtimes (onnxruntime, ai-edge-litert), no faceanalysis,
torch or OpenCV, so it runs in the tiny arm64 sysroot that ``emulated_parity.py`` drives under qemu (and on
a real ARM machine too). It never compares anything: the x86 side does that against PyTorch.

    python arm_runner.py --crops x.npy --onnx m.int8.onnx --tflite m.int8.tflite --out OUTDIR

Writes to OUTDIR: ``<kind>.npz`` (every output, batch first, in crop order), ``onnx_profile.json`` (the
onnxruntime profile of one batch-1 run: which kernel ran each node), ``onnx_optimized.onnx`` (the graph
after this machine's optimisations, hardware-specific on purpose), ``tflite_nodes.json`` (every node of the
TFLite graph with its operand types and whether the XNNPACK delegate took it) and ``info.json``.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import sys
import time

import numpy as np

INPUT_NAME = "input"
SIGNATURE = "face"


def run_onnx(path: str, x: np.ndarray, out_dir: str, threads: int) -> dict:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.optimized_model_filepath = os.path.join(out_dir, "onnx_optimized.onnx")
    # the first (batch-1) run is profiled: which kernel (op type, provider) ran each node
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(out_dir, "onnx_profile")
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i, j in [(0, 1)] + [(k, min(k + 8, len(x))) for k in range(1, len(x), 8)]:
        for n, v in zip(names, sess.run(names, {INPUT_NAME: x[i:j]})):
            parts[n].append(np.asarray(v, np.float32))
        if i == 0:
            os.replace(sess.end_profiling(), os.path.join(out_dir, "onnx_profile.json"))
    np.savez(os.path.join(out_dir, "onnx.npz"), **{n: np.concatenate(v) for n, v in parts.items()})
    for stray in glob.glob(os.path.join(out_dir, "onnx_profile_*.json")):
        os.remove(stray)
    return {"onnxruntime": ort.__version__, "outputs": names}


def _delegated_nodes(ops: list[dict], n_orig: int) -> set[int]:
    """Original node indices inside a delegate partition: walk back from each DELEGATE node's outputs to its
    inputs (a partition is a convex subgraph, so every node on those paths belongs to it)."""
    producer = {}
    for op in ops[:n_orig]:
        for t in op["outputs"]:
            producer[int(t)] = op["index"]
    taken: set[int] = set()
    for op in ops[n_orig:]:
        if op["op_name"] != "DELEGATE":
            continue
        stop = {int(t) for t in op["inputs"]}
        stack = [int(t) for t in op["outputs"]]
        while stack:
            t = stack.pop()
            if t in stop or t not in producer:
                continue
            node = producer[t]
            if node in taken:
                continue
            taken.add(node)
            stack.extend(int(u) for u in ops[node]["inputs"] if int(u) >= 0)
    return taken


def _dtype_name(t) -> str:
    return getattr(t, "__name__", str(t))


def run_tflite(path: str, x: np.ndarray, out_dir: str, threads: int) -> dict:
    from ai_edge_litert import interpreter as litert

    it = litert.Interpreter(path, num_threads=threads)
    n_orig = len(it._get_ops_details())
    runner = it.get_signature_runner(SIGNATURE)
    in_detail = runner.get_input_details()[INPUT_NAME]
    out_details = runner.get_output_details()
    names = list(out_details)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i in range(len(x)):
        xi = x[i:i + 1]
        if in_detail["dtype"] != np.float32:
            scale, zero = in_detail["quantization"]
            info = np.iinfo(in_detail["dtype"])
            xi = np.clip(np.round(xi / scale + zero), info.min, info.max).astype(in_detail["dtype"])
        out = runner(**{INPUT_NAME: xi})
        for n in names:
            v = out[n]
            if v.dtype != np.float32:
                scale, zero = out_details[n]["quantization"]
                v = (v.astype(np.float32) - zero) * scale
            parts[n].append(np.asarray(v, np.float32))
    np.savez(os.path.join(out_dir, "tflite.npz"), **{n: np.concatenate(v) for n, v in parts.items()})
    ops = it._get_ops_details()  # after the first run: the delegate nodes are appended at the end
    taken = _delegated_nodes(ops, n_orig)
    nodes = [{"index": int(o["index"]), "op": o["op_name"],
              "in": [_dtype_name(t) for t in o.get("operand_types", [])],
              "out": [_dtype_name(t) for t in o.get("result_types", [])],
              "delegated": int(o["index"]) in taken} for o in ops[:n_orig]]
    partitions = sum(o["op_name"] == "DELEGATE" for o in ops[n_orig:])
    with open(os.path.join(out_dir, "tflite_nodes.json"), "w") as f:
        json.dump({"nodes": nodes, "delegate_partitions": partitions, "delegate": "XNNPACK (default)"}, f)
    import importlib.metadata as md

    return {"ai-edge-litert": md.version("ai-edge-litert"), "outputs": names}


def cpu_features() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("features", "flags")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--crops", required=True, help=".npy of normalised crops (N, 3, S, S) float32")
    p.add_argument("--onnx", help="int8 .onnx artifact")
    p.add_argument("--tflite", help="int8 .tflite artifact")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    x = np.ascontiguousarray(np.load(a.crops), np.float32)
    info = {"machine": platform.machine(), "python": sys.version.split()[0], "numpy": np.__version__,
            "cpu_features": cpu_features(), "crops": int(len(x)), "threads": a.threads, "runs": {}}
    for kind, path, fn in (("onnx", a.onnx, run_onnx), ("tflite", a.tflite, run_tflite)):
        if not path:
            continue
        t0 = time.time()
        info["runs"][kind] = fn(path, x, a.out, a.threads)
        # wall time of the whole run: under emulation this is not a latency, only the CI cost
        info["runs"][kind]["wall_seconds"] = round(time.time() - t0, 1)
        print(f"{kind}: {len(x)} crops in {info['runs'][kind]['wall_seconds']} s", flush=True)
    with open(os.path.join(a.out, "info.json"), "w") as f:
        json.dump(info, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
