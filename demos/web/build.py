"""Prepare demos/web for serving: write ``models/yunet.onnx`` and ``models/detector.json``.

The bundled ``faceanalysis/assets/yunet_2023mar_int8bq.onnx`` has a fixed 1x3x640x640 input and opset-21
DequantizeLinear nodes that onnxruntime (Python and web) refuses. The package already ships the float32 copy the
Python detector runs on ONNX Runtime (``faceanalysis/detector_assets/``, made by
``faceanalysis.detect.build_float_yunet``: weights dequantised, free input size; same detections as OpenCV's
``FaceDetectorYN`` to 1e-4 px): this copies it, checked by its SHA-256, so the page and Python run the same file.
``models/detector.json`` holds the Python detector's thresholds and adaptive-size constants
(``faceanalysis.detect``), which the page reads. The page loads the face model and its sidecar straight from
``faceanalysis/assets/`` (serve the repository root, see README.md), so nothing large is copied. Needs only the
core install (no ``onnx`` package).

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
OUT = HERE / "models" / "yunet.onnx"
DETECTOR_JSON = "detector.json"


def _detect_module():
    try:
        from faceanalysis import detect
    except ImportError:  # run from a clone without the package installed
        sys.path.insert(0, str(ROOT))
        from faceanalysis import detect
    return detect


def detector_settings() -> dict:
    """The Python detector's settings the page mirrors (faceanalysis.detect: YuNetDetector's defaults and the
    adaptive-size constants), so they are read from the package, not re-typed in JavaScript."""
    import inspect

    detect = _detect_module()
    sig = inspect.signature(detect.YuNetDetector.__init__).parameters
    return {
        "scoreThreshold": sig["score_threshold"].default, "nmsThreshold": sig["nms_threshold"].default,
        "minFace": sig["min_face"].default, "padRetry": sig["pad_retry"].default,
        "smallFace": sig["small_face"].default, "detFacePx": detect.DET_FACE_PX,
        "autoMinSide": detect.AUTO_MIN_SIDE, "autoMaxSide": detect.AUTO_MAX_SIDE, "searchSide": detect.SEARCH_SIDE,
        "source": "faceanalysis.detect (written by demos/web/build.py)",
    }


def build(out: Path = OUT) -> Path:
    """Copy the package's float32 YuNet (``faceanalysis.detect.YUNET_ORT_PATH``, checked by its SHA-256) to ``out``
    and write the detector settings next to it."""
    detect = _detect_module()
    data = Path(detect.YUNET_ORT_PATH).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != detect.YUNET_ORT_SHA256:
        raise SystemExit(f"{detect.YUNET_ORT_PATH} has sha256 {digest[:12]}..., expected the packaged YuNet copy; "
                         "reinstall faceanalysis")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
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
