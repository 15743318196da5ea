"""The unseen-identity verification protocol (celeba_more val): identity-disjoint folds, pairs within folds,
deterministic and with the stated counts; all-pair TAR@FAR; the eval run and ``--merge``."""
from __future__ import annotations

import json

import numpy as np
import pytest

from faceanalysis.errors import FaceAnalysisError
from faceanalysis.evaluate import main
from faceanalysis.evaluation.identity_pairs import (all_pair_scores, fold_pairs, identity_folds, images_per_identity,
                                                    rank1_retrieval)
from faceanalysis.evaluation.report import merge_previous, protocol_of
from faceanalysis.evaluation.protocols import Context, Row


def _labels(n_ids: int = 33, per: int = 30, seed: int = 1) -> np.ndarray:
    """Identity numbers like CelebA's (sparse, unsorted), ``per`` images each, shuffled."""
    ids = np.random.default_rng(seed).choice(10177, n_ids, replace=False) + 1
    return np.random.default_rng(seed + 1).permutation(np.repeat(ids, per)).astype(np.float32)


def test_identity_folds_are_identity_disjoint_and_balanced():
    lab = _labels()
    folds = identity_folds(lab, 10, seed=0)
    assert folds.shape == lab.shape and set(folds.tolist()) == set(range(10))
    for i in np.unique(lab):  # every identity lies in exactly one fold
        assert len(np.unique(folds[lab == i])) == 1
    per_fold = [len(np.unique(lab[folds == k])) for k in range(10)]
    assert sorted(per_fold) == [3] * 7 + [4] * 3
    # deterministic, and independent of the order of the images
    assert (identity_folds(lab, 10, seed=0) == folds).all()
    perm = np.random.default_rng(5).permutation(len(lab))
    assert (identity_folds(lab[perm], 10, seed=0) == folds[perm]).all()
    assert not (identity_folds(lab, 10, seed=1) == folds).all()


def test_identity_folds_errors():
    with pytest.raises(FaceAnalysisError, match="two identities each"):
        identity_folds(_labels(n_ids=19), 10)
    with pytest.raises(FaceAnalysisError, match="NaN"):
        identity_folds(np.r_[_labels(), np.nan], 10)
    with pytest.raises(FaceAnalysisError, match="at least 2 folds"):
        identity_folds(_labels(), 1)


def test_fold_pairs_within_folds_counts_and_determinism():
    lab = _labels()
    folds = identity_folds(lab, 10)
    p = fold_pairs(lab, folds, 300, 300, seed=0)
    assert len(p.same) == 6000
    assert (folds[p.i1] == p.fold).all() and (folds[p.i2] == p.fold).all()  # both images in the pair's fold
    assert (p.same == (lab[p.i1] == lab[p.i2])).all() and (p.i1 < p.i2).all()
    for k in range(10):
        assert (p.same & (p.fold == k)).sum() == 300 and (~p.same & (p.fold == k)).sum() == 300
    assert len({(a, b) for a, b in zip(p.i1.tolist(), p.i2.tolist())}) == 6000  # no pair twice
    # no identity of a test fold appears in any other fold's pairs: thresholds never see the test people
    for k in range(10):
        inside = set(lab[np.r_[p.i1[p.fold == k], p.i2[p.fold == k]]].tolist())
        outside = set(lab[np.r_[p.i1[p.fold != k], p.i2[p.fold != k]]].tolist())
        assert not inside & outside
    q = fold_pairs(lab, folds, 300, 300, seed=0)
    assert all((getattr(p, f) == getattr(q, f)).all() for f in ("fold", "i1", "i2", "same"))
    r = fold_pairs(lab, folds, 300, 300, seed=1)
    assert not (np.array_equal(p.i1, r.i1) and np.array_equal(p.i2, r.i2))


def test_fold_pairs_capped_by_what_a_fold_has():
    lab = _labels(n_ids=20, per=2)  # 2 ids x 2 images per fold: 2 genuine, 4 impostor pairs available
    folds = identity_folds(lab, 10)
    p = fold_pairs(lab, folds, 300, 300)
    assert p.same.sum() == 20 and (~p.same).sum() == 40


def test_all_pairs_counts_and_scores():
    lab = _labels()
    emb = np.random.default_rng(0).normal(size=(len(lab), 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    s, y = all_pair_scores(emb, lab)
    assert len(s) == 990 * 989 // 2 and y.sum() == 33 * 30 * 29 // 2 and (~y).sum() == 475200
    assert np.isclose(s[0], emb[0] @ emb[1])


def test_rank1_and_images_per_identity():
    lab = np.array([1, 1, 2, 2, 3, 3], np.float32)
    emb = np.array([[1, 0, 0], [0.99, 0.14, 0], [0, 1, 0], [0.14, 0.99, 0], [0, 0, 1], [0.8, 0, 0.6]], np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    # only image 5 (id 3) has a nearest neighbour of another identity (image 0, cosine 0.8 vs 0.6)
    assert rank1_retrieval(emb, lab) == pytest.approx(5 / 6 * 100)
    assert images_per_identity(np.array([5, 7, 5, 5, 7]), 2).tolist() == [0, 1, 2, 4]


def test_merge_keeps_rows_of_protocols_not_run():
    ctx = Context(data_root=None, make_analyzer=None, tasks=set())
    ctx.rows = [Row("identity", "celeba_more (unseen ids)", "val", "acc", 80.0, 6000, "identity/celeba_more_acc",
                    protocol="celeba_more")]
    ctx.details["celeba_more/identity"] = {"x": 1}
    previous = {"rows": [
        {"task": "parsing", "dataset": "celebamask_mini", "split": "test", "metric": "mean F1 (%)", "value": 67.0,
         "n": 100, "key": "parsing/mean_f1", "teachers": {}, "note": ""},
        {"task": "landmarks", "dataset": "300w (HELEN)", "split": "helen_test", "metric": "NME", "value": 4.0,
         "n": 330, "key": "landmarks/nme_io", "teachers": {}, "note": ""},
        {"task": "identity", "dataset": "celeba_more (unseen ids)", "split": "val", "metric": "acc", "value": 1.0,
         "n": 1, "key": "identity/celeba_more_acc", "teachers": {}, "note": "", "protocol": "celeba_more"}],
        "details": {"celebamask_mini/parsing": {"y": 2}, "celeba_more/identity": {"old": True}},
        "notes": ["300w_partial: something", "celeba_more: old note"]}
    kept = merge_previous(ctx, previous, ["celeba_more"])
    assert kept == ["celebamask_mini", "300w_partial"]
    assert [r.key for r in ctx.rows] == ["parsing/mean_f1", "landmarks/nme_io", "identity/celeba_more_acc"]
    assert ctx.rows[-1].value == 80.0 and ctx.rows[1].protocol == "300w_partial"
    assert ctx.details["celeba_more/identity"] == {"x": 1} and list(ctx.details)[0] == "celebamask_mini/parsing"
    assert ctx.notes == ["300w_partial: something"]
    assert protocol_of({"dataset": "fer2013 (FER+ labels)"}) == "fer2013"
    assert protocol_of({"dataset": "celeba_attr"}) == "celeba_attr"


def test_eval_celeba_more_tiny_and_merge(tmp_path, data_root, tiny_weights):
    report = tmp_path / "r"
    rc = main(["--data-root", str(data_root), "--weights", str(tiny_weights), "--datasets", "celeba_more",
               "--limit", "66", "--report", str(report), "--no-examples", "--threads", "1"])
    assert rc == 0
    data = json.loads((report / "results.json").read_text())
    assert [r["key"] for r in data["rows"]] == ["identity/celeba_more_acc", "identity/celeba_more_tar_far1e-2",
                                               "identity/celeba_more_tar_far1e-3"]
    assert all(r["protocol"] == "celeba_more" for r in data["rows"])
    d = data["details"]["celeba_more/identity"]
    assert d["identities"] == 33 and d["images"] == 66  # --limit 66: 2 images of each identity
    assert d["genuine_all"] == 33 and d["impostor_all"] == 66 * 65 // 2 - 33
    assert len(d["ours"]["fold_acc"]) == 10 and d["teacher_sface"]["acc_mean"] > 75  # SFace separates even these
    assert sum(d["protocol"]["genuine_per_fold"]) == 33 and (report / "roc_celeba_more.png").is_file()
    # --merge: re-score nothing but keep; a report of other weights is refused
    fake = json.loads((report / "results.json").read_text())
    fake["meta"]["weights_sha256"] = "0" * 12
    (tmp_path / "other.json").write_text(json.dumps(fake))
    assert main(["--data-root", str(data_root), "--weights", str(tiny_weights), "--datasets", "celeba_more",
                 "--limit", "66", "--merge", str(tmp_path / "other.json"), "--report", str(tmp_path / "r2")]) == 2
    # a report scored without test-time augmentation is not merged into a --tta flip run
    assert main(["--data-root", str(data_root), "--weights", str(tiny_weights), "--datasets", "celeba_more",
                 "--limit", "66", "--tta", "flip", "--merge", str(report / "results.json"),
                 "--report", str(tmp_path / "r3")]) == 2
