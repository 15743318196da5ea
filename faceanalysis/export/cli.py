"""``faceanalysis export``: write ONNX / TFLite / CoreML artifacts with sidecars and parity numbers."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import (DEFAULT_OUTPUT, FORMATS, ONNX_INT8_METHODS, RELEASE, check_choice, needs_calibration,
               require_export_extra, sidecar_path)
from .._argparse import ArgumentParser, HelpFormatter
from ..errors import FaceAnalysisError, run_command

DEFAULT_PRECISION = {"onnx": "int8", "tflite": "int8", "coreml": "fp16"}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="faceanalysis export", formatter_class=HelpFormatter,
        description="Export the model to ONNX / TFLite / CoreML. Every artifact gets a JSON sidecar "
                    "(<artifact>.json) with its input normalisation, outputs, class names, source-weights hash "
                    "and parity numbers measured against PyTorch. Needs the export extra "
                    "(pip install 'faceanalysis[export]'). Calibration (TFLite int8, ONNX int8 with --onnx-int8 "
                    "static; dynamic int8 ONNX, the default, needs none) and the parity check read the data pack "
                    "when it is there, or your own photos (--calib-data / --check-data).",
        epilog="precisions: " + "; ".join(f"{f}: {', '.join(q for q in p if q != 'int8-full')}"
                                          for f, p in FORMATS.items())
               + " (tflite int8-full, integer-only input, is refused: the pinned litert-torch cannot convert it)"
               + ". Examples: faceanalysis export --format onnx --precision fp32 -o my_export;  faceanalysis export "
                 "--format tflite --precision int8 --calib-data my_photos/ --check-data other_photos/ -o my_export")
    p.add_argument("--format", help="onnx, tflite or coreml (comma-separated for several); required unless --all")
    p.add_argument("--precision", help="fp32, fp16, int8, ... (comma-separated; default: onnx/tflite int8, "
                                       "coreml fp16)")
    p.add_argument("--all", action="store_true",
                   help="the six release artifacts: onnx fp32/fp16/int8, tflite fp32/int8, coreml fp16")
    p.add_argument("--weights", help="safetensors weights (default: the shipped weights)")
    p.add_argument("--calib-data", metavar="DIR",
                   help="folder of your own face photos for int8 calibration (faces are detected and aligned) of "
                        "TFLite int8 and ONNX --onnx-int8 static; default: training images of the data pack, when "
                        "it is there")
    p.add_argument("--calib-n", type=int, default=300, help="calibration faces")
    p.add_argument("--onnx-int8", choices=ONNX_INT8_METHODS, default="dynamic",
                   help="ONNX int8 route: dynamic (int8 weights of the MatMul/Gemm layers, activations quantized per "
                        "run; no calibration photos needed) or static (QDQ, int8 activations calibrated on "
                        "--calib-data or the data pack)")
    p.add_argument("--check-data", metavar="DIR",
                   help="folder of your own face photos for the parity check (use photos that are not in "
                        "--calib-data); default: held-out test images of the data pack, when it is there; "
                        "without either, parity is not measured")
    p.add_argument("--parity-n", type=int, default=64, help="faces used for the parity check")
    p.add_argument("--data-root", help="data pack root (default: $FACEANALYSIS_DATA or ../shared/data, used "
                                       "only when present)")
    p.add_argument("--coreml-input", choices=("tensor", "image"), default="tensor",
                   help="CoreML input: 'tensor' (MLMultiArray, normalised by the caller) or 'image' (ImageType: an "
                        "RGB crop as CVPixelBuffer / PIL image, normalisation built in; one image per prediction, "
                        "batch with Core ML's batch API)")
    p.add_argument("--coreml-batch", type=int, default=1, metavar="N",
                   help="CoreML tensor input: flexible batch 1..N (default 1: static batch of one)")
    p.add_argument("--overwrite", action="store_true", help="replace artifacts that already exist (refused otherwise)")
    check = p.add_mutually_exclusive_group()
    check.add_argument("--check", action="store_true",
                       help="fail when an artifact misses its parity floors (exit 1) or parity cannot be measured "
                            "(exit 2, before exporting)")
    check.add_argument("--no-check", action="store_true",
                       help="skip the parity check (no check photos needed; the sidecar says it was not measured)")
    p.add_argument("-o", "--output", default=str(DEFAULT_OUTPUT),
                   help="output folder, or a file path with the format's extension")
    return p


def _jobs(args: argparse.Namespace) -> list[tuple[str, str]]:
    if args.all:
        if args.format or args.precision:
            raise FaceAnalysisError("--all exports the release set; do not combine it with --format/--precision")
        return list(RELEASE)
    if not args.format:
        raise FaceAnalysisError("give --format onnx|tflite|coreml (or --all)")
    fmts = [f.strip() for f in args.format.split(",") if f.strip()]
    jobs = []
    for f in fmts:
        precs = [p.strip() for p in args.precision.split(",")] if args.precision else [DEFAULT_PRECISION.get(f, "")]
        for prec in precs:
            check_choice(f, prec)
            jobs.append((f, prec))
    if len(jobs) > 1 and args.output and Path(args.output).suffix:
        raise FaceAnalysisError("several artifacts need -o to be a folder, not a file")
    return jobs


def main(argv: list[str] | None = None) -> int:
    """Run the export command; returns the exit status."""
    args = build_parser().parse_args(argv)
    return run_command("faceanalysis export", lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    require_export_extra()  # first: no warnings, checks or output folder before a missing torch is named
    from .pipeline import export_artifact

    jobs = _jobs(args)
    if (args.coreml_input != "tensor" or args.coreml_batch != 1) and not any(f == "coreml" for f, _ in jobs):
        raise FaceAnalysisError("--coreml-input / --coreml-batch need --format coreml")
    if args.coreml_input == "image" and args.coreml_batch != 1:
        raise FaceAnalysisError("--coreml-batch needs --coreml-input tensor: a CoreML image input is one picture; "
                                "batch images with MLModel.predictions(fromBatch:)")
    if args.onnx_int8 != "dynamic" and ("onnx", "int8") not in jobs:
        raise FaceAnalysisError("--onnx-int8 needs --format onnx --precision int8 (or --all)")
    if not 1 <= args.coreml_batch <= 1024:
        raise FaceAnalysisError(f"--coreml-batch must lie in 1..1024 (got {args.coreml_batch})")
    if args.calib_n < 1 or args.parity_n < 1:
        raise FaceAnalysisError("--calib-n and --parity-n must be >= 1")
    if args.calib_data is not None and not Path(args.calib_data).is_dir():
        raise FaceAnalysisError(f"--calib-data {args.calib_data} is not a folder; give a folder of face photos")
    if args.check_data is not None and not Path(args.check_data).is_dir():
        raise FaceAnalysisError(f"--check-data {args.check_data} is not a folder; give a folder of face photos")
    if args.no_check and args.check_data is not None:
        raise FaceAnalysisError("--no-check skips the parity check: do not combine it with --check-data")
    if args.calib_data and args.check_data and Path(args.calib_data).resolve() == Path(args.check_data).resolve():
        print("warning: --check-data is the --calib-data folder: parity on calibration photos reads better than "
              "on unseen ones; give a second folder for an honest check", flush=True)
    if not args.overwrite:
        from ..weights import DEFAULT_WEIGHTS
        from .pipeline import resolve_output

        weights = Path(args.weights) if args.weights else DEFAULT_WEIGHTS
        existing = [str(p) for f, pr in jobs if (p := resolve_output(args.output, weights, f, pr)).exists()]
        if existing:
            raise FaceAnalysisError(f"{', '.join(existing)} already exist(s); pass --overwrite to replace")
    shared = _shared_inputs(args, jobs)
    failed = 0
    for fmt, prec in jobs:
        print(f"exporting {fmt} {prec} ...", flush=True)
        path = export_artifact(fmt, prec, args.weights, args.output, args.calib_data, args.calib_n, args.parity_n,
                               args.data_root, calib=shared.get("calib"), parity_x=shared.get("parity"),
                               measure_parity=not args.no_check, parity_source=shared.get("parity_source"),
                               **_coreml_options(args, fmt), **_onnx_options(args, fmt, prec))
        side = json.loads(sidecar_path(path).read_text())
        from .parity import format_metrics

        par = side["parity"]
        line = format_metrics(par["metrics"]) if par.get("measured") else par["note"]
        status = "" if not par.get("measured") else (" FAIL: " + "; ".join(par["failures"]) if par["failures"]
                                                     else " (parity floors met)")
        failed += bool(par.get("failures"))
        print(f"  {path} {side['size_bytes'] / 1e6:.2f} MB\n  parity: {line}{status}")
    return 1 if (args.check and failed) else 0


def _coreml_options(args: argparse.Namespace, fmt: str) -> dict:
    """--coreml-input / --coreml-batch for CoreML jobs (other formats keep their own input)."""
    return {"coreml_input": args.coreml_input, "coreml_batch": args.coreml_batch} if fmt == "coreml" else {}


def _onnx_options(args: argparse.Namespace, fmt: str, precision: str) -> dict:
    """--onnx-int8 for the ONNX int8 job (the other artifacts have one route each)."""
    return {"onnx_int8_method": args.onnx_int8} if (fmt, precision) == ("onnx", "int8") else {}


def _shared_inputs(args: argparse.Namespace, jobs: list[tuple[str, str]]) -> dict:
    """Calibration / parity crops computed once for all artifacts of this command; calibration crops only when
    an artifact uses them (:func:`~faceanalysis.export.needs_calibration`)."""
    from ..weights import DEFAULT_WEIGHTS, read_config
    from .calibration import calibration_inputs, check_inputs

    cfg = read_config(args.weights or DEFAULT_WEIGHTS)
    out: dict = {}
    if any(needs_calibration(f, p, args.onnx_int8) for f, p in jobs):
        out["calib"] = calibration_inputs(cfg.preprocess, args.calib_data, args.calib_n, args.data_root)
    if not args.no_check and any(f != "coreml" for f, _ in jobs):
        out["parity"], out["parity_source"] = check_inputs(cfg.preprocess, args.check_data, args.parity_n,
                                                           args.data_root)
        if out["parity"] is None:
            if args.check:
                raise FaceAnalysisError(f"--check: parity {out['parity_source']}")
            print(f"warning: parity {out['parity_source']}", flush=True)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
