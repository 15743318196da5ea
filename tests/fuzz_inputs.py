"""Input generators shared by the property-based test (tests/test_fuzz.py) and the fuzz benchmark
(benchmarks/fuzz_inputs.py): arrays of random shapes and dtypes, encoded images truncated / corrupted / with
huge dimensions written into their headers, random bytes, and files with odd names and extensions."""
from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
from PIL import Image

DTYPES = ["uint8", "uint16", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "bool", "complex64",
          ">u2", "<f4", "object"]
EXTS = [".jpg", ".png", ".webp", ".gif", ".bmp", ".tif", ".heic", ".txt", "", ".JPG", ".jpeg"]


def seed_images(face: np.ndarray | None = None) -> dict[str, bytes]:
    """Small valid encodings of a picture (a face photo when given) in every format the decoder reads."""
    rng = np.random.default_rng(0)
    rgb = face if face is not None else rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    rgb = cv2.resize(rgb, (64, 48), interpolation=cv2.INTER_AREA)
    out = {}
    for ext in (".jpg", ".png", ".webp", ".bmp", ".tif"):
        out[ext] = cv2.imencode(ext, rgb[:, :, ::-1])[1].tobytes()
    out[".png16"] = cv2.imencode(".png", rgb[:, :, ::-1].astype(np.uint16) * 257)[1].tobytes()
    im = Image.fromarray(rgb)
    for fmt in ("GIF", "TIFF", "PPM", "TGA", "ICO", "JPEG2000", "QOI", "PCX", "SGI"):
        buf = io.BytesIO()
        try:
            im.save(buf, fmt)
        except Exception:  # noqa: BLE001 - a Pillow build without that writer
            continue
        out[fmt.lower()] = buf.getvalue()
    buf = io.BytesIO()
    im.save(buf, "GIF", save_all=True, append_images=[im.transpose(Image.Transpose.ROTATE_90)])
    out["gif-anim"] = buf.getvalue()
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(buf, "JPEG", exif=exif)
    out["jpg-exif6"] = buf.getvalue()
    try:
        import pillow_heif

        buf = io.BytesIO()
        pillow_heif.from_pillow(im).save(buf, quality=50)
        out["heic"] = buf.getvalue()
    except ImportError:
        pass
    return out


def png_with_size(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w & 0xFFFFFFFF, h & 0xFFFFFFFF, 8, 2, 0, 0, 0)
    chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 97)) + chunk(b"IEND", b"")


def with_huge_size(data: bytes, w: int, h: int) -> bytes:
    """``data`` with its header's width / height replaced (PNG IHDR, JPEG SOF, GIF, BMP) where found."""
    b = bytearray(data)
    if b[:8] == b"\x89PNG\r\n\x1a\n":
        b[16:24] = struct.pack(">II", w & 0xFFFFFFFF, h & 0xFFFFFFFF)
        b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    elif b[:2] == b"\xff\xd8":
        i = data.find(b"\xff\xc0")
        if i > 0:
            b[i + 5:i + 9] = struct.pack(">HH", h & 0xFFFF, w & 0xFFFF)
    elif b[:3] == b"GIF":
        b[6:10] = struct.pack("<HH", w & 0xFFFF, h & 0xFFFF)
    elif b[:2] == b"BM":
        b[18:26] = struct.pack("<ii", min(w, 2**31 - 1), min(h, 2**31 - 1))
    return bytes(b)


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random corruption: truncation, flipped bytes, inserted / deleted runs, or huge header sizes."""
    kind = rng.integers(0, 6)
    b = bytearray(data)
    if kind == 0 and len(b) > 1:
        return bytes(b[: int(rng.integers(1, len(b)))])
    if kind == 1:
        for _ in range(int(rng.integers(1, 9))):
            b[int(rng.integers(0, len(b)))] = int(rng.integers(0, 256))
        return bytes(b)
    if kind == 2:
        i = int(rng.integers(0, len(b)))
        return bytes(b[:i] + rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes() + b[i:])
    if kind == 3 and len(b) > 2:
        i = int(rng.integers(0, len(b) - 1))
        return bytes(b[:i] + b[i + int(rng.integers(1, min(256, len(b) - i))):])
    if kind == 4:
        big = [65535, 100_000, 2**31 - 1, 2**32 - 1, 0, 1]
        return with_huge_size(data, int(rng.choice(big)), int(rng.choice(big)))
    return bytes(b[: len(b) // 2]) + bytes(b[len(b) // 2:])[::-1]


def random_array(rng: np.random.Generator) -> np.ndarray:
    """An array of random rank (0-4), sides (0-48) and dtype, with random or extreme values."""
    ndim = int(rng.integers(0, 5))
    shape = tuple(int(s) for s in rng.integers(0, 49, ndim))
    if ndim == 3 and rng.random() < 0.6:
        shape = shape[:2] + (int(rng.choice([1, 2, 3, 4, 5])),)
    dtype = str(rng.choice(DTYPES))
    if dtype == "object":
        return np.empty(shape, object)
    dt = np.dtype(dtype)
    n = int(np.prod(shape)) if shape else 1
    if dt.kind == "f":
        vals = rng.choice([rng.random(n), rng.normal(0, 100, n), np.full(n, np.nan), np.full(n, np.inf), np.zeros(n)])
        return np.asarray(vals, dt).reshape(shape)
    if dt.kind == "c":
        return (rng.random(n) + 1j * rng.random(n)).astype(dt).reshape(shape)
    if dt.kind == "b":
        return (rng.random(n) > 0.5).reshape(shape)
    info = np.iinfo(dt)
    return rng.integers(info.min, info.max, n, dtype=dt.newbyteorder("=")).astype(dt).reshape(shape)
