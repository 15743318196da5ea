"""The one preprocessing path: image input -> RGB uint8, aligned crops -> normalised tensors."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np

from . import align
from ._lazy import torch  # only to_tensor (training) uses torch: imported on first use
from .config import PreprocessConfig
from .errors import FaceAnalysisError

ImageInput = Union[str, Path, bytes, np.ndarray, Any]  # Any: PIL.Image.Image


def to_tensor(crops: np.ndarray, pre: PreprocessConfig) -> torch.Tensor:
    """``(N, S, S, 3)`` uint8 RGB crops -> ``(N, 3, S, S)`` float32, normalised with ``pre.mean/std``."""
    x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(pre.mean).view(1, 3, 1, 1)
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return (x - mean) / std


def normalise_array(crops: np.ndarray, pre: PreprocessConfig) -> np.ndarray:
    """Numpy twin of :func:`to_tensor` (for ONNX / TFLite runtimes): ``(N, 3, S, S)`` float32."""
    x = crops.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    return ((x - np.array(pre.mean, np.float32)[:, None, None]) / np.array(pre.std, np.float32)[:, None, None]).astype(np.float32)


def crop_faces(image: np.ndarray, kps5_list: list[np.ndarray], pre: PreprocessConfig) -> tuple[np.ndarray, list[np.ndarray]]:
    """Aligned crops ``(N, S, S, 3)`` and their source->crop matrices for each face's 5 key points."""
    mats = [align.alignment_matrix(k, pre) for k in kps5_list]
    crops = [align.warp_image(image, m, pre) for m in mats]
    s = pre.input_size
    return (np.stack(crops) if crops else np.zeros((0, s, s, 3), np.uint8)), mats


COLOR_ORDERS = ("rgb", "bgr")


def load_image(image: ImageInput, color: str = "rgb") -> np.ndarray:
    """Any supported input -> HxWx3 uint8 RGB (a copy; the caller's data is never modified).

    Accepts a path, encoded bytes, a PIL image or a numpy array (HxW grey, HxWx1, HxWx3, HxWx4 with alpha;
    uint8, uint16 (scaled to 8 bit) or float in [0, 1]). Raises :class:`FaceAnalysisError` otherwise.

    ``color`` is the channel order of a numpy array: ``"rgb"`` (default; PIL, imageio, matplotlib) or ``"bgr"``
    (``cv2.imread`` / ``cv2.VideoCapture`` frames; BGRA for 4 channels). Files, bytes and PIL images carry
    their own order and are always decoded correctly. Files, bytes and PIL images are shown upright (EXIF
    orientation applied) and animated ones give their first frame: see :mod:`faceanalysis.decode`.
    """
    if color not in COLOR_ORDERS:
        raise FaceAnalysisError(f"color must be 'rgb' or 'bgr' (the channel order of numpy arrays), got {color!r}")
    if isinstance(image, (str, Path)):
        if str(image) == "":
            raise FaceAnalysisError("image path is an empty string; pass a path to an image file")
        path = Path(image)
        if not path.exists():
            raise FaceAnalysisError(f"image file {path} does not exist")
        if path.is_dir():
            raise FaceAnalysisError(f"{path} is a folder, not an image file")
        try:
            data = path.read_bytes()
        except OSError as err:
            raise FaceAnalysisError(f"cannot read image file {path}: {err.strerror or err}") from err
        if not data:
            raise FaceAnalysisError(f"image file {path} is empty")
        return _decode(data, str(path))
    if isinstance(image, (bytes, bytearray, memoryview)):
        if len(image) == 0:
            raise FaceAnalysisError("image bytes are empty")
        return _decode(bytes(image), "image bytes")
    if hasattr(image, "mode") and hasattr(image, "size") and hasattr(image, "convert"):  # PIL
        try:
            return _from_pil(image)
        except FaceAnalysisError:
            raise
        except Exception as err:  # noqa: BLE001 - a lazily opened PIL image decodes here and may be corrupt
            raise FaceAnalysisError(f"cannot read the PIL image ({type(err).__name__}: {err}); "
                                    "it may be truncated or corrupt") from err
    if isinstance(image, np.ndarray):
        if color == "bgr" and image.ndim == 3 and image.shape[2] in (3, 4):
            image = image[:, :, [2, 1, 0] + ([3] if image.shape[2] == 4 else [])]
        return from_array(image)
    if type(image).__module__.split(".")[0] == "torch":  # without importing torch
        raise FaceAnalysisError("torch tensors are not accepted: pass image.numpy() as HxWx3 uint8 RGB")
    raise FaceAnalysisError(f"unsupported image type {type(image).__name__}; pass a path, bytes, PIL image or numpy array")


def _from_pil(image: Any) -> np.ndarray:
    from .decode import pil_upright

    image = pil_upright(image)
    if image.mode.startswith("I;16") or image.mode == "I":  # 16/32-bit grey: convert("RGB") clips to 255
        arr = np.asarray(image)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise FaceAnalysisError(f"PIL image of mode {image.mode} has values outside 0..65535; "
                                    "convert it to 8 or 16 bit first")
        return from_array(arr.astype(np.uint16))
    if image.mode == "F":  # float grey: same rules as a float array (values in [0, 1])
        return from_array(np.asarray(image))
    return from_array(np.asarray(image.convert("RGBA" if "A" in image.mode else "RGB")))


def _decode(data: bytes, name: str) -> np.ndarray:
    """Encoded bytes -> RGB as displayed (see :func:`faceanalysis.decode.decode`)."""
    from .decode import decode

    return decode(data, name)


def from_array(arr: np.ndarray) -> np.ndarray:
    """Validate and convert a numpy image to HxWx3 uint8 RGB (always a new array)."""
    if arr.dtype == object or arr.dtype.kind not in "uifb":
        raise FaceAnalysisError(f"image array has unsupported dtype {arr.dtype}; use uint8 RGB")
    if arr.dtype.byteorder not in "=|":  # big-endian data (e.g. some 16-bit TIFFs): native order
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise FaceAnalysisError(f"image array has shape {arr.shape}; expected HxW, HxWx3 (RGB) or HxWx4 (RGBA)")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise FaceAnalysisError(f"image array is empty (shape {arr.shape})")
    if arr.dtype == np.uint8:
        out = arr.copy()
    elif arr.dtype == np.uint16:
        out = (arr.astype(np.uint32) // 257).astype(np.uint8)
    elif arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise FaceAnalysisError("float image contains NaN or infinity")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 1.0:
            raise FaceAnalysisError(f"float image values must lie in [0, 1] (got {lo:.3g}..{hi:.3g}); "
                                    "for 0-255 data pass uint8")
        out = np.round(arr * 255).astype(np.uint8)
    elif arr.dtype == np.bool_:
        raise FaceAnalysisError("boolean arrays are masks, not images; pass uint8 RGB")
    else:
        raise FaceAnalysisError(f"image array has unsupported dtype {arr.dtype}; use uint8 (or uint16, float in [0, 1])")
    if out.ndim == 2:
        out = np.repeat(out[:, :, None], 3, 2)
    elif out.shape[2] == 4:
        rgb, a = out[:, :, :3].astype(np.float32), out[:, :, 3:].astype(np.float32) / 255.0
        out = np.round(rgb * a + 255.0 * (1 - a)).astype(np.uint8)  # composite over white
    return np.ascontiguousarray(out)
