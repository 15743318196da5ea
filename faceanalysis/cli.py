"""The ``faceanalysis`` command: analyze, train, eval, export, demo."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import FaceAnalysisError, run_command

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def _collect(paths: list[str]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTS)
            if not found:
                raise FaceAnalysisError(f"folder {p} contains no images ({', '.join(sorted(IMAGE_EXTS))})")
            files.extend(found)
        elif p.exists():
            files.append(p)
        else:
            raise FaceAnalysisError(f"{p} does not exist")
    return files


def cmd_analyze(args: argparse.Namespace) -> int:
    import cv2
    from tqdm import tqdm

    from .api import FaceAnalyzer
    from .draw import draw
    from .preprocess import load_image

    files = _collect(args.paths)
    if args.json and Path(args.json).is_dir():
        raise FaceAnalysisError(f"--json {args.json} is a folder; give a file name such as results.json")
    if args.json and Path(args.json).exists() and not args.overwrite:
        raise FaceAnalysisError(f"{args.json} exists; pass --overwrite to replace it")
    if args.draw:
        out_dir = Path(args.draw)
        if out_dir.exists() and not out_dir.is_dir():
            raise FaceAnalysisError(f"--draw {out_dir} is a file; give a folder")
        # check every overlay target before any work, so a refusal never leaves a half-written folder
        targets = [out_dir / (p.stem + "_faces.png") for p in files]
        if len(set(targets)) < len(targets):
            seen: dict[Path, Path] = {}
            for p, t in zip(files, targets):
                if t in seen:
                    raise FaceAnalysisError(f"{seen[t]} and {p} would both be drawn to {t}; rename one or "
                                            "analyze them in separate runs with different --draw folders")
                seen[t] = p
        existing = [t for t in targets if t.exists()]
        if existing and not args.overwrite:
            raise FaceAnalysisError(f"{existing[0]} exists ({len(existing)} overlay file(s) in {out_dir}); "
                                    "pass --overwrite to replace them")
        out_dir.mkdir(parents=True, exist_ok=True)
    fa = FaceAnalyzer(weights=args.weights, device=args.device, tasks=args.tasks, backend=args.backend,
                      det_max_side=args.det_size, max_faces=args.max_faces)
    report = {}
    failed = 0
    for path in tqdm(files, desc="analyze", disable=len(files) < 5 or args.quiet, unit="img"):
        try:
            rgb = load_image(path)
            faces = fa.analyze(rgb)
        except FaceAnalysisError as err:
            failed += 1
            print(f"{path}: error: {err}", file=sys.stderr)
            report[str(path)] = {"error": str(err)}
            continue
        report[str(path)] = [f.to_dict() for f in faces]
        if not args.quiet:
            print(f"{path}: {len(faces)} face(s)")
            for i, f in enumerate(faces):
                print(f"  [{i}] {f.summary()}")
        if args.draw:
            target = Path(args.draw) / (path.stem + "_faces.png")
            cv2.imwrite(str(target), draw(rgb, faces)[:, :, ::-1])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report))
    return 1 if failed == len(files) else 0


def _add_analyze(sub) -> None:
    p = sub.add_parser("analyze", help="analyze images or folders of images")
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.add_argument("--json", help="write all results to this JSON file")
    p.add_argument("--draw", help="write overlay images (<name>_faces.png) to this folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--weights", default=None, help="weights / artifact (default: the shipped weights)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx", "tflite"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--tasks", nargs="+", default=None, help="subset of tasks to run")
    p.add_argument("--det-size", type=int, default=640, help="longer side used for detection")
    p.add_argument("--max-faces", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_analyze)


PASSTHROUGH = {"train": "train", "eval": "evaluate", "export": "export.cli", "demo": "demo"}


def _run_module(module: str, rest: list[str]) -> int:
    return __import__(f"faceanalysis.{module}", fromlist=["main"]).main(rest)


def _passthrough(sub, name: str, module: str, help_text: str) -> None:
    # listed for `faceanalysis --help`; main() hands the arguments over before argparse sees them
    # (argparse.REMAINDER after a subcommand rejects leading options such as `train --config smoke`)
    p = sub.add_parser(name, help=help_text, add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda a: _run_module(module, a.rest))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="faceanalysis", description="Multi-task face analysis.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_analyze(sub)
    _passthrough(sub, "train", "train", "train the model (see faceanalysis train --help)")
    _passthrough(sub, "eval", "evaluate", "score every task on the benchmarks (see faceanalysis eval --help)")
    _passthrough(sub, "export", "export.cli", "export to ONNX / CoreML / TFLite (see faceanalysis export --help)")
    _passthrough(sub, "demo", "demo", "webcam / video demo (see faceanalysis demo --help)")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in PASSTHROUGH:
        func = lambda: _run_module(PASSTHROUGH[argv[0]], argv[1:])  # noqa: E731
    else:
        args = parser.parse_args(argv)
        func = lambda: args.func(args)  # noqa: E731
    return run_command("faceanalysis", func)


if __name__ == "__main__":
    raise SystemExit(main())
