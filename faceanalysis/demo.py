"""Webcam / video demo: ``faceanalysis demo`` (in a clone of the repository also ``python demos/webcam.py``).

Reads a camera, video file, stream URL or image, runs :class:`~faceanalysis.track.VideoAnalyzer` on each
frame (stable track ids, temporal smoothing) and draws every task's overlay plus an FPS / per-stage
latency readout. Shows a window, or writes the annotated video headless (``--no-display --output``).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import cv2
import numpy as np

from .config import TTA_HELP, TTA_MODES
from .decode import IMAGE_EXTS, IMAGE_EXTS_HELP
from .errors import FaceAnalysisError, run_command

if TYPE_CHECKING:
    from .api import Face, FaceAnalyzer

#: extensions --screenshot may write (cv2.imwrite)
SCREENSHOT_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
#: fourcc per output extension (VideoWriter / FFmpeg)
FOURCC = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
KEYS = {ord("p"): "parsing", ord("l"): "landmarks", ord("a"): "attributes", ord("e"): "expression",
        ord("o"): "pose", ord("b"): "box", ord("i"): "identity"}
WINDOW = "faceanalysis demo"

EPILOG = f"""\
keys (window mode): p parsing, l landmarks, a attributes, e expression, o pose axes, b boxes + track ids,
  i identity names, q or Esc quit.

gallery: --gallery DIR holds one photo per person (file stem = name, e.g. DIR/Ada.jpg). Each photo is enrolled
  with the model's identity embedding (largest face); a tracked face is labelled with the best-matching name
  when the cosine similarity of the (smoothed) embeddings is >= --match-threshold. By default that is the
  threshold for a 1 % false-accept rate on LFW View-2 from the weights' verification calibration
  (<weights>.verify.json, the one FaceAnalyzer.verify reads; verify uses its looser best-accuracy threshold,
  the gallery prefers no name to a wrong one). Weights without a calibration need
  python -m faceanalysis.verification --data-root DATA --weights W, or an explicit --match-threshold.
  Raise it for fewer false matches, lower it for more recall.

backend: 'auto' (default) runs the shipped ONNX model (the fastest on a CPU) when onnxruntime imports, else
  torch; with --weights the backend follows the file's suffix (.safetensors torch, .onnx onnx, .tflite tflite).

headless: --no-display --output out.mp4 (mp4v; .avi = MJPG) writes the annotated video without a window;
  --max-frames N bounds the run; --log run.jsonl writes one JSON line per frame (timings, track ids, boxes).
"""


# ---- arguments ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from .draw import LAYERS

    from ._argparse import ArgumentParser, DeprecatedAlias, HelpFormatter

    class Formatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass

    p = ArgumentParser(prog="faceanalysis demo", description="Live face analysis on a camera, video or image.",
                                epilog=EPILOG, formatter_class=Formatter)
    p.add_argument("--source", default="0", help="camera index, video file, stream URL or image file (default 0); "
                   "an image is shown as a still video of --max-frames frames (default 1)")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx", "tflite"],
                   help="runtime (see 'backend' below)")
    p.add_argument("--weights", default=None, help="weights / exported artifact (default: the shipped model)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument("--max-side", type=int, default=640, metavar="PX",
                   help="frames are downscaled to this longer side for detection only")
    p.add_argument("--det-size", type=int, dest="max_side", action=DeprecatedAlias, new="--max-side")
    p.add_argument("--max-faces", type=int, default=None, metavar="N",
                   help="keep at most N faces per frame, largest first (default: all)")
    p.add_argument("--detect-every", type=int, default=1,
                   help="run the detector every Nth frame, track in between (default 1 = every frame)")
    p.add_argument("--no-smooth", action="store_true", help="turn temporal smoothing off")
    p.add_argument("--tta", default=None, choices=list(TTA_MODES),
                   help=TTA_HELP + " (gallery photos are embedded the same way)")
    p.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS),
                   help="layers drawn at start (default all)")
    p.add_argument("--gallery", default=None, help="folder with one photo per person (file stem = name)")
    p.add_argument("--match-threshold", type=float, default=None,
                   help="cosine similarity needed for a gallery match (default: the weights' calibrated threshold "
                        "at 1%% false accepts, see 'gallery' below)")
    p.add_argument("--output", default=None, help="write the annotated video here (.mp4 or .avi)")
    p.add_argument("--fourcc", default=None, help="codec for --output (default by extension: mp4v / MJPG)")
    p.add_argument("--fps", type=float, default=None, help="output frame rate (default: the source's, else 30)")
    p.add_argument("--no-display", action="store_true", help="no window (headless)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after N frames")
    p.add_argument("--log", default=None, help="write per-frame JSON lines here")
    p.add_argument("--screenshot", default=None, help="save the last annotated frame as an image")
    p.add_argument("--overwrite", action="store_true", help="replace existing --output / --log / --screenshot files")
    p.add_argument("--quiet", action="store_true", help="no summary at the end")
    return p


def resolve_backend(backend: str, weights: str | None) -> tuple[str, str | None]:
    """(backend, weights): with ``auto`` the suffix of ``weights`` decides; without weights the shipped ONNX
    model runs when onnxruntime imports (the fastest on a CPU), else torch."""
    from . import runtime

    if backend != "auto" or weights:
        return runtime.resolve_backend(backend, weights), weights
    import importlib.util

    from .weights import DEFAULT_ONNX

    if DEFAULT_ONNX.is_file() and importlib.util.find_spec("onnxruntime") is not None:
        return "onnx", str(DEFAULT_ONNX)
    return "torch", None


# ---- sources and sinks ----------------------------------------------------------------------
class Source:
    """Frames (RGB uint8) with timestamps (ms) from a camera index, video file, URL or image file."""

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self.image: np.ndarray | None = None
        self.cap: cv2.VideoCapture | None = None
        self.is_live = False
        self.fps = 0.0
        if spec.strip().lstrip("-").isdigit():
            index = int(spec)
            self.is_live = True
            self.cap = cv2.VideoCapture(index)
            if not self.cap.isOpened():
                raise FaceAnalysisError(f"camera {index} could not be opened (no camera attached, in use by another "
                                        "program, or no permission); pass --source VIDEO_FILE to run on a file")
            self.what = f"camera {index}"
        elif "://" in spec:
            self.is_live = True
            self.cap = cv2.VideoCapture(spec)
            if not self.cap.isOpened():
                raise FaceAnalysisError(f"stream {spec} could not be opened (unreachable, wrong URL or unsupported "
                                        "protocol); check it with ffplay / VLC")
            self.what = f"stream {spec}"
        else:
            path = Path(spec)
            if not path.exists():
                raise FaceAnalysisError(f"source {path} does not exist; pass a video file, image, URL or camera index")
            if path.is_dir():
                raise FaceAnalysisError(f"source {path} is a folder; pass a video file, image, URL or camera index")
            self.what = str(path)
            if path.suffix.lower() in IMAGE_EXTS:
                from .preprocess import load_image

                self.image = load_image(path)
            else:
                self.cap = cv2.VideoCapture(str(path))
                if not self.cap.isOpened():
                    raise FaceAnalysisError(f"cannot read video {path}: not a video format / codec this OpenCV "
                                            "(FFmpeg) build can decode; convert it, e.g. ffmpeg -i IN -c:v libx264 out.mp4")
        if self.cap is not None:
            fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0)
            self.fps = fps if 0 < fps <= 240 else 0.0

    def frames(self, repeat: int = 1) -> Iterator[tuple[np.ndarray, float]]:
        """Yields ``(rgb, timestamp_ms)``; raises when not even the first frame can be read. An image source
        is a video of ``repeat`` identical frames at 30 FPS (e.g. to measure speed on a still image)."""
        if self.image is not None:
            for i in range(repeat):
                yield self.image, i * 1000.0 / 30.0
            return
        assert self.cap is not None
        start = time.monotonic()
        last = -1.0
        i = 0
        while True:
            ok, bgr = self.cap.read()
            if not ok or bgr is None:
                if i == 0:
                    raise FaceAnalysisError(f"could not read a frame from {self.what} (empty, corrupt or undecodable)")
                return
            if self.is_live:
                t = max((time.monotonic() - start) * 1000.0, last + 1e-3)
            else:
                t = i * 1000.0 / (self.fps or 30.0)
            last = t
            i += 1
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), t

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()


def check_new_file(path: str | None, flag: str, overwrite: bool) -> None:
    """Refuse to replace an existing output file unless ``overwrite``; the folder must exist or be creatable."""
    if path is None:
        return
    p = Path(path)
    if p.is_dir():
        raise FaceAnalysisError(f"{flag} {p} is a folder; give a file name")
    if p.exists() and not overwrite:
        raise FaceAnalysisError(f"{flag} {p} exists; pass --overwrite to replace it")


def open_writer(path: str, size: tuple[int, int], fps: float, fourcc: str | None) -> cv2.VideoWriter:
    """A VideoWriter for ``path`` that is known to be open."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    code = fourcc or FOURCC.get(p.suffix.lower())
    if code is None:
        raise FaceAnalysisError(f"--output {p}: unsupported extension {p.suffix!r}; use one of "
                                f"{', '.join(sorted(FOURCC))} (or pass --fourcc with an extension FFmpeg knows)")
    if len(code) != 4:
        raise FaceAnalysisError(f"--fourcc must be 4 characters (e.g. mp4v, MJPG, XVID), got {code!r}")
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        writer = cv2.VideoWriter(str(p), cv2.VideoWriter_fourcc(*code), fps, size)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if not writer.isOpened():
        raise FaceAnalysisError(f"cannot open a video writer for {p} with codec {code!r} in this OpenCV build; "
                                "use .mp4 (mp4v) or .avi (MJPG), or another --fourcc")
    return writer


def check_gui() -> None:
    """Raise a clear error when no window can be opened (headless OpenCV build or no display)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise FaceAnalysisError("no display available (DISPLAY is not set); run headless with "
                                "--no-display --output out.mp4")
    try:
        cv2.namedWindow(WINDOW, cv2.WINDOW_NORMAL)
    except cv2.error as err:
        raise FaceAnalysisError(
            "this OpenCV build has no GUI support (opencv-python-headless), so no window can be shown: "
            "pip uninstall opencv-python-headless && pip install opencv-python, "
            "or run headless with --no-display --output out.mp4") from err


# ---- gallery --------------------------------------------------------------------------------
def load_gallery(analyzer: "FaceAnalyzer", folder: str) -> dict[str, np.ndarray]:
    """Enrol one photo per person (file stem = name) -> ``{name: L2-normalised embedding}``."""
    d = Path(folder)
    if not d.is_dir():
        raise FaceAnalysisError(f"--gallery {d} is not a folder; give a folder with one photo per person")
    photos = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not photos:
        raise FaceAnalysisError(f"--gallery {d} contains no photos ({IMAGE_EXTS_HELP}); "
                                "add one photo per person named after them, e.g. Ada.jpg")
    if "identity" not in analyzer.task_names:
        raise FaceAnalysisError("--gallery needs the identity task")
    gallery = {}
    for photo in photos:
        faces = analyzer.analyze(photo)
        if not faces:
            raise FaceAnalysisError(f"gallery photo {photo} has no detectable face; use a clear, frontal photo "
                                    "or remove it from the folder")
        face = max(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))
        e = np.asarray(face.embedding, np.float64)
        gallery[photo.stem] = e / max(np.linalg.norm(e), 1e-12)
    return gallery


def gallery_threshold(analyzer: "FaceAnalyzer") -> float:
    """The default ``--match-threshold``: the analyzer's stored verification calibration at a 1 % false-accept
    rate (:func:`faceanalysis.verification.threshold_for_far`)."""
    from .verification import GALLERY_FAR, threshold_for_far

    try:
        return threshold_for_far(analyzer.calibration, GALLERY_FAR)
    except FaceAnalysisError as err:
        raise FaceAnalysisError(f"{err} (for the gallery: pass --match-threshold)") from err


def match_gallery(embedding: np.ndarray | None, gallery: dict[str, np.ndarray],
                  threshold: float) -> tuple[str, float] | None:
    """Best gallery name and cosine similarity when it reaches ``threshold``, else ``None``."""
    if embedding is None or not gallery:
        return None
    e = np.asarray(embedding, np.float64)
    e = e / max(np.linalg.norm(e), 1e-12)
    name, sim = max(((n, float(g @ e)) for n, g in gallery.items()), key=lambda kv: kv[1])
    return (name, sim) if sim >= threshold else None


# ---- drawing --------------------------------------------------------------------------------
def annotate(rgb: np.ndarray, faces: list["Face"], layers: set[str],
             names: list[tuple[str, float] | None], avoid: tuple = ()) -> np.ndarray:
    """Overlay of every enabled layer plus a ``#track_id`` (box layer) / ``name`` (identity layer) caption;
    text keeps off the ``avoid`` boxes (e.g. the readout's, :func:`readout_layout`)."""
    from .draw import draw

    labels = []
    for f, m in zip(faces, names):
        parts = []
        if "box" in layers and "track_id" in f.extra:
            parts.append(f"#{f.extra['track_id']}")
        if "identity" in layers and m is not None:
            parts.append(f"{m[0].replace('_', ' ')} ({m[1]:.2f})")
        labels.append(" ".join(parts))
    return draw(rgb, faces, layers=layers, labels=labels, avoid=avoid)


READOUT_COLOUR = (255, 255, 0)


def _readout_lines(fps: float, timings: dict[str, float], backend: str) -> list[str]:
    return [f"{fps:5.1f} FPS  [{backend}]",
            "detect {detect:.1f} ms  model {model:.1f} ms  draw {draw:.1f} ms".format(**timings)]


def readout_layout(shape: tuple[int, ...], backend: str, fps: float | None = None,
                   timings: dict[str, float] | None = None):
    """Where the FPS / latency block goes (top-left corner; font from the frame size, shrunk to fit): a
    :class:`~faceanalysis.draw.PlacedLabel` whose box is the same on every frame unless a value gets wider
    than ``888.8``; ``None`` when the frame is too small for it."""
    from .draw import FONT, MIN_FONT_SCALE, Label, place_at

    scale = max(MIN_FONT_SCALE, 0.03 * min(shape[:2]) / cv2.getTextSize("H", FONT, 1.0, 1)[0][1])
    wide = _readout_lines(888.8, dict.fromkeys(("detect", "model", "draw"), 888.8), backend)
    placed = place_at(Label(wide, READOUT_COLOUR), 0, 0, scale, shape)
    if fps is None or timings is None or placed is None:
        return placed
    lines = _readout_lines(fps, timings, backend)
    actual = place_at(Label(lines, READOUT_COLOUR), 0, 0, scale, shape)
    if actual is None or actual.box[2] > placed.box[2] or actual.font_scale != placed.font_scale \
            or len(actual.lines) != len(lines):
        return actual
    placed.label, placed.lines = actual.label, actual.lines
    return placed


def draw_readout(canvas: np.ndarray, fps: float, timings: dict[str, float], backend: str) -> None:
    """FPS and per-stage latency block in the top-left corner (in place)."""
    from .draw import render_label

    placed = readout_layout(canvas.shape, backend, fps, timings)
    if placed is not None:
        render_label(canvas, placed)


# ---- main loop ------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    """The demo; raises :class:`FaceAnalysisError` for user errors."""
    from .api import FaceAnalyzer
    from .track import VideoAnalyzer

    if args.max_frames is not None and args.max_frames < 1:
        raise FaceAnalysisError("--max-frames must be >= 1")
    if args.detect_every < 1:
        raise FaceAnalysisError("--detect-every must be >= 1")
    if args.match_threshold is not None and not -1.0 <= args.match_threshold <= 1.0:
        raise FaceAnalysisError("--match-threshold is a cosine similarity: give a value in [-1, 1]")
    if args.gallery is not None and not Path(args.gallery).is_dir():
        raise FaceAnalysisError(f"--gallery {args.gallery} is not a folder; give a folder with one photo per person")
    for path, flag in ((args.output, "--output"), (args.log, "--log"), (args.screenshot, "--screenshot")):
        check_new_file(path, flag, args.overwrite)
    if args.screenshot and Path(args.screenshot).suffix.lower() not in SCREENSHOT_EXTS:
        raise FaceAnalysisError(f"--screenshot {args.screenshot}: use an image extension ({', '.join(sorted(SCREENSHOT_EXTS))})")
    if args.output and not args.fourcc and Path(args.output).suffix.lower() not in FOURCC:
        raise FaceAnalysisError(f"--output {args.output}: unsupported extension {Path(args.output).suffix!r}; use one "
                                f"of {', '.join(sorted(FOURCC))} (or pass --fourcc with an extension FFmpeg knows)")
    display = not args.no_display
    if display:
        check_gui()

    source = Source(args.source)
    writer = log = None
    try:
        frames = source.frames(repeat=args.max_frames or 1)
        first = next(frames)
        h, w = first[0].shape[:2]
        backend, weights = resolve_backend(args.backend, args.weights)
        analyzer = FaceAnalyzer(weights=weights, device=args.device, backend=backend, det_max_side=args.max_side,
                                max_faces=args.max_faces, tta=args.tta)
        gallery = load_gallery(analyzer, args.gallery) if args.gallery else {}
        threshold = args.match_threshold
        if gallery and threshold is None:
            threshold = gallery_threshold(analyzer)
        if args.output:  # opened last, so an earlier error leaves no empty video behind
            writer = open_writer(args.output, (w, h), args.fps or source.fps or 30.0, args.fourcc)
        video = VideoAnalyzer(analyzer, detect_every=args.detect_every, smooth=not args.no_smooth)
        if args.log:
            Path(args.log).parent.mkdir(parents=True, exist_ok=True)
            log = open(args.log, "w")
        layers = set(args.layers)
        fps = 0.0
        stats: dict[str, list[float]] = {"detect": [], "model": [], "draw": [], "frame": []}
        last_end = time.perf_counter()
        canvas_bgr = None
        n = 0
        hud_box = readout_layout(first[0].shape, backend)
        hud = () if hud_box is None else (hud_box.box,)  # face labels keep off the readout

        def all_frames():
            yield first
            yield from frames

        for rgb, t_ms in all_frames():
            faces = video.process(rgb, t_ms)
            timings = dict(video.last_timings)
            names = [match_gallery(f.embedding, gallery, threshold) for f in faces]
            t0 = time.perf_counter()
            canvas = annotate(rgb, faces, layers, names, avoid=hud)
            timings["draw"] = (time.perf_counter() - t0) * 1e3
            draw_readout(canvas, fps, timings, backend)
            canvas_bgr = cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)
            if writer is not None:
                writer.write(canvas_bgr)
            if log is not None:
                log.write(json.dumps({
                    "frame": n, "t_ms": round(t_ms, 3), "detected": video.last_detected,
                    "timings_ms": {k: round(v, 3) for k, v in timings.items()},
                    "faces": [{"track_id": f.extra["track_id"], "bbox": [round(float(v), 2) for v in f.bbox],
                               "score": round(f.score, 4), "name": None if m is None else m[0],
                               "similarity": None if m is None else round(m[1], 4)} for f, m in zip(faces, names)],
                }) + "\n")
            n += 1
            if display:
                cv2.imshow(WINDOW, canvas_bgr)
                key = cv2.waitKey(1) & 0xFF
                if key in (ord("q"), 27):
                    break
                if key in KEYS:
                    layers ^= {KEYS[key]}
            now = time.perf_counter()
            dt = now - last_end
            last_end = now
            for k in ("detect", "model", "draw"):
                stats[k].append(timings[k])
            stats["frame"].append(dt * 1e3)
            fps = 1.0 / dt if fps == 0 else 0.9 * fps + 0.1 / max(dt, 1e-6)
            if args.max_frames is not None and n >= args.max_frames:
                break
        if display and source.image is not None and canvas_bgr is not None:
            cv2.waitKey(0)  # a still image: keep the window until a key is pressed
        if args.screenshot and canvas_bgr is not None:
            Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(args.screenshot), canvas_bgr):
                raise FaceAnalysisError(f"could not write --screenshot {args.screenshot}")
        if not args.quiet:
            med = {k: statistics.median(v) for k, v in stats.items() if v}
            print(f"{n} frame(s) from {source.what} [{backend}]: {1000.0 / med['frame']:.1f} FPS (median frame "
                  f"{med['frame']:.1f} ms; detect {med['detect']:.1f} / model {med['model']:.1f} / "
                  f"draw {med['draw']:.1f} ms)" + (f" -> {args.output}" if args.output else ""), file=sys.stderr)
    finally:
        source.close()
        if writer is not None:
            writer.release()
        if log is not None:
            log.close()
        if display:
            try:
                cv2.destroyAllWindows()
            except cv2.error:
                pass
    return 0


def main(argv: list[str] | None = None) -> int:
    """``faceanalysis demo`` entry point; user errors print one line and return 2."""
    args = build_parser().parse_args(argv)
    return run_command("faceanalysis demo", lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())
