"""``faceanalysis eval``: run the standard protocol of every benchmark in the data pack and write a report.

Example::

    faceanalysis eval --data-root ../shared/data --report reports/eval --update-readme README.md
"""
from __future__ import annotations

import argparse
import hashlib
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from .data.sources import default_data_root
from .errors import FaceAnalysisError, run_command
from .config import TTA_MODES
from .tasks import TASKS


def build_parser() -> argparse.ArgumentParser:
    from .evaluation.protocols import DATASETS

    from ._argparse import ArgumentParser, HelpFormatter

    p = ArgumentParser(prog="faceanalysis eval", formatter_class=HelpFormatter, description=(
        "Score every task on the test splits of the data pack (parsing, landmarks, pose vs teacher, attributes, "
        "age, gender, expression, LFW verification, verification of unseen CelebA identities) and write a report: "
        "summary.md, results.json and PNG plots. `--tasks identity` runs only the identity protocols."))
    p.add_argument("--data-root", type=Path, default=None, help="data pack folder (default: ../shared/data)")
    p.add_argument("--weights", default=None, help="weights / exported artifact (default: the shipped weights)")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx", "tflite"],
                   help="runtime; onnx / tflite run an exported model (--weights, default: the shipped one)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument("--tasks", nargs="+", default=None, metavar="TASK", help=f"subset of {list(TASKS)}")
    p.add_argument("--datasets", nargs="+", default=None, metavar="DATASET", help=f"subset of {list(DATASETS)}")
    p.add_argument("--limit", type=int, default=None,
                   help="at most N images per dataset (LFW: about N pairs over all folds), for smoke tests")
    p.add_argument("--report", type=Path, default=Path("reports/eval"), help="report folder (default reports/eval)")
    p.add_argument("--json", type=Path, default=None, help="where to write all numbers (default REPORT/results.json)")
    p.add_argument("--update-readme", type=Path, default=None, metavar="README",
                   help="replace the table between <!-- eval-table:start --> and <!-- eval-table:end --> in this file")
    p.add_argument("--merge", type=Path, default=None, metavar="RESULTS_JSON",
                   help="keep the rows of the protocols not run now from this earlier results.json (same weights "
                        "and backend), e.g. `--tasks identity --merge docs/eval/results.json` re-scores identity only "
                        "and still writes the whole table")
    p.add_argument("--no-teachers", action="store_true", help="do not score the teachers side by side")
    p.add_argument("--no-examples", action="store_true", help="skip the grid of example overlays")
    p.add_argument("--batch-size", type=int, default=64, help="faces per model call")
    p.add_argument("--tta", default=None, choices=list(TTA_MODES),
                   help="score with test-time augmentation (FaceAnalyzer(tta='flip'): each face also mirrored); "
                        "default: one pass, as the README table and the issue floors are measured")
    p.add_argument("--threads", type=int, default=None, help="torch / OpenCV threads (default: library default)")
    return p


def _display_path(path: Path | None) -> str:
    """A path relative to the working directory when it lies below it (reports carry no machine paths)."""
    if path is None:
        return "default"
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _sha(path: Path | None) -> str:
    if path is None or not Path(path).is_file():
        return "-"
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12]


def _load_previous(args: argparse.Namespace, sha: str) -> dict:
    """The ``--merge`` results.json, checked to come from the same weights, backend and --limit."""
    import json

    path = args.merge
    try:
        previous = json.loads(Path(path).read_text())
        meta = previous["meta"]
        previous["rows"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise FaceAnalysisError(f"--merge: cannot read {path} as a results.json of faceanalysis eval ({err})") from err
    mismatch = [f"{k} {meta.get(k)!r} there, {v!r} now" for k, v in
                (("weights_sha256", sha), ("backend", args.backend), ("limit", args.limit), ("tta", args.tta))
                if meta.get(k) != v]
    if mismatch:
        raise FaceAnalysisError(f"--merge: {path} was not made with the same setup ({'; '.join(mismatch)}); "
                                "rerun every protocol instead (drop --merge)")
    return previous


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``faceanalysis eval``; returns the exit status."""
    argv = list(sys.argv[2:] if sys.argv[1:2] == ["eval"] else sys.argv[1:]) if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    return run_command("faceanalysis eval", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    from .api import FaceAnalyzer
    from .evaluation.protocols import BENCHMARK_TASKS, DATASETS, PROTOCOLS, Context
    from .evaluation.report import README_END, README_START, merge_previous, update_readme, write_report
    from .weights import DEFAULT_WEIGHTS

    unknown = [t for t in args.tasks or [] if t not in TASKS]
    if unknown:
        raise FaceAnalysisError(f"unknown task(s) {unknown}; choose from {list(TASKS)}")
    bad = [d for d in args.datasets or [] if d not in DATASETS]
    if bad:
        raise FaceAnalysisError(f"unknown dataset(s) {bad}; choose from {list(DATASETS)}")
    if args.limit is not None and args.limit < 1:
        raise FaceAnalysisError("--limit must be >= 1")
    if args.update_readme is not None:  # fail before the run, not after it
        text = args.update_readme.read_text() if args.update_readme.is_file() else None
        if text is None or README_START not in text or README_END not in text:
            raise FaceAnalysisError(f"--update-readme: {args.update_readme} is missing or lacks the markers "
                                    f"{README_START} ... {README_END}")
    weights = Path(args.weights) if args.weights else (DEFAULT_WEIGHTS if args.backend == "torch" else None)
    previous = _load_previous(args, _sha(weights)) if args.merge is not None else None
    if args.threads:
        import cv2
        import torch

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    root = args.data_root or default_data_root()
    if not root.is_dir():
        raise FaceAnalysisError(f"data root {root} does not exist; pass --data-root pointing at the data pack")
    tasks = set(args.tasks or TASKS)
    datasets = [d for d in (args.datasets or DATASETS) if any(t in tasks for t in BENCHMARK_TASKS[d])]
    if not datasets:
        raise FaceAnalysisError("no benchmark scores the selected tasks on the selected datasets")
    missing = [d for d in datasets if not (root / d).is_dir()]
    if missing and args.datasets:
        raise FaceAnalysisError(f"dataset folder(s) {missing} not found under {root}")

    def make_analyzer(names: list[str]) -> FaceAnalyzer:
        return FaceAnalyzer(weights=args.weights, device=args.device, tasks=names, backend=args.backend,
                            batch_size=args.batch_size, tta=args.tta)

    ctx = Context(data_root=root, make_analyzer=make_analyzer, tasks=tasks, limit=args.limit,
                  teachers=not args.no_teachers)
    for d in missing:  # default run: benchmarks whose folder is absent are skipped with a note
        ctx.notes.append(f"{d}: folder not found under {root}; skipped")
        datasets.remove(d)
    t0 = time.perf_counter()
    timings = {}
    for d in datasets:
        t = time.perf_counter()
        print(f"[eval] {d} ...", file=sys.stderr, flush=True)
        n0 = len(ctx.rows)
        PROTOCOLS[d](ctx)
        for r in ctx.rows[n0:]:
            r.protocol = d
        timings[d] = round(time.perf_counter() - t, 1)
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "weights": _display_path(weights),
            "weights_sha256": _sha(weights), "backend": args.backend, "data_root": str(root),
            "limit": args.limit, "tta": args.tta, "tasks": sorted(tasks), "datasets": datasets,
            "command": "faceanalysis eval " + shlex.join(getattr(args, "argv", [])),
            "python": platform.python_version(), "seconds_per_dataset": timings}
    kept: list[str] = []
    if previous is not None:
        kept = merge_previous(ctx, previous, datasets)
        prev = previous.get("meta", {})
        meta["merged_from"] = {"file": _display_path(args.merge), "date": prev.get("date"), "protocols": kept,
                               "command": prev.get("command")}
    fa_examples = None if args.no_examples else make_analyzer(sorted(tasks))
    meta["seconds_total"] = round(time.perf_counter() - t0, 1)
    table, _ = write_report(ctx, args.report, meta, fa_examples, args.json)
    meta["seconds_total"] = round(time.perf_counter() - t0, 1)
    print(table)
    for n in ctx.notes:
        print(f"note: {n}")
    if args.update_readme is not None:
        tag = (f"_Generated by `faceanalysis eval` on {meta['date']} (weights `{Path(meta['weights']).name}` "
               f"sha256 {meta['weights_sha256']}, backend {args.backend}"
               + (f", --limit {args.limit}" if args.limit else "") + (f", --tta {args.tta}" if args.tta else "") + ")"
               + (f"; rows of {', '.join(kept)} kept from the run of {meta['merged_from']['date']}" if kept else "")
               + "; full report in the report folder._\n\n")
        update_readme(args.update_readme, tag + table)
    print(f"[eval] report written to {args.report} in {meta['seconds_total']:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
