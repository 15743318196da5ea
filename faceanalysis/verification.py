"""Face verification: a calibrated "same person?" decision on two identity embeddings.

A cosine similarity alone says nothing until it is compared with a threshold measured for the weights that
produced it. :meth:`faceanalysis.FaceAnalyzer.verify` compares it with the threshold stored next to the
weights in ``<weights stem>.verify.json``, together with the weights' SHA-256 (so a calibration is never
applied to other weights) and its measured true-accept / false-accept rates. The file is written by::

    python -m faceanalysis.verification --data-root ../shared/data --update-readme README.md   # shipped weights
    python -m faceanalysis.verification --data-root ../shared/data --weights my.safetensors

Protocol: LFW View-2 from the data pack (LFW-a greyscale 160 px crops, 6,000 pairs in 10 folds), one face per
image from the bundled detector and 5-point alignment (the fixed fallback transform where no face is found;
as in ``faceanalysis eval``). The threshold maximises accuracy over all 6,000 pairs; the JSON also gives the
10-fold accuracy with the threshold chosen on the other nine folds (an unbiased estimate) and the thresholds
for a false-accept rate of 1e-2 and 1e-3. Exported artifacts (onnx / tflite) use the calibration of the
weights they were exported from (their sidecar names its SHA-256).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FaceAnalysisError

SUFFIX = ".verify.json"
COMMAND = "python -m faceanalysis.verification --data-root ../shared/data"


def calibration_path(weights: str | Path) -> Path:
    """Where the calibration of ``weights`` (a ``.safetensors`` file) is stored: next to it."""
    weights = Path(weights)
    return weights.with_name(weights.name.split(".")[0] + SUFFIX)


def _sha256(path: Path) -> str:
    from .weights import file_sha256

    return file_sha256(path)


def source_weights(weights: str | Path | None, backend: str) -> tuple[Path | None, str | None]:
    """The ``.safetensors`` file behind an analyzer's model and its SHA-256 (from the artifact's sidecar for
    onnx / tflite)."""
    from .weights import DEFAULT_WEIGHTS

    if backend == "torch":
        path = Path(weights) if weights is not None else DEFAULT_WEIGHTS
        return path, (_sha256(path) if path.is_file() else None)
    if weights is None:
        try:
            from .export.runners import default_artifact

            weights = default_artifact(backend)
        except Exception:  # noqa: BLE001 - no artifact: no calibration either
            return None, None
    try:
        from .export import read_sidecar

        side = read_sidecar(weights) or {}
    except Exception:  # noqa: BLE001
        side = {}
    w = side.get("weights") or {}
    name = w.get("file")
    return (Path(weights).with_name(name) if name else None), w.get("sha256")


def load_calibration(weights: str | Path | None, backend: str = "torch", tta: str | None = None) -> dict[str, Any]:
    """The stored calibration of an analyzer's weights, for test-time augmentation ``tta`` (``None`` or
    ``"flip"``, see :class:`faceanalysis.FaceAnalyzer`); raises :class:`FaceAnalysisError` (saying how to
    compute it) when there is none for exactly these weights."""
    from .weights import DEFAULT_WEIGHTS

    path, sha = source_weights(weights, backend)
    if sha is None:
        raise FaceAnalysisError(f"cannot tell which weights {weights} were exported from (no sidecar with their "
                                "SHA-256), so there is no calibrated verification threshold; pass threshold=...")
    candidates = [p for p in (path and calibration_path(path), calibration_path(DEFAULT_WEIGHTS)) if p]
    seen = []
    for c in candidates:
        if not c.is_file():
            continue
        try:
            cal = json.loads(c.read_text())
        except ValueError as err:
            raise FaceAnalysisError(f"verification calibration {c} is not valid JSON ({err}); recompute it: "
                                    f"{COMMAND}") from err
        if cal.get("weights_sha256") == sha:
            if tta is not None:
                if tta not in (cal.get("tta") or {}):
                    raise FaceAnalysisError(f"verification calibration {c} has no threshold for tta={tta!r} (it was "
                                            f"written before flip calibration existed); recompute it: {COMMAND}")
                cal = {**cal, **cal["tta"][tta], "tta_mode": tta}
            cal["file"] = str(c)
            return cal
        seen.append(f"{c} (for weights {str(cal.get('weights_sha256'))[:12]})")
    where = "; found only " + ", ".join(seen) if seen else ""
    raise FaceAnalysisError(f"no verification threshold calibrated for these weights (sha256 {sha[:12]}){where}; "
                            f"compute it with: {COMMAND} --weights {path}, or pass threshold=...")


# ---- calibration ---------------------------------------------------------------------------------------------------
# The threshold rules are the evaluation's (faceanalysis.evaluation.metrics), so `faceanalysis eval` and the
# stored calibration agree; here a pair is "same" when its score is >= the threshold.
def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold (midpoint between neighbouring distinct scores) with the highest accuracy of
    ``score >= t`` (:func:`faceanalysis.evaluation.metrics.best_threshold`)."""
    from .evaluation.metrics import best_threshold as _best

    return _best(scores, same)[0]


def rates(scores: np.ndarray, same: np.ndarray, t: float) -> dict[str, float]:
    acc = scores >= t
    return {"tar": float(acc[same].mean()), "far": float(acc[~same].mean()), "accuracy": float((acc == same).mean())}


def threshold_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> float:
    """Smallest threshold whose false-accept rate (``score >= t``) is at most ``far``: just above the impostor
    score at which :func:`faceanalysis.evaluation.metrics.tar_at_far` cuts (it accepts ``score > t``)."""
    from .evaluation.metrics import tar_at_far

    return tar_at_far(scores, same, far)[1] + 1e-6


#: the false-accept rate of the stricter stored threshold that the demo gallery uses by default
GALLERY_FAR = "0.01"


def threshold_for_far(cal: dict[str, Any], far: str = GALLERY_FAR) -> float:
    """The stored threshold of a calibration (:func:`load_calibration`) for false-accept rate ``far``."""
    try:
        return float(cal["far_targets"][far]["threshold"])
    except (KeyError, TypeError) as err:
        raise FaceAnalysisError(f"verification calibration {cal.get('file', '')} has no threshold for FAR {far}; "
                                f"recompute it: {COMMAND}") from err


def lfw_scores(fa: Any, data_root: str | Path, pairs: Any = None) -> dict[str, np.ndarray]:
    """Cosine similarity, label and fold of every LFW View-2 pair (the eval protocol); ``pairs``: the
    :func:`~faceanalysis.evaluation.lfw.load_lfw` result when already loaded (decoding and detection run once)."""
    from .evaluation.lfw import load_lfw
    from .evaluation.protocols import predict

    pairs = load_lfw(data_root) if pairs is None else pairs
    e = predict(fa, pairs.images, pairs.kps5, "lfw")[0]["embedding"].astype(np.float64)
    e /= np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return {"scores": (e[pairs.i1] * e[pairs.i2]).sum(1), "same": pairs.same.astype(bool), "fold": pairs.fold,
            "fallback": int((~pairs.detected).sum()), "images": len(pairs.ids)}


def calibrate(scores: np.ndarray, same: np.ndarray, fold: np.ndarray) -> dict[str, Any]:
    """Threshold, its TAR / FAR / accuracy, 10-fold accuracy and FAR-targeted thresholds."""
    from .evaluation.metrics import kfold_verification

    scores, same = np.asarray(scores, np.float64), np.asarray(same).astype(bool)
    t = best_threshold(scores, same)
    cv = kfold_verification(scores, same, fold)  # accuracies in %
    out: dict[str, Any] = {"threshold": round(t, 4), **{k: round(v, 4) for k, v in rates(scores, same, t).items()},
                           "accuracy_10fold": round(cv["mean"] / 100, 4),
                           "accuracy_10fold_std": round(cv["std"] / 100, 4), "pairs": int(len(scores)),
                           "same_pairs": int(same.sum())}
    out["far_targets"] = {}
    for far in (1e-2, 1e-3):
        tf = threshold_at_far(scores, same, far)
        r = rates(scores, same, tf)
        out["far_targets"][f"{far:g}"] = {"threshold": round(tf, 4), "tar": round(r["tar"], 4), "far": round(r["far"], 4)}
    return out


MARK_START, MARK_END = "<!-- verify-threshold:start -->", "<!-- verify-threshold:end -->"


def readme_block(cal: dict[str, Any]) -> str:
    """The README lines that state the calibrated threshold and its measured rates."""
    f2, f3 = cal["far_targets"]["0.01"], cal["far_targets"]["0.001"]
    return (f"{MARK_START}\n"
            f"`verify` threshold **{cal['threshold']:.3f}** (cosine), calibrated for `{cal['weights']}` (sha256 "
            f"{cal['weights_sha256'][:12]}) on LFW View-2 ({cal['pairs']} pairs): **TAR {100 * cal['tar']:.2f} %, "
            f"FAR {100 * cal['far']:.2f} %**, accuracy {100 * cal['accuracy']:.2f} % "
            f"({100 * cal['accuracy_10fold']:.2f} ± {100 * cal['accuracy_10fold_std']:.2f} % with the threshold chosen "
            f"on the other 9 folds). Stricter: threshold {f2['threshold']:.3f} gives TAR {100 * f2['tar']:.2f} % at "
            f"FAR {100 * f2['far']:.2f} %, {f3['threshold']:.3f} gives TAR {100 * f3['tar']:.2f} % at FAR "
            f"{100 * f3['far']:.2f} % (pass `threshold=`).{_flip_sentence(cal)} Computed {cal['computed']}.\n"
            f"{MARK_END}")


def _flip_sentence(cal: dict[str, Any]) -> str:
    flip = (cal.get("tta") or {}).get("flip")
    if not flip:
        return ""
    return (f" With `tta=\"flip\"` (each face also mirrored) the threshold is **{flip['threshold']:.3f}**: accuracy "
            f"{100 * flip['accuracy_10fold']:.2f} ± {100 * flip['accuracy_10fold_std']:.2f} % (10-fold), TAR "
            f"{100 * flip['far_targets']['0.01']['tar']:.2f} % at FAR 1e-2.")


def update_readme(readme: Path, cal: dict[str, Any]) -> None:
    text = readme.read_text()
    if MARK_START not in text or MARK_END not in text:
        raise FaceAnalysisError(f"{readme} has no {MARK_START} ... {MARK_END} block to update")
    head, rest = text.split(MARK_START, 1)
    _, tail = rest.split(MARK_END, 1)
    readme.write_text(head + readme_block(cal) + tail)


def main(argv: list[str] | None = None) -> int:
    from ._argparse import ArgumentParser, HelpFormatter

    p = ArgumentParser(prog="python -m faceanalysis.verification", formatter_class=HelpFormatter,
                                description="Calibrate FaceAnalyzer.verify on LFW View-2 and store the threshold "
                                            "next to the weights (<stem>.verify.json); the demo's gallery uses "
                                            "its 1 % false-accept threshold.")
    p.add_argument("--data-root", default="../shared/data", help="the data pack (holds lfw/)")
    p.add_argument("--weights", default=None, help="a .safetensors file (default: the shipped weights)")
    p.add_argument("--out", default=None, help="where to write the JSON (default: next to the weights)")
    p.add_argument("--update-readme", metavar="README", default=None,
                   help="also rewrite the numbers between the verify-threshold markers of this README")
    a = p.parse_args(argv)
    from .errors import run_command

    def run() -> int:
        from .api import FaceAnalyzer
        from .weights import DEFAULT_WEIGHTS

        weights = Path(a.weights) if a.weights else DEFAULT_WEIGHTS
        from .evaluation.lfw import load_lfw

        fa = FaceAnalyzer(weights=weights, backend="torch", tasks=["identity"])
        pairs = load_lfw(a.data_root)
        r = lfw_scores(fa, a.data_root, pairs)
        cal = calibrate(r["scores"], r["same"], r["fold"])
        # FaceAnalyzer(tta="flip") averages each face's embedding with its mirror's: other scores, own threshold
        flip = lfw_scores(FaceAnalyzer(weights=weights, backend="torch", tasks=["identity"], tta="flip"), a.data_root,
                          pairs)
        cal["tta"] = {"flip": calibrate(flip["scores"], flip["same"], flip["fold"])}
        cal.update({"weights": weights.name, "weights_sha256": _sha256(weights),
                    "dataset": "LFW View-2 (data pack: LFW-a greyscale 160 px crops), bundled detector + 5-point "
                               f"alignment, {r['fallback']} of {r['images']} images with the fixed fallback transform",
                    "rule": "same person when cosine similarity >= threshold (threshold = best accuracy over all "
                            "pairs; accuracy_10fold: threshold chosen on 9 folds, tested on the 10th)",
                    "computed": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "command": COMMAND})
        out = Path(a.out) if a.out else calibration_path(weights)
        out.write_text(json.dumps(cal, indent=2) + "\n")
        if a.update_readme:
            update_readme(Path(a.update_readme), cal)
        f2 = cal["far_targets"]["0.01"]
        print(f"{out}: threshold {cal['threshold']:.3f}: TAR {100 * cal['tar']:.2f} %, FAR {100 * cal['far']:.2f} %, "
              f"accuracy {100 * cal['accuracy']:.2f} % (10-fold {100 * cal['accuracy_10fold']:.2f} %) on "
              f"{cal['pairs']} pairs; FAR 1e-2 at {f2['threshold']:.3f}: TAR {100 * f2['tar']:.2f} %; with "
              f"tta='flip': threshold {cal['tta']['flip']['threshold']:.3f}, 10-fold accuracy "
              f"{100 * cal['tta']['flip']['accuracy_10fold']:.2f} %")
        return 0

    return run_command("faceanalysis.verification", run)


if __name__ == "__main__":
    sys.exit(main())
