"""The Python API: :class:`FaceAnalyzer` and :class:`Face`."""
from __future__ import annotations

import json
import threading
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .detect import Detection, Detector, YuNetDetector
from .errors import FaceAnalysisError, option
from .lazy_parsing import LazyParsingMask
from .preprocess import ImageInput, crop_faces, load_image, normalise_array
from .runtime import TTA_MODES, make_runner, resolve_backend, with_tta
from .tasks import get_tasks
from .tasks.parsing import CLASSES as PARSING_CLASSES, ParsingMask


@dataclass
class Face:
    """Everything known about one face. Coordinates are original-image pixels (0-based pixel centres).

    ``pose`` is (yaw, pitch, roll) in degrees: yaw > 0 = subject turns to their own left (nose toward the
    image's right), pitch > 0 = looking down, roll > 0 = head rotated counter-clockwise in the image.
    ``gender`` is P(male). ``embedding`` is L2-normalised: cosine similarity = dot product.
    Fields of tasks that were not run are ``None``.
    """

    bbox: np.ndarray  # (4,) x0, y0, x1, y1
    score: float
    keypoints5: np.ndarray  # (5, 2): subject's right eye, left eye, nose, right / left mouth corner
    crop_matrix: np.ndarray  # (2, 3) image -> aligned crop
    landmarks: np.ndarray | None = None  # (68, 2) iBUG order
    pose: tuple[float, float, float] | None = None
    parsing: ParsingMask | None = None
    attributes: dict[str, float] | None = None
    age: float | None = None
    gender: float | None = None
    expression: str | None = None
    expression_probs: dict[str, float] | None = None
    embedding: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def gender_label(self) -> str | None:
        return None if self.gender is None else ("male" if self.gender >= 0.5 else "female")

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (arrays become lists; the parsing mask is run-length encoded)."""
        d: dict[str, Any] = {
            "bbox": [float(v) for v in self.bbox], "score": float(self.score),
            "keypoints5": np.asarray(self.keypoints5, float).tolist(),
            "crop_matrix": np.asarray(self.crop_matrix, float).tolist(),
            "landmarks": None if self.landmarks is None else np.asarray(self.landmarks, float).round(2).tolist(),
            "pose": None if self.pose is None else dict(zip(("yaw", "pitch", "roll"), (round(float(v), 3) for v in self.pose))),
            "attributes": self.attributes, "age": self.age, "gender": self.gender, "gender_label": self.gender_label,
            "expression": self.expression, "expression_probs": self.expression_probs,
            "embedding": None if self.embedding is None else np.asarray(self.embedding, float).tolist(),
            "parsing": None if self.parsing is None else {
                "box": list(self.parsing.box), "shape": list(self.parsing.mask.shape),
                "class_names": list(self.parsing.class_names), "rle": _rle_encode(self.parsing.mask),
                **({"field": float(self.parsing.field)} if self.parsing.field != 1.0 else {})},
        }
        if self.extra:
            d["extra"] = self.extra
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Face":
        """Inverse of :meth:`to_dict`."""
        try:
            return cls._from_dict(d)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise FaceAnalysisError(f"not a Face dict (as written by Face.to_dict / --json): "
                                    f"{type(err).__name__}: {err}") from err

    @classmethod
    def _from_dict(cls, d: dict[str, Any]) -> "Face":
        p = d.get("parsing")
        pose = d.get("pose")
        return cls(
            bbox=np.array(d["bbox"], np.float32), score=float(d["score"]),
            keypoints5=np.array(d["keypoints5"], np.float32), crop_matrix=np.array(d["crop_matrix"], np.float64),
            landmarks=None if d.get("landmarks") is None else np.array(d["landmarks"], np.float32),
            pose=None if pose is None else (pose["yaw"], pose["pitch"], pose["roll"]),
            parsing=None if p is None else ParsingMask(_rle_decode(p["rle"], tuple(p["shape"])), tuple(p["box"]),
                                                       tuple(p["class_names"]), float(p.get("field") or 1.0)),
            attributes=d.get("attributes"), age=d.get("age"), gender=d.get("gender"),
            expression=d.get("expression"), expression_probs=d.get("expression_probs"),
            embedding=None if d.get("embedding") is None else np.array(d["embedding"], np.float32),
            extra=d.get("extra", {}),
        )

    def summary(self) -> str:
        """One line for humans."""
        x0, y0, x1, y1 = (int(round(v)) for v in self.bbox)
        parts = [f"box=({x0},{y0},{x1},{y1}) score={self.score:.2f}"]
        if self.age is not None:
            parts.append(f"age={self.age:.0f} gender={self.gender_label}({self.gender:.2f})")
        if self.expression is not None:
            parts.append(f"expression={self.expression}({self.expression_probs[self.expression]:.2f})")
        if self.pose is not None:
            parts.append("pose(y/p/r)=({:.0f},{:.0f},{:.0f})".format(*self.pose))
        if self.attributes is not None:
            top = sorted(self.attributes.items(), key=lambda kv: -kv[1])[:3]
            parts.append("attrs=" + ",".join(f"{k}:{v:.2f}" for k, v in top))
        if self.landmarks is not None:
            parts.append("landmarks=68")
        if self.parsing is not None:
            parts.append(f"parsing={len(np.unique(self.parsing.mask))}cls")
        if self.embedding is not None:
            parts.append(f"embedding={len(self.embedding)}d")
        return " ".join(parts)


def _rle_encode(mask: np.ndarray) -> list[int]:
    """Row-major run-length encoding as [value, count, value, count, ...]."""
    flat = mask.reshape(-1)
    if flat.size == 0:
        return []
    change = np.flatnonzero(np.diff(flat)) + 1
    starts = np.concatenate([[0], change])
    counts = np.diff(np.concatenate([starts, [flat.size]]))
    return np.stack([flat[starts].astype(int), counts]).T.reshape(-1).tolist()


def _rle_decode(rle: list[int], shape: tuple[int, int]) -> np.ndarray:
    if not rle:
        return np.zeros(shape, np.uint8)
    pairs = np.array(rle, np.int64).reshape(-1, 2)
    return np.repeat(pairs[:, 0], pairs[:, 1]).astype(np.uint8).reshape(shape)


class FaceAnalyzer:
    """Detect faces and run all tasks on each.

    Args:
        weights: any ``.safetensors`` file (torch) or exported ``.onnx`` / ``.tflite`` artifact; ``None`` = the
            shipped model (package data: the fp16 weights for torch, their fp32 ONNX export for onnx).
        device: ``"cpu"`` or ``"cuda"``. A CUDA request without CUDA raises.
        tasks: task names to run (default all): parsing, landmarks, pose, attributes, expression, identity.
        backend: ``"torch"``, ``"onnx"`` or ``"tflite"``: same preprocessing and outputs on each. ``None``
            (default): the suffix of ``weights`` when given, else ``"torch"`` when torch is installed (the
            ``[torch]`` extra), else ``"onnx"`` (onnxruntime, no torch needed).
        detector: anything with ``detect(rgb) -> list[Detection]``; default the bundled YuNet.
        det_max_side: longer image side used for detection (images are downscaled, results are not);
            ``None`` (default) = adaptive: 0.6 of the photo's longer side within 384..2048 px (384 for a 640x480
            frame), so faces down to about 40 px are found in photos up to 12 MP (see :class:`YuNetDetector`).
        min_score: minimum detection score.
        max_faces: keep at most this many faces (largest first); ``None`` = all.
        batch_size: faces per model call.
        tta: test-time augmentation. ``None`` (default): one pass per face. ``"flip"``: each face also runs
            mirrored and the two answers are combined per task (:class:`faceanalysis.runtime.FlipAveraged`): about
            1.8-2.5x the model time, and the gain and cost are in the model card. :meth:`verify` then uses the
            threshold calibrated with the flip (stored with the weights' calibration).
        parsing_ring: with weights that have the parsing context ring (``ModelConfig.parsing_field`` > 1, the
            shipped ones), ``Face.parsing`` covers the wider field: hair, neck and cloth past the aligned crop's
            edge, which the model does not see but predicts from the crop (87 % of such pixels right on CelebAMask
            validation photos). ``False``: the crop's region only, as weights without the ring give.

    Threads: one analyzer may be shared by any number of threads (e.g. a web server's workers); results are
    identical to serial calls. The bundled detector keeps one OpenCV instance per thread and a TFLite
    interpreter is serialised; a custom ``detector`` must be thread-safe itself to be shared.

    Example::

        fa = FaceAnalyzer()
        faces = fa.analyze("photo.jpg")
        print(faces[0].age, faces[0].expression, faces[0].pose)
    """

    def __init__(self, weights: str | Path | None = None, device: str = "cpu", tasks: Sequence[str] | None = None,
                 backend: str | None = None, detector: Detector | None = None, det_max_side: int | None = None,
                 min_score: float = 0.6, max_faces: int | None = None, batch_size: int = 32,
                 tta: str | None = None, parsing_ring: bool = True) -> None:
        if not isinstance(parsing_ring, bool):
            raise FaceAnalysisError(f"parsing_ring must be True or False, got {parsing_ring!r}")
        if isinstance(tasks, str):
            tasks = [tasks]
        self.tasks = get_tasks(list(tasks) if tasks is not None else None)
        self.task_names = [t.name for t in self.tasks]
        self.backend = resolve_backend(backend, weights)
        if tta is not None and tta not in TTA_MODES:  # before the model loads
            raise FaceAnalysisError(f"unknown {option('tta', '--tta')} {tta!r}; choose from {list(TTA_MODES)}"
                                    + option(" or None (off)", " (omit it for one pass)"))
        runner = make_runner(self.backend, weights, device, self.task_names if tasks is not None else None)
        self.tta = tta
        self.parsing_ring = parsing_ring
        self.runner = with_tta(runner, tta, self.tasks)
        self.config = self.runner.config
        self.pre = self.config.preprocess
        if batch_size < 1:
            raise FaceAnalysisError("batch_size must be >= 1")
        if max_faces is not None and max_faces < 1:
            raise FaceAnalysisError(f"{option('max_faces', '--max-faces')} must be >= 1"
                                    + option(" or None", " (omit it for all faces)"))
        if det_max_side is not None and det_max_side < 1:
            raise FaceAnalysisError(f"{option('det_max_side', '--max-side')} must be a positive number of pixels "
                                    f"(got {det_max_side}); default: adaptive (faces down to ~40 px)")
        if not 0.0 <= min_score <= 1.0:
            raise FaceAnalysisError(f"min_score must lie in [0, 1] (got {min_score}); default 0.6")
        self.detector = detector or YuNetDetector(score_threshold=min_score, max_side=det_max_side)
        self.max_faces = max_faces
        self.batch_size = batch_size
        self.weights = weights
        # the bundled detector and the torch / onnx runners are safe to share between threads; a TFLite
        # interpreter is not, so its calls are serialised
        self._runner_lock = threading.Lock() if self.backend == "tflite" else nullcontext()
        self._calibration: dict[str, Any] | None = None

    # ---- detection + alignment --------------------------------------------------------------
    def detect(self, image: ImageInput, max_side: int | None = None, color: str = "rgb") -> list[Detection]:
        """Face detections only (``color``: channel order of a numpy array, ``"rgb"`` or ``"bgr"``)."""
        rgb = load_image(image, color)
        return self._detect(rgb, max_side)

    def _detect(self, rgb: np.ndarray, max_side: int | None, rotations: str | None = None) -> list[Detection]:
        if max_side is not None and max_side < 1:
            raise FaceAnalysisError(f"max_side must be a positive number of pixels (got {max_side})")
        if isinstance(self.detector, YuNetDetector):
            dets = self.detector.detect(rgb, max_side, rotations)
        else:
            dets = self.detector.detect(rgb, max_side) if max_side else self.detector.detect(rgb)
        if self.max_faces is not None:
            dets = sorted(dets, key=lambda d: -(d.bbox[2] - d.bbox[0]) * (d.bbox[3] - d.bbox[1]))[: self.max_faces]
        return dets

    # ---- analysis ---------------------------------------------------------------------------
    def analyze(self, image: ImageInput, max_side: int | None = None, color: str = "rgb") -> list[Face]:
        """All faces in one image (an empty list when there is none).

        ``image``: a path, encoded bytes, a PIL image or a numpy array. ``color`` is the channel order of a
        numpy array: ``"rgb"`` (default) or ``"bgr"`` for frames straight from ``cv2.imread`` /
        ``cv2.VideoCapture`` (a BGR array passed as RGB silently changes every colour-dependent output, the
        identity embedding included). Files, bytes and PIL images are decoded in their own order and shown
        upright (EXIF orientation applied): all coordinates are in that displayed image.
        """
        return self.analyze_batch([image], max_side, color)[0]

    def analyze_batch(self, images: Iterable[ImageInput], max_side: int | None = None,
                      color: str = "rgb") -> list[list[Face]]:
        """Faces of several images; the faces of all images share model batches (``color`` as in
        :meth:`analyze`, for every array in ``images``)."""
        if isinstance(images, (str, Path, bytes, bytearray)) or (isinstance(images, np.ndarray) and images.ndim < 4):
            raise FaceAnalysisError("analyze_batch takes a list of images; for one image use analyze(image)")
        rgbs = [load_image(im, color) for im in images]
        dets = [self._detect(rgb, max_side) for rgb in rgbs]
        return self.analyze_detections(rgbs, dets)

    def analyze_detections(self, rgbs: list[np.ndarray], dets: list[list[Detection]]) -> list[list[Face]]:
        """Run the model on given detections (e.g. from a tracker) of RGB uint8 images."""
        crops, mats = [], []
        for rgb, ds in zip(rgbs, dets):
            for d in ds:
                k = np.asarray(d.kps5, np.float64)
                if k.shape != (5, 2) or not np.isfinite(k).all() or np.ptp(k, 0).max() <= 0:
                    raise FaceAnalysisError(f"detection key points must be 5 distinct finite (x, y) points, got "
                                            f"{np.array2string(k, precision=1)}")
            c, m = crop_faces(rgb, [d.kps5 for d in ds], self.pre)
            crops.append(c)
            mats.append(m)
        out = self.run_crops(np.concatenate(crops)) if crops else {}
        results: list[list[Face]] = []
        j = 0
        for rgb, ds, ms in zip(rgbs, dets, mats):
            faces = []
            for d, m in zip(ds, ms):
                face = Face(bbox=np.asarray(d.bbox, np.float32), score=float(d.score),
                            keypoints5=np.asarray(d.kps5, np.float32), crop_matrix=m)
                one = {k: v[j] for k, v in out.items() if self.parsing_ring or k != "parsing_wide"}
                for t in self.tasks:
                    if t.name == "parsing" and "parsing" in one:  # mapped back on first use (lazy_parsing.py)
                        face.parsing = LazyParsingMask(t, one, m, rgb.shape[:2], self.pre)
                    elif all(n in one for n in t.outputs if n not in t.optional_outputs):
                        for k, v in t.to_face(one, m, rgb.shape[:2], self.pre).items():
                            setattr(face, k, v)
                faces.append(face)
                j += 1
            results.append(faces)
        return results

    def run_crops(self, crops: np.ndarray) -> dict[str, np.ndarray]:
        """Raw model outputs (crop frame) for aligned uint8 crops ``(N, S, S, 3)``, batched."""
        s = self.pre.input_size
        if not isinstance(crops, np.ndarray) or crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (s, s, 3):
            got = f"{crops.dtype} array of shape {crops.shape}" if isinstance(crops, np.ndarray) else type(crops).__name__
            raise FaceAnalysisError(f"run_crops needs aligned uint8 RGB crops of shape (N, {s}, {s}, 3) "
                                    f"(see preprocess.crop_faces); got {got}")
        n = len(crops)
        if n == 0:
            return {}
        parts: dict[str, list[np.ndarray]] = {}
        for i in range(0, n, self.batch_size):
            with self._runner_lock:
                y = self.runner(normalise_array(crops[i:i + self.batch_size], self.pre))
            for k, v in y.items():
                parts.setdefault(k, []).append(v)
        return {k: np.concatenate(v) for k, v in parts.items()}

    @staticmethod
    def similarity(a: "Face | np.ndarray", b: "Face | np.ndarray") -> float:
        """Cosine similarity of two identity embeddings (or faces) in [-1, 1]."""
        ea = a.embedding if isinstance(a, Face) else a
        eb = b.embedding if isinstance(b, Face) else b
        if ea is None or eb is None:
            raise FaceAnalysisError("similarity needs identity embeddings: run with the identity task")
        ea, eb = np.asarray(ea, np.float64).ravel(), np.asarray(eb, np.float64).ravel()
        if ea.shape != eb.shape:
            raise FaceAnalysisError(f"embeddings differ in size: {ea.shape} vs {eb.shape}")
        return float(ea @ eb / max(np.linalg.norm(ea) * np.linalg.norm(eb), 1e-12))

    # ---- verification -----------------------------------------------------------------------
    @property
    def calibration(self) -> dict[str, Any]:
        """The verification calibration of these weights (threshold, TAR / FAR on LFW, ...), read from
        ``<weights stem>.verify.json`` (see :mod:`faceanalysis.verification`)."""
        if self._calibration is None:
            from .verification import load_calibration

            self._calibration = load_calibration(self.weights, self.backend, self.tta)
        return self._calibration

    @property
    def verify_threshold(self) -> float:
        """The calibrated cosine-similarity threshold of :meth:`verify`."""
        return float(self.calibration["threshold"])

    def _embedding(self, x: Any, which: str, color: str) -> np.ndarray:
        if isinstance(x, Face):
            if x.embedding is None:
                raise FaceAnalysisError(f"face {which} has no identity embedding: analyze with the identity task")
            return np.asarray(x.embedding)
        if isinstance(x, np.ndarray) and x.ndim == 1:
            return x
        if "identity" not in self.task_names:
            raise FaceAnalysisError("verify on images needs the identity task: FaceAnalyzer(tasks=[..., 'identity'])")
        faces = self.analyze(x, color=color)
        if not faces:
            where = f" ({x})" if isinstance(x, (str, Path)) else ""
            raise FaceAnalysisError(f"no face found in image {which}{where}")
        return max(faces, key=lambda f: (f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1])).embedding

    def verify(self, a: Any, b: Any, threshold: float | None = None, color: str = "rgb") -> tuple[bool, float]:
        """Are ``a`` and ``b`` the same person? Returns ``(same, score)``.

        ``a`` / ``b``: a :class:`Face`, an identity embedding, or an image (its largest face). ``score`` is the
        cosine similarity of the embeddings; ``same`` is ``score >= threshold``, by default the threshold
        calibrated for these weights on LFW View-2 (:attr:`verify_threshold`; its TAR / FAR are in
        :attr:`calibration` and the README). A calibration is tied to the weights' SHA-256: with other weights,
        compute it (``python -m faceanalysis.verification --weights ...``) or pass ``threshold``.
        Raises :class:`FaceAnalysisError` for a ``threshold`` outside [-1, 1] (or not a number).
        """
        if threshold is not None:
            try:
                t = float(threshold)
            except (TypeError, ValueError):
                t = float("nan")
            if not -1.0 <= t <= 1.0:
                raise FaceAnalysisError(f"threshold={threshold!r} is outside [-1, 1] (it is a cosine similarity)")
        score = self.similarity(self._embedding(a, "a", color), self._embedding(b, "b", color))
        t = self.verify_threshold if threshold is None else t
        return bool(score >= t), score


def faces_to_json(faces: list[Face]) -> str:
    return json.dumps([f.to_dict() for f in faces])


__all__ = ["Face", "FaceAnalyzer", "PARSING_CLASSES", "faces_to_json"]
