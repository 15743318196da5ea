"""Prepare demos/web for serving: write ``models/yunet.onnx`` from the bundled detector.

The bundled ``faceanalysis/assets/yunet_2023mar_int8bq.onnx`` has a fixed 1x3x640x640 input; OpenCV's
``FaceDetectorYN`` reshapes it to every image size (padded to a multiple of 32), which onnxruntime-web does not
do, and onnxruntime (Python and web alike, 1.32 / 1.30) refuses its opset-21 DequantizeLinear nodes ("block_size
must be 0 for per-tensor quantization": the biases are per-tensor with a block_size attribute). This writes the
same graph with a symbolic input size (``N x 3 x H x W``; every Reshape in the graph already uses -1) and its
int8 weights and biases dequantised into float32 initialisers (``w = (q - zero_point) * scale``, the
computation OpenCV does when it loads the file): on a pack photo its outputs equal OpenCV's ``FaceDetectorYN``
to 1e-5 px. It also writes ``models/detector.json``: the Python detector's thresholds and adaptive-size
constants (``faceanalysis.detect``), which the page reads. Nothing else changes: the weights are the bundled
ones, pinned by their SHA-256 (253 kB written). The page loads the face model and its sidecar straight from
``faceanalysis/assets/`` (serve the repository root, see README.md), so nothing large is copied.

    python demos/web/build.py
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
YUNET = ROOT / "faceanalysis" / "assets" / "yunet_2023mar_int8bq.onnx"
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"
OUT = HERE / "models" / "yunet.onnx"
DETECTOR_JSON = "detector.json"


def detector_settings() -> dict:
    """The Python detector's settings the page mirrors (faceanalysis.detect: YuNetDetector's defaults and the
    adaptive-size constants), so they are read from the package, not re-typed in JavaScript."""
    import inspect

    try:
        from faceanalysis import detect
    except ImportError:  # run from a clone without the package installed
        sys.path.insert(0, str(ROOT))
        from faceanalysis import detect

    sig = inspect.signature(detect.YuNetDetector.__init__).parameters
    return {
        "scoreThreshold": sig["score_threshold"].default, "nmsThreshold": sig["nms_threshold"].default,
        "minFace": sig["min_face"].default, "padRetry": sig["pad_retry"].default,
        "smallFace": sig["small_face"].default, "detFacePx": detect.DET_FACE_PX,
        "autoMinSide": detect.AUTO_MIN_SIDE, "autoMaxSide": detect.AUTO_MAX_SIDE, "searchSide": detect.SEARCH_SIDE,
        "source": "faceanalysis.detect (written by demos/web/build.py)",
    }


def dequantize(model) -> None:
    """Fold every DequantizeLinear of constant int8 weights (per-axis or blocked) into a float32 initialiser."""
    import numpy as np
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    keep = []
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or not all(i in inits for i in node.input if i):
            keep.append(node)
            continue
        q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        zero = (numpy_helper.to_array(inits[node.input[2]]).astype(np.float32) if len(node.input) > 2
                and node.input[2] else np.zeros_like(scale))
        attrs = {a.name: a for a in node.attribute}
        axis = attrs["axis"].i if "axis" in attrs else 1
        block = attrs["block_size"].i if "block_size" in attrs else 0
        if scale.ndim == 0:
            w = (q - zero) * scale
        else:
            axis %= q.ndim
            if block:  # scale has q's shape with ceil(dim / block) along axis: repeat each value block times
                scale = np.repeat(scale, block, axis=axis).take(range(q.shape[axis]), axis=axis)
                zero = np.repeat(zero, block, axis=axis).take(range(q.shape[axis]), axis=axis)
            else:  # per-axis: 1-D along axis
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            w = (q - zero) * scale
        model.graph.initializer.append(numpy_helper.from_array(w.astype(np.float32), node.output[0]))
    del model.graph.node[:]
    model.graph.node.extend(keep)
    used = {i for n in model.graph.node for i in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)


def build(out: Path = OUT) -> Path:
    import onnx

    data = YUNET.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != YUNET_SHA256:
        raise SystemExit(f"{YUNET} has sha256 {digest[:12]}..., expected the bundled YuNet; reinstall")
    model = onnx.load_from_string(data)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for d, name in zip(dims, ("N", None, "H", "W")):
        if name:
            d.ClearField("dim_value")
            d.dim_param = name
    for o in model.graph.output:  # (1, rows * cols, k): the row count follows the input size
        o.type.tensor_type.shape.dim[1].ClearField("dim_value")
        o.type.tensor_type.shape.dim[1].dim_param = "anchors_" + o.name
        o.type.tensor_type.shape.dim[0].ClearField("dim_value")
        o.type.tensor_type.shape.dim[0].dim_param = "N"
    dequantize(model)
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    (out.parent / DETECTOR_JSON).write_text(json.dumps(detector_settings(), indent=1) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, default=OUT)
    args = ap.parse_args(argv)
    path = build(args.output)
    missing = [p for p in ("node_modules/onnxruntime-web/dist/ort.wasm.min.mjs",) if not (HERE / p).is_file()]
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} ({path.stat().st_size / 1e3:.0f} kB)")
    if missing:
        print("note: onnxruntime-web is not installed yet: run `npm ci` in demos/web")
    return 0


if __name__ == "__main__":
    sys.exit(main())
