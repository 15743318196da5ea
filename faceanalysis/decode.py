"""Encoded images (files, bytes) and PIL images -> RGB uint8, as a person sees them.

* **Orientation.** The EXIF Orientation tag (phone photos store pixels sideways and say so in the tag) is
  applied to paths, bytes and PIL images alike (the tag's eight values, as ``PIL.ImageOps.exif_transpose``),
  so every result is in the frame of the *displayed*, upright image. Numpy arrays carry no tag and are used
  as they are.
* **Formats.** The header is read by Pillow (restricted to :data:`FORMATS`; nothing that runs an external
  program, such as EPS) and the pixels are decoded by OpenCV where it can (faster, 16-bit aware), else by
  Pillow. HEIC / HEIF (iPhone photos) needs the optional ``pillow-heif`` decoder
  (``pip install 'faceanalysis[heif]'``); without it the error names the format and the extra.
* **Animated / multi-page images** (GIF, WebP, APNG, TIFF, MPO): :func:`~faceanalysis.preprocess.load_image`
  and everything built on it use the **first frame**; :func:`iter_frames` yields every frame.
* **Size limit.** Images whose header declares more than :data:`MAX_IMAGE_PIXELS` pixels are refused before any
  pixel is decoded (a 100-byte file can claim 1,000,000 x 1,000,000 pixels).
"""
from __future__ import annotations

import io
import re
from typing import Any, Iterator

import cv2
import numpy as np

from .errors import FaceAnalysisError

#: refuse images larger than this many pixels (header check, before decoding); 250 MP ~ 750 MB as RGB
MAX_IMAGE_PIXELS = 250_000_000
#: Pillow formats read (header and fallback decoding; JPEG includes MPO); the rest (EPS, WMF, FITS, ...) are refused
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "PPM", "TGA", "ICO", "AVIF", "JPEG2000",
           "QOI", "PCX", "SGI", "SUN", "PSD")
#: file name extensions that folder scans (``faceanalysis analyze FOLDER``, ``pseudo-label``, export calibration,
#: the demo's gallery) treat as images: Pillow's extensions of :data:`FORMATS` (``PIL.Image.registered_extensions``,
#: checked by ``tests/test_decode.py``) and HEIC / HEIF (decoded with the ``[heif]`` extra)
IMAGE_EXTS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".mpo", ".png", ".apng", ".webp", ".gif", ".bmp", ".dib", ".tif", ".tiff",
    ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".icb", ".vda", ".vst", ".ico", ".avif", ".avifs", ".jp2", ".j2k", ".j2c",
    ".jpc", ".jpf", ".jpx", ".qoi", ".pcx", ".sgi", ".rgb", ".rgba", ".bw", ".ras", ".psd", ".heic", ".heif"})
#: how error messages name them
IMAGE_EXTS_HELP = ("JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF, HEIC/HEIF, JPEG 2000, PNM, TGA, ICO, QOI, PCX, SGI, PSD; "
                   "by file extension, faceanalysis.decode.IMAGE_EXTS")
ORIENTATION_TAG = 0x0112
#: ISO-BMFF brands of HEIF-family images that Pillow itself does not read
HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1", b"msf1", b"mif2"}
HEIF_HINT = "pip install 'faceanalysis[heif]' (the optional pillow-heif decoder)"


def _pil():
    from PIL import Image

    return Image


def heif_brand(data: bytes) -> str | None:
    """The HEIF brand (e.g. ``"heic"``) of ISO-BMFF ``data`` that is a HEIF-family image, else ``None``."""
    if len(data) < 16 or data[4:8] != b"ftyp":
        return None
    size = int.from_bytes(data[:4], "big")
    brands = [data[8:12]] + [data[i:i + 4] for i in range(16, min(max(size, 16), len(data), 64) - 3, 4)]
    for b in brands:
        if b in HEIF_BRANDS:
            return b.decode("ascii")
    return None


def _check_size(w: int, h: int, name: str) -> None:
    if w * h > MAX_IMAGE_PIXELS:
        raise FaceAnalysisError(f"{name} is {w} x {h} pixels ({w * h / 1e6:.0f} MP), more than the "
                                f"{MAX_IMAGE_PIXELS / 1e6:.0f} MP limit; downscale it first, or raise "
                                "faceanalysis.decode.MAX_IMAGE_PIXELS if the file is genuine")


_LARGE = object()  # recognised by Pillow, too large for its own default limit but within ours


def _probe(data: bytes, name: str) -> Any | None:
    """Pillow's lazy view of ``data`` (header parsed, pixels not decoded), ``_LARGE``, or ``None`` when Pillow
    does not recognise it; raises for images over the size limit."""
    Image = _pil()
    try:
        im = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as err:  # Pillow's own limit (~179 MP) is below ours or equal
        m = re.search(r"\((\d+) pixels\)", str(err))
        n = int(m.group(1)) if m else MAX_IMAGE_PIXELS + 1
        if n > MAX_IMAGE_PIXELS:
            raise FaceAnalysisError(f"{name} has {n / 1e6:.0f} MP, more than the {MAX_IMAGE_PIXELS / 1e6:.0f} MP "
                                    "limit; downscale it first") from err
        return _LARGE  # large but allowed: OpenCV decodes it below
    except Exception:  # noqa: BLE001 - unidentified or a broken header: the caller reports it
        return None
    _check_size(*im.size, name)
    return im


def _orientation(im: Any, data: bytes | None = None) -> int:
    """The EXIF orientation (1..8) of a Pillow image; 1 when absent or unreadable."""
    if im is _LARGE:
        return 1
    try:
        if data is not None and im.format == "PNG" and b"eXIf" not in data:
            return 1  # Pillow would decode the whole PNG to look for a late eXIf chunk
        value = im.getexif().get(ORIENTATION_TAG, 1)
        return int(value) if int(value) in range(1, 9) else 1
    except Exception:  # noqa: BLE001 - a corrupt EXIF block: show the pixels as stored
        return 1


def apply_orientation(rgb: np.ndarray, orientation: int) -> np.ndarray:
    """Pixels stored with EXIF ``orientation`` -> as displayed (same transforms as ``ImageOps.exif_transpose``)."""
    if orientation == 2:
        out = rgb[:, ::-1]
    elif orientation == 3:
        out = rgb[::-1, ::-1]
    elif orientation == 4:
        out = rgb[::-1]
    elif orientation == 5:  # transpose
        out = rgb.swapaxes(0, 1)
    elif orientation == 6:  # 90 degrees clockwise
        out = np.rot90(rgb, -1)
    elif orientation == 7:  # transverse
        out = np.rot90(rgb.swapaxes(0, 1), 2)
    elif orientation == 8:  # 90 degrees counter-clockwise
        out = np.rot90(rgb, 1)
    else:
        return rgb
    return np.ascontiguousarray(out)


def pil_upright(im: Any) -> Any:
    """A Pillow image with its EXIF orientation applied (the image itself when there is none)."""
    if _orientation(im) == 1:
        return im
    from PIL import ImageOps

    try:
        return ImageOps.exif_transpose(im)
    except Exception as err:  # noqa: BLE001
        raise FaceAnalysisError(f"cannot apply the EXIF orientation of the PIL image: {err}") from err


def _decode_heif(data: bytes, name: str, brand: str) -> Any:
    try:
        import pillow_heif
    except ImportError as err:
        raise FaceAnalysisError(f"{name} is a HEIC/HEIF image (brand '{brand}', the iPhone photo format), which "
                                f"needs an optional decoder: {HEIF_HINT}; or convert it to JPEG") from err
    try:
        heif = pillow_heif.open_heif(io.BytesIO(data), convert_hdr_to_8bit=True)
        _check_size(*heif.size, name)
        return heif.to_pillow()  # libheif applies the stored rotation / mirroring; EXIF orientation is reset
    except FaceAnalysisError:
        raise
    except Exception as err:  # noqa: BLE001 - libheif's errors
        raise FaceAnalysisError(f"cannot decode {name}: a HEIC/HEIF file that is corrupt or truncated ({err})") from err


def decode(data: bytes, name: str) -> np.ndarray:
    """Encoded image bytes -> HxWx3 uint8 RGB as displayed (EXIF orientation applied, first frame)."""
    from .preprocess import from_array, load_image

    probe = _probe(data, name)
    if probe is None:
        brand = heif_brand(data)
        if brand is not None:
            return load_image(_decode_heif(data, name, brand))
    try:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if probe is not None else None
    except cv2.error:
        arr = None
    if arr is None:
        if probe is None or probe is _LARGE:
            raise FaceAnalysisError(f"cannot decode {name}: not an image, or the file is corrupt/truncated "
                                    f"(supported: JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF, ...; HEIC with {HEIF_HINT})")
        try:
            probe.seek(0)
            probe.load()
            return load_image(probe)  # applies the orientation
        except FaceAnalysisError:
            raise
        except Exception as err:  # noqa: BLE001 - any decoder failure means the same thing
            raise FaceAnalysisError(f"cannot decode {name}: not an image, or the file is corrupt/truncated") from err
    if arr.ndim == 3 and arr.shape[2] >= 3:
        arr = arr[:, :, [2, 1, 0] + ([3] if arr.shape[2] == 4 else [])]  # BGR(A) -> RGB(A)
    return apply_orientation(from_array(arr), _orientation(probe, data))


def iter_frames(image: Any) -> Iterator[np.ndarray]:
    """Every frame of an animated or multi-page image (path, bytes or PIL image) as RGB uint8, EXIF orientation
    applied; a still image gives one frame. (``load_image`` / ``analyze`` use the first frame only.)"""
    from pathlib import Path

    from .preprocess import load_image

    if isinstance(image, (str, Path, bytes, bytearray, memoryview)):
        data = bytes(image) if not isinstance(image, (str, Path)) else None
        name = "image bytes" if data is not None else str(image)
        if data is None:
            load_image(image)  # the same checks and messages as a single image
            data = Path(image).read_bytes()
        im = _probe(data, name)
        if im is None or im is _LARGE:
            yield load_image(data)
            return
    elif hasattr(image, "seek") and hasattr(image, "n_frames"):
        im = image
    else:
        yield load_image(image)
        return
    n = getattr(im, "n_frames", 1)
    for i in range(n):
        try:
            im.seek(i)
            frame = im.copy()  # keeps the frame's info, EXIF included
        except Exception as err:  # noqa: BLE001
            raise FaceAnalysisError(f"cannot decode frame {i} of {n}: the file is corrupt/truncated ({err})") from err
        yield load_image(frame)


def frame_count(data: bytes) -> int:
    """Number of frames / pages in encoded ``data`` (1 for a still image or an unknown format)."""
    try:
        im = _probe(data, "image")
        return int(getattr(im, "n_frames", 1)) if im is not None and im is not _LARGE else 1
    except Exception:  # noqa: BLE001
        return 1
