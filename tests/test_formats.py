"""Issue 11, case 5 and the colour-order kind: HEIC, animated images, headers claiming huge sizes, formats that
are refused, and BGR arrays."""
from __future__ import annotations

import io
import struct
import sys
import time
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from faceanalysis import FaceAnalysisError, FaceAnalyzer
from faceanalysis.decode import frame_count, heif_brand, iter_frames
from faceanalysis.preprocess import load_image


@pytest.fixture(scope="module")
def photos(celeba_photo_paths):
    return [load_image(p) for p in celeba_photo_paths[:2]]


# ---- HEIC ------------------------------------------------------------------------------------------------------
def _heic(rgb: np.ndarray, orientation: int | None = None) -> bytes:
    pillow_heif = pytest.importorskip("pillow_heif")
    im = Image.fromarray(rgb)
    kw = {}
    if orientation:
        im = im.transpose(Image.Transpose.ROTATE_90)  # stored sideways, displayed upright (tag 6)
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif.tobytes()
    buf = io.BytesIO()
    pillow_heif.from_pillow(im).save(buf, quality=92, **kw)
    return buf.getvalue()


def test_heic_is_decoded_with_the_heif_extra(photos, tiny_analyzer, tmp_path):
    data = _heic(photos[0])
    assert heif_brand(data) == "heic"
    p = tmp_path / "IMG_0001.HEIC"
    p.write_bytes(data)
    for src in (p, data):
        out = load_image(src)
        assert out.shape == photos[0].shape and np.abs(out.astype(int) - photos[0]).mean() < 4
    assert len(tiny_analyzer.analyze(p)) == 1
    # an iPhone photo stored sideways: displayed (and analysed) upright
    turned = load_image(_heic(photos[0], orientation=6))
    assert turned.shape == photos[0].shape and np.abs(turned.astype(int) - photos[0]).mean() < 4


def test_heic_without_the_extra_names_the_format_and_the_extra(photos, monkeypatch):
    data = _heic(photos[0])
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # as if pillow-heif were not installed
    with pytest.raises(FaceAnalysisError, match=r"HEIC/HEIF.*faceanalysis\[heif\]"):
        load_image(data)


def test_heif_brands():
    box = lambda brand, compat=b"": struct.pack(">I", 16 + len(compat)) + b"ftyp" + brand + b"\0\0\0\0" + compat  # noqa: E731
    assert heif_brand(box(b"heic") + b"\0" * 8) == "heic"
    assert heif_brand(box(b"mif1", b"heic") + b"\0" * 8) == "mif1"
    assert heif_brand(box(b"isom", b"mp41") + b"\0" * 8) is None  # an mp4 video
    with pytest.raises(FaceAnalysisError, match="cannot decode"):
        load_image(box(b"isom", b"mp41") + b"\0" * 64)


# ---- animated images -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_images_use_the_first_frame_and_iter_frames_gives_all(photos, tiny_analyzer, fmt, tmp_path):
    frames = [Image.fromarray(photos[0]), Image.fromarray(np.full_like(photos[0], 200))]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], duration=100, loop=0,
                   **({"lossless": True} if fmt == "WEBP" else {}))
    data = buf.getvalue()
    assert frame_count(data) == 2
    first = load_image(data)
    assert np.abs(first.astype(int) - photos[0]).mean() < 12  # GIF is palette-quantised
    got = list(iter_frames(data))
    assert len(got) == 2
    np.testing.assert_array_equal(got[0], first)
    assert np.abs(got[1].astype(int) - 200).max() < 3
    assert len(tiny_analyzer.analyze(data)) == 1  # the first frame's face
    p = tmp_path / f"anim.{fmt.lower()}"
    p.write_bytes(data)
    assert len(list(iter_frames(p))) == 2 and len(list(iter_frames(Image.open(p)))) == 2
    assert len(list(iter_frames(photos[0]))) == 1  # an array is one frame


# ---- headers that claim huge images, refused formats -------------------------------------------------------------
def _png_header(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _jpeg_header(w: int, h: int, photo_jpeg: bytes) -> bytes:
    i = photo_jpeg.index(b"\xff\xc0")  # baseline SOF0: length(2) precision(1) height(2) width(2)
    return photo_jpeg[:i + 5] + struct.pack(">HH", h, w) + photo_jpeg[i + 9:]


@pytest.mark.parametrize("kind", ["png", "jpeg", "bmp"])
def test_huge_dimensions_in_headers_are_refused_before_decoding(kind, celeba_photo_paths, tmp_path):
    data = {"png": lambda: _png_header(100_000, 100_000),
            "jpeg": lambda: _jpeg_header(60_000, 60_000, celeba_photo_paths[0].read_bytes()),
            "bmp": lambda: b"BM" + struct.pack("<IHHI", 0, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, 50_000, 50_000,
                                                                                  1, 24, 0, 0, 0, 0, 0, 0)}[kind]()
    t = time.perf_counter()
    with pytest.raises(FaceAnalysisError, match="MP"):
        load_image(data)
    assert time.perf_counter() - t < 1.0  # refused from the header, nothing allocated
    p = tmp_path / f"huge.{kind}"
    p.write_bytes(data)
    with pytest.raises(FaceAnalysisError, match=str(p)):
        load_image(p)


def test_formats_that_run_external_programs_are_refused():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(FaceAnalysisError, match="cannot decode"):
        load_image(eps)


def test_unreadable_file_is_a_face_analysis_error(tmp_path, photos, monkeypatch):
    from pathlib import Path

    p = tmp_path / "locked.png"
    cv2.imwrite(str(p), photos[0])

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", denied)  # as for a file the user may not read (tests may run as root)
    with pytest.raises(FaceAnalysisError, match="cannot read image file .*Permission denied"):
        load_image(p)


# ---- colour order ----------------------------------------------------------------------------------------------
def test_bgr_arrays_with_explicit_color(default_analyzer, photos, celeba_photo_paths):
    """cv2.imread gives BGR: passed as RGB it silently changes the embedding; color="bgr" gives the RGB result."""
    rgb = photos[0]
    bgr = cv2.imread(str(celeba_photo_paths[0]))
    np.testing.assert_array_equal(bgr[:, :, ::-1], rgb)
    (ref,) = default_analyzer.analyze(rgb)
    (wrong,) = default_analyzer.analyze(bgr)
    assert FaceAnalyzer.similarity(ref, wrong) < 0.99  # the silent change the issue reports
    for got in (default_analyzer.analyze(bgr, color="bgr"), default_analyzer.analyze_batch([bgr], color="bgr")[0]):
        (f,) = got
        np.testing.assert_array_equal(f.embedding, ref.embedding)
        np.testing.assert_array_equal(f.bbox, ref.bbox)
    np.testing.assert_array_equal(default_analyzer.detect(bgr, color="bgr")[0].bbox, ref.bbox)
    bgra = np.dstack([bgr, np.full(bgr.shape[:2], 255, np.uint8)])
    np.testing.assert_array_equal(load_image(bgra, color="bgr"), rgb)
    # encoded inputs carry their own order: color does not apply to them
    np.testing.assert_array_equal(load_image(celeba_photo_paths[0], color="bgr"), rgb)
    with pytest.raises(FaceAnalysisError, match="color"):
        default_analyzer.analyze(rgb, color="hsv")


# ---- folder scans: every decodable format counts as an image ------------------------------------------------------
def test_image_extensions_cover_every_pillow_format_that_is_decoded():
    """decode.IMAGE_EXTS (what folder scans pick up) holds Pillow's own extensions of every format decode reads,
    so a folder of .tga / .qoi / .jp2 photos is not silently skipped."""
    from faceanalysis.decode import FORMATS, IMAGE_EXTS

    Image.init()
    pillow = {e for e, f in Image.registered_extensions().items() if f in set(FORMATS) | {"MPO"}}
    pillow.discard(".pfm")  # float PFM maps: no photos
    assert pillow <= IMAGE_EXTS, sorted(pillow - IMAGE_EXTS)
    assert {".heic", ".heif"} <= IMAGE_EXTS


def test_analyze_folder_reads_tga_ppm_and_qoi_photos(photos, tmp_path, tiny_weights, capsys):
    from faceanalysis.cli import main

    d = tmp_path / "mixed"
    d.mkdir()
    Image.fromarray(photos[0]).save(d / "a.tga")
    Image.fromarray(photos[1]).save(d / "b.ppm")
    Image.fromarray(photos[0]).save(d / "c.qoi")  # QOI writing: Pillow >= 11.3 (.ci/constraints.txt pins 13)
    n = 3
    out = tmp_path / "r.json"
    assert main(["analyze", str(d), "--json", str(out), "--weights", str(tiny_weights)]) == 0
    import json

    report = json.loads(out.read_text())
    assert len(report) == n and all(isinstance(v, list) and len(v) == 1 for v in report.values()), report.keys()
