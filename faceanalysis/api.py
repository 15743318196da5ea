"""The Python API: :class:`FaceAnalyzer` and :class:`Face`."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .detect import Detection, Detector, YuNetDetector
from .errors import FaceAnalysisError
from .preprocess import ImageInput, crop_faces, load_image, normalise_array
from .runtime import make_runner
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
                "class_names": list(self.parsing.class_names), "rle": _rle_encode(self.parsing.mask)},
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
                                                       tuple(p["class_names"])),
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
        weights: a ``.safetensors`` file (torch) or an exported artifact (onnx / tflite); ``None`` = the
            shipped default weights (or, for onnx / tflite, the artifact exported from them).
        device: ``"cpu"`` or ``"cuda"`` (torch backend). A CUDA request without CUDA raises.
        tasks: task names to run (default all): parsing, landmarks, pose, attributes, expression, identity.
        backend: ``"torch"``, ``"onnx"`` or ``"tflite"``: same preprocessing and outputs on each.
        detector: anything with ``detect(rgb) -> list[Detection]``; default the bundled YuNet.
        det_max_side: longer image side used for detection (images are downscaled, results are not).
        min_score: minimum detection score.
        max_faces: keep at most this many faces (largest first); ``None`` = all.
        batch_size: faces per model call.

    Example::

        fa = FaceAnalyzer()
        faces = fa.analyze("photo.jpg")
        print(faces[0].age, faces[0].expression, faces[0].pose)
    """

    def __init__(self, weights: str | Path | None = None, device: str = "cpu", tasks: Sequence[str] | None = None,
                 backend: str = "torch", detector: Detector | None = None, det_max_side: int = 640,
                 min_score: float = 0.6, max_faces: int | None = None, batch_size: int = 32) -> None:
        if isinstance(tasks, str):
            tasks = [tasks]
        self.tasks = get_tasks(list(tasks) if tasks is not None else None)
        self.task_names = [t.name for t in self.tasks]
        self.runner = make_runner(backend, weights, device, self.task_names if tasks is not None else None)
        self.config = self.runner.config
        self.pre = self.config.preprocess
        self.backend = backend
        if batch_size < 1:
            raise FaceAnalysisError("batch_size must be >= 1")
        if max_faces is not None and max_faces < 1:
            raise FaceAnalysisError("max_faces must be >= 1 or None")
        if det_max_side < 1:
            raise FaceAnalysisError(f"det_max_side must be a positive number of pixels (got {det_max_side}); default 640")
        if not 0.0 <= min_score <= 1.0:
            raise FaceAnalysisError(f"min_score must lie in [0, 1] (got {min_score}); default 0.6")
        self.detector = detector or YuNetDetector(score_threshold=min_score, max_side=det_max_side)
        self.max_faces = max_faces
        self.batch_size = batch_size

    # ---- detection + alignment --------------------------------------------------------------
    def detect(self, image: ImageInput, max_side: int | None = None) -> list[Detection]:
        """Face detections only."""
        rgb = load_image(image)
        return self._detect(rgb, max_side)

    def _detect(self, rgb: np.ndarray, max_side: int | None) -> list[Detection]:
        if max_side is not None and max_side < 1:
            raise FaceAnalysisError(f"max_side must be a positive number of pixels (got {max_side})")
        dets = self.detector.detect(rgb, max_side) if max_side else self.detector.detect(rgb)
        if self.max_faces is not None:
            dets = sorted(dets, key=lambda d: -(d.bbox[2] - d.bbox[0]) * (d.bbox[3] - d.bbox[1]))[: self.max_faces]
        return dets

    # ---- analysis ---------------------------------------------------------------------------
    def analyze(self, image: ImageInput, max_side: int | None = None) -> list[Face]:
        """All faces in one image (an empty list when there is none)."""
        return self.analyze_batch([image], max_side)[0]

    def analyze_batch(self, images: Iterable[ImageInput], max_side: int | None = None) -> list[list[Face]]:
        """Faces of several images; the faces of all images share model batches."""
        if isinstance(images, (str, Path, bytes, bytearray)) or (isinstance(images, np.ndarray) and images.ndim < 4):
            raise FaceAnalysisError("analyze_batch takes a list of images; for one image use analyze(image)")
        rgbs = [load_image(im) for im in images]
        dets = [self._detect(rgb, max_side) for rgb in rgbs]
        return self.analyze_detections(rgbs, dets)

    def analyze_detections(self, rgbs: list[np.ndarray], dets: list[list[Detection]]) -> list[list[Face]]:
        """Run the model on given detections (e.g. from a tracker) of RGB uint8 images."""
        crops, mats = [], []
        for rgb, ds in zip(rgbs, dets):
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
                one = {k: v[j] for k, v in out.items()}
                for t in self.tasks:
                    if all(n in one for n in t.outputs):
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


def faces_to_json(faces: list[Face]) -> str:
    return json.dumps([f.to_dict() for f in faces])


__all__ = ["Face", "FaceAnalyzer", "PARSING_CLASSES", "faces_to_json"]
