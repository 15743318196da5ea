"""Issue 11, video kind: whatever VideoAnalyzer's settings (detection every N frames, smoothing), every frame's
results describe that frame, whatever the stream does between frames (cuts, faces leaving, seeks, size changes)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from faceanalysis import FaceAnalyzer
from faceanalysis.preprocess import load_image
from faceanalysis.track import VideoAnalyzer, iou_matrix

H, W, S = 240, 320, 150


def _frame(photo: np.ndarray | None, x: int, y: int) -> np.ndarray:
    canvas = np.full((H, W, 3), 90, np.uint8)
    if photo is not None:
        canvas[y:y + S, x:x + S] = cv2.resize(photo, (S, S), interpolation=cv2.INTER_AREA)
    return canvas


@pytest.fixture(scope="module")
def stream(celeba_photo_paths):
    """Person A moving right, a cut to person B in the same place, an empty scene, A again elsewhere, then a
    seek (a 5 s gap in the timestamps)."""
    a, b = load_image(celeba_photo_paths[0]), load_image(celeba_photo_paths[3])
    frames = [_frame(a, 20 + 3 * i, 40) for i in range(7)]
    frames += [_frame(b, 41 + 3 * i, 40) for i in range(5)]  # cut at frame 7
    frames += [_frame(None, 0, 0) for _ in range(3)]  # the face leaves at frame 12
    frames += [_frame(a, 150, 60 + 2 * i) for i in range(5)]  # back, elsewhere, at frame 15
    times = [40.0 * i for i in range(len(frames))]
    frames += [_frame(b, 150, 70)]  # seek: 5 s later, another person in the same place
    times += [times[-1] + 5000.0]
    return frames, times


@pytest.mark.parametrize("detect_every,smooth", [(1, True), (4, True), (4, False), (3, True)])
def test_every_frame_describes_that_frame(default_analyzer, stream, detect_every, smooth):
    frames, times = stream
    video = VideoAnalyzer(default_analyzer, detect_every=detect_every, smooth=smooth)
    ids_a = set()
    for i, (frame, t) in enumerate(zip(frames, times)):
        got = video.process(frame, t)
        ref = default_analyzer.analyze(frame)  # the frame on its own
        assert len(got) == len(ref), f"frame {i}: {len(got)} faces, the frame has {len(ref)}"
        for g, r in zip(got, ref):
            iou = iou_matrix(g.bbox[None], r.bbox[None])[0, 0]
            assert iou > 0.75, f"frame {i}: box IoU {iou:.2f} with the frame's own face"
            size = float(np.sqrt((r.bbox[2] - r.bbox[0]) * (r.bbox[3] - r.bbox[1])))
            assert np.abs(g.landmarks - r.landmarks).max() < 0.12 * size, f"frame {i}: landmarks lag"
            sim = FaceAnalyzer.similarity(g, r)
            # a face carried over from the other person scores ~0.1 here (A vs B: 0.08 on the stage-12 weights); the same
            # face aligned from tracked key points instead of the detector's scores 0.847-1.0 (worst: frame 9 of
            # detect_every=4 without smoothing, 0.847 on stage 12; earlier releases stayed above 0.85)
            assert sim > 0.75, f"frame {i}: identity {sim:.2f} to the frame's own face (another person carried over?)"
            # the frame's own age is itself noisy: person B's moves 53 -> 64 -> 60 -> 61 -> 65 years between 3-px
            # shifts on the stage-9 weights, and a tracked frame is aligned from the tracker's key points, not the
            # detector's; an age carried over from person A (~29) would be off by ~0.6 x 30 = 18 years
            assert abs(g.age - r.age) < 12, f"frame {i}: age {g.age:.0f} vs {r.age:.0f}"
        if i < 7:
            ids_a.update(f.extra["track_id"] for f in got)
        elif 7 <= i < 12 and smooth:
            assert not ids_a & {f.extra["track_id"] for f in got}, "person B inherited person A's track"


def test_frame_size_change_restarts_tracking(tiny_analyzer, stream):
    frames, times = stream
    video = VideoAnalyzer(tiny_analyzer, detect_every=3)
    video.process(frames[0], 0.0)
    small = cv2.resize(frames[1], (W // 2, H // 2))
    got = video.process(small, 40.0)  # not a detection frame, but a new size: detect
    assert len(got) == len(tiny_analyzer.analyze(small))
    with pytest.raises(Exception, match="uint8 RGB"):
        video.process(small.astype(np.float32), 80.0)
