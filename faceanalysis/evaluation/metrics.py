"""Metric functions of the evaluation protocols (numpy only; each is tested on hand-computed cases).

Parsing F1/IoU come from :func:`faceanalysis.tasks.parsing.parsing_scores` and the per-image NME from
:func:`faceanalysis.tasks.landmarks.nme`; this module adds the rest: confusion matrices, per-class F1/IoU
from a confusion matrix, failure rate / AUC / CED of NMEs, (angular) MAE, LFW 10-fold verification
accuracy and TAR@FAR / ROC.
"""
from __future__ import annotations

import numpy as np

from ..errors import FaceAnalysisError


def confusion_matrix(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """``C[i, j]`` = number of samples of true class ``i`` predicted as ``j`` (int64)."""
    t = np.asarray(true, np.int64).ravel()
    p = np.asarray(pred, np.int64).ravel()
    if t.shape != p.shape:
        raise FaceAnalysisError(f"confusion_matrix: {t.shape} labels vs {p.shape} predictions")
    if t.size and (min(t.min(), p.min()) < 0 or max(t.max(), p.max()) >= num_classes):
        raise FaceAnalysisError(f"confusion_matrix: class ids must lie in [0, {num_classes})")
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def f1_iou_from_confusion(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class F1 = 2TP / (2TP + FP + FN) and IoU = TP / (TP + FP + FN); also which classes occur
    as ground truth. Classes with TP + FP + FN = 0 get 0."""
    conf = np.asarray(conf, np.float64)
    tp = np.diag(conf)
    fp = conf.sum(0) - tp
    fn = conf.sum(1) - tp
    denom = tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1e-12), 0.0)
    iou = np.where(denom > 0, tp / np.maximum(denom, 1e-12), 0.0)
    return f1, iou, conf.sum(1) > 0


def accuracy(true: np.ndarray, pred: np.ndarray) -> float:
    """Fraction of equal entries, in %."""
    true, pred = np.asarray(true), np.asarray(pred)
    if true.size == 0:
        return float("nan")
    return float((true == pred).mean() * 100)


def mae(pred: np.ndarray, true: np.ndarray, wrap: float | None = None) -> np.ndarray | float:
    """Mean absolute error over the rows where both are finite: a float for 1-D input, one value per
    column for ``(N, K)``. ``wrap`` (e.g. 360) takes the shortest difference on a circle of that period."""
    d = np.asarray(pred, np.float64) - np.asarray(true, np.float64)
    if wrap is not None:
        d = (d + wrap / 2) % wrap - wrap / 2
    d = np.abs(d)
    ok = np.isfinite(d.reshape(len(d), -1)).all(1) if d.ndim else np.isfinite(d)
    d = d[ok]
    if len(d) == 0:
        return float("nan") if d.ndim == 1 else np.full(d.shape[1:], np.nan)
    out = d.mean(0)
    return float(out) if np.ndim(out) == 0 else out


def failure_rate(nmes: np.ndarray, threshold: float = 0.08) -> float:
    """Fraction (in %) of images with NME > ``threshold`` (misses, NME = inf, count as failures)."""
    e = np.asarray(nmes, np.float64)
    return float((~(e <= threshold)).mean() * 100)


def ced_auc(nmes: np.ndarray, threshold: float = 0.08) -> float:
    """Area under the cumulative error distribution from 0 to ``threshold``, divided by ``threshold``
    (1 = every image perfect). Exact: mean over images of ``max(0, 1 - e / threshold)``."""
    e = np.asarray(nmes, np.float64)
    e = np.where(np.isfinite(e), e, np.inf)
    return float(np.clip(1.0 - e / threshold, 0.0, 1.0).mean())


def ced_curve(nmes: np.ndarray, max_error: float = 0.1, steps: int = 201) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)``: fraction of images with NME <= x for x in [0, max_error]."""
    e = np.sort(np.asarray(nmes, np.float64))
    x = np.linspace(0.0, max_error, steps)
    return x, np.searchsorted(e, x, side="right") / max(len(e), 1)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """Threshold on similarity ``scores`` ("same" iff score >= t) that maximises accuracy on these
    pairs; ``(threshold, accuracy in %)``. Candidates are midpoints between consecutive distinct scores
    (and just outside the range); ties keep the lowest threshold."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(same).astype(bool)
    if s.size == 0:
        raise FaceAnalysisError("best_threshold needs at least one pair")
    order = np.argsort(s, kind="stable")
    s, y = s[order], y[order]
    n = len(s)
    # cut at position i: pairs [0, i) say "different", [i, n) say "same"
    diff_below = np.concatenate([[0], np.cumsum(~y)])
    same_above = np.concatenate([np.cumsum(y[::-1])[::-1], [0]])
    correct = diff_below + same_above
    valid = np.ones(n + 1, bool)
    valid[1:n] = s[1:] > s[:-1]  # never cut between equal scores
    correct = np.where(valid, correct, -1)
    i = int(np.argmax(correct))
    if i == 0:
        t = s[0] - 1e-6
    elif i == n:
        t = s[-1] + 1e-6
    else:
        t = 0.5 * (s[i - 1] + s[i])
    return float(t), float(correct[i] / n * 100)


def kfold_verification(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict:
    """LFW protocol: for each fold pick the threshold maximising accuracy on the other folds and score
    the fold with it. Returns mean / std accuracy (%) over folds, per-fold accuracies and thresholds."""
    scores, same, folds = np.asarray(scores, np.float64), np.asarray(same).astype(bool), np.asarray(folds)
    accs, thrs, ids = [], [], []
    for k in np.unique(folds):
        test = folds == k
        if test.all():
            raise FaceAnalysisError("kfold_verification needs at least two folds")
        t, _ = best_threshold(scores[~test], same[~test])
        accs.append(accuracy(same[test], scores[test] >= t))
        thrs.append(t)
        ids.append(int(k))
    accs_a = np.array(accs)
    return {"mean": float(accs_a.mean()), "std": float(accs_a.std()), "fold_acc": accs, "thresholds": thrs,
            "folds": ids}


def tar_at_far(scores: np.ndarray, same: np.ndarray, far: float) -> tuple[float, float]:
    """True-accept rate (%) at the strictest threshold whose false-accept rate is <= ``far``:
    ``t`` = the (k+1)-th highest impostor score with k = floor(far * #impostors); accept iff score > t.
    Returns ``(TAR %, t)``."""
    s, y = np.asarray(scores, np.float64), np.asarray(same).astype(bool)
    imp, gen = np.sort(s[~y])[::-1], s[y]
    if len(imp) == 0 or len(gen) == 0:
        raise FaceAnalysisError("tar_at_far needs genuine and impostor pairs")
    k = int(np.floor(far * len(imp) + 1e-9))
    t = imp[k] if k < len(imp) else imp[-1] - 1e-6
    return float((gen > t).mean() * 100), float(t)


def roc_curve(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(far, tar)`` for every threshold (accept iff score >= threshold), from (0, 0) to (1, 1)."""
    s, y = np.asarray(scores, np.float64), np.asarray(same).astype(bool)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[s[1:] != s[:-1], True]  # accept everything down to each distinct score
    tp = np.cumsum(y)[last]
    fp = np.cumsum(~y)[last]
    tar = np.r_[0.0, tp / max(y.sum(), 1)]
    far = np.r_[0.0, fp / max((~y).sum(), 1)]
    return far, tar


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of :func:`roc_curve` (ties count half: the Mann-Whitney U statistic / n+ n-).
    Raises :class:`FaceAnalysisError` unless both positives and negatives are present."""
    y = np.asarray(positive).astype(bool)
    if y.all() or not y.any():
        raise FaceAnalysisError("roc_auc needs positive and negative samples")
    far, tar = roc_curve(scores, y)
    return float(np.sum((far[1:] - far[:-1]) * (tar[1:] + tar[:-1]) / 2))
