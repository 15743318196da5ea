"""Numerics check of an exported CoreML package against PyTorch. Run on macOS (CoreML prediction
does not run on Linux):

    pip install -e '.[export]'
    python export/check_coreml_macos.py my_export/faceanalysis_s128.fp16.mlpackage [--n 64]
    python export/check_coreml_macos.py my_export/faceanalysis_s128.fp16.image.mlpackage   # --coreml-input image

The package's input kind is read from its spec: a tensor input gets normalised float32 crops (in batches when it
has a flexible batch, one at a time otherwise); an image input (``--coreml-input image``) gets each aligned crop as
a ``PIL.Image`` (RGB), exactly what an app hands over as a ``CVPixelBuffer``, so the normalisation baked into the
package is checked too. Prints the parity metrics and exits 1 when the precision's floors are missed.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def _as_batch(v) -> np.ndarray:
    v = np.asarray(v, np.float32)
    return v.reshape((1, *v.shape[1:]) if v.ndim else (1,))


def predict_all(ml, crops: np.ndarray, x: np.ndarray, spec: dict) -> dict[str, np.ndarray]:
    """Outputs of the package for uint8 crops ``(N, S, S, 3)`` / their normalised tensors ``x``, batch first."""
    from PIL import Image

    outs: dict[str, list[np.ndarray]] = {}
    if spec["kind"] == "image":
        feeds = [{spec["name"]: Image.fromarray(c, "RGB")} for c in crops]  # one picture per prediction
        step = 1
    else:
        hi = spec.get("shape_range", [(1, 1)])[0][1]  # flexible batch: up to its upper bound per call
        step = max(1, min(hi, 16))
        feeds = [{spec["name"]: x[i:i + step]} for i in range(0, len(x), step)]
    for feed in feeds:
        for k, v in ml.predict(feed).items():
            v = np.asarray(v, np.float32)
            outs.setdefault(k, []).append(v if step > 1 else _as_batch(v))
    return {k: np.concatenate(v) for k, v in outs.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("package")
    ap.add_argument("--weights", default=None, help="source safetensors (default: the shipped weights)")
    ap.add_argument("--n", type=int, default=64, help="held-out faces")
    args = ap.parse_args(argv)
    import coremltools as ct

    from faceanalysis.export import read_sidecar
    from faceanalysis.export.calibration import parity_crops
    from faceanalysis.export.coreml_export import input_spec
    from faceanalysis.export.parity import compare, failures, format_metrics, torch_reference
    from faceanalysis.preprocess import normalise_array
    from faceanalysis.weights import load_model

    model, cfg = load_model(args.weights)
    crops = parity_crops(cfg.preprocess, args.n)
    x = normalise_array(crops, cfg.preprocess)
    spec = input_spec(args.package)
    print(f"input: {json.dumps(spec)}")
    ml = ct.models.MLModel(args.package)
    out = predict_all(ml, crops, x, spec)
    m = compare(torch_reference(model, x), out)
    precision = (read_sidecar(args.package) or {}).get("precision", "fp16")
    bad = failures(m, "int8" if precision == "int8" else "fp16")
    print(format_metrics(m))
    print(json.dumps(m, indent=1))
    print("FAIL: " + "; ".join(bad) if bad else "parity floors met")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
