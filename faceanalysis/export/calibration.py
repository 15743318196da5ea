"""Aligned face crops for calibration (training images or a user folder) and parity (held-out images or a
user folder).

Every crop goes through the one alignment path of training / inference
(:func:`faceanalysis.data.batches.make_sample` for data-pack sources, detector +
:func:`faceanalysis.preprocess.crop_faces` for a folder of photos), then
:func:`faceanalysis.preprocess.normalise_array`. The data pack is only a default: with ``--calib-data`` /
``--check-data`` (folders of the user's own photos) export needs no pack at all.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..config import PreprocessConfig
from ..decode import IMAGE_EXTS, IMAGE_EXTS_HELP
from ..errors import FaceAnalysisError

#: training splits used for calibration by default (never test / val images)
CALIB_SOURCES = (("utkface", "train"), ("celeba_attr", "train"), ("fer2013", "Training"))
#: held-out splits used for parity checks (never seen in training or calibration)
PARITY_SOURCES = (("celebamask_mini", "test"), ("utkface", "test"), ("celeba_attr", "test"))


def _pack_crops(sources: tuple[tuple[str, str], ...], n: int, pre: PreprocessConfig, seed: int,
                data_root: str | Path | None, desc: str) -> np.ndarray:
    from ..data import load_source
    from ..data.batches import make_sample

    rng = np.random.default_rng(seed)
    per = [n // len(sources) + (1 if i < n % len(sources) else 0) for i in range(len(sources))]
    crops = []
    with tqdm(total=n, desc=desc, unit="face", leave=False) as bar:
        for (name, split), k in zip(sources, per):
            src = load_source(name, split, data_root)
            ok = np.flatnonzero(np.isfinite(src.kps5).all(axis=(1, 2)))
            for i in rng.permutation(ok)[:k]:
                crop, _ = make_sample(src, int(i), [], pre, None, None)
                crops.append(crop)
                bar.update()
    if not crops:
        raise FaceAnalysisError(f"no aligned faces found in {sources}; check the data pack (FACEANALYSIS_DATA)")
    return np.stack(crops)


def training_crops(pre: PreprocessConfig, n: int = 300, seed: int = 0, data_root: str | Path | None = None) -> np.ndarray:
    """``n`` aligned uint8 crops ``(n, S, S, 3)`` from the training splits of the data pack."""
    return _pack_crops(CALIB_SOURCES, n, pre, seed, data_root, "calibration crops")


def parity_crops(pre: PreprocessConfig, n: int = 64, seed: int = 1, data_root: str | Path | None = None) -> np.ndarray:
    """``n`` aligned uint8 crops of held-out (test split) faces for parity checks."""
    return _pack_crops(PARITY_SOURCES, n, pre, seed, data_root, "parity crops")


def pack_root(data_root: str | Path | None, sources: tuple[tuple[str, str], ...]) -> Path | None:
    """The data pack root when it holds every dataset of ``sources``, else ``None``. A ``data_root`` given
    explicitly must hold them (raises otherwise); the default location may simply be absent."""
    from ..data.sources import default_data_root

    root = Path(data_root) if data_root is not None else default_data_root()
    missing = [name for name, _ in sources if not (root / name).is_dir()]
    if not missing:
        return root
    if data_root is not None:
        raise FaceAnalysisError(f"--data-root {root} lacks {', '.join(missing)}; give the data pack root, or use "
                                f"your own photos with --calib-data DIR / --check-data DIR instead")
    return None


def folder_crops(folder: str | Path, pre: PreprocessConfig, max_faces: int = 500, role: str = "calibration",
                 flag: str = "--calib-data") -> np.ndarray:
    """Detect and align every face (up to ``max_faces``) in a folder of photos (``role`` / ``flag`` name the
    folder in messages)."""
    from ..detect import YuNetDetector
    from ..preprocess import crop_faces, load_image

    folder = Path(folder)
    if not folder.is_dir():
        raise FaceAnalysisError(f"{role} folder {folder} ({flag}) does not exist or is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise FaceAnalysisError(f"{role} folder {folder} ({flag}) contains no images "
                                f"({IMAGE_EXTS_HELP})")
    det = YuNetDetector()
    crops: list[np.ndarray] = []
    for path in tqdm(files, desc=f"{role} faces", unit="img", leave=False):
        try:
            rgb = load_image(path)
        except FaceAnalysisError:
            continue
        faces = det.detect(rgb)
        if faces:
            c, _ = crop_faces(rgb, [d.kps5 for d in faces], pre)
            crops.extend(c)
        if len(crops) >= max_faces:
            break
    if not crops:
        raise FaceAnalysisError(f"{role} folder {folder} ({flag}) has {len(files)} image(s) but no detectable face; "
                                f"give photos with visible faces")
    return np.stack(crops[:max_faces])


def calibration_inputs(pre: PreprocessConfig, calib_data: str | Path | None = None, n: int = 300,
                       data_root: str | Path | None = None) -> np.ndarray:
    """Normalised calibration inputs ``(n, 3, S, S)`` float32 from ``calib_data``, else the data pack's
    training splits; raises when neither is there."""
    from ..preprocess import normalise_array

    if calib_data is not None:
        return normalise_array(folder_crops(calib_data, pre, n), pre)
    root = pack_root(data_root, CALIB_SOURCES)
    if root is None:
        from ..data.sources import default_data_root

        raise FaceAnalysisError(f"int8 calibration needs face photos and no data pack was found at "
                                f"{default_data_root()}: pass --calib-data DIR (a folder of your own photos with "
                                f"faces; a few hundred faces work best), or export fp32 / fp16 or dynamic int8 ONNX "
                                f"(--onnx-int8 dynamic, the default), which need none")
    return normalise_array(training_crops(pre, n, data_root=root), pre)


def check_inputs(pre: PreprocessConfig, check_data: str | Path | None = None, n: int = 64,
                 data_root: str | Path | None = None) -> tuple[np.ndarray | None, str]:
    """Normalised parity-check inputs and where they came from: up to ``n`` faces of ``check_data``, else held-out
    faces of the data pack's test splits, else ``(None, why)`` when neither is there (parity is not measured)."""
    from ..preprocess import normalise_array

    if check_data is not None:
        crops = folder_crops(check_data, pre, n, role="check", flag="--check-data")
        return normalise_array(crops, pre), f"{len(crops)} faces from {Path(check_data).name}/ (--check-data)"
    root = pack_root(data_root, PARITY_SOURCES)
    if root is None:
        from ..data.sources import default_data_root

        return None, (f"not measured: no --check-data folder and no data pack at {default_data_root()}; "
                      f"re-run with --check-data DIR (photos with faces) to measure it")
    return (normalise_array(parity_crops(pre, n, data_root=root), pre),
            "held-out test splits (celebamask_mini, utkface, celeba_attr test)")
