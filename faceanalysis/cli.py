"""The ``faceanalysis`` command: analyze, verify, index, train, eval, export, demo, pseudo-label."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._argparse import ArgumentParser, DeprecatedAlias, HelpFormatter
from .errors import FaceAnalysisError, run_command
from .config import TTA_HELP, TTA_MODES

#: overlays are PNGs named <stem>_faces.png carrying this tEXt key, so that no run reads them back as inputs
OVERLAY_SUFFIX, OVERLAY_KEY = "_faces.png", b"faceanalysis-overlay"


def _shown(path: Path | str) -> str:
    """A file name as one printable line: undecodable bytes and control characters escaped."""
    text = str(path).encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _say(text: str, file=None) -> None:
    file = file or sys.stdout
    try:
        print(text, file=file, flush=True)
    except UnicodeEncodeError:  # a terminal that cannot show the name
        enc = getattr(file, "encoding", None) or "ascii"
        print(text.encode(enc, "backslashreplace").decode(enc), file=file, flush=True)


def _is_overlay(path: Path) -> bool:
    """An overlay written by ``analyze --draw`` (its marker chunk sits right after the PNG header)."""
    if not path.name.endswith(OVERLAY_SUFFIX):
        return False
    try:
        with path.open("rb") as f:
            return OVERLAY_KEY in f.read(256)
    except OSError:
        return False


def _overlay_png(rgb) -> bytes:
    """PNG bytes of an RGB overlay with the marker chunk (tEXt) after IHDR."""
    import zlib

    import cv2

    ok, buf = cv2.imencode(".png", rgb[:, :, ::-1])
    if not ok:
        raise FaceAnalysisError("OpenCV could not encode the overlay as PNG")
    png = buf.tobytes()
    data = OVERLAY_KEY + b"\0" + b"faceanalysis analyze --draw"
    chunk = len(data).to_bytes(4, "big") + b"tEXt" + data + zlib.crc32(b"tEXt" + data).to_bytes(4, "big")
    return png[:33] + chunk + png[33:]  # 8-byte signature + 25-byte IHDR chunk


def _overlay_target(out_dir: Path, src: Path) -> Path:
    """``<out_dir>/<stem>_faces.png``; stems too long for a file name are shortened with a hash."""
    import hashlib
    import os

    name = src.stem + OVERLAY_SUFFIX
    if len(os.fsencode(name)) > 255:
        digest = hashlib.sha1(os.fsencode(src.name)).hexdigest()[:10]
        stem = os.fsencode(src.stem)[:200].decode("utf-8", "ignore")
        name = f"{stem}~{digest}{OVERLAY_SUFFIX}"
    return out_dir / name


def _collect(paths: list[str], exclude: list[Path] | None = None) -> tuple[list[Path], int]:
    """Image files of the given files and folders (folders searched recursively, symlinked folders not
    followed), and how many output files were left out: anything under ``exclude`` (this run's --draw folder,
    --json / --jsonl files) and overlays written by earlier runs."""
    import os

    from .decode import IMAGE_EXTS, IMAGE_EXTS_HELP

    ex = [e.resolve() for e in exclude or []]

    def excluded(q: Path) -> bool:
        r = q.resolve()
        return any(r == e or e in r.parents for e in ex) or _is_overlay(q)

    files: list[Path] = []
    skipped = 0
    for p in map(Path, paths):
        if p.is_dir():
            found = []
            for root, dirs, names in os.walk(p, followlinks=False):
                dirs.sort()
                found.extend(Path(root) / n for n in names if Path(n).suffix.lower() in IMAGE_EXTS)
            kept = [q for q in sorted(found, key=lambda q: os.fsencode(q)) if not excluded(q)]
            skipped += len(found) - len(kept)
            if not kept:
                raise FaceAnalysisError(f"folder {_shown(p)} contains no images ({IMAGE_EXTS_HELP})"
                                        + (f"; {skipped} output file(s) of faceanalysis left out" if skipped else ""))
            files.extend(kept)
        elif p.exists():
            files.append(p)
        else:
            raise FaceAnalysisError(f"{_shown(p)} does not exist")
    return files, skipped


#: the output name that means standard output (``--json -`` / ``--jsonl -``), as in most command-line tools
STDOUT = "-"


class _Results:
    """Streams results as they are produced: ``--jsonl`` one JSON object per line, ``--json`` one JSON object
    {path: faces or {"error": ...}} written entry by entry (closed even when the run stops early); a path of
    :data:`STDOUT` writes to standard output."""

    def __init__(self, json_path: str | None, jsonl_path: str | None) -> None:
        self._files = []
        self._json = self._jsonl = None
        self._first = True
        for path, attr in ((json_path, "_json"), (jsonl_path, "_jsonl")):
            if path == STDOUT:
                setattr(self, attr, sys.stdout)
            elif path:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                f = open(path, "w", encoding="utf-8")
                setattr(self, attr, f)
                self._files.append(f)
        if self._json:
            self._json.write("{\n")

    def add(self, name: str, record: dict) -> None:
        if self._jsonl:
            self._jsonl.write(json.dumps({"path": name, **record}) + "\n")
            self._jsonl.flush()
        if self._json:
            value = {"error": record["error"]} if "faces" not in record else record["faces"]
            self._json.write(("" if self._first else ",\n") + json.dumps(name) + ": " + json.dumps(value))
            self._json.flush()
            self._first = False

    def close(self) -> None:
        try:
            if self._json:
                self._json.write("\n}\n")
        finally:  # the files are closed even when standard output is gone (a reader that stopped early)
            for f in self._files:
                f.close()


def cmd_analyze(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .api import FaceAnalyzer
    from .decode import frame_count
    from .draw import draw
    from .preprocess import load_image

    import cv2

    # the decoders' own messages (libpng / libjpeg / OpenCV) would repeat each file's one-line error
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    if getattr(args, "out", None):  # the streaming, resumable Parquet path (faceanalysis/batch.py)
        from .batch import cmd_batch

        return cmd_batch(args)
    for flag in ("resume", "address", "workers", "flush_every"):
        if getattr(args, flag, None) not in (None, False, 256):
            raise FaceAnalysisError(f"--{flag.replace('_', '-')} is for --out (the Parquet dataset path)")
    if getattr(args, "engine", "local") != "local":
        raise FaceAnalysisError("--engine ray needs --out DATASET.parquet (results are written as Parquet)")
    jsonl = getattr(args, "jsonl", None)
    if args.json == STDOUT and jsonl == STDOUT:
        raise FaceAnalysisError("--json - and --jsonl - both name standard output; give one of them a file name")
    # JSON on stdout: the per-face lines go to stderr (as the closing summary always does), so stdout stays JSON
    text_out = sys.stderr if STDOUT in (args.json, jsonl) else sys.stdout
    outputs = [Path(o) for o in (args.json, jsonl) if o and o != STDOUT]
    for flag, out in (("--json", args.json), ("--jsonl", jsonl)):
        if out == STDOUT:
            continue
        if out and Path(out).is_dir():
            raise FaceAnalysisError(f"{flag} {out} is a folder; give a file name such as results{flag[1:].replace('-', '.')}")
        if out and Path(out).exists() and not args.overwrite:
            raise FaceAnalysisError(f"{out} exists; pass --overwrite to replace it")
    if args.json and jsonl and STDOUT not in (args.json, jsonl) and Path(args.json).resolve() == Path(jsonl).resolve():
        raise FaceAnalysisError("--json and --jsonl name the same file; give two names")
    if args.draw == STDOUT:
        raise FaceAnalysisError("--draw - : overlays are image files; give a folder name")
    out_dir = Path(args.draw) if args.draw else None
    # the --draw folder is left out of the inputs unless it is an input folder itself (or holds one): then
    # only the overlays (marked PNGs) are left out
    if out_dir is not None:
        r = out_dir.resolve()
        inputs = [Path(q).resolve() for q in args.paths]
        if not any(r == q or r in q.parents for q in inputs):
            outputs.append(out_dir)
    files, skipped = _collect(args.paths, outputs)
    targets: list[Path] = []
    if out_dir is not None:
        if out_dir.exists() and not out_dir.is_dir():
            raise FaceAnalysisError(f"--draw {out_dir} is a file; give a folder")
        # check every overlay target before any work, so a refusal never leaves a half-written folder
        targets = [_overlay_target(out_dir, p) for p in files]
        if len(set(targets)) < len(targets):
            seen: dict[Path, Path] = {}
            for p, t in zip(files, targets):
                if t in seen:
                    raise FaceAnalysisError(f"{_shown(seen[t])} and {_shown(p)} would both be drawn to {_shown(t)}; "
                                            "rename one or analyze them in separate runs with different --draw folders")
                seen[t] = p
        existing = [t for t in targets if t.exists()]
        if existing and not args.overwrite:
            raise FaceAnalysisError(f"{_shown(existing[0])} exists ({len(existing)} overlay file(s) in {_shown(out_dir)}); "
                                    "pass --overwrite to replace them")
        out_dir.mkdir(parents=True, exist_ok=True)
    fa = FaceAnalyzer(weights=args.weights, device=args.device, tasks=args.tasks, backend=args.backend,
                      det_max_side=args.max_side, max_faces=args.max_faces, tta=args.tta,
                      parsing_ring=not args.no_parsing_ring)
    results = _Results(args.json, jsonl)
    failed: list[str] = []
    done = 0
    try:
        for i, path in enumerate(tqdm(files, desc="analyze", disable=len(files) < 5 or args.quiet, unit="img")):
            name = _shown(path)
            record: dict = {}
            try:
                rgb = load_image(path)
                if path.suffix.lower() in (".gif", ".webp", ".png", ".tif", ".tiff", ".avif"):
                    n = frame_count(path.read_bytes())
                    if n > 1:
                        record["frames"] = n
                faces = fa.analyze(rgb)
            except FaceAnalysisError as err:
                record["error"] = str(err)
            except MemoryError:
                record["error"] = "out of memory decoding or analysing this image"
            except Exception as err:  # noqa: BLE001 - one user file must never end the run
                record["error"] = f"unexpected {type(err).__name__}: {err} (please report this file)"
            if "error" not in record:
                record["faces"] = [f.to_dict() for f in faces]
                if not args.quiet:
                    note = f" (first of {record['frames']} frames)" if "frames" in record else ""
                    _say(f"{name}: {len(faces)} face(s){note}", text_out)
                    for j, f in enumerate(faces):
                        _say(f"  [{j}] {f.summary()}", text_out)
                if out_dir is not None:
                    try:
                        targets[i].write_bytes(_overlay_png(draw(rgb, faces)))
                    except Exception as err:  # noqa: BLE001 - a failed overlay is reported, the run goes on
                        record["error"] = f"analysed, but the overlay {_shown(targets[i])} could not be written: {err}"
            if "error" in record:
                failed.append(name)
                _say(f"{name}: error: {record['error']}", sys.stderr)
            results.add(name, record)
            done += 1
    finally:
        results.close()
        if failed or skipped or not args.quiet:
            parts = [f"{done} of {len(files)} file(s) processed", f"{done - len(failed)} analysed", f"{len(failed)} failed"]
            if skipped:
                parts.append(f"{skipped} output file(s) of faceanalysis in the input folders left out")
            _say("faceanalysis analyze: " + ", ".join(parts), sys.stderr)
    return 1 if failed else 0


def _add_model_options(p: argparse.ArgumentParser) -> None:
    """--weights / --backend / --device, shared by the commands that run the model."""
    p.add_argument("--weights", metavar="FILE", default=None,
                   help="a .safetensors weights file or an exported .onnx / .tflite model; default: the shipped model")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "onnx", "tflite"],
                   help="runtime; auto: from the suffix of --weights, else torch when installed, else onnx")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument("--tta", default=None, choices=list(TTA_MODES), help=TTA_HELP)


def _add_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="analyze images or folders of images",
                       formatter_class=HelpFormatter,
                       description="Detect every face in the given images and run the model on each: one line per "
                                   "face on stdout, optionally all results as JSON (--json) and overlay images "
                                   "(--draw). The --json format is documented in the README (section 'JSON "
                                   "output') and in the JSON Schema shipped with the package "
                                   "(faceanalysis/schemas/faces.schema.json).")
    p.add_argument("paths", nargs="+", help="image files or folders (searched recursively for images)")
    p.add_argument("--json", metavar="FILE", help="write all results to this JSON file (format: see the description); "
                                                "written entry by entry as images are analysed; - = standard output "
                                                "(the per-face lines then go to standard error)")
    p.add_argument("--jsonl", metavar="FILE", help="stream results as JSON Lines: one object per image "
                                                  "({\"path\", \"faces\"} or {\"path\", \"error\"}), flushed as produced; "
                                                  "- = standard output")
    p.add_argument("--draw", metavar="DIR", help="write overlay images (<name>_faces.png) to this folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (refused otherwise)")
    _add_model_options(p)
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                   help="subset of tasks to run: parsing landmarks pose attributes expression identity "
                        "(default: all)")
    p.add_argument("--max-side", type=int, default=None, metavar="PX",
                   help="images are downscaled to this longer side for detection only (results are in original "
                        "pixels); default: adaptive, so faces down to ~40 px are found in photos up to 12 MP")
    p.add_argument("--det-size", type=int, dest="max_side", action=DeprecatedAlias, new="--max-side")
    p.add_argument("--max-faces", type=int, default=None, metavar="N",
                   help="keep at most N faces per image, largest first (default: all)")
    p.add_argument("--no-parsing-ring", action="store_true",
                   help="parsing masks over the face's aligned crop only (default: also hair, neck and cloth past its "
                        "edge, predicted by the shipped model's context ring without seeing those pixels)")
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    # photo collections (faceanalysis/batch.py, faceanalysis/integrations/ray.py; README "Photo collections")
    p.add_argument("--out", metavar="DATASET", help="stream one row per face into this Parquet dataset folder "
                   "(e.g. faces.parquet; needs the [parquet] extra): decode + detect in worker processes, parts "
                   "written as they finish, resumable with --resume")
    p.add_argument("--resume", action="store_true", help="with --out: continue an interrupted or earlier run "
                   "(images analysed before are skipped, images that failed are retried)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="with --out: decode/detect processes (default: usable cores - 1; 0 = one process); "
                        "with --engine ray: model actors (default: the cluster's CPUs)")
    p.add_argument("--flush-every", type=int, default=256, metavar="N",
                   help="with --out: images per Parquet part (a killed run redoes at most this many)")
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="with --out: local processes, or Ray Data (the [ray] extra) on a local or existing cluster")
    p.add_argument("--address", metavar="ADDR", default=None,
                   help="with --engine ray: the Ray cluster to join (e.g. ray://head:10001 or auto); default: start "
                        "a local one")
    p.set_defaults(func=cmd_analyze)


def cmd_verify(args: argparse.Namespace) -> int:
    """``faceanalysis verify A B``: same person or not, from the largest face of each image."""
    from .api import FaceAnalyzer

    for p in (args.a, args.b):
        if not Path(p).is_file():
            raise FaceAnalysisError(f"{_shown(p)}: no such file" if not Path(p).exists() else f"{_shown(p)} is not a file")
    if args.threshold is not None and not -1.0 <= args.threshold <= 1.0:
        raise FaceAnalysisError(f"--threshold {args.threshold} is outside [-1, 1] (it is a cosine similarity)")
    fa = FaceAnalyzer(weights=args.weights, device=args.device, tasks=["identity"], backend=args.backend,
                      tta=args.tta)
    same, score = fa.verify(str(args.a), str(args.b), threshold=args.threshold)
    if args.threshold is None:
        cal = fa.calibration
        threshold = fa.verify_threshold
        source = (f"calibrated on {cal.get('pairs', '?')} LFW View-2 pairs: TAR {100 * cal.get('tar', float('nan')):.1f} % "
                  f"at FAR {100 * cal.get('far', float('nan')):.1f} %")
    else:
        threshold, source = float(args.threshold), "given with --threshold"
    if args.json:
        _say(json.dumps({"a": str(args.a), "b": str(args.b), "same": same, "cosine": round(float(score), 4),
                         "threshold": threshold, "threshold_source": source}))
    else:
        verdict = "same person" if same else "different people"
        _say(f"{verdict}: cosine similarity {score:.3f} {'>=' if same else '<'} threshold {threshold:.3f} ({source})")
    return 0 if same else 1


def _add_verify(sub) -> None:
    p = sub.add_parser("verify", help="are the largest faces of two images the same person?",
                       formatter_class=HelpFormatter,
                       description="Compare the identity embeddings of the largest face in each of two images. "
                                   "Prints the verdict and the cosine similarity; exit status 0 = same person, "
                                   "1 = different people, 2 = error (no face found, unreadable image, ...). The "
                                   "default threshold is the one calibrated for the shipped weights on LFW View-2 "
                                   "(README, 'Same person?').")
    p.add_argument("a", type=Path, help="first image")
    p.add_argument("b", type=Path, help="second image")
    p.add_argument("--threshold", type=float, default=None, metavar="COS",
                   help="cosine-similarity threshold in [-1, 1] (default: the calibrated one)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a sentence")
    _add_model_options(p)
    p.set_defaults(func=cmd_verify)


PASSTHROUGH = {"train": "train", "eval": "evaluate", "export": "export.cli", "demo": "demo",
               "pseudo-label": "pseudo_label"}


def _run_module(module: str, rest: list[str]) -> int:
    if module == "train":  # the trainer imports torch at module level
        from ._lazy import require_torch

        require_torch("faceanalysis train")
    return __import__(f"faceanalysis.{module}", fromlist=["main"]).main(rest)


def _passthrough(sub, name: str, module: str, help_text: str) -> None:
    # listed for `faceanalysis --help`; main() hands the arguments over before argparse sees them
    # (argparse.REMAINDER after a subcommand rejects leading options such as `train --config smoke`)
    p = sub.add_parser(name, help=help_text, add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda a: _run_module(module, a.rest))


def _version() -> str:
    from . import __version__

    return f"faceanalysis {__version__}"


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser (``analyze`` is defined here; the other commands parse their own arguments)."""
    parser = ArgumentParser(
        prog="faceanalysis", formatter_class=HelpFormatter,
        description="Multi-task face analysis: parsing, 68 landmarks, head pose, attributes / age / gender, "
                    "expression and an identity embedding for every face. Runs on the shipped model with torch "
                    "(pip install 'faceanalysis[torch]') or without it on ONNX Runtime.",
        epilog="Each command has its own --help, e.g. faceanalysis analyze --help.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_analyze(sub)
    _add_verify(sub)
    from .index import add_index_parser  # faceanalysis index add / search / cluster (the [index] extra)

    add_index_parser(sub)
    _passthrough(sub, "train", "train", "train the model (see faceanalysis train --help; needs the [torch] extra)")
    _passthrough(sub, "eval", "evaluate", "score every task on the benchmarks (see faceanalysis eval --help)")
    _passthrough(sub, "export", "export.cli", "export to ONNX / TFLite / CoreML (see faceanalysis export --help; "
                                              "needs the [export] extra)")
    _passthrough(sub, "demo", "demo", "webcam / video demo (see faceanalysis demo --help)")
    _passthrough(sub, "pseudo-label", "pseudo_label", "teacher labels for a folder of images or a pack dataset, "
                 "in the pack's pseudo/ format (see faceanalysis pseudo-label --help; needs the [teachers] extra)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        func = lambda: _run_module(PASSTHROUGH[argv[0]], argv[1:])  # noqa: E731
    else:
        args = parser.parse_args(argv)
        func = lambda: args.func(args)  # noqa: E731
    return run_command("faceanalysis", func)


if __name__ == "__main__":
    raise SystemExit(main())
