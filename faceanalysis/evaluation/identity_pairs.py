"""Identity-disjoint verification pairs for a labelled image set (used on ``celeba_more/val``).

Unlike LFW View-2, whose folds share no person, a set of images with identity labels has no official
pairs. This module builds them so that the LFW protocol's guarantee holds: the identities are dealt into
``n_folds`` folds (seeded), every pair lies within one fold, so the threshold chosen on the other folds
(:func:`faceanalysis.evaluation.metrics.kfold_verification`) has never seen the test fold's people.

* :func:`identity_folds`: the fold of every image (all images of an identity share it).
* :func:`fold_pairs`: per fold a seeded sample of genuine and impostor pairs (without replacement).
* :func:`all_pair_scores`: scores and labels of *every* pair, for TAR at a low FAR (there are many more
  impostor pairs than the folds use, hence a finer FAR resolution).

Everything is deterministic for a given ``seed`` and independent of the order of the images' labels
(identities are sorted before they are shuffled).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import FaceAnalysisError


@dataclass
class FoldPairs:
    """Pairs (indices into the images) and their fold; ``i1 < i2``, all within one fold."""

    fold: np.ndarray  # (P,) int
    i1: np.ndarray  # (P,) int64
    i2: np.ndarray  # (P,) int64
    same: np.ndarray  # (P,) bool


def _labels(labels) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1 or len(lab) == 0:
        raise FaceAnalysisError("identity labels must be a non-empty 1-D array")
    if lab.dtype.kind == "f":
        if not np.isfinite(lab).all():
            raise FaceAnalysisError("identity labels contain NaN: every image of the protocol needs an identity")
        lab = lab.astype(np.int64)
    return lab


def identity_folds(labels, n_folds: int = 10, seed: int = 0) -> np.ndarray:
    """``(N,)`` fold (0 .. n_folds-1) of every image: the sorted distinct identities are permuted with
    ``numpy.random.default_rng(seed)`` and dealt round-robin, so fold sizes differ by at most one identity.
    Needs at least two identities per fold (impostor pairs stay within a fold)."""
    lab = _labels(labels)
    ids = np.unique(lab)
    if n_folds < 2:
        raise FaceAnalysisError("identity_folds needs at least 2 folds")
    if len(ids) < 2 * n_folds:
        raise FaceAnalysisError(f"{len(ids)} identities cannot fill {n_folds} folds with two identities each "
                                "(impostor pairs are drawn within a fold)")
    perm = np.random.default_rng(seed).permutation(len(ids))
    fold_of_id = np.empty(len(ids), np.int64)
    fold_of_id[perm] = np.arange(len(ids)) % n_folds
    return fold_of_id[np.searchsorted(ids, lab)]


def fold_pairs(labels, folds, n_genuine: int = 300, n_impostor: int = 300, seed: int = 0) -> FoldPairs:
    """Per fold, ``n_genuine`` same-identity and ``n_impostor`` different-identity pairs drawn without
    replacement from all pairs of the fold's images (``numpy.random.default_rng([seed, fold])``); fewer
    when the fold has fewer. Pairs are sorted by fold, then by ``(i1, i2)``."""
    lab = _labels(labels)
    folds = np.asarray(folds)
    if folds.shape != lab.shape:
        raise FaceAnalysisError(f"fold_pairs: {folds.shape} folds for {lab.shape} labels")
    out = {"fold": [], "i1": [], "i2": [], "same": []}
    for k in np.unique(folds):
        idx = np.where(folds == k)[0]
        a, b = np.triu_indices(len(idx), 1)
        a, b = idx[a], idx[b]
        same = lab[a] == lab[b]
        rng = np.random.default_rng([seed, int(k)])
        for want, n in ((True, n_genuine), (False, n_impostor)):
            cand = np.where(same == want)[0]
            pick = np.sort(rng.choice(cand, size=min(n, len(cand)), replace=False)) if len(cand) else cand
            out["fold"].append(np.full(len(pick), int(k), np.int64))
            out["i1"].append(a[pick])
            out["i2"].append(b[pick])
            out["same"].append(np.full(len(pick), want))
    cat = {key: np.concatenate(v) for key, v in out.items()}
    order = np.lexsort((cat["i2"], cat["i1"], cat["fold"]))
    return FoldPairs(fold=cat["fold"][order], i1=cat["i1"][order].astype(np.int64),
                     i2=cat["i2"][order].astype(np.int64), same=cat["same"][order].astype(bool))


def all_pair_scores(emb: np.ndarray, labels) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores (dot products of L2-normalised ``emb``) and same-identity flags of every unordered
    pair ``i < j``: ``N (N - 1) / 2`` pairs."""
    lab = _labels(labels)
    emb = np.asarray(emb, np.float32)
    if len(emb) != len(lab):
        raise FaceAnalysisError(f"all_pair_scores: {len(emb)} embeddings for {len(lab)} labels")
    a, b = np.triu_indices(len(lab), 1)
    sim = emb @ emb.T
    return sim[a, b].astype(np.float64), lab[a] == lab[b]


def rank1_retrieval(emb: np.ndarray, labels) -> float:
    """Leave-one-out closed-set identification (%): how often an image's nearest other image (cosine)
    has its identity."""
    lab = _labels(labels)
    sim = np.asarray(emb, np.float32) @ np.asarray(emb, np.float32).T
    np.fill_diagonal(sim, -np.inf)
    return float((lab[sim.argmax(1)] == lab).mean() * 100)


def images_per_identity(labels, per_identity: int) -> np.ndarray:
    """Indices keeping the first ``per_identity`` images (in index order) of every identity (for --limit)."""
    lab = _labels(labels)
    keep = []
    for i in np.unique(lab):
        keep.extend(np.where(lab == i)[0][:per_identity].tolist())
    return np.array(sorted(keep), np.int64)
