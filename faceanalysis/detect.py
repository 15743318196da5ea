"""Face detection behind a small interface. Default: YuNet (OpenCV ``FaceDetectorYN``), bundled.

The bundled model is OpenCV Zoo's ``face_detection_yunet_2023mar_int8bq.onnx`` (122 kB; YuNet, MIT
(libfacedetection) / Apache-2.0 (OpenCV Zoo)), pinned by its SHA-256. Nothing is downloaded.

Around YuNet, :class:`YuNetDetector` adds what real photos need:

* **Detection size.** By default the detection resolution adapts to the photo: YuNet finds faces down to about
  20 px at its input resolution (measured on pack portraits: 38 of 40 at 20 px, 39 of 40 at 24 px, 30 of 40
  at 16 px), so the longer side used is ``long_side * 24 / small_face`` (``small_face=40`` px by default), kept
  within 384..2048 (a 640x480 frame at 384 px) and never above the photo's own size: a 12 MP photo (4032 px) is detected at 2048 px (its
  40 px faces at 20 px) and they are found. Above 640 px the photo is also run at 640 px (about a tenth of the
  2048 px cost), which finds faces too large for YuNet's anchors at the bigger size (a face filling a 2000 px
  photo); the two are merged by score. ``max_side`` fixes the size instead.
* **Rotated faces.** YuNet is trained on upright faces; on a face turned 90 or 180 degrees it often returns a
  confident box with the five points laid out as if the face were upright (eyes where the chin is). Every
  detection is therefore checked by an *orientation vote*: a small patch around it (two box sizes, 96 px) is
  run through YuNet turned 0 and 180 degrees (all four quarter turns when the face does not look clearly
  upright) in one call, and the turn with the best score wins. A face that wins in another turn is re-detected
  in the photo turned that way, so its box and key points follow the real eyes and mouth (alignment then
  handles any in-plane angle, and the reported roll is near +-90 / 180). When no face is found upright, the
  photo is also searched turned 90, 180 and 270 degrees. ``rotations="check"`` keeps the vote but skips that
  search, ``"off"`` restores plain upright-only detection.
* **Runtime.** By default YuNet runs on ONNX Runtime (a core dependency): :data:`YUNET_ORT_PATH` is the bundled
  model with its block-quantized int8 weights expanded to float32 and a free input size
  (:func:`build_float_yunet`), decoded here exactly as ``cv2.FaceDetectorYN`` decodes it (same boxes, points and
  scores to float rounding). On this x86 CPU with one thread it is 2-3x faster than OpenCV 5's DNN module
  (benchmarks/pipeline_bench.md). ``runtime="opencv"`` keeps ``cv2.FaceDetectorYN`` (and is what a custom
  ``model_path`` uses).
* **Threads.** ``cv2.FaceDetectorYN`` has a mutable input size, so one instance must not run in two threads at
  once; each thread gets its own instances (``threading.local``), and one :class:`YuNetDetector` can be shared.
  An ONNX Runtime session is safe to share between threads as it is.
"""
from __future__ import annotations

import hashlib
import math
import threading
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
#: the same network for ONNX Runtime: float32 weights (the int8 block-quantized ones expanded) and a free input
#: size; made from YUNET_PATH by :func:`build_float_yunet`
YUNET_ORT_PATH = Path(__file__).parent / "detector_assets" / "yunet_2023mar_fp32.onnx"
YUNET_ORT_SHA256 = "818ecfd6419753121570c5352bac6c194e1d5c37924aa8dced89beb322b9974f"
#: runtimes that run YuNet: onnxruntime (default for the bundled model) or OpenCV's FaceDetectorYN
RUNTIMES = ("onnxruntime", "opencv")
#: YuNet's output strides and the multiple its input is padded to (as cv2.FaceDetectorYN does)
YUNET_STRIDES, YUNET_DIVISOR = (8, 16, 32), 32

#: face width (px at YuNet's input) the adaptive size aims for (YuNet finds 39 / 40 pack portraits at 24 px,
#: 38 / 40 at 20 px, which the 2048 px cap still gives a 40 px face in a 12 MP photo)
DET_FACE_PX = 24.0
#: bounds of the adaptive detection size (longer side, px): a 640x480 frame is detected at 384 px, which still gives
#: its 40 px faces the 24 px YuNet needs (benchmarks/detect_bench.md), at 0.36 of the 640 px cost
AUTO_MIN_SIDE, AUTO_MAX_SIDE = 384, 2048
#: the pad retry (faces filling the frame) and the rotated search run at most at this size
SEARCH_SIDE = 640
#: orientation vote: patch side (px) and patch size relative to the detection box; when the two best turns score
#: within VOTE_MARGIN of each other they are compared again on a wider patch (VOTE_WIDE box sizes), which settles
#: detections of part of a face (an eye region, a wrinkle pattern) that the narrow patch cannot
VOTE_TILE, VOTE_CONTEXT, VOTE_MARGIN, VOTE_WIDE = 96, 2.0, 0.15, 4.0
ROTATION_MODES = ("search", "check", "off")


@dataclass
class Detection:
    """One detected face: ``bbox`` (x0, y0, x1, y1), ``score`` in [0, 1], ``kps5`` (5, 2) in image pixels
    (subject's right eye, left eye, nose tip, right mouth corner, left mouth corner).

    ``rotation``: the quarter turn the face is found in, in degrees counter-clockwise as displayed (0 upright,
    90 = turned counter-clockwise, -90 = clockwise, 180 = upside down); the key points always name the
    subject's own eyes and mouth, whatever the turn."""

    bbox: np.ndarray
    score: float
    kps5: np.ndarray
    rotation: int = 0


class Detector(Protocol):
    """Anything with ``detect(rgb_image) -> list[Detection]``."""

    def detect(self, image: np.ndarray) -> list[Detection]: ...


# ---- quarter turns ---------------------------------------------------------------------------------------------
def check_rgb_uint8(image: object, what: str, hint: str) -> None:
    """Raise :class:`FaceAnalysisError` ``"{what}, got <what it got>{hint}"`` unless ``image`` is a non-empty
    HxWx3 uint8 array (the detector's and the video tracker's input contract)."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 \
            or 0 in image.shape:
        got = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise FaceAnalysisError(f"{what}, got {got}{hint}")


def rotate_quarter(image: np.ndarray, k: int) -> np.ndarray:
    """``image`` turned ``k`` quarter turns counter-clockwise (as ``np.rot90(image, k)``), contiguous."""
    k %= 4
    return image if k == 0 else cv2.rotate(image, (cv2.ROTATE_90_COUNTERCLOCKWISE, cv2.ROTATE_180,
                                                   cv2.ROTATE_90_CLOCKWISE)[k - 1])


def quarter_matrix(k: int, h: int, w: int) -> np.ndarray:
    """2x3 matrix sending pixel centres of an ``h x w`` image to those of the image turned ``k`` quarter turns
    counter-clockwise (:func:`rotate_quarter`)."""
    k %= 4
    return np.array([[[1, 0, 0], [0, 1, 0]], [[0, 1, 0], [-1, 0, w - 1]], [[-1, 0, w - 1], [0, -1, h - 1]],
                     [[0, -1, h - 1], [1, 0, 0]]][k], np.float64)


def _k_of(rotation: int) -> int:
    """Quarter turns counter-clockwise that make a face of ``rotation`` degrees upright."""
    return (-int(round(rotation / 90.0))) % 4


def _rotation_of(k: int) -> int:
    return {0: 0, 1: -90, 2: 180, 3: 90}[k % 4]


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    return (np.vstack([outer, [0, 0, 1]]) @ np.vstack([inner, [0, 0, 1]]))[:2]


def _invert(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


def _rows_to_dets(rows: np.ndarray, to_image: np.ndarray, rotation: int) -> list[Detection]:
    """YuNet rows (x, y, w, h, 5 x (x, y), score) of some frame -> detections in image pixels; ``to_image`` maps
    that frame's pixel centres to the image's."""
    # box corners are continuous coordinates: shift by half a pixel around the pixel-centre map
    cont = to_image.copy()
    cont[:, 2] = to_image[:, 2] + 0.5 - to_image[:, :2] @ np.array([0.5, 0.5])
    out = []
    for f in rows:
        x, y, bw, bh = (float(v) for v in f[:4])
        corners = np.array([[x, y], [x + bw, y], [x, y + bh], [x + bw, y + bh]]) @ cont[:, :2].T + cont[:, 2]
        box = np.r_[corners.min(0), corners.max(0)].astype(np.float32)
        kps = (f[4:14].reshape(5, 2).astype(np.float64) @ to_image[:, :2].T + to_image[:, 2]).astype(np.float32)
        if not (np.isfinite(box).all() and np.isfinite(kps).all()):
            continue
        out.append(Detection(bbox=box, score=float(f[14]), kps5=kps, rotation=rotation))
    return out


def shrink(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``image`` resized down to ``size`` (w, h) with area averaging, fast: OpenCV's ``INTER_AREA`` is quick for
    integer factors and very slow for others (35 ms vs 0.3 ms for 640x480 -> 384x288 on one x86 core), so the
    image is area-averaged by the largest integer factor that stays above ``size`` and the rest (a factor in
    (0.5, 1]) is bilinear, which does not alias at that factor."""
    h, w = image.shape[:2]
    tw, th = size
    if (tw, th) == (w, h):
        return image
    n = int(min(w / tw, h / th))
    if n >= 2:
        image = cv2.resize(image, (w // n, h // n), interpolation=cv2.INTER_AREA)
        if image.shape[1] == tw and image.shape[0] == th:
            return image
    return cv2.resize(image, (tw, th), interpolation=cv2.INTER_LINEAR)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _inside(d: Detection, k: Detection) -> bool:
    cx, cy = (d.bbox[0] + d.bbox[2]) / 2, (d.bbox[1] + d.bbox[3]) / 2
    return bool(k.bbox[0] <= cx <= k.bbox[2] and k.bbox[1] <= cy <= k.bbox[3])


def _nms(dets: list[Detection], iou: float = 0.3) -> list[Detection]:
    """Non-maximum suppression by score; a detection in another quarter turn is also suppressed when its centre
    lies in a better one's box (two faces in different turns do not overlap like that)."""
    keep: list[Detection] = []
    for d in sorted(dets, key=lambda d: -d.score):
        if all(_iou(d.bbox, k.bbox) < iou and (d.rotation == k.rotation or not _inside(d, k)) for k in keep):
            keep.append(d)
    return keep


def _merge_scales(fine: list[Detection], coarse: list[Detection], iou: float) -> list[Detection]:
    """Detections of one photo at the detection size and at the coarse size, merged by score: NMS, and a
    detection of one size lying mostly (>= 70 % of its box) inside a better one of the other size is a part of
    that face (YuNet finds an eye or mouth region of a face too large for its anchors) and is dropped."""
    from_coarse = {id(d) for d in coarse}
    keep: list[Detection] = []
    for d in sorted(fine + coarse, key=lambda d: -d.score):
        if all(_iou(d.bbox, k.bbox) < iou and ((id(d) in from_coarse) == (id(k) in from_coarse)
                                                or _covered(d.bbox, k.bbox) < 0.7) for k in keep):
            keep.append(d)
    return keep


def _covered(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of box ``a`` inside box ``b``."""
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = (a[2] - a[0]) * (a[3] - a[1])
    return float(inter / area) if area > 0 else 0.0


def looks_upright(det: Detection) -> bool:
    """True when the detection's geometry is that of a clearly upright frontal face in its own quarter turn
    (YuNet score >= 0.9, box taller than wide, level eyes, mouth below them at a normal distance). Measured on
    300 pack portraits: 87 % of upright faces pass, no face turned 90 degrees passes and 6 % of faces turned
    180 degrees do, so a passing face is still checked against the half turn."""
    r = quarter_matrix(_k_of(det.rotation), 2, 2)[:, :2]  # rotation part only
    k = det.kps5.astype(np.float64) @ r.T
    x0, y0, x1, y1 = det.bbox
    (bw, bh) = (abs(v) for v in r @ np.array([x1 - x0, y1 - y0]))
    eye = k[1] - k[0]
    eye_len = float(np.hypot(*eye))
    if det.score < 0.9 or bw <= 0 or eye_len < 1e-6:
        return False
    em = (k[3] + k[4]) / 2 - (k[0] + k[1]) / 2
    angle = math.degrees(math.atan2(eye[1], eye[0]))
    ratio = float(np.hypot(*em)) / eye_len
    below = eye[0] * em[1] - eye[1] * em[0] > 0
    return bh / bw >= 1.1 and abs(angle) <= 8.0 and 0.8 <= ratio <= 1.35 and below


# ---- YuNet on ONNX Runtime -------------------------------------------------------------------------------------
def build_float_yunet(src: str | Path = YUNET_PATH, dst: str | Path = YUNET_ORT_PATH) -> Path:
    """Write the ONNX Runtime copy of a YuNet model: every constant ``DequantizeLinear`` (the int8 block-quantized
    weights, which ONNX Runtime rejects: per-tensor scales with a ``block_size``) replaced by its float32 result,
    and the fixed 640x640 input made free (``h`` x ``w``, multiples of 32). Needs the ``onnx`` package (the
    ``[export]`` extra); the bundled copy is package data, so running it needs only onnxruntime."""
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as err:
        raise FaceAnalysisError("build_float_yunet needs the onnx package: pip install onnx") from err

    m = onnx.load(str(src))
    init = {i.name: i for i in m.graph.initializer}
    keep, folded = [], []
    for n in m.graph.node:
        if n.op_type != "DequantizeLinear" or not all(i in init for i in n.input if i):
            keep.append(n)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        q = numpy_helper.to_array(init[n.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(init[n.input[1]]).astype(np.float32)
        zero = (numpy_helper.to_array(init[n.input[2]]).astype(np.float32) if len(n.input) > 2 and n.input[2]
                else np.zeros_like(scale))
        if scale.size == 1:
            y = (q - zero.reshape(())) * scale.reshape(())
        else:
            ax = attrs.get("axis", 1) % q.ndim
            bs = attrs.get("block_size", 0)
            if bs:
                idx = np.arange(q.shape[ax]) // bs
                scale, zero = np.take(scale, idx, axis=ax), np.take(zero, idx, axis=ax)
            else:
                shape = [1] * q.ndim
                shape[ax] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            y = (q - zero) * scale
        folded.append(numpy_helper.from_array(y.astype(np.float32), n.output[0]))
    del m.graph.node[:]
    m.graph.node.extend(keep)
    m.graph.initializer.extend(folded)
    used = {i for n in keep for i in n.input}
    kept_init = [i for i in m.graph.initializer if i.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(kept_init)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "h", "w"
    for o in m.graph.output:
        dim = o.type.tensor_type.shape.dim
        if len(dim) > 1:  # (1, anchors, values): the anchor count follows the input size
            dim[1].dim_param = f"{o.name}_anchors"
    del m.graph.value_info[:]
    onnx.checker.check_model(m)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(dst))
    return dst


def _nms_rows(boxes: np.ndarray, scores: np.ndarray, iou: float, top_k: int) -> np.ndarray:
    """Indices kept by greedy NMS (``cv2.dnn.NMSBoxes``: the ``top_k`` best, a box is dropped when its IoU with a
    kept one exceeds ``iou``); ``boxes`` are (x, y, w, h)."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    area = boxes[:, 2] * boxes[:, 3]
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = np.maximum(0.0, np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]))
        ih = np.maximum(0.0, np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]))
        inter = iw * ih
        union = area[i] + area[rest] - inter
        order = rest[inter <= iou * np.maximum(union, 1e-12)]
    return np.asarray(keep, np.int64)


def yunet_decode(outputs: dict[str, np.ndarray], pad_w: int, pad_h: int, score_threshold: float,
                 nms_threshold: float, top_k: int = 5000) -> np.ndarray:
    """YuNet's raw outputs (``cls_8`` ... ``kps_32``) on a ``pad_w`` x ``pad_h`` input -> rows (x, y, w, h,
    5 x (x, y), score) in input pixels, as ``cv2.FaceDetectorYN.detect`` returns them (score = sqrt(cls * obj),
    kept above ``score_threshold``, then NMS), best first."""
    rows = []
    for st in YUNET_STRIDES:
        cols = pad_w // st
        # cls and obj come out of sigmoids, so FaceDetectorYN's clamp to [0, 1] has nothing to do
        score = np.sqrt(outputs[f"cls_{st}"].reshape(-1) * outputs[f"obj_{st}"].reshape(-1))
        idx = np.flatnonzero(score > score_threshold)
        if not idx.size:
            continue
        r, c = np.divmod(idx, cols)
        r, c = r.astype(np.float32)[:, None], c.astype(np.float32)[:, None]
        b = outputs[f"bbox_{st}"].reshape(-1, 4)[idx]
        k = outputs[f"kps_{st}"].reshape(-1, 10)[idx]
        wh = np.exp(b[:, 2:4]) * st
        xy = (np.concatenate([c, r], 1) + b[:, :2]) * st - wh / 2
        kps = np.empty_like(k)
        kps[:, 0::2] = (k[:, 0::2] + c) * st
        kps[:, 1::2] = (k[:, 1::2] + r) * st
        rows.append(np.concatenate([xy, wh, kps, score[idx, None]], 1))
    if not rows:
        return np.zeros((0, 15), np.float32)
    allr = np.concatenate(rows).astype(np.float32)
    keep = _nms_rows(allr[:, :4], allr[:, 14], nms_threshold, top_k)
    return allr[keep]


class YuNetDetector:
    """YuNet through ``cv2.FaceDetectorYN``; safe to share between threads (see the module docstring).

    Args:
        score_threshold: minimum face score.
        nms_threshold: IoU for non-maximum suppression.
        max_side: fixed longer side (px) of the image used for detection; ``None`` (default) = adaptive
            (``small_face``); set per call with ``detect(image, max_side)``. Results are always in original
            image pixels.
        small_face: with the adaptive size, faces down to about this width (original pixels) are found; the
            detection side is ``long_side * 24 / small_face`` within 640..2048 px (so the guarantee holds up to
            ~12 MP; larger photos need faces of about ``long_side / 100`` px, or a larger fixed ``max_side``).
        min_face: faces whose box is smaller than this many (original) pixels are dropped.
        pad_retry: when nothing is found, retry once with a black border of this fraction of the
            longer side, which finds faces filling the whole frame (tight face crops).
        rotations: ``"search"`` (default): orientation vote on every face, and when nothing is found upright,
            search the photo turned 90 / 180 / 270 degrees; ``"check"``: the vote only; ``"off"``: upright only.
        runtime: ``"onnxruntime"`` or ``"opencv"`` (``cv2.FaceDetectorYN``); ``None`` (default) = onnxruntime for
            the bundled model (2-3x faster on one x86 thread, same detections), OpenCV for a custom ``model_path``.
    """

    def __init__(self, score_threshold: float = 0.6, nms_threshold: float = 0.3, max_side: int | None = None,
                 min_face: float = 8.0, pad_retry: float = 0.25, model_path: str | Path = YUNET_PATH,
                 small_face: float = 40.0, rotations: str = "search", runtime: str | None = None) -> None:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise FaceAnalysisError(f"detector model {model_path} is missing; reinstall faceanalysis")
        if model_path == YUNET_PATH:
            digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
            if digest != YUNET_SHA256:
                raise FaceAnalysisError(f"detector model {model_path} is corrupt (sha256 {digest[:12]}...); reinstall")
        if max_side is not None and max_side < 1:
            raise FaceAnalysisError(f"max_side must be a positive number of pixels or None (got {max_side})")
        if not small_face > 0:
            raise FaceAnalysisError(f"small_face must be a positive number of pixels (got {small_face})")
        if rotations not in ROTATION_MODES:
            raise FaceAnalysisError(f"rotations must be one of {ROTATION_MODES} (got {rotations!r})")
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
        self.small_face = small_face
        self.min_face = min_face
        self.pad_retry = pad_retry
        self.rotations = rotations
        self.model_path = model_path
        self._local = threading.local()
        if runtime is None:
            runtime = "onnxruntime" if model_path == YUNET_PATH and YUNET_ORT_PATH.is_file() else "opencv"
        if runtime not in RUNTIMES:
            raise FaceAnalysisError(f"runtime must be one of {RUNTIMES} (got {runtime!r})")
        self.runtime = runtime
        self._session = self._ort_session() if runtime == "onnxruntime" else None
        self._ort_names = [o.name for o in self._session.get_outputs()] if self._session is not None else []
        if self._session is None:
            self._net("main", (320, 320))  # fail here, not on the first image, if OpenCV cannot load the model

    def _ort_session(self):
        """An ONNX Runtime session on the float YuNet (:data:`YUNET_ORT_PATH`; one thread, shared by all threads)."""
        if self.model_path != YUNET_PATH:
            raise FaceAnalysisError(f"runtime='onnxruntime' runs the bundled YuNet only; a custom model_path "
                                    f"({self.model_path}) runs with runtime='opencv'")
        from .export import require

        ort = require("onnxruntime", "the detector's onnxruntime runtime (or pass runtime='opencv')")
        if not YUNET_ORT_PATH.is_file():
            raise FaceAnalysisError(f"detector model {YUNET_ORT_PATH} is missing; reinstall faceanalysis "
                                    f"(or pass runtime='opencv')")
        data = YUNET_ORT_PATH.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != YUNET_ORT_SHA256:
            raise FaceAnalysisError(f"detector model {YUNET_ORT_PATH} is corrupt (sha256 {digest[:12]}...); reinstall")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1  # a 122 kB network on frames of a few hundred px: threads cost more than they give
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own Fail / InvalidGraph types
            raise FaceAnalysisError(f"onnxruntime cannot load the detector model {YUNET_ORT_PATH}: {err}") from err

    # ---- per-thread YuNet instances ------------------------------------------------------------------------------
    def _net(self, key: str, size: tuple[int, int]):
        nets = getattr(self._local, "nets", None)
        if nets is None:
            nets = self._local.nets = {}
        net = nets.get(key)
        if net is None:
            # the vote nets keep a low threshold so that every orientation gets a score to compare
            thr = min(self.score_threshold, 0.3) if key != "main" else self.score_threshold
            try:
                net = nets[key] = cv2.FaceDetectorYN.create(str(self.model_path), "", size, thr,
                                                            self.nms_threshold, 5000)
            except cv2.error as err:
                raise FaceAnalysisError(f"OpenCV cannot load the detector model {self.model_path}: {err}") from err
        if tuple(net.getInputSize()) != tuple(size):
            net.setInputSize(size)
        return net

    def _run(self, image: np.ndarray, key: str = "main") -> np.ndarray:
        """YuNet rows (x, y, w, h, 5 x (x, y), score) of an RGB image, in its pixels; the vote keys (not
        ``"main"``) keep a low threshold so that every orientation gets a score to compare."""
        h, w = image.shape[:2]
        if self._session is not None:
            thr = self.score_threshold if key == "main" else min(self.score_threshold, 0.3)
            pw, ph = -(-w // YUNET_DIVISOR) * YUNET_DIVISOR, -(-h // YUNET_DIVISOR) * YUNET_DIVISOR
            blob = np.zeros((1, 3, ph, pw), np.float32)  # BGR, zero padding right / bottom, as FaceDetectorYN
            blob[0, :, :h, :w] = image.transpose(2, 0, 1)[::-1]
            outs = dict(zip(self._ort_names, self._session.run(None, {"input": blob})))
            return yunet_decode(outs, pw, ph, thr, self.nms_threshold)
        net = self._net(key, (w, h))
        _, faces = net.detect(np.ascontiguousarray(image[:, :, ::-1]))  # YuNet takes BGR
        return np.zeros((0, 15), np.float32) if faces is None else faces

    # ---- detection size ------------------------------------------------------------------------------------------
    def detection_side(self, shape: tuple[int, ...], max_side: int | None = None) -> int:
        """Longer side (px) the detector sees for an image of ``shape``: ``max_side`` if given (per call or at
        construction), else the adaptive size (see ``small_face``); never more than the image's own."""
        long = max(shape[:2])
        fixed = max_side or self.max_side
        if fixed:
            return int(min(long, fixed))
        want = math.ceil(long * DET_FACE_PX / self.small_face)
        return int(min(long, max(AUTO_MIN_SIDE, min(want, AUTO_MAX_SIDE))))

    def _detect_frame(self, image: np.ndarray, k: int, side: int) -> list[Detection]:
        """Upright detection in ``image`` turned ``k`` quarter turns CCW (resized to ``side``, pad retry), in
        the coordinates of ``image``."""
        img = rotate_quarter(image, k)
        h, w = img.shape[:2]
        to_image = _invert(quarter_matrix(k, *image.shape[:2]))

        def scaled(limit: int) -> tuple[np.ndarray, np.ndarray]:
            scale = min(1.0, limit / max(h, w))
            small = img if scale == 1.0 else shrink(img, (max(1, round(w * scale)), max(1, round(h * scale))))
            sx, sy = small.shape[1] / w, small.shape[0] / h
            # pixel centres of the resized image -> of img
            return small, np.array([[1 / sx, 0, 0.5 / sx - 0.5], [0, 1 / sy, 0.5 / sy - 0.5]])

        small, m = scaled(side)
        dets = _rows_to_dets(self._run(small), _compose(to_image, m), _rotation_of(k))
        if side > SEARCH_SIDE:
            # faces larger than YuNet's biggest anchors at this size (a face filling a 2000 px photo) are missed
            # or found in part; the coarse size finds them
            small, m = scaled(SEARCH_SIDE)
            dets = _merge_scales(dets, _rows_to_dets(self._run(small), _compose(to_image, m), _rotation_of(k)),
                                 self.nms_threshold)
        if not dets and self.pad_retry > 0:
            small, m = scaled(min(side, SEARCH_SIDE))
            offset = int(round(self.pad_retry * max(small.shape[:2])))
            rows = self._run(cv2.copyMakeBorder(small, offset, offset, offset, offset, cv2.BORDER_CONSTANT, 0))
            m = _compose(m, np.array([[1.0, 0, -offset], [0, 1.0, -offset]]))
            dets = _rows_to_dets(rows, _compose(to_image, m), _rotation_of(k))
        return dets

    # ---- orientation vote ----------------------------------------------------------------------------------------
    def _patch(self, image: np.ndarray, det: Detection, context: float = VOTE_CONTEXT,
               t: int = VOTE_TILE) -> tuple[np.ndarray, np.ndarray]:
        """A ``t`` px square patch around ``det`` (``context`` box sizes) and the patch -> image map."""
        x0, y0, x1, y1 = (float(v) for v in det.bbox)
        n = max(2, int(math.ceil(context * max(x1 - x0, y1 - y0))))
        px, py = int(math.floor((x0 + x1 - n) / 2)), int(math.floor((y0 + y1 - n) / 2))
        h, w = image.shape[:2]
        cx0, cy0, cx1, cy1 = max(px, 0), max(py, 0), min(px + n, w), min(py + n, h)
        if cx1 <= cx0 or cy1 <= cy0:
            region = np.zeros((n, n, 3), np.uint8)
        else:
            region = cv2.copyMakeBorder(image[cy0:cy1, cx0:cx1], cy0 - py, py + n - cy1, cx0 - px, px + n - cx1,
                                        cv2.BORDER_CONSTANT, 0)
        patch = shrink(region, (t, t)) if n > t else cv2.resize(region, (t, t), interpolation=cv2.INTER_LINEAR)
        f = n / t
        return patch, np.array([[f, 0, 0.5 * f - 0.5 + px], [0, f, 0.5 * f - 0.5 + py]])

    def orientation_vote(self, image: np.ndarray, det: Detection, ks: tuple[int, ...] = (0, 1, 2, 3),
                         context: float = VOTE_CONTEXT) -> dict[int, tuple[float, Detection | None]]:
        """YuNet's best score (and that detection, in image pixels) in the patch around ``det`` (``context`` box
        sizes) turned by each of ``ks`` quarter turns CCW, in one call on a row of tiles."""
        t = VOTE_TILE if context <= VOTE_CONTEXT else int(round(VOTE_TILE * context / VOTE_CONTEXT / 32)) * 32
        patch, to_image = self._patch(image, det, context, t)
        mosaic = np.hstack([rotate_quarter(patch, k) for k in ks])
        rows = self._run(mosaic, key=f"vote{len(ks)}x{t}")
        best: dict[int, tuple[float, Detection | None]] = {k: (0.0, None) for k in ks}
        for row in rows:
            i = int((row[0] + row[2] / 2) // t)
            if not 0 <= i < len(ks) or row[14] <= best[ks[i]][0]:
                continue
            k = ks[i]
            # mosaic pixel centres -> tile -> patch (undo the turn) -> image
            m = _compose(to_image, _compose(_invert(quarter_matrix(k, t, t)), np.array([[1.0, 0, -i * t], [0, 1, 0]])))
            d = _rows_to_dets(row[None], m, _rotation_of(k))
            best[k] = (float(row[14]), d[0] if d else None)
        return best

    def _orientation(self, image: np.ndarray, det: Detection) -> tuple[int, Detection | None, bool]:
        """Quarter turns CCW that make ``det``'s face upright according to the vote, the vote's detection of it,
        and whether the vote is sure (its best turn scores at least ``score_threshold``); the detection's own
        turn when the vote prefers no other."""
        k0 = _k_of(det.rotation)
        ks = (k0, (k0 + 2) % 4) if looks_upright(det) else tuple((k0 + i) % 4 for i in range(4))
        votes = self.orientation_vote(image, det, ks)
        ranked = sorted(ks, key=lambda q: -votes[q][0])
        if votes[ranked[0]][0] > 0.0 and votes[ranked[0]][0] - votes[ranked[1]][0] < VOTE_MARGIN:
            pair = (ranked[0], ranked[1])
            wide = self.orientation_vote(image, det, pair, VOTE_WIDE)
            if wide[pair[1]][0] > wide[pair[0]][0]:
                pair = pair[::-1]
            # only a decisive wide vote (a clear face in one turn, not in the other) overrides the narrow one
            if wide[pair[0]][0] >= self.score_threshold and wide[pair[0]][0] - wide[pair[1]][0] >= VOTE_MARGIN:
                votes = {**votes, pair[0]: (max(votes[pair[0]][0], votes[pair[1]][0]) + 1e-3,
                                            wide[pair[0]][1] or votes[pair[0]][1])}
        k = max(ks, key=lambda q: votes[q][0])
        sure = votes[k][0] >= self.score_threshold
        if votes[k][0] <= 0.0 or votes[k][0] <= votes[k0][0]:
            return k0, None, sure
        return k, votes[k][1], sure

    # ---- public --------------------------------------------------------------------------------------------------
    def detect(self, image: np.ndarray, max_side: int | None = None, rotations: str | None = None) -> list[Detection]:
        """Faces in an RGB uint8 image, sorted by score (see the class docstring for ``max_side`` and
        ``rotations``; both default to the detector's settings)."""
        check_rgb_uint8(image, "the detector takes HxWx3 uint8 RGB arrays",
                        "; convert with faceanalysis.preprocess.load_image")
        if max_side is not None and max_side < 1:
            raise FaceAnalysisError(f"max_side must be a positive number of pixels (got {max_side})")
        mode = rotations or self.rotations
        if mode not in ROTATION_MODES:
            raise FaceAnalysisError(f"rotations must be one of {ROTATION_MODES} (got {mode!r})")
        side = self.detection_side(image.shape, max_side)
        frames = {0: self._detect_frame(image, 0, side)}
        full = {0}  # turns searched at the full detection size
        dets = frames[0]
        if mode != "off":
            if not frames[0] and mode == "search":
                for k in (1, 2, 3):
                    frames[k] = self._detect_frame(image, k, min(side, SEARCH_SIDE))
                    if side <= SEARCH_SIDE:
                        full.add(k)
                    elif frames[k]:  # a turned photo: search its turn at the full detection size too
                        frames[k] = self._detect_frame(image, k, side)
                        full.add(k)
            cands = _nms([d for ds in frames.values() for d in ds], self.nms_threshold)
            dets = self._settle(image, cands, frames, full, side)
        out = [d for d in dets if min(d.bbox[2] - d.bbox[0], d.bbox[3] - d.bbox[1]) >= self.min_face
               and d.score >= self.score_threshold]
        out.sort(key=lambda d: -d.score)
        return out

    def _settle(self, image: np.ndarray, cands: list[Detection], frames: dict[int, list[Detection]],
                full: set[int], side: int) -> list[Detection]:
        """Each candidate in the quarter turn its orientation vote picks; faces that another turn of the photo
        finds in addition (a turned photo with more faces) are added after their own vote."""
        out: list[Detection] = []
        pending: list[tuple[Detection, int, Detection | None]] = []
        unsure: list[Detection] = []
        for d in cands:
            k, alt, sure = self._orientation(image, d)
            if not sure:
                unsure.append(d)
            elif k == _k_of(d.rotation):
                out.append(d)
            else:
                pending.append((d, k, alt))
        if unsure:  # no turn of the patch shows a clear face: let every turn of the whole photo compete
            for k in range(4):
                if k not in full:
                    frames[k] = self._detect_frame(image, k, side)
                    full.add(k)
            for d in unsure:
                rivals = [f for ds in frames.values() for f in ds
                          if _iou(d.bbox, f.bbox) >= 0.3 or _inside(d, f) or _inside(f, d)]
                out.append(max([d] + rivals, key=lambda f: f.score))
        for k in sorted({k for _, k, _ in pending}):
            if k not in full:
                frames[k] = self._detect_frame(image, k, side)
                full.add(k)
            found = list(frames[k])
            for d, _, alt in (p for p in pending if p[1] == k):
                # the turned photo's detection of this face: overlapping it, or holding its centre (a
                # detection of part of a face lies inside the whole face's box)
                ious = [max(_iou(d.bbox, f.bbox), 0.3 * _inside(d, f)) for f in found]
                if ious and max(ious) >= 0.3:
                    out.append(found.pop(int(np.argmax(ious))))
                elif alt is not None:
                    out.append(alt)
            for f in found:  # more faces in the turned photo: keep those whose own vote agrees
                if all(_iou(f.bbox, o.bbox) < 0.3 for o in out) and self._orientation(image, f)[:3:2] == (k, True):
                    out.append(f)
        return _nms(out, self.nms_threshold)


def default_detector() -> YuNetDetector:
    """The pinned default detector."""
    return YuNetDetector()
