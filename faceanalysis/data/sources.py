"""Loaders for the data pack (``../shared/data`` by default; see its README.md).

Each loader returns a :class:`Source`: decoded RGB images, the 5 key points that align each image
(dataset landmarks where present, else the bundled detector, else a documented fixed transform) and
per-task targets in source-image coordinates, NaN where a label is missing. Decoded sources are
cached as ``.npz`` under ``$FACEANALYSIS_CACHE`` (default ``~/.cache/faceanalysis``), never in the repo.
"""
from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import FaceAnalysisError
from ..align import kps5_from_68
from ..tasks.attributes import ATTRIBUTES
from ..tasks.parsing import tags_from_attributes
from ..tasks.expression import CLASSES as EXPRESSIONS

CACHE_VERSION = 2
#: FER2013's 48x48 crops: median YuNet key points over the training images (detector on a 4x
#: upscale); used for the ~2 % of FER images where the detector finds no face.
FER_FIXED_KPS5 = np.array([[14.49, 18.30], [32.66, 18.37], [23.53, 28.53], [16.52, 36.20], [30.79, 36.36]], np.float32)
FER2013_ORDER = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")
FER_TO_PRODUCT = [EXPRESSIONS.index(n) for n in ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")]
VOTE_COLUMNS = ["votes_" + n for n in EXPRESSIONS]  # FER+ vote columns in product order (contempt dropped)


@dataclass
class Source:
    """One dataset split, decoded. ``targets[task][field]`` has one row per image (NaN = missing);
    ``masks`` (parsing class ids) and ``meta`` (per-image strings/numbers) are optional."""

    name: str
    images: list[np.ndarray]
    kps5: np.ndarray  # (N, 5, 2) float32
    targets: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    masks: list[np.ndarray] | None = None
    ids: list[str] = field(default_factory=list)
    meta: dict[str, np.ndarray] = field(default_factory=dict)
    gray: bool = False

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx) -> "Source":
        idx = np.asarray(idx)
        return Source(
            name=self.name,
            images=[self.images[i] for i in idx],
            kps5=self.kps5[idx],
            targets={t: {k: v[idx] for k, v in d.items()} for t, d in self.targets.items()},
            masks=None if self.masks is None else [self.masks[i] for i in idx],
            ids=[self.ids[i] for i in idx],
            meta={k: v[idx] for k, v in self.meta.items()},
            gray=self.gray,
        )


def default_data_root() -> Path:
    """``$FACEANALYSIS_DATA`` or ``../shared/data`` (relative to the working directory, then to the repo)."""
    env = os.environ.get("FACEANALYSIS_DATA")
    if env:
        return Path(env)
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return Path("../shared/data")


def cache_dir() -> Path:
    return Path(os.environ.get("FACEANALYSIS_CACHE", Path.home() / ".cache" / "faceanalysis"))


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise FaceAnalysisError(f"{what} not found at {path}; pass --data-root pointing at the data pack "
                                f"(the folder with README.md and {path.parent.name}/)")
    return path


def _read_csv(path: Path, required: list[str]) -> list[dict[str, str]]:
    _need(path, "labels file")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise FaceAnalysisError(f"{path} has no rows")
    missing = [c for c in required if c not in rows[0]]
    if missing:
        raise FaceAnalysisError(f"{path} is malformed: missing column(s) {missing}")
    return rows


def _imread(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FaceAnalysisError(f"cannot decode image {path}")
    return np.ascontiguousarray(img[:, :, ::-1])


def _nan(n: int, *shape) -> np.ndarray:
    return np.full((n, *shape), np.nan, np.float32)


def _detect_kps(images: list[np.ndarray], desc: str, upscale: int = 1) -> np.ndarray:
    """Detector key points for each image (NaN where none is found)."""
    from ..detect import YuNetDetector

    # the pack's photos are upright: no orientation vote (it would cost ~10x on FER's 35k images) and the
    # historical 640 px detection size, so cached key points do not depend on the API's detector defaults
    det = YuNetDetector(max_side=640, rotations="off")
    out = _nan(len(images), 5, 2)
    for i, im in enumerate(tqdm(images, desc=f"detect {desc}", leave=False, mininterval=2)):
        src = im
        if upscale > 1:
            src = cv2.resize(im, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_CUBIC)
        found = det.detect(src)
        if found:
            out[i] = (found[0].kps5 + 0.5) / upscale - 0.5
    return out


def _cached(name: str, root: Path, build: Callable[[], Source], version: int = CACHE_VERSION) -> Source:
    """Load ``name`` from the cache, or build and store it. The key includes the data root and the
    loader's ``version`` (bumped per dataset when what its loader stores changes)."""
    tag = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:10]
    key = f"{name}-v{version}-{tag}.npz"
    path = cache_dir() / key
    if path.exists():
        z = np.load(path, allow_pickle=False)
        if "image_shapes" not in z:
            images = list(z["images"])
        else:
            flat, shapes = z["images"], z["image_shapes"]
            images, pos = [], 0
            for h, w in shapes:
                images.append(flat[pos:pos + h * w * 3].reshape(h, w, 3))
                pos += h * w * 3
        masks = None
        if "masks" in z:
            masks = list(z["masks"])
        targets: dict[str, dict[str, np.ndarray]] = {}
        meta = {}
        for k in z.files:
            if k.startswith("t/"):
                _, task, fld = k.split("/")
                targets.setdefault(task, {})[fld] = z[k]
            elif k.startswith("m/"):
                meta[k[2:]] = z[k]
        return Source(name=name, images=images, kps5=z["kps5"], targets=targets, masks=masks,
                      ids=list(z["ids"]), meta=meta, gray=bool(z["gray"]))
    src = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"kps5": src.kps5, "ids": np.array(src.ids), "gray": np.array(src.gray)}
    shapes = {im.shape for im in src.images}
    if len(shapes) == 1:
        arrays["images"] = np.stack(src.images)
    else:
        arrays["images"] = np.concatenate([im.reshape(-1) for im in src.images])
        arrays["image_shapes"] = np.array([im.shape[:2] for im in src.images])
    if src.masks is not None:
        arrays["masks"] = np.stack(src.masks)
    for task, d in src.targets.items():
        for k, v in d.items():
            arrays[f"t/{task}/{k}"] = v
    for k, v in src.meta.items():
        arrays[f"m/{k}"] = v
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return src


def _pseudo(root: Path, dataset: str, ids: list[str]) -> dict[str, np.ndarray]:
    z = np.load(_need(root / "pseudo" / f"{dataset}.npz", "pseudo-labels"))
    pid = list(z["ids"])
    if pid != ids:
        raise FaceAnalysisError(f"pseudo/{dataset}.npz ids do not match {dataset}/labels.csv")
    return {k: z[k] for k in z.files}


def _pseudo_targets(p: dict[str, np.ndarray], n: int, expr_weight: float) -> dict[str, dict[str, np.ndarray]]:
    lm = p["dlib68"].astype(np.float32)
    ok = p["dlib68_ok"]
    lm[~ok] = np.nan
    ypr = p["pose_ypr"].astype(np.float32)
    ypr[~p["mp_ok"]] = np.nan
    emb = p["sface"].astype(np.float32)
    emb[~p["sface_ok"]] = np.nan
    emo = p["emotion"].astype(np.float32)[:, FER_TO_PRODUCT_FROM_FACEX]
    emo[~p["emotion_ok"]] = np.nan
    return {
        "landmarks": {"points": lm, "weight": np.where(ok, 1.0, 0.0).astype(np.float32)},
        "pose": {"ypr": ypr},
        "identity": {"embedding": emb, "label": _nan(n)},
        "expression": {"probs": emo, "weight": np.full(n, expr_weight, np.float32)},
    }


# facex order (anger, disgust, fear, happy, neutral, sadness, surprised) == FER2013 order
FER_TO_PRODUCT_FROM_FACEX = [FER2013_ORDER.index(n) for n in ("neutral", "happy", "surprise", "sad", "angry", "disgust", "fear")]


def _kps_from_pseudo(p: dict[str, np.ndarray]) -> np.ndarray:
    kps = p["yunet_kps5"].astype(np.float32)
    bad = ~np.isfinite(kps.reshape(len(kps), -1)).all(1)
    lm = p["dlib68"].astype(np.float32)
    for i in np.where(bad)[0]:
        if np.isfinite(lm[i]).all():
            kps[i] = kps5_from_68(lm[i])
    return kps


def load_utkface(root: Path, split: str) -> Source:
    def build():
        rows = _read_csv(root / "utkface" / "labels.csv", ["id", "path", "split", "age", "gender", "race"])
        ids = [r["id"] for r in rows]
        images = [_imread(root / "utkface" / r["path"]) for r in tqdm(rows, desc="decode utkface", leave=False, mininterval=2)]
        p = _pseudo(root, "utkface", ids)
        n = len(rows)
        targets = _pseudo_targets(p, n, expr_weight=0.1)
        age = np.array([float(r["age"]) for r in rows], np.float32)
        male = np.array([1.0 - float(r["gender"]) for r in rows], np.float32)
        targets["attributes"] = {"attrs": _nan(n, len(ATTRIBUTES)), "age": age, "age_weight": np.ones(n, np.float32),
                                 "gender": male}
        meta = {"split": np.array([r["split"] for r in rows]), "race": np.array([int(r["race"]) for r in rows])}
        return Source("utkface", images, _kps_from_pseudo(p), targets, ids=ids, meta=meta)

    return _select(_cached("utkface", root, build), split)


def load_celeba_attr(root: Path, split: str) -> Source:
    def build():
        rows = _read_csv(root / "celeba_attr" / "labels.csv", ["id", "path", "split"] + list(ATTRIBUTES))
        ids = [r["id"] for r in rows]
        images = [_imread(root / "celeba_attr" / r["path"]) for r in tqdm(rows, desc="decode celeba_attr", leave=False, mininterval=2)]
        p = _pseudo(root, "celeba_attr", ids)
        n = len(rows)
        targets = _pseudo_targets(p, n, expr_weight=0.1)
        attrs = np.array([[float(r[a]) for a in ATTRIBUTES] for r in rows], np.float32)
        age = p["age"].astype(np.float32)  # teacher age: a weak label
        targets["attributes"] = {"attrs": attrs, "age": age, "age_weight": np.where(np.isfinite(age), 0.3, 0).astype(np.float32),
                                 "gender": attrs[:, ATTRIBUTES.index("Male")]}
        targets["identity"]["label"] = _celeba_identities(root, ids)
        meta = {"split": np.array([r["split"] for r in rows])}
        return Source("celeba_attr", images, _kps_from_pseudo(p), targets, ids=ids, meta=meta)

    return _select(_with_parsing_tags(_cached("celeba_attr", root, build, version=3)), split)


def _celeba_identities(root: Path, ids: list[str]) -> np.ndarray:
    """CelebA identity numbers for ``ids`` from ``celeba_attr/identity.csv`` (NaN when the file or a row is
    missing: older packs have no identities)."""
    path = root / "celeba_attr" / "identity.csv"
    out = _nan(len(ids))
    if not path.exists():
        return out
    ident = {r["id"]: float(r["identity"]) for r in _read_csv(path, ["id", "identity"])}
    for i, k in enumerate(ids):
        out[i] = ident.get(k, np.nan)
    return out


def load_celeba_more(root: Path, split: str) -> Source:
    """``split``: ``train`` (164 identities) / ``val`` (33 identities unseen anywhere else in the pack).
    CelebA identity labels and the 40 attributes; no teacher labels (identity embedding, landmarks, pose,
    expression and age are missing). Aligned by the bundled detector on a 2x upscale."""

    def build():
        rows = _read_csv(root / "celeba_more" / "labels.csv", ["id", "path", "split", "identity"] + list(ATTRIBUTES))
        images = [_imread(root / "celeba_more" / r["path"]) for r in tqdm(rows, desc="decode celeba_more", leave=False, mininterval=2)]
        n = len(rows)
        attrs = np.array([[float(r[a]) for a in ATTRIBUTES] for r in rows], np.float32)
        targets = {
            "attributes": {"attrs": attrs, "age": _nan(n), "age_weight": np.zeros(n, np.float32),
                           "gender": attrs[:, ATTRIBUTES.index("Male")]},
            "identity": {"embedding": _nan(n, 128), "label": np.array([float(r["identity"]) for r in rows], np.float32)},
        }
        kps = _detect_kps(images, "celeba_more", upscale=2)
        meta = {"split": np.array([r["split"] for r in rows])}
        return Source("celeba_more", images, kps, targets, ids=[r["id"] for r in rows], meta=meta)

    return _select(_with_parsing_tags(_cached("celeba_more", root, build, version=1)), split)


def load_fer2013(root: Path, split: str) -> Source:
    """``split``: a ``fer2013_usage`` (Training / PublicTest / PrivateTest). Expression targets: ``probs`` mixes
    the FER2013 label (one-hot, weight 1/2) with the FER+ vote distribution over the 7 classes (1/2) when votes
    exist; ``label`` (the FER2013 class, product order) and ``votes`` (the FER+ distribution, NaN without votes)
    let :class:`~faceanalysis.tasks.expression.ExpressionTask` re-mix them (its ``vote_weight``)."""

    def build():
        rows = _read_csv(root / "fer2013" / "labels.csv", ["id", "fer2013_usage", "fer2013_label_idx"] + VOTE_COLUMNS)
        z = np.load(_need(root / "fer2013" / "images.npz", "fer2013 images"))
        gray = z["images"]
        if len(gray) != len(rows):
            raise FaceAnalysisError("fer2013/images.npz and labels.csv have different lengths")
        images = [np.repeat(g[:, :, None], 3, 2) for g in gray]
        kps = _detect_kps(images, "fer2013", upscale=4)
        bad = ~np.isfinite(kps.reshape(len(kps), -1)).all(1)
        kps[bad] = FER_FIXED_KPS5
        n = len(rows)
        label = np.array([FER_TO_PRODUCT[int(r["fer2013_label_idx"])] for r in rows])
        onehot = np.eye(len(EXPRESSIONS), dtype=np.float32)[label]
        votes = np.array([[float(r[c]) for c in VOTE_COLUMNS] for r in rows], np.float32)
        has = (votes >= 0).all(1) & (votes.sum(1) > 0)
        dist = np.where(has[:, None], votes / np.maximum(votes.sum(1, keepdims=True), 1), onehot)
        probs = (0.5 * onehot + 0.5 * dist).astype(np.float32)
        targets = {"expression": {"probs": probs, "weight": np.ones(n, np.float32)}}
        meta = {"split": np.array([r["fer2013_usage"] for r in rows]), "label": label.astype(np.int64),
                "detected": (~bad)}
        return Source("fer2013", images, kps, targets, ids=[r["id"] for r in rows], meta=meta, gray=True)

    return _select(_with_fer_parts(_cached("fer2013", root, build), root), split)


def _with_fer_parts(src: Source, root: Path) -> Source:
    """Add the two parts of the mixed expression target to a cached FER2013 source: ``label`` (the FER2013
    class, product order) and ``votes`` (the FER+ vote distribution over the 7 classes, read again from
    ``labels.csv``; NaN for images without FER+ votes)."""
    t = src.targets["expression"]
    if "votes" in t:
        return src
    rows = _read_csv(root / "fer2013" / "labels.csv", ["id"] + VOTE_COLUMNS)
    by_id = {r["id"]: [float(r[c]) for c in VOTE_COLUMNS] for r in rows}
    votes = np.array([by_id.get(k, [np.nan] * len(VOTE_COLUMNS)) for k in src.ids], np.float32)
    has = np.isfinite(votes).all(1) & (votes >= 0).all(1) & (votes.sum(1) > 0)
    votes = np.where(has[:, None], votes / np.maximum(votes.sum(1, keepdims=True), 1), np.nan).astype(np.float32)
    t["label"] = src.meta["label"].astype(np.float32)
    t["votes"] = votes
    return src


def load_celebamask(root: Path, split: str) -> Source:
    """``split``: train / val / test. ``val`` = 50 images held out of the pack's train split (seeded)."""

    def build():
        rows = _read_csv(root / "celebamask_mini" / "labels.csv", ["id", "image", "mask", "split"])
        images = [_imread(root / "celebamask_mini" / r["image"]) for r in rows]
        masks = []
        for r in rows:
            m = cv2.imread(str(root / "celebamask_mini" / r["mask"]), cv2.IMREAD_UNCHANGED)
            if m is None or m.ndim != 2:
                raise FaceAnalysisError(f"bad mask {r['mask']} in celebamask_mini")
            masks.append(m)
        kps = _detect_kps(images, "celebamask")
        split_col = np.array([r["split"] for r in rows])
        train_idx = np.where(split_col == "train")[0]
        val = np.random.default_rng(0).permutation(train_idx)[:50]
        split_col[val] = "val"
        return Source("celebamask_mini", images, kps, {}, masks=masks, ids=[r["id"] for r in rows],
                      meta={"split": split_col})

    return _select(_cached("celebamask_mini", root, build), split)


def load_300w(root: Path, split: str) -> Source:
    """``split``: ``helen_test`` (the test subset), ``afw`` (all), ``afw_train`` / ``afw_val`` (seeded 300 / 37)."""

    def build():
        cols = [f"{a}{i}" for i in range(68) for a in "xy"]
        rows = _read_csv(root / "300w_partial" / "labels.csv", ["id", "path", "subset", "iod_outer", "iod_pupil"] + cols)
        images = [_imread(root / "300w_partial" / r["path"]) for r in rows]
        pts = np.array([[float(r[c]) for c in cols] for r in rows], np.float32).reshape(-1, 68, 2)
        kps = np.stack([kps5_from_68(p) for p in pts])
        subset = np.array([r["subset"] for r in rows])
        afw = np.where(subset == "afw")[0]
        val = np.random.default_rng(0).permutation(afw)[:37]
        sub2 = subset.copy()
        sub2[afw] = "afw_train"
        sub2[val] = "afw_val"
        n = len(rows)
        targets = {"landmarks": {"points": pts, "weight": np.full(n, 2.0, np.float32)}}
        meta = {"split": sub2, "subset": subset, "iod_outer": np.array([float(r["iod_outer"]) for r in rows], np.float32),
                "iod_pupil": np.array([float(r["iod_pupil"]) for r in rows], np.float32)}
        return Source("300w_partial", images, kps, targets, ids=[r["id"] for r in rows], meta=meta)

    src = _cached("300w_partial", root, build)
    if split == "afw":
        return src.subset(np.where(src.meta["subset"] == "afw")[0])
    return _select(src, split)


def _fill_missing_kps(src: Source) -> Source:
    """Images without key points get the dataset's median key points: a fixed per-dataset transform."""
    bad = ~np.isfinite(src.kps5.reshape(len(src), -1)).all(1)
    if bad.any() and (~bad).any():
        src.kps5 = src.kps5.copy()
        src.kps5[bad] = np.median(src.kps5[~bad], axis=0)
    return src


def _with_parsing_tags(src: Source) -> Source:
    """Add image-level parsing tags (glasses, hat, earrings, necklace worn or not) from the source's CelebA
    attributes: the parsing task's weak labels for images without masks (see ``tasks.parsing.tag_loss``)."""
    if "parsing" not in src.targets and "attributes" in src.targets:
        src.targets["parsing"] = {"tags": tags_from_attributes(src.targets["attributes"]["attrs"], ATTRIBUTES)}
    return src


def _select(src: Source, split: str | None) -> Source:
    src = _fill_missing_kps(src)
    if split is None or split == "all":
        return src
    idx = np.where(src.meta["split"] == split)[0]
    if len(idx) == 0:
        raise FaceAnalysisError(f"{src.name} has no split {split!r}; splits: {sorted(set(src.meta['split']))}")
    return src.subset(idx)


DATASETS: dict[str, Callable[[Path, str], Source]] = {
    "utkface": load_utkface,
    "celeba_attr": load_celeba_attr,
    "fer2013": load_fer2013,
    "celebamask_mini": load_celebamask,
    "300w_partial": load_300w,
    "celeba_more": load_celeba_more,
}


def load_source(name: str, split: str, root: str | Path | None = None) -> Source:
    """Load one dataset split from the data pack."""
    root = Path(root) if root is not None else default_data_root()
    if not root.is_dir():
        raise FaceAnalysisError(f"data root {root} does not exist; pass --data-root")
    if name not in DATASETS:
        raise FaceAnalysisError(f"unknown dataset {name!r}; choose from {list(DATASETS)}")
    return DATASETS[name](root, split)
