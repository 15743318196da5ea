"""Every evaluation metric against small hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest

from faceanalysis.errors import FaceAnalysisError
from faceanalysis.evaluation import metrics as M
from faceanalysis.tasks.landmarks import nme
from faceanalysis.tasks.parsing import parsing_scores

TRUE = np.array([0, 0, 1, 2, 2, 2])
PRED = np.array([0, 1, 1, 2, 0, 2])


def test_confusion_matrix():
    np.testing.assert_array_equal(M.confusion_matrix(TRUE, PRED, 3), [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    with pytest.raises(FaceAnalysisError):
        M.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(FaceAnalysisError):
        M.confusion_matrix([0, 1], [0], 3)


def test_f1_iou_from_confusion():
    f1, iou, present = M.f1_iou_from_confusion(M.confusion_matrix(TRUE, PRED, 4))
    # class 0: TP 1, FP 1, FN 1; class 1: TP 1, FP 1, FN 0; class 2: TP 2, FP 0, FN 1; class 3 absent
    np.testing.assert_allclose(f1, [2 / 4, 2 / 3, 4 / 5, 0])
    np.testing.assert_allclose(iou, [1 / 3, 1 / 2, 2 / 3, 0])
    np.testing.assert_array_equal(present, [True, True, True, False])


def test_parsing_scores_match_confusion_on_masks():
    gt = TRUE.reshape(2, 3).astype(np.uint8)
    pred = PRED.reshape(2, 3).astype(np.uint8)
    f1, iou, present = parsing_scores(pred, gt, 3)
    f1b, ioub, _ = M.f1_iou_from_confusion(M.confusion_matrix(gt, pred, 3))
    np.testing.assert_allclose(f1, f1b)
    np.testing.assert_allclose(iou, ioub)
    assert present.all()


def test_accuracy():
    assert M.accuracy(TRUE, PRED) == pytest.approx(4 / 6 * 100)
    assert np.isnan(M.accuracy([], []))


def test_nme_inter_ocular_and_given_norm():
    gt = np.zeros((1, 68, 2))
    gt[0, 36] = (0, 0)
    gt[0, 45] = (10, 0)
    pred = gt + np.array([3.0, 4.0])  # every point 5 px off
    assert nme(pred, gt)[0] == pytest.approx(0.5)
    assert nme(pred, gt, np.array([20.0]))[0] == pytest.approx(0.25)


def test_failure_rate_auc_ced():
    e = np.array([0.0, 0.04, 0.08, np.inf])
    assert M.failure_rate(e, 0.08) == pytest.approx(25.0)  # only the miss is > 8 %
    assert M.failure_rate([0.01, 0.05, 0.09, np.inf], 0.08) == pytest.approx(50.0)
    # AUC = mean(max(0, 1 - e / 0.08)) = (1 + 0.5 + 0 + 0) / 4
    assert M.ced_auc(e, 0.08) == pytest.approx(0.375)
    # numerical integral of the CED agrees with the closed form
    x, y = M.ced_curve(e, 0.08, steps=8001)
    assert np.trapezoid(y, x) / 0.08 == pytest.approx(0.375, abs=1e-3)
    x, y = M.ced_curve(e, 0.1, steps=11)
    assert y[4] == pytest.approx(0.5)  # x = 0.04: two of four images (0 and 0.04)
    assert y[-1] == pytest.approx(0.75)


def test_mae_rows_and_wrap():
    pred = np.array([[1.0, 2.0], [3.0, np.nan]])
    np.testing.assert_allclose(M.mae(pred, np.zeros((2, 2))), [1.0, 2.0])  # the NaN row is skipped
    assert M.mae(np.array([2.0, 5.0]), np.array([1.0, 1.0])) == pytest.approx(2.5)
    assert M.mae(np.array([179.0]), np.array([-179.0]), wrap=360.0) == pytest.approx(2.0)


def test_best_threshold():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.9])
    same = np.array([0, 0, 1, 0, 1])
    t, acc = M.best_threshold(scores, same)
    assert t == pytest.approx(0.25)  # first of the two best cuts (4 of 5 right)
    assert acc == pytest.approx(80.0)
    # never cut between equal scores
    t, acc = M.best_threshold(np.array([0.5, 0.5, 0.5]), np.array([1, 0, 1]))
    assert acc == pytest.approx(200 / 3)
    assert t < 0.5


def test_kfold_verification_picks_threshold_on_other_folds():
    folds, scores, same = [], [], []
    for k in range(10):
        for s, y in ((0.9, 1), (0.45 if k == 0 else 0.6, 1), (0.1, 0), (0.4, 0)):
            folds.append(k)
            scores.append(s)
            same.append(y)
    r = M.kfold_verification(np.array(scores), np.array(same), np.array(folds))
    # fold 0 is scored with the threshold of folds 1-9 (0.5), which rejects its genuine 0.45 pair
    assert r["thresholds"][0] == pytest.approx(0.5)
    assert r["fold_acc"][0] == pytest.approx(75.0)
    # the other folds see fold 0's 0.45 pair while choosing: cut between 0.40 and 0.45
    assert r["thresholds"][1] == pytest.approx(0.425)
    assert r["fold_acc"][1:] == [100.0] * 9
    assert r["mean"] == pytest.approx(97.5)
    assert r["std"] == pytest.approx(7.5)


def test_tar_at_far():
    imp = np.arange(10) / 10.0  # 0.0 .. 0.9
    gen = np.array([0.95, 0.85, 0.5, 0.05])
    s = np.r_[imp, gen]
    y = np.r_[np.zeros(10), np.ones(4)]
    tar, t = M.tar_at_far(s, y, 0.1)  # one impostor of ten may pass: threshold 0.8
    assert t == pytest.approx(0.8)
    assert tar == pytest.approx(50.0)
    tar, t = M.tar_at_far(s, y, 1e-3)  # none may pass: threshold = the highest impostor
    assert t == pytest.approx(0.9)
    assert tar == pytest.approx(25.0)
    with pytest.raises(FaceAnalysisError):
        M.tar_at_far(gen, np.ones(4), 0.1)


def test_roc_curve():
    far, tar = M.roc_curve(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0]))
    np.testing.assert_allclose(far, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tar, [0, 0.5, 0.5, 1, 1])


def test_roc_auc_by_hand_with_ties_counting_half():
    from faceanalysis.evaluation.metrics import roc_auc

    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 3 of the 4 (pos, neg) pairs are ordered right
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert roc_auc(np.array([0.5, 0.5, 0.5]), np.array([1, 0, 0])) == pytest.approx(0.5)
    assert roc_auc(np.array([0.9, 0.1]), np.array([True, False])) == pytest.approx(1.0)
    with pytest.raises(FaceAnalysisError, match="positive and negative"):
        roc_auc(np.array([0.1, 0.2]), np.array([1, 1]))
