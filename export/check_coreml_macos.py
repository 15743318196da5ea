"""Numerics check of an exported CoreML package against PyTorch. Run on macOS (CoreML prediction
does not run on Linux):

    pip install -e '.[export]'
    python export/check_coreml_macos.py my_export/faceanalysis_s128.fp16.mlpackage [--n 64]

Prints the parity metrics and exits 1 when the precision's floors are missed.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package")
    ap.add_argument("--weights", default=None, help="source safetensors (default: the shipped weights)")
    ap.add_argument("--n", type=int, default=64, help="held-out faces")
    args = ap.parse_args(argv)
    import coremltools as ct

    from faceanalysis.export import read_sidecar
    from faceanalysis.export.calibration import parity_crops
    from faceanalysis.export.parity import compare, failures, format_metrics, torch_reference
    from faceanalysis.preprocess import normalise_array
    from faceanalysis.weights import load_model

    model, cfg = load_model(args.weights)
    x = normalise_array(parity_crops(cfg.preprocess, args.n), cfg.preprocess)
    ml = ct.models.MLModel(args.package)
    outs: dict[str, list[np.ndarray]] = {}
    for i in range(len(x)):  # the package has a static batch of 1
        for k, v in ml.predict({"input": x[i:i + 1]}).items():
            outs.setdefault(k, []).append(np.asarray(v, np.float32).reshape((1, *np.shape(v)[1:]) if np.ndim(v) else (1,)))
    out = {k: np.concatenate(v) for k, v in outs.items()}
    m = compare(torch_reference(model, x), out)
    precision = (read_sidecar(args.package) or {}).get("precision", "fp16")
    bad = failures(m, "int8" if precision == "int8" else "fp16")
    print(format_metrics(m))
    print(json.dumps(m, indent=1))
    print("FAIL: " + "; ".join(bad) if bad else "parity floors met")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
