"""The browser demo (demos/web) in headless Chromium against the Python API.

The page runs the bundled YuNet and the shipped fp32 ONNX model on onnxruntime-web (from npm, served locally,
no network); its landmarks, pose, parsing, attributes and embedding must match ``FaceAnalyzer(backend="onnx")``
within the export parity floors. The in-browser latency is printed, and written to benchmarks/web_demo.md with FACEANALYSIS_WRITE_BENCHMARKS=1.

Needs Debian's ``chromium`` and ``npm ci`` in demos/web (.ci/run installs both). Without them the test is
skipped locally and fails under CI (``CI=true``).
"""
from __future__ import annotations

import base64
import glob
import importlib.util
import io
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "demos" / "web"


def _load(name: str):
    """A demos/web script as a module (by path: the names build / serve are too common to import by name)."""
    spec = importlib.util.spec_from_file_location(f"faceanalysis_web_{name}", WEB / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


web_build, headless, web_serve = _load("build"), _load("headless"), _load("serve")
make_server = web_serve.make_server

# int8 export parity floors (export/README.md) the browser must meet; it runs the same fp32 model, so the
# differences come only from JPEG decoding, resizing and the bilinear warp of the crop
FLOORS = {"embedding_cosine": (0.98, "min"), "landmarks_mean_px": (1.0, "max"), "pose_max_deg": (2.0, "max"),
          "parsing_agreement": (0.97, "min"), "expression_top1": (1.0, "min"), "attributes_max_abs": (0.05, "max"),
          "kps5_max_px": (0.5, "max")}
RUNS = 6  # analyses per photo in the page; the first warms up, the median of the rest is reported


def _missing(what: str) -> None:
    msg = f"web demo test needs {what}"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(msg + " (CI must install it: see .ci/run)")
    pytest.skip(msg)


@pytest.fixture(scope="module")
def browser():
    exe = headless.find_chromium()
    if exe is None:
        _missing("Debian's chromium on PATH (apt-get install chromium), or $CHROMIUM")
    if not (WEB / "node_modules" / "onnxruntime-web" / "dist" / "ort.wasm.min.mjs").is_file():
        _missing("onnxruntime-web: run `npm ci` in demos/web")
    web_build.build()  # models/yunet.onnx from the bundled detector (fast)
    srv = make_server(0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    b = headless.Browser(exe)
    try:
        b.navigate(f"http://127.0.0.1:{srv.server_port}/demos/web/?threads=1")
        b.wait_for("window.faceanalysisState && window.faceanalysisState !== 'loading'", timeout=180)
        state = b.evaluate("window.faceanalysisState")
        assert state == "ready", f"page did not load its models: {state}; console: {b.console()}"
        b.version = b.send("Browser.getVersion")["product"]
        yield b
    finally:
        b.close()
        srv.shutdown()


def _photos(data_root: Path) -> list[tuple[str, bytes, str]]:
    """(name, encoded bytes, mime): two pack portraits, the bundled example, and a portrait upscaled to 1280 px
    (detection at 768 px plus the coarse 640 px pass, and the area pre-shrink of a face scaled below 0.5)."""
    from PIL import Image

    paths = sorted(glob.glob(str(data_root / "celebamask_mini" / "images" / "*.jpg")))
    out = [(f"celebamask_mini/{Path(p).name}", Path(p).read_bytes(), "image/jpeg") for p in (paths[0], paths[7])]
    out.append(("examples/astronaut.jpg", (ROOT / "examples" / "astronaut.jpg").read_bytes(), "image/jpeg"))
    big = Image.open(paths[3]).convert("RGB").resize((1280, 1280), Image.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, "PNG")
    out.append((f"{Path(paths[3]).name} upscaled to 1280 px (PNG)", buf.getvalue(), "image/png"))
    return out


def _compare(py, js: dict) -> dict[str, float]:
    """Browser face vs Python face: errors in the units of the export parity floors."""
    from faceanalysis import align

    scale = align.scale_of(py.crop_matrix)  # image px -> crop px
    lm = np.asarray(js["landmarks"], np.float64)
    e = np.asarray(js["embedding"], np.float64)
    pose_js = np.array([js["pose"][k] for k in ("yaw", "pitch", "roll")])
    # parsing: class ids on the image pixels both masks cover
    pm, (px0, py0, px1, py1) = py.parsing.mask, py.parsing.box
    jx0, jy0, jx1, jy1 = js["parsing"]["box"]
    jm = np.asarray(js["parsing"]["mask"], np.uint8).reshape(js["parsing"]["height"], js["parsing"]["width"])
    x0, y0, x1, y1 = max(px0, jx0), max(py0, jy0), min(px1, jx1), min(py1, jy1)
    a = pm[y0 - py0:y1 - py0, x0 - px0:x1 - px0]
    b = jm[y0 - jy0:y1 - jy0, x0 - jx0:x1 - jx0]
    return {
        "kps5_max_px": float(np.abs(np.asarray(js["keypoints5"]) - py.keypoints5).max()),
        "landmarks_mean_px": float(np.linalg.norm(lm - py.landmarks, axis=1).mean() * scale),
        "landmarks_max_px": float(np.linalg.norm(lm - py.landmarks, axis=1).max() * scale),
        "pose_max_deg": float(np.abs(pose_js - np.asarray(py.pose)).max()),
        "embedding_cosine": float(e @ py.embedding / np.linalg.norm(e) / np.linalg.norm(py.embedding)),
        "parsing_agreement": float((a == b).mean()),
        "attributes_max_abs": max(abs(js["attributes"][k] - v) for k, v in py.attributes.items()),
        "age_abs": abs(js["age"] - py.age),
        "expression_top1": float(js["expression"] == py.expression),
    }


def test_web_demo_matches_python(browser, data_root):
    from faceanalysis import FaceAnalyzer

    fa = FaceAnalyzer(backend="onnx")
    rows, lat = [], []
    for name, data, mime in _photos(data_root):
        url = f"data:{mime};base64," + base64.b64encode(data).decode()
        res = browser.evaluate(f"window.faceanalysis.analyzeUrl({url!r}, {RUNS})", await_promise=True, timeout=300)
        assert res is not None, f"{name}: no result; console: {browser.console()}"
        py_faces = fa.analyze(data)
        py_ms = []
        for _ in range(RUNS - 1):
            t0 = time.perf_counter()
            fa.analyze(data)
            py_ms.append((time.perf_counter() - t0) * 1e3)
        assert len(res["faces"]) == len(py_faces) >= 1, \
            f"{name}: browser found {len(res['faces'])} faces, Python {len(py_faces)}"
        for js, py in zip(res["faces"], py_faces):
            m = _compare(py, js)
            rows.append((name, m))
            bad = [f"{k}={m[k]:.4g} ({kind} {floor})" for k, (floor, kind) in FLOORS.items()
                   if (m[k] < floor if kind == "min" else m[k] > floor)]
            assert not bad, f"{name}: browser vs Python outside the parity floors: {bad} (all: {m})"
        t = res["runs"][1:]
        lat.append((name, res["width"], res["height"], len(res["faces"]),
                    {k: statistics.median(r[k] for r in t) for k in t[0]}, statistics.median(py_ms)))
    _write_benchmark(rows, lat, browser.version)


def _write_benchmark(rows, lat, version: str) -> None:
    lines = [
        "# Web demo: in-browser latency and parity",
        "",
        "Written by `tests/test_web_demo.py` (headless Chromium, `demos/web/` on onnxruntime-web wasm, **1 thread**, "
        "the shipped `faceanalysis_s128.fp32.onnx` and the bundled YuNet). Median of "
        f"{RUNS - 1} analyses after one warm-up; ms.",
        "",
        f"Browser: {version}; onnxruntime-web {_ort_web_version()}; CPU: {platform.processor() or platform.machine()}, "
        f"measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "`python` is `FaceAnalyzer(backend=\"onnx\").analyze` on the same bytes in the test process, same CPU, for "
        "scale (it also decodes the photo and runs YuNet's orientation vote, which the page does not). The CPU may be "
        "shared with other jobs: compare rows of one run, not runs of different days.",
        "",
        "| photo | size | faces | detect | align | model | map back | **total** | python |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, w, h, n, t, py in lat:
        lines.append(f"| {name} | {w}x{h} | {n} | {t['detect']:.1f} | {t['align']:.1f} | {t['model']:.1f} | "
                     f"{t['postprocess']:.1f} | **{t['total']:.1f}** | {py:.1f} |")
    lines += ["", "Parity with `FaceAnalyzer(backend=\"onnx\")` on the same photo (landmarks in crop px; floors: "
              "embedding cosine >= 0.98, landmarks <= 1 px, pose <= 2 deg, parsing >= 97 %):", "",
              "| photo | kps5 max px | landmarks mean / max px | pose max deg | embedding cos | parsing agree | "
              "attr max abs | age abs | expression |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, m in rows:
        same = "same" if m["expression_top1"] else "differs"
        lines.append(f"| {name} | {m['kps5_max_px']:.4f} | {m['landmarks_mean_px']:.4f} / "
                     f"{m['landmarks_max_px']:.4f} | {m['pose_max_deg']:.4f} | {m['embedding_cosine']:.6f} | "
                     f"{m['parsing_agreement']:.4f} | {m['attributes_max_abs']:.4f} | {m['age_abs']:.3f} | {same} |")
    text = "\n".join(lines) + "\n"
    print(text)  # pytest -s shows it; the committed table is refreshed only on request (keeps a test run read-only)
    if os.environ.get("FACEANALYSIS_WRITE_BENCHMARKS") == "1":
        (ROOT / "benchmarks" / "web_demo.md").write_text(text)


def _ort_web_version() -> str:
    import json

    try:
        return json.loads((WEB / "node_modules" / "onnxruntime-web" / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return "?"
