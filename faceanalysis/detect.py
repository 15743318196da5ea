"""Face detection behind a small interface. Default: YuNet (OpenCV ``FaceDetectorYN``), bundled.

The bundled model is OpenCV Zoo's ``face_detection_yunet_2023mar_int8bq.onnx`` (122 kB; YuNet, MIT
(libfacedetection) / Apache-2.0 (OpenCV Zoo)), pinned by its SHA-256. Nothing is downloaded.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from .errors import FaceAnalysisError

try:  # OpenCV 5 warns about DNN targets on every detector creation
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
except AttributeError:  # pragma: no cover
    pass

YUNET_PATH = Path(__file__).parent / "assets" / "yunet_2023mar_int8bq.onnx"
YUNET_SHA256 = "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10"


@dataclass
class Detection:
    """One detected face: ``bbox`` (x0, y0, x1, y1), ``score`` in [0, 1], ``kps5`` (5, 2) in image pixels
    (subject's right eye, left eye, nose tip, right mouth corner, left mouth corner)."""

    bbox: np.ndarray
    score: float
    kps5: np.ndarray


class Detector(Protocol):
    """Anything with ``detect(rgb_image) -> list[Detection]``."""

    def detect(self, image: np.ndarray) -> list[Detection]: ...


class YuNetDetector:
    """YuNet through ``cv2.FaceDetectorYN``.

    Args:
        score_threshold: minimum face score.
        nms_threshold: IoU for non-maximum suppression.
        max_side: images are downscaled so their longer side is at most this for detection (results
            are mapped back to the original coordinates); set per call, not fixed at construction.
        min_face: faces whose box is smaller than this many (original) pixels are dropped.
        pad_retry: when nothing is found, retry once with a black border of this fraction of the
            longer side, which finds faces filling the whole frame (tight face crops).
    """

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3, max_side: int = 640,
                 min_face: float = 8.0, pad_retry: float = 0.25, model_path: str | Path = YUNET_PATH) -> None:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FaceAnalysisError(f"detector model {model_path} is missing; reinstall faceanalysis")
        if model_path == YUNET_PATH:
            digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
            if digest != YUNET_SHA256:
                raise FaceAnalysisError(f"detector model {model_path} is corrupt (sha256 {digest[:12]}...); reinstall")
        self.score_threshold = score_threshold
        self.max_side = max_side
        self.min_face = min_face
        self.pad_retry = pad_retry
        self._net = cv2.FaceDetectorYN.create(str(model_path), "", (320, 320), score_threshold, nms_threshold, 5000)

    def _run(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        self._net.setInputSize((w, h))
        _, faces = self._net.detect(np.ascontiguousarray(image[:, :, ::-1]))  # YuNet takes BGR
        return np.zeros((0, 15), np.float32) if faces is None else faces

    def detect(self, image: np.ndarray, max_side: int | None = None) -> list[Detection]:
        """Faces in an RGB uint8 image, sorted by score."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 \
                or 0 in image.shape:
            got = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise FaceAnalysisError(f"the detector takes HxWx3 uint8 RGB arrays, got {got}; "
                                    "convert with faceanalysis.preprocess.load_image")
        max_side = max_side or self.max_side
        h, w = image.shape[:2]
        scale = min(1.0, max_side / max(h, w))
        small = image if scale == 1.0 else cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                      interpolation=cv2.INTER_AREA)
        sx, sy = small.shape[1] / w, small.shape[0] / h
        faces = self._run(small)
        offset = 0
        if len(faces) == 0 and self.pad_retry > 0:
            offset = int(round(self.pad_retry * max(small.shape[:2])))
            faces = self._run(cv2.copyMakeBorder(small, offset, offset, offset, offset, cv2.BORDER_CONSTANT, 0))
        out = []
        for f in faces:
            x, y, bw, bh = f[:4] - np.array([offset, offset, 0, 0])
            kps = f[4:14].reshape(5, 2) - offset
            # pixel-centre mapping back to the original resolution
            box = np.array([x / sx, y / sy, (x + bw) / sx, (y + bh) / sy], np.float32)
            kps = np.stack([(kps[:, 0] + 0.5) / sx - 0.5, (kps[:, 1] + 0.5) / sy - 0.5], 1).astype(np.float32)
            if min(box[2] - box[0], box[3] - box[1]) < self.min_face:
                continue
            out.append(Detection(bbox=box, score=float(f[14]), kps5=kps))
        out.sort(key=lambda d: -d.score)
        return out


def default_detector() -> YuNetDetector:
    """The pinned default detector."""
    return YuNetDetector()
