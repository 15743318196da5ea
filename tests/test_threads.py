"""Issue 11, case 1: one analyzer (and one detector) shared by threads gives exactly the serial results;
a VideoAnalyzer, which holds one stream's state, refuses concurrent use with a FaceAnalysisError."""
from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest

from faceanalysis import FaceAnalysisError, FaceAnalyzer, YuNetDetector
from faceanalysis.preprocess import load_image
from faceanalysis.track import VideoAnalyzer


@pytest.fixture(scope="module")
def calls(celeba_photo_paths):
    """48 calls on a mix of pack portraits at different sizes (the detector's input size changes between calls)."""
    photos = [load_image(p) for p in celeba_photo_paths[:12]]
    sizes = [None, (512, 400), (180, 240), (320, 320)]
    return [photos[i % 12] if sizes[i % 4] is None else cv2.resize(photos[i % 12], sizes[i % 4]) for i in range(48)]


def _run_threads(fn, n_items: int, n_threads: int = 4) -> tuple[list, list[BaseException]]:
    results: list = [None] * n_items
    errors: list[BaseException] = []
    start = threading.Barrier(n_threads)

    def work(k: int) -> None:
        start.wait()
        for i in range(k, n_items, n_threads):
            try:
                results[i] = fn(i)
            except BaseException as err:  # noqa: BLE001 - collected and reported by the test
                errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_shared_analyzer_matches_serial_results_exactly(tiny_analyzer, calls):
    serial = [tiny_analyzer.analyze(c) for c in calls]
    assert all(len(f) == 1 for f in serial)
    threaded, errors = _run_threads(lambda i: tiny_analyzer.analyze(calls[i]), len(calls))
    assert not errors, errors[:3]
    for a, b in zip(serial, threaded):
        assert len(a) == len(b)
        for fa, fb in zip(a, b):
            np.testing.assert_array_equal(fa.bbox, fb.bbox)
            np.testing.assert_array_equal(fa.keypoints5, fb.keypoints5)
            np.testing.assert_array_equal(fa.landmarks, fb.landmarks)
            np.testing.assert_array_equal(fa.embedding, fb.embedding)
            np.testing.assert_array_equal(fa.parsing.mask, fb.parsing.mask)


def test_shared_detector_matches_serial_results_exactly(calls):
    det = YuNetDetector()
    serial = [det.detect(c) for c in calls]
    threaded, errors = _run_threads(lambda i: det.detect(calls[i]), len(calls))
    assert not errors, errors[:3]
    for a, b in zip(serial, threaded):
        assert [(d.bbox.tolist(), d.kps5.tolist(), d.score) for d in a] == \
               [(d.bbox.tolist(), d.kps5.tolist(), d.score) for d in b]


def test_shared_analyzer_batches_and_detect_in_threads(tiny_analyzer, calls):
    """analyze_batch and detect share the analyzer too (a web server mixes them)."""
    serial = [len(fs) for fs in tiny_analyzer.analyze_batch(calls[:8])]
    out, errors = _run_threads(lambda i: [len(fs) for fs in tiny_analyzer.analyze_batch(calls[:8])]
                               if i % 2 else len(tiny_analyzer.detect(calls[i])), 16)
    assert not errors, errors[:3]
    assert all(o == serial for o in out[1::2]) and all(o == 1 for o in out[0::2])


class _BlockingDetector:
    """Holds the first detect call until released, so that a second thread arrives while it runs."""

    def __init__(self) -> None:
        self.entered, self.release = threading.Event(), threading.Event()

    def detect(self, image, max_side=None):
        self.entered.set()
        self.release.wait(10)
        return []


def test_video_analyzer_refuses_concurrent_use(tiny_weights):
    det = _BlockingDetector()
    video = VideoAnalyzer(FaceAnalyzer(weights=tiny_weights, detector=det))
    frame = np.zeros((64, 64, 3), np.uint8)
    t = threading.Thread(target=video.process, args=(frame, 0.0))
    t.start()
    assert det.entered.wait(10)
    with pytest.raises(FaceAnalysisError, match="one per stream"):
        video.process(frame, 40.0)
    det.release.set()
    t.join()
    assert video.process(frame, 80.0) == []  # usable again once the other call returned


def test_video_analyzers_can_share_one_analyzer(tiny_analyzer, calls):
    frames = [np.ascontiguousarray(calls[i * 4]) for i in range(6)]  # same-size frames
    ref = [len(VideoAnalyzer(tiny_analyzer).process(f, 0.0)) for f in frames]
    videos = [VideoAnalyzer(tiny_analyzer) for _ in range(4)]

    def run(k: int):
        return [len(videos[k].process(f, 40.0 * j)) for j, f in enumerate(frames)]

    out, errors = _run_threads(run, 4)
    assert not errors, errors[:3]
    assert all(o == ref for o in out)
