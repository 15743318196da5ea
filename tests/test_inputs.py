"""Every kind of image input: the supported ones work (and agree), every bad one raises FaceAnalysisError."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from faceanalysis import FaceAnalysisError
from faceanalysis.preprocess import from_array, load_image


@pytest.fixture(scope="module")
def photo_file(celeba_photo_paths):
    return celeba_photo_paths[0]


# ---- bad files ---------------------------------------------------------------------------------------------------
def test_missing_path(tmp_path):
    with pytest.raises(FaceAnalysisError, match="does not exist"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(FaceAnalysisError, match="does not exist"):
        load_image(str(tmp_path / "nope.jpg"))


def test_directory_path(tmp_path):
    with pytest.raises(FaceAnalysisError, match="folder"):
        load_image(tmp_path)


def test_empty_path_string():
    with pytest.raises(FaceAnalysisError, match="empty"):
        load_image("")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(FaceAnalysisError, match="empty"):
        load_image(p)


@pytest.mark.parametrize("kind", ["half", "header_only", "garbage", "text"])
def test_corrupt_and_truncated_files(photo_file, tmp_path, kind):
    data = photo_file.read_bytes()
    payload = {"half": data[: len(data) // 2], "header_only": data[:100],
               "garbage": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, "text": b"hello, not an image\n"}[kind]
    p = tmp_path / f"{kind}.jpg"
    p.write_bytes(payload)
    with pytest.raises(FaceAnalysisError, match="cannot decode") as info:
        load_image(p)
    assert str(p) in str(info.value)
    with pytest.raises(FaceAnalysisError, match="cannot decode"):
        load_image(payload)  # the same as bytes


def test_empty_bytes():
    with pytest.raises(FaceAnalysisError, match="empty"):
        load_image(b"")


# ---- bad arrays and objects --------------------------------------------------------------------------------------
BAD_ARRAYS = {
    "zero_rows": np.zeros((0, 10, 3), np.uint8),
    "zero_cols": np.zeros((10, 0), np.uint8),
    "zero_all": np.zeros((0, 0, 3), np.uint8),
    "two_channels": np.zeros((10, 10, 2), np.uint8),
    "five_channels": np.zeros((10, 10, 5), np.uint8),
    "4d": np.zeros((1, 10, 10, 3), np.uint8),
    "1d": np.zeros(30, np.uint8),
    "scalar": np.array(7, np.uint8),
    "object": np.zeros((10, 10, 3), object),
    "complex": np.zeros((10, 10, 3), np.complex64),
    "bool": np.zeros((10, 10, 3), bool),
    "strings": np.full((10, 10), "a"),
    "int64": np.zeros((10, 10, 3), np.int64),
    "int8": np.zeros((10, 10, 3), np.int8),
    "float_above_1": np.full((10, 10, 3), 255.0, np.float32),
    "float_negative": np.full((10, 10, 3), -0.2),
    "float_nan": np.full((10, 10, 3), np.nan, np.float32),
    "float_inf": np.full((10, 10, 3), np.inf),
}


@pytest.mark.parametrize("name", list(BAD_ARRAYS))
def test_bad_arrays(name):
    with pytest.raises(FaceAnalysisError):
        load_image(BAD_ARRAYS[name])


@pytest.mark.parametrize("obj", [torch.zeros(10, 10, 3, dtype=torch.uint8), None, [[1, 2], [3, 4]], 3.5, {"a": 1}],
                         ids=["torch", "none", "list", "float", "dict"])
def test_unsupported_types(obj):
    with pytest.raises(FaceAnalysisError):
        load_image(obj)


def test_analyzer_raises_the_project_error(tiny_analyzer, tmp_path):
    """User mistakes at the analyzer level: no raw numpy / cv2 / torch exception escapes."""
    for bad in (np.zeros((0, 5, 3), np.uint8), np.zeros((4, 4, 2), np.uint8), np.full((8, 8, 3), np.nan),
                torch.zeros(8, 8, 3), tmp_path / "missing.png", b"\x00\x01"):
        with pytest.raises(FaceAnalysisError):
            tiny_analyzer.analyze(bad)
        with pytest.raises(FaceAnalysisError):
            tiny_analyzer.detect(bad)
    with pytest.raises(FaceAnalysisError):
        tiny_analyzer.analyze_batch([np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), complex)])


# ---- supported inputs agree --------------------------------------------------------------------------------------
def _same_faces(a, b, atol=1e-4):
    assert len(a) == len(b)
    for fa, fb in zip(a, b):
        np.testing.assert_allclose(fa.bbox, fb.bbox, atol=atol)
        np.testing.assert_allclose(fa.landmarks, fb.landmarks, atol=atol)
        np.testing.assert_allclose(fa.embedding, fb.embedding, atol=atol)


def test_equivalent_inputs_give_identical_results(tiny_analyzer, photo_file, face_photo):
    ref = tiny_analyzer.analyze(face_photo)
    assert len(ref) == 1
    png = cv2.imencode(".png", face_photo[:, :, ::-1])[1].tobytes()
    rgba = np.dstack([face_photo, np.full(face_photo.shape[:2], 255, np.uint8)])
    variants = {
        "path": photo_file, "str": str(photo_file), "jpeg_bytes": photo_file.read_bytes(), "png_bytes": png,
        "bytearray": bytearray(png), "pil": Image.fromarray(face_photo), "pil_rgba": Image.fromarray(rgba),
        "rgba": rgba, "uint16": face_photo.astype(np.uint16) * 257, "float32": face_photo.astype(np.float32) / 255,
        "float64": face_photo / 255.0, "non_contiguous": np.asfortranarray(face_photo),
        "big_endian_uint16": (face_photo.astype(np.uint16) * 257).astype(">u2"),
    }
    for name, v in variants.items():
        _same_faces(tiny_analyzer.analyze(v), ref)


def test_grey_inputs(tiny_analyzer, face_photo, tmp_path):
    grey = cv2.cvtColor(face_photo, cv2.COLOR_RGB2GRAY)
    ref = tiny_analyzer.analyze(np.dstack([grey] * 3))
    assert len(ref) == 1
    for v in (grey, grey[:, :, None], Image.fromarray(grey), grey.astype(np.uint16) * 257):
        _same_faces(tiny_analyzer.analyze(v), ref)
    p = tmp_path / "grey16.png"
    cv2.imwrite(str(p), grey.astype(np.uint16) * 257)  # a real 16-bit grey PNG
    _same_faces(tiny_analyzer.analyze(p), ref)
    pil16 = Image.open(p)
    assert pil16.mode.startswith("I")
    _same_faces(tiny_analyzer.analyze(pil16), ref)  # PIL 16-bit is scaled, not clipped to white


def test_16bit_colour_png(face_photo, tmp_path):
    p = tmp_path / "rgb16.png"
    cv2.imwrite(str(p), face_photo[:, :, ::-1].astype(np.uint16) * 257)
    out = load_image(p)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, face_photo)


def test_rgba_is_composited_over_white():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3] = 255  # opaque red-ish pixel; the rest fully transparent
    out = load_image(rgba)
    np.testing.assert_array_equal(out[0, 0], [200, 0, 0])
    np.testing.assert_array_equal(out[1, 1], [255, 255, 255])
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    np.testing.assert_array_equal(load_image(buf.getvalue()), out)


def test_pil_high_bit_depth_modes(face_photo):
    grey = face_photo[:, :, 1]
    ref = load_image(grey)
    np.testing.assert_array_equal(load_image(Image.fromarray(grey.astype(np.int32) * 257, "I")), ref)
    np.testing.assert_array_equal(load_image(Image.fromarray(grey.astype(np.float32) / 255, "F")), ref)
    with pytest.raises(FaceAnalysisError, match="0..65535"):
        load_image(Image.fromarray(np.full((4, 4), 70000, np.int32), "I"))
    with pytest.raises(FaceAnalysisError, match=r"\[0, 1\]"):
        load_image(Image.fromarray(np.full((4, 4), 200.0, np.float32), "F"))


def test_other_pil_modes():
    assert load_image(Image.new("P", (6, 5))).shape == (5, 6, 3)
    assert load_image(Image.new("LA", (6, 5))).shape == (5, 6, 3)
    assert load_image(Image.new("CMYK", (6, 5))).shape == (5, 6, 3)
    assert load_image(Image.new("1", (6, 5), 1))[0, 0].tolist() == [255, 255, 255]


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_float_range_limits_are_accepted(value):
    assert load_image(np.full((3, 3), value, np.float16)).max() == round(value * 255)


# ---- nothing the user gave is modified ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32", "rgba", "grey"])
def test_input_arrays_are_not_modified(tiny_analyzer, face_photo, dtype):
    arr = {"uint8": face_photo.copy(), "uint16": face_photo.astype(np.uint16) * 257,
           "float32": face_photo.astype(np.float32) / 255, "grey": face_photo[:, :, 0].copy(),
           "rgba": np.dstack([face_photo, np.full(face_photo.shape[:2], 128, np.uint8)])}[dtype]
    before = arr.copy()
    out = load_image(arr)
    assert not np.shares_memory(out, arr)
    faces = tiny_analyzer.analyze(arr)
    tiny_analyzer.analyze_batch([arr, arr])
    import faceanalysis

    canvas = faceanalysis.draw(arr, faces)
    assert not np.shares_memory(canvas, arr)
    np.testing.assert_array_equal(arr, before)
    assert arr.dtype == before.dtype


def test_from_array_always_returns_a_new_contiguous_uint8_array(face_photo):
    out = from_array(face_photo)
    assert out is not face_photo and not np.shares_memory(out, face_photo)
    view = face_photo[::2, ::-1]
    out = from_array(view)
    assert out.flags.c_contiguous and out.dtype == np.uint8 and out.shape == view.shape
