"""Video: an IoU tracker, temporal smoothing and a streaming :class:`VideoAnalyzer`.

Like MediaPipe's VIDEO running mode, :class:`VideoAnalyzer` takes frames with increasing timestamps and
returns faces that carry a stable ``Face.extra["track_id"]``.

Detection and tracking
    The detector runs every ``detect_every`` frames (default 1 = every frame: YuNet is cheap next to the
    model, and detecting every frame never loses a fast-moving face). Detections are matched to tracks
    greedily by IoU (highest first, IoU >= ``iou_threshold``) against each track's box *predicted* to the
    frame's time with a constant-velocity model, so a face moving quickly still matches. Unmatched
    detections start new tracks; a track that misses ``max_missed`` frames in a row is dropped.
    On frames between detections (``detect_every > 1``) each live track's box is predicted to the frame's
    time and the detector runs only on a small region around it (two box sizes, at most 192 px): the
    face found there, with its own key points, is what the model analyses. A face that is not found there
    (it left, was covered, or the scene cut) gives no result for that frame, so every frame's results
    describe that frame, never a position or a face carried over from an earlier one. With no face to
    follow, or after a pause of more than 0.5 s (a seek), the frame gets a full detection; a face that
    appears while others are followed is reported
    from the next detection round (at most ``detect_every - 1`` frames late). A change of frame size
    restarts tracking.

Temporal smoothing (``smooth=True``; per track, reset when a track starts)
    Geometry uses the One-Euro filter (Casiez et al., CHI 2012): a low-pass filter whose cutoff rises with
    speed, so a still face does not jitter and a moving one does not lag. Box, 5 key points and 68
    landmarks (pixels) use ``min_cutoff=1.0 Hz, beta=0.05`` (s/px), head pose (degrees, unwrapped) uses
    ``min_cutoff=0.8 Hz, beta=0.02``. Probabilities and scalars (expression probabilities, attributes,
    age, gender) and the identity embedding (re-normalised) use an exponential moving average with weight
    ``ema=0.4`` on the new frame. The parsing mask is not smoothed. The expression label is the argmax of
    the smoothed probabilities, so it does not flip on single noisy frames.

    Smoothing never carries one frame's content into another: the filters restart when more than
    ``max_gap`` (0.5 s) passes between a track's frames (a seek or a stall), when the box jumps by more than
    half its size or changes size by more than 1.5x (a cut), and when the new identity embedding's cosine
    to the smoothed one falls below ``reset_similarity`` (0.5: another person in the same place; the face
    then also gets a new track id); smoothed geometry is kept within ``max_offset`` (10 %) of the face size
    of the frame's own measurement.

Threads
    A :class:`VideoAnalyzer` holds one stream's state (tracks, filters, last timestamp): use one per stream.
    Calling :meth:`VideoAnalyzer.process` from two threads at once raises :class:`FaceAnalysisError`; the
    :class:`~faceanalysis.FaceAnalyzer` inside can be shared by several video analyzers.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .detect import Detection, YuNetDetector, check_rgb_uint8
from .errors import FaceAnalysisError

if TYPE_CHECKING:
    from .api import Face, FaceAnalyzer


class OneEuroFilter:
    """One-Euro filter on arrays (element-wise cutoff). Timestamps in seconds.

    ``cutoff = min_cutoff + beta * |speed|``; lower ``min_cutoff`` = less jitter, higher ``beta`` = less lag.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, d_cutoff: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t = 0.0

    @staticmethod
    def _alpha(dt: float, cutoff: np.ndarray | float) -> np.ndarray | float:
        tau = 2 * math.pi * np.asarray(cutoff) * dt
        return tau / (tau + 1)

    @property
    def value(self) -> np.ndarray | None:
        return None if self._x is None else self._x.copy()

    def reset(self, x: np.ndarray | None = None, t: float = 0.0) -> None:
        """Forget the history (and start from ``x`` observed at ``t`` when given)."""
        if x is None:
            self._x = self._dx = None
        else:
            self._x, self._dx, self._t = np.asarray(x, np.float64).copy(), np.zeros(np.shape(x)), t

    def __call__(self, x: np.ndarray, t: float) -> np.ndarray:
        x = np.asarray(x, np.float64)
        if self._x is None or self._x.shape != x.shape:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), t
            return x.copy()
        dt = t - self._t
        if dt <= 0:  # same (or older) timestamp: keep the current estimate
            return self._x.copy()
        a_d = self._alpha(dt, self.d_cutoff)
        self._dx = a_d * (x - self._x) / dt + (1 - a_d) * self._dx
        a = self._alpha(dt, self.min_cutoff + self.beta * np.abs(self._dx))
        self._x = a * x + (1 - a) * self._x
        self._t = t
        return self._x.copy()


class FaceSmoother:
    """Per-track temporal smoothing of a :class:`~faceanalysis.Face` (see the module docstring)."""

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.05, pose_min_cutoff: float = 0.8,
                 pose_beta: float = 0.02, ema: float = 0.4, max_gap: float = 0.5, reset_similarity: float = 0.5,
                 max_jump: float = 0.5, max_offset: float = 0.1) -> None:
        self._geo = {k: OneEuroFilter(min_cutoff, beta) for k in ("bbox", "keypoints5", "landmarks")}
        self._pose = OneEuroFilter(pose_min_cutoff, pose_beta)
        self.ema = ema
        self.max_gap, self.reset_similarity, self.max_jump, self.max_offset = max_gap, reset_similarity, max_jump, max_offset
        self._avg: dict[str, np.ndarray] = {}
        self._last_t: float | None = None
        #: why the latest call restarted the filters ("gap", "jump", "identity") or ``None``
        self.last_reset: str | None = None

    def reset(self) -> None:
        """Forget every filter's history."""
        for f in (*self._geo.values(), self._pose):
            f.reset()
        self._avg.clear()
        self._last_t = None

    def _reset_reason(self, face: "Face", t: float) -> str | None:
        if self._last_t is None:
            return None
        if t - self._last_t > self.max_gap:
            return "gap"
        box = self._geo["bbox"].value
        if box is not None:
            size = math.sqrt(max((box[2] - box[0]) * (box[3] - box[1]), 1e-6))
            nb = np.asarray(face.bbox, np.float64)
            new_size = math.sqrt(max((nb[2] - nb[0]) * (nb[3] - nb[1]), 1e-6))
            shift = np.hypot(*((nb[:2] + nb[2:]) / 2 - (box[:2] + box[2:]) / 2))
            if shift > self.max_jump * size or not 1 / 1.5 <= new_size / size <= 1.5:
                return "jump"
        e = self._avg.get("embedding")
        if e is not None and face.embedding is not None:
            x = np.asarray(face.embedding, np.float64)
            cos = float(e @ x / max(np.linalg.norm(e) * np.linalg.norm(x), 1e-12))
            if cos < self.reset_similarity:
                return "identity"
        return None

    def _ema(self, key: str, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        prev = self._avg.get(key)
        out = x if prev is None or prev.shape != x.shape else self.ema * x + (1 - self.ema) * prev
        self._avg[key] = out
        return out

    def __call__(self, face: "Face", t: float) -> "Face":
        """A smoothed copy of ``face`` observed at time ``t`` (seconds)."""
        self.last_reset = self._reset_reason(face, t)
        if self.last_reset is not None:
            self.reset()
        self._last_t = t
        upd: dict = {}
        x0, y0, x1, y1 = (float(v) for v in face.bbox)
        tol = self.max_offset * math.sqrt(max((x1 - x0) * (y1 - y0), 1e-6))
        for key, f in self._geo.items():
            v = getattr(face, key)
            if v is not None:
                out = f(v, t)
                if np.abs(out - np.asarray(v, np.float64)).max() > tol:  # lagging behind this frame: snap to it
                    f.reset(v, t)
                    out = np.asarray(v, np.float64)
                upd[key] = out.astype(np.float32)
        if face.pose is not None:
            p = np.asarray(face.pose, np.float64)
            prev = self._pose.value
            if prev is not None:  # unwrap so that 179 -> -179 is a 2 degree step, not 358
                p = prev + (p - prev + 180.0) % 360.0 - 180.0
            s = self._pose(p, t)
            upd["pose"] = tuple(float((v + 180.0) % 360.0 - 180.0) if i == 2 else float(v) for i, v in enumerate(s))
        if face.expression_probs is not None:
            names = list(face.expression_probs)
            probs = self._ema("expression", [face.expression_probs[n] for n in names])
            upd["expression_probs"] = {n: float(p) for n, p in zip(names, probs)}
            upd["expression"] = names[int(np.argmax(probs))]
        if face.attributes is not None:
            names = list(face.attributes)
            vals = self._ema("attributes", [face.attributes[n] for n in names])
            upd["attributes"] = {n: float(p) for n, p in zip(names, vals)}
        for key in ("age", "gender"):
            if getattr(face, key) is not None:
                upd[key] = float(self._ema(key, [getattr(face, key)])[0])
        if face.embedding is not None:
            e = self._ema("embedding", face.embedding)
            upd["embedding"] = (e / max(np.linalg.norm(e), 1e-12)).astype(np.float32)
        return replace(face, extra=dict(face.extra), **upd)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N, 4) with every box in ``b`` (M, 4), boxes as x0, y0, x1, y1."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda r: np.clip(r[:, 2] - r[:, 0], 0, None) * np.clip(r[:, 3] - r[:, 1], 0, None)  # noqa: E731
    union = area(a)[:, None] + area(b)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


@dataclass
class Track:
    """One tracked face: its last detection, velocity (px/s of the box centre) and smoother."""

    track_id: int
    detection: Detection
    t: float
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))
    hits: int = 1
    missed: int = 0
    smoother: FaceSmoother | None = None

    def predict(self, t: float) -> Detection:
        """The last detection shifted by the constant-velocity motion to time ``t``."""
        shift = (self.velocity * max(0.0, t - self.t)).astype(np.float32)
        d = self.detection
        return Detection(bbox=d.bbox + np.tile(shift, 2), score=d.score, kps5=d.kps5 + shift)


class IoUTracker:
    """Greedy IoU tracker with constant-velocity prediction (see the module docstring)."""

    def __init__(self, iou_threshold: float = 0.3, max_missed: int = 5, velocity_ema: float = 0.5) -> None:
        if not 0 < iou_threshold < 1:
            raise FaceAnalysisError(f"iou_threshold must be in (0, 1), got {iou_threshold}")
        self.iou_threshold = iou_threshold
        self.max_missed = max_missed
        self.velocity_ema = velocity_ema
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, detections: Sequence[Detection], t: float) -> list[Track]:
        """Match ``detections`` seen at time ``t`` (seconds); returns the track of each detection, in order."""
        preds = np.array([tr.predict(t).bbox for tr in self.tracks]).reshape(-1, 4)
        boxes = np.array([d.bbox for d in detections]).reshape(-1, 4)
        iou = iou_matrix(preds, boxes)
        assigned: dict[int, Track] = {}
        used: set[int] = set()
        while iou.size and iou.max() >= self.iou_threshold:
            ti, di = np.unravel_index(int(np.argmax(iou)), iou.shape)
            assigned[int(di)] = self.tracks[ti]
            used.add(int(ti))
            iou[ti, :] = -1
            iou[:, di] = -1
        for i, tr in enumerate(self.tracks):
            if i not in used:
                tr.missed += 1
        self.tracks = [tr for i, tr in enumerate(self.tracks) if i in used or tr.missed <= self.max_missed]
        out = []
        for di, det in enumerate(detections):
            tr = assigned.get(di)
            if tr is None:
                tr = Track(self._next_id, det, t)
                self._next_id += 1
                self.tracks.append(tr)
            else:
                dt = t - tr.t
                if dt > 0:
                    c_old = (tr.detection.bbox[:2] + tr.detection.bbox[2:]) / 2
                    c_new = (det.bbox[:2] + det.bbox[2:]) / 2
                    v = (c_new - c_old) / dt
                    tr.velocity = self.velocity_ema * v + (1 - self.velocity_ema) * tr.velocity
                tr.detection, tr.t = det, t
                tr.hits += 1
                tr.missed = 0
            out.append(tr)
        return out

    def live(self) -> list[Track]:
        """Tracks seen in the latest detection round."""
        return [tr for tr in self.tracks if tr.missed == 0]


class VideoAnalyzer:
    """Streaming analysis of video frames (MediaPipe VIDEO mode): detect every ``detect_every`` frames,
    track in between, smooth per track. Faces get ``extra["track_id"]``.

    Args:
        analyzer: a :class:`~faceanalysis.FaceAnalyzer` (may be shared by several video analyzers).
        detect_every: run the full-frame detector on every Nth frame (1 = every frame); in between, the
            detector runs only around each tracked face (see the module docstring).
        smooth: temporal smoothing (see the module docstring).
        iou_threshold, max_missed: tracker settings (see :class:`IoUTracker`).

    Every frame's faces describe that frame, whatever these settings: one stream per instance, not shared
    between threads (concurrent :meth:`process` calls raise). ``last_timings`` holds the latest frame's
    ``detect`` / ``model`` / ``track`` times in milliseconds.
    """

    #: region searched around a tracked face between detections: this many box sizes, at most this many px
    ROI_CONTEXT, ROI_SIDE = 2.0, 192
    #: a longer pause between frames (a seek, a stall) makes the next frame a detection frame
    MAX_GAP_S = 0.5

    def __init__(self, analyzer: "FaceAnalyzer", detect_every: int = 1, smooth: bool = True,
                 iou_threshold: float = 0.3, max_missed: int = 5) -> None:
        if detect_every < 1:
            raise FaceAnalysisError(f"detect_every must be >= 1, got {detect_every}")
        self.analyzer = analyzer
        self.detect_every = detect_every
        self.smooth = smooth
        self.tracker = IoUTracker(iou_threshold, max_missed)
        self.frame_index = 0
        self.last_timings: dict[str, float] = {}
        self.last_detected = False
        self._last_t: float | None = None
        self._shape: tuple[int, ...] | None = None
        self._busy = threading.Lock()

    def reset(self) -> None:
        """Forget every track (e.g. before feeding another stream)."""
        self.tracker = IoUTracker(self.tracker.iou_threshold, self.tracker.max_missed, self.tracker.velocity_ema)
        self.frame_index = 0
        self._last_t = None
        self._shape = None

    def _detect_full(self, rgb: np.ndarray) -> list[Detection]:
        return self.analyzer._detect(rgb, None, rotations="check")

    def _detect_near(self, rgb: np.ndarray, pred: Detection) -> Detection | None:
        """The face in a small region around a predicted detection, or ``None`` when there is none."""
        h, w = rgb.shape[:2]
        x0, y0, x1, y1 = (float(v) for v in pred.bbox)
        side = self.ROI_CONTEXT * max(x1 - x0, y1 - y0, 1.0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        X0, Y0 = max(0, int(math.floor(cx - side / 2))), max(0, int(math.floor(cy - side / 2)))
        X1, Y1 = min(w, int(math.ceil(cx + side / 2))), min(h, int(math.ceil(cy + side / 2)))
        if X1 - X0 < 8 or Y1 - Y0 < 8:
            return None
        roi = np.ascontiguousarray(rgb[Y0:Y1, X0:X1])
        det = self.analyzer.detector
        found = (det.detect(roi, self.ROI_SIDE, "check") if isinstance(det, YuNetDetector) else det.detect(roi))
        shift = np.array([X0, Y0], np.float32)
        found = [replace(d, bbox=d.bbox + np.tile(shift, 2), kps5=d.kps5 + shift) for d in found]
        if not found:
            return None
        iou = iou_matrix(pred.bbox[None], np.array([d.bbox for d in found]))[0]
        i = int(np.argmax(iou))
        return found[i] if iou[i] >= self.tracker.iou_threshold else None

    def process(self, rgb: np.ndarray, timestamp_ms: float) -> list["Face"]:
        """Faces of one RGB uint8 frame; ``timestamp_ms`` must increase from frame to frame."""
        if not self._busy.acquire(blocking=False):
            raise FaceAnalysisError("VideoAnalyzer.process was called from two threads at once: a VideoAnalyzer "
                                    "holds one stream's tracks, so use one per stream (they can share a FaceAnalyzer)")
        try:
            return self._process(rgb, timestamp_ms)
        finally:
            self._busy.release()

    def _process(self, rgb: np.ndarray, timestamp_ms: float) -> list["Face"]:
        check_rgb_uint8(rgb, "VideoAnalyzer.process takes HxWx3 uint8 RGB frames",
                        " (convert BGR frames from cv2 with cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))")
        if self._last_t is not None and timestamp_ms <= self._last_t:
            raise FaceAnalysisError(f"timestamps must increase: got {timestamp_ms} ms after {self._last_t} ms")
        if self._shape is not None and rgb.shape != self._shape:  # another stream or a resolution change
            self.reset()
        gap = self._last_t is not None and timestamp_ms - self._last_t > 1000.0 * self.MAX_GAP_S
        self._shape = rgb.shape
        self._last_t = timestamp_ms
        t = timestamp_ms / 1000.0
        t0 = time.perf_counter()
        # between detection rounds only tracked faces are followed: with none to follow, detect (a face that
        # enters an empty scene is reported at once; one that joins tracked faces waits for the next round)
        detect = self.frame_index % self.detect_every == 0 or not self.tracker.live() or gap
        if detect:
            dets = self._detect_full(rgb)
        else:
            near = [self._detect_near(rgb, tr.predict(t)) for tr in self.tracker.live()]
            dets = []
            for d in sorted((d for d in near if d is not None), key=lambda d: -d.score):
                if all(iou_matrix(d.bbox[None], k.bbox[None])[0, 0] < self.tracker.iou_threshold for k in dets):
                    dets.append(d)
        tracks = self.tracker.update(dets, t)
        t1 = time.perf_counter()
        faces = self.analyzer.analyze_detections([rgb], [dets])[0] if dets else []
        t2 = time.perf_counter()
        out = []
        for face, tr in zip(faces, tracks):
            if self.smooth:
                if tr.smoother is None:
                    tr.smoother = FaceSmoother()
                face = tr.smoother(face, t)
                if tr.smoother.last_reset == "identity":  # another person where this track was
                    tr.track_id = self.tracker._next_id
                    self.tracker._next_id += 1
            face.extra["track_id"] = tr.track_id
            out.append(face)
        t3 = time.perf_counter()
        self.frame_index += 1
        self.last_detected = detect
        self.last_timings = {"detect": (t1 - t0) * 1e3, "model": (t2 - t1) * 1e3, "track": (t3 - t2) * 1e3}
        return out


__all__ = ["OneEuroFilter", "FaceSmoother", "IoUTracker", "Track", "VideoAnalyzer", "iou_matrix"]
