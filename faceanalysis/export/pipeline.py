"""One export: load weights, convert, measure parity on held-out faces, write the JSON sidecar."""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import (DEFAULT_OUTPUT, EXTENSIONS, INPUT_NAME, ONNX_INT8_METHODS, artifact_name,
               check_choice, needs_calibration, precision_note, require_export_extra, sidecar_path)
from ..config import FaceAnalysisConfig
from ..errors import FaceAnalysisError

CONFIG_KEY = "faceanalysis_config"


def resolve_output(out: str | Path | None, weights: Path, fmt: str, precision: str) -> Path:
    """``out`` may be a file with the format's extension or a folder (default ``export_out`` in the working
    directory)."""
    ext = "." + EXTENSIONS[fmt]
    out = Path(out) if out is not None else DEFAULT_OUTPUT
    path = out if out.suffix == ext else out / artifact_name(weights, fmt, precision)
    if out.suffix and out.suffix != ext and out.suffix in {".onnx", ".tflite", ".mlpackage"}:
        raise FaceAnalysisError(f"output {out} has the wrong extension for {fmt}; use {ext} or give a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".write-test-"):
            pass
    except OSError as err:
        raise FaceAnalysisError(f"cannot write to {path.parent} ({err.strerror or err}); choose another -o") from err
    if path.exists() and path.is_dir() and fmt != "coreml":
        raise FaceAnalysisError(f"output {path} is a folder; give a file path or a different folder")
    return path


def output_info(cfg: FaceAnalysisConfig) -> list[dict[str, str]]:
    """Name, shape (after the batch axis) and meaning of every output, in graph order."""
    from ..tasks import get_tasks

    s = cfg.model.input_size
    info = []
    m = s // cfg.model.parsing_stride
    for t in get_tasks(list(cfg.model.tasks)):
        for name in t.output_names(cfg.model):
            shape, meaning = t.outputs[name]
            shape = (shape.replace("fS/p", str(round(m * cfg.model.parsing_field))).replace("S/p", str(m))
                     .replace("S/2", str(s // 2)).replace("E", str(cfg.model.embedding_dim)))
            info.append({"name": name, "shape": shape, "meaning": meaning})
    return info


def class_names() -> dict[str, list[str]]:
    from ..tasks.attributes import ATTRIBUTES
    from ..tasks.expression import CLASSES as EXPRESSIONS
    from ..tasks.parsing import CLASSES as PARSING

    return {"parsing": list(PARSING), "expression": list(EXPRESSIONS), "attributes": list(ATTRIBUTES)}


def preprocessing(cfg: FaceAnalysisConfig) -> dict[str, Any]:
    pre = cfg.preprocess
    return {"layout": "NCHW", "channels": "RGB", "dtype": "float32", "input_size": pre.input_size,
            "mean": list(pre.mean), "std": list(pre.std),
            "formula": "x = (pixel / 255 - mean) / std",
            "scale": [1.0 / (255.0 * s) for s in pre.std], "bias": [-m / s for m, s in zip(pre.mean, pre.std)],
            "alignment_template": [list(p) for p in pre.template],
            "alignment": "similarity warp of the 5 key points (right eye, left eye, nose, right / left mouth "
                         "corner) onto alignment_template * input_size (faceanalysis.align)"}


def build_metadata(cfg: FaceAnalysisConfig, weights_sha: str, fmt: str, precision: str) -> dict[str, str]:
    """String metadata stored inside the artifact (ONNX metadata_props / CoreML user metadata)."""
    return {CONFIG_KEY: cfg.to_json(), "format": fmt, "precision": precision, "weights_sha256": weights_sha,
            "preprocessing": json.dumps(preprocessing(cfg)), "output_names": json.dumps(cfg_output_names(cfg)),
            "class_names": json.dumps(class_names()), "input_name": INPUT_NAME}


def cfg_output_names(cfg: FaceAnalysisConfig) -> list[str]:
    return [o["name"] for o in output_info(cfg)]


def _versions(fmt: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = {"onnx": ["torch", "onnx", "onnxruntime", "onnxconverter-common"],
             "tflite": ["torch", "litert-torch", "ai-edge-litert", "torchao"],
             "coreml": ["torch", "coremltools"]}[fmt]
    out = {}
    for n in names:
        try:
            out[n] = version(n)
        except PackageNotFoundError:
            pass
    return out


def export_artifact(fmt: str, precision: str, weights: str | Path | None = None, out: str | Path | None = None,
                    calib_data: str | Path | None = None, calib_n: int = 300, parity_n: int = 64,
                    data_root: str | Path | None = None, calib: np.ndarray | None = None,
                    parity_x: np.ndarray | None = None, check: bool = False, check_data: str | Path | None = None,
                    measure_parity: bool = True, parity_source: str | None = None, coreml_input: str = "tensor",
                    coreml_batch: int = 1, onnx_int8_method: str = "dynamic") -> Path:
    """Export one artifact and write its sidecar; returns the artifact path.

    Calibration uses ``calib_data`` (a folder of face photos) or else the data pack's training splits, and is
    collected only for the artifacts that use it (:func:`~faceanalysis.export.needs_calibration`: TFLite int8 and
    static int8 ONNX; not dynamic int8 ONNX, TFLite int8-dynamic, CoreML or float precisions);
    the parity check uses ``check_data`` (a folder of face photos) or else the pack's held-out test splits,
    and is skipped (noted in the sidecar) when neither is there or ``measure_parity`` is False.
    ``calib`` / ``parity_x`` (normalised crops, described by ``parity_source``) override both (used by tests
    and to share crops between artifacts). With ``check``, parity floors that are missed raise.
    ``coreml_input`` / ``coreml_batch``: CoreML input kind (``"tensor"`` or ``"image"``) and flexible batch size
    (:mod:`faceanalysis.export.coreml_export`); other formats refuse anything but the defaults.
    ``onnx_int8_method``: the int8 ONNX route (:func:`~faceanalysis.export.onnx_export.to_int8`): ``"dynamic"``
    (default, no calibration) or ``"static"`` (calibrated; raises when no calibration photos are found).
    """
    from ..weights import DEFAULT_WEIGHTS, file_sha256, load_model
    from .calibration import calibration_inputs, check_inputs

    require_export_extra("export_artifact")
    check_choice(fmt, precision)
    if fmt != "coreml" and (coreml_input != "tensor" or coreml_batch != 1):
        raise FaceAnalysisError(f"--coreml-input / --coreml-batch apply to --format coreml only (not {fmt})")
    if onnx_int8_method not in ONNX_INT8_METHODS:
        raise FaceAnalysisError(f"unknown ONNX int8 method {onnx_int8_method!r} (--onnx-int8); choose from "
                                f"{ONNX_INT8_METHODS}")
    if onnx_int8_method != "dynamic" and (fmt, precision) != ("onnx", "int8"):
        raise FaceAnalysisError(f"--onnx-int8 applies to --format onnx --precision int8 only (not {fmt} {precision})")
    weights = Path(weights) if weights is not None else DEFAULT_WEIGHTS
    if calib_data is not None and not Path(calib_data).exists():
        raise FaceAnalysisError(f"calibration data {calib_data} does not exist; give a folder of face photos")
    if check_data is not None and not Path(check_data).is_dir():
        raise FaceAnalysisError(f"check data {check_data} is not a folder; give a folder of face photos")
    needs_calib = needs_calibration(fmt, precision, onnx_int8_method)
    if calib_data is not None and not needs_calib:
        why = " (dynamic quantization; --onnx-int8 static calibrates)" if (fmt, precision) == ("onnx", "int8") else ""
        print(f"note: --calib-data is not used for {fmt} {precision}{why}")
    model, cfg = load_model(weights)  # raises when the weights do not match their config
    path = resolve_output(out, weights, fmt, precision)
    sha = file_sha256(weights)
    meta = build_metadata(cfg, sha, fmt, precision)
    calib_info: dict[str, Any] | None = None
    if needs_calib and calib is None:
        calib = calibration_inputs(cfg.preprocess, calib_data, calib_n, data_root)
    if needs_calib:
        calib_info = {"images": int(len(calib)), "source": Path(calib_data).name + "/ (--calib-data)" if calib_data
                      else "data pack training splits: utkface train, celeba_attr train, fer2013 Training"}
    t0 = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="fa-export-"))
    try:
        if fmt == "onnx":
            from . import onnx_export

            fp32 = onnx_export.export_fp32(model, tmp / "fp32.onnx", meta)
            if precision == "fp32":
                shutil.move(fp32, path)
            elif precision == "fp16":
                onnx_export.to_fp16(fp32, path)
            else:
                onnx_export.to_int8(fp32, path, calib if needs_calib else None, method=onnx_int8_method)
        elif fmt == "tflite":
            from . import tflite_export

            tflite_export.export(model, cfg, path, precision, calib)
        else:
            from . import coreml_export

            desc = {o["name"]: f"({o['shape']}) {o['meaning']}" for o in output_info(cfg)}
            coreml_export.export(model, cfg, path, precision, meta, desc, coreml_input, coreml_batch)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.time() - t0
    size = _size(path)
    side: dict[str, Any] = {
        "format": fmt, "precision": precision, "precision_note": precision_note(fmt, precision, onnx_int8_method),
        "file": path.name, "size_bytes": size,
        "input": {"name": INPUT_NAME, "shape": ["N" if fmt == "onnx" else 1, 3, cfg.model.input_size,
                                                 cfg.model.input_size], **preprocessing(cfg)},
        "outputs": output_info(cfg), "class_names": class_names(),
        "weights": {"file": weights.name, "sha256": sha}, "config": json.loads(cfg.to_json()),
        "calibration": calib_info, "tools": _versions(fmt), "export_seconds": round(seconds, 1),
    }
    if (fmt, precision) == ("onnx", "int8"):
        side["int8_method"] = onnx_int8_method
    if fmt == "tflite":
        from .tflite_export import SIGNATURE
        side["signature"] = SIGNATURE
        side["tensor_names"] = "signature outputs are named as in 'outputs' (signature runner keys)"
    if fmt == "coreml":
        from .coreml_export import input_info

        side["input"]["coreml"] = input_info(cfg, coreml_input, coreml_batch)
        side["input"]["shape"][0] = 1 if coreml_batch == 1 else f"1..{coreml_batch}"
        side["parity"] = {"measured": False, "note": "CoreML prediction needs macOS: run "
                          "python export/check_coreml_macos.py " + path.name + " on a Mac"}
    elif not measure_parity:
        side["parity"] = {"measured": False, "note": "not measured (--no-check)"}
    else:
        if parity_x is None:
            parity_x, parity_source = check_inputs(cfg.preprocess, check_data, parity_n, data_root)
        if parity_x is None:
            side["parity"] = {"measured": False, "note": parity_source}
        else:
            side["parity"] = measure(path, fmt, model, parity_x, precision, meta_cfg=cfg,
                                     images=parity_source or f"{len(parity_x)} given crops")
    sidecar_path(path).write_text(json.dumps(side, indent=1))
    if check and fmt != "coreml" and not side["parity"].get("measured"):
        raise FaceAnalysisError(f"{path.name}: parity could not be checked ({side['parity']['note']})")
    if check and side["parity"].get("failures"):
        raise FaceAnalysisError(f"{path.name} misses the {precision} parity floors: "
                                + "; ".join(side["parity"]["failures"]))
    return path


def measure(path: Path, fmt: str, model, x: np.ndarray, precision: str, meta_cfg: FaceAnalysisConfig | None = None,
            images: str = "held-out test splits (celebamask_mini, utkface, celeba_attr test)") -> dict[str, Any]:
    """Parity metrics of an artifact against ``model`` on normalised crops ``x``."""
    from . import parity
    from .runners import load_runner

    runner = load_runner(fmt, path, config=meta_cfg)
    ref = parity.torch_reference(model, x)
    out = parity.run_batched(runner, x, 16)
    m = parity.compare(ref, out)
    return {"measured": True, "images": images,
            "metrics": m, "floors": {k: list(v) for k, v in parity.floors_for(precision).items()},
            "failures": parity.failures(m, precision)}


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size
