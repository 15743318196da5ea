"""Model size, compute and latency of the PyTorch model and the end-to-end API.

    python benchmarks/model_bench.py [--weights W] [--image PATH]

Prints parameters, GMACs per face (torch.utils.flop_counter), model latency at batch 1 on 1 and 2
threads and throughput at batch 16 (median of repeated runs after warm-up), and the API's per-stage
latency (detect / align+model / total) on a real photo.
"""
from __future__ import annotations

import argparse
import glob
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from faceanalysis import FaceAnalyzer
from faceanalysis.data.sources import default_data_root
from faceanalysis.weights import DEFAULT_WEIGHTS, load_model


def median_ms(fn, runs: int = 30, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    p.add_argument("--image", default=None)
    args = p.parse_args()
    model, cfg = load_model(args.weights)
    s = cfg.model.input_size
    n_params = sum(p.numel() for p in model.parameters())
    model.requires_grad_(False)  # FlopCounterMode needs parameters without grad here
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.randn(1, 3, s, s))
    print(f"parameters: {n_params / 1e6:.2f} M   GMACs/face: {fc.get_total_flops() / 2e9:.3f}   input: {s}x{s}")
    x1, x16 = torch.randn(1, 3, s, s), torch.randn(16, 3, s, s)
    with torch.inference_mode():
        for threads in (1, 2):
            torch.set_num_threads(threads)
            ms = median_ms(lambda: model(x1))
            ms16 = median_ms(lambda: model(x16), runs=10, warmup=2)
            print(f"torch model, {threads} thread(s): batch 1 {ms:.1f} ms   batch 16 {16000 / ms16:.0f} faces/s")
    image = args.image or sorted(glob.glob(str(default_data_root() / "celebamask_mini" / "images" / "*.jpg")))[0]
    torch.set_num_threads(2)
    fa = FaceAnalyzer(weights=args.weights)
    from faceanalysis.preprocess import load_image

    rgb = load_image(image)
    det = median_ms(lambda: fa.detect(rgb), runs=20)
    total = median_ms(lambda: fa.analyze(rgb), runs=20)
    print(f"API on {rgb.shape[1]}x{rgb.shape[0]} photo, 2 threads: detect {det:.1f} ms   "
          f"align+model+mapping {total - det:.1f} ms   total {total:.1f} ms   ({len(fa.analyze(rgb))} face)")


if __name__ == "__main__":
    main()
