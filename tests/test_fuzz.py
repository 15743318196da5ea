"""Issue 11, fuzzing kind: property-based tests (hypothesis) over arrays, bytes and files: random shapes and
dtypes, truncated and corrupted images, huge dimensions in headers. The only allowed outcomes are a
FaceAnalysisError or a result. (benchmarks/fuzz_inputs.py runs >= 10,000 such cases.)"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from fuzz_inputs import EXTS, mutate, png_with_size, random_array, seed_images, with_huge_size  # noqa: E402

from faceanalysis import FaceAnalysisError  # noqa: E402
from faceanalysis.preprocess import load_image  # noqa: E402

SETTINGS = settings(max_examples=120, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SEEDS = seed_images()


def _outcome(fn, x) -> str:
    """Run ``fn(x)``; only a result or FaceAnalysisError may come out."""
    try:
        out = fn(x)
    except FaceAnalysisError as err:
        assert str(err), "empty error message"
        return "error"
    assert isinstance(out, (list, np.ndarray)), type(out)
    if isinstance(out, np.ndarray):
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3
    return "ok"


dtypes = st.sampled_from([np.uint8, np.uint16, np.int8, np.int32, np.int64, np.float16, np.float32, np.float64,
                          np.bool_, np.complex64, np.dtype(">u2"), np.dtype("<f8")])


@SETTINGS
@given(hnp.arrays(dtypes, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=40)))
def test_arrays(tiny_analyzer, arr):
    _outcome(load_image, arr)
    _outcome(tiny_analyzer.analyze, arr)


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.booleans())
def test_random_arrays_with_extreme_values(tiny_analyzer, seed, bgr):
    arr = random_array(np.random.default_rng(seed))
    _outcome(lambda a: tiny_analyzer.analyze(a, color="bgr" if bgr else "rgb"), arr)


@SETTINGS
@given(st.binary(max_size=4096))
def test_random_bytes(tiny_analyzer, data):
    _outcome(tiny_analyzer.analyze, data)


@SETTINGS
@given(st.sampled_from(sorted(SEEDS)), st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_corrupted_images(tiny_analyzer, fmt, seed, rounds):
    rng = np.random.default_rng(seed)
    data = SEEDS[fmt]
    for _ in range(rounds):
        data = mutate(data, rng)
    _outcome(tiny_analyzer.analyze, data)


@SETTINGS
@given(st.sampled_from(sorted(SEEDS)), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_huge_dimensions_in_headers(fmt, w, h):
    _outcome(load_image, with_huge_size(SEEDS[fmt], w, h))
    _outcome(load_image, png_with_size(w, h))


@SETTINGS
@given(st.sampled_from(sorted(SEEDS)), st.integers(0, 2**32 - 1), st.sampled_from(EXTS),
       st.text(min_size=1, max_size=40).filter(lambda s: "/" not in s and "\0" not in s and s not in (".", "..")))
def test_files(tiny_analyzer, fmt, seed, ext, stem):
    data = mutate(SEEDS[fmt], np.random.default_rng(seed)) if seed % 3 else SEEDS[fmt]
    with tempfile.TemporaryDirectory() as d:
        try:
            path = os.path.join(d, stem + ext)
            with open(path, "wb") as f:
                f.write(data)
        except (OSError, UnicodeEncodeError, ValueError):
            return  # a name this file system refuses: nothing to analyse
        _outcome(tiny_analyzer.analyze, path)
