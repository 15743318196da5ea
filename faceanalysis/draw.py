"""Overlay every task's result on an image (each task draws itself).

Sizes follow the *face*, not the image: :func:`face_style` turns a face box into font scale, line
thickness and marker radius, so a 100 px photo and a 4000 px one look alike around each face. Text is
laid out before anything is drawn: each task gives its :class:`Label` blocks (``Task.labels``),
:func:`layout` places every block of every face inside the image, off other faces' boxes and off the
blocks already placed, and :func:`draw` renders exactly those boxes. ``layout`` is public so the text
geometry can be inspected (and tested) without reading pixels.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

import cv2
import numpy as np

from .errors import FaceAnalysisError
from .preprocess import ImageInput, load_image
from .tasks import TASKS

if TYPE_CHECKING:
    from .api import Face

LAYERS = ("box",) + tuple(TASKS)
FONT = cv2.FONT_HERSHEY_SIMPLEX
#: mean width of a label character as a fraction of the face size: the longest attribute name ("Mouth
#: Slightly Open") is about 3/4 of the face wide, whichever font this OpenCV draws
CHAR_WIDTH = 0.0385
#: smallest text drawn for a face: font ascent in pixels (smaller OpenCV text is unreadable); only an image
#: too small for the text shrinks it further
MIN_TEXT_PX = 7.5
#: box / contour / axis thickness: one pixel per this many pixels of face size
LINE_PER_PX = 100.0
#: landmark dot radius as a fraction of the face size
POINT_RADIUS = 0.011
#: fixed-point factor for sub-pixel markers (OpenCV ``shift`` = log2 of it)
SUBPIXEL = 16
BOX_COLOUR = (0, 200, 255)
CAPTION_COLOUR = (120, 255, 120)
#: backing of text blocks: the pixels under a block are darkened to this fraction
BACKING = 0.35
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive ends), image pixels


def _font_metrics() -> tuple[float, float]:
    """(ascent, mean character width) of :data:`FONT` at scale 1: OpenCV 4 draws Hershey strokes, OpenCV 5
    a built-in TrueType font, with other proportions."""
    ref = "Mouth Slightly Open"
    (w, _), _ = cv2.getTextSize(ref, FONT, 1.0, 1)
    return float(cv2.getTextSize("H", FONT, 1.0, 1)[0][1]), w / len(ref)


_ASCENT, _CHAR = _font_metrics()
#: smallest font scale used for a face (:data:`MIN_TEXT_PX`)
MIN_FONT_SCALE = MIN_TEXT_PX / _ASCENT


# ---- sizes from the face -------------------------------------------------------------------------
def face_size(bbox: Sequence[float]) -> float:
    """A face's size in pixels: the geometric mean of its box's sides."""
    x0, y0, x1, y1 = (float(v) for v in bbox[:4])
    return math.sqrt(max(x1 - x0, 1.0) * max(y1 - y0, 1.0))


@dataclass(frozen=True)
class Style:
    """Drawing sizes for one face, all proportional to its size (pixels)."""

    size: float  #: face size (:func:`face_size`)
    font_scale: float  #: OpenCV font scale of its labels
    thickness: int  #: text stroke thickness
    line: int  #: box, contour and axis thickness
    point_radius: float  #: landmark dot radius (sub-pixel)
    gap: int  #: space between the face box and its labels

    @classmethod
    def for_size(cls, size: float) -> "Style":
        size = max(float(size), 1.0)
        scale = max(MIN_FONT_SCALE, CHAR_WIDTH * size / _CHAR)
        return cls(size=size, font_scale=scale, thickness=text_thickness(scale),
                   line=max(1, round(size / LINE_PER_PX)), point_radius=max(0.6, POINT_RADIUS * size),
                   gap=max(1, round(0.02 * size)))


def text_thickness(font_scale: float) -> int:
    """Stroke thickness for a font scale. Text is drawn once at this thickness and measured at the same
    one (OpenCV 5's fonts get wider with thickness, so a thicker outline would stick out of the text)."""
    return max(1, round(font_scale * 1.6))


def face_style(face: "Face") -> Style:
    """:class:`Style` of a face (from its box)."""
    return Style.for_size(face_size(face.bbox))


# ---- text blocks ---------------------------------------------------------------------------------
@dataclass
class Label:
    """A block of text lines a task shows next to a face.

    ``side`` is where it goes preferably (``right``, ``left``, ``top`` or ``bottom`` of the face box);
    ``bar`` adds a bar filled to that fraction (0-1) right of the first line.
    """

    lines: list[str]
    colour: tuple[int, int, int] = (255, 255, 255)
    side: str = "right"
    bar: float | None = None


@dataclass
class PlacedLabel:
    """A :class:`Label` laid out on the image: everything :func:`render_label` draws lies in ``box``."""

    label: Label
    face: int  #: index of the face it belongs to (-1: none)
    lines: list[str]  #: the lines drawn (trailing lines are dropped when the image is too small)
    box: Box  #: backing box, image pixels, exclusive ends
    font_scale: float
    thickness: int
    origins: list[tuple[int, int]]  #: baseline-left point of each line
    bar_box: Box | None = None
    text_boxes: list[Box] = field(default_factory=list)  #: each line's text extent (from getTextSize)


def _measure(lines: list[str], bar: bool, scale: float, thick: int):
    """Block size and the offsets of its parts relative to the block's top-left corner.

    A line's text box is getTextSize's box grown by the margin that glyph ink can stand out of it (the
    stroke width; brackets above the ascent in the Hershey fonts; a 'j' left of the origin)."""
    (_, asc), desc = cv2.getTextSize("Hg", FONT, scale, thick)
    asc = max(asc, 1)
    desc = max(desc, 1) + thick // 2 + 1
    m = max(1, round(0.2 * asc)) + thick // 2  # ink margin around getTextSize's box
    pad = max(1, round(0.15 * asc))  # block border around the text boxes
    lead = max(1, round(0.1 * asc))  # between two lines' text boxes
    line_h = m + asc + desc
    widths = [cv2.getTextSize(t, FONT, scale, thick)[0][0] + 2 * m for t in lines]
    tops = [pad + i * (line_h + lead) for i in range(len(lines))]
    text = [(pad, top, pad + tw, top + line_h) for top, tw in zip(tops, widths)]
    origins = [(pad + m, top + m + asc) for top in tops]
    bar_box = None
    right = [pad + tw for tw in widths]
    if bar and lines:
        bar_w, bar_h = max(6, round(3.5 * asc)), max(3, round(0.8 * asc))
        bx0 = pad + widths[0] + m
        by0 = origins[0][1] - asc + (asc - bar_h) // 2
        bar_box = (bx0, by0, bx0 + bar_w, by0 + bar_h)
        right[0] = bar_box[2]
    w = max(right) + pad
    h = tops[-1] + line_h + pad
    return w, h, origins, text, bar_box


def _fit(label: Label, style: Style, width: int, height: int):
    """Lines, scale, thickness and measurement of ``label`` shrunk (trailing lines dropped, then the font
    scaled down, to half the legibility floor at most) until the block fits a ``width`` x ``height``
    image; ``None`` when it cannot."""
    lines = list(label.lines)
    scale = style.font_scale
    while True:
        thick = text_thickness(scale)
        m = _measure(lines, label.bar is not None, scale, thick)
        w, h = m[0], m[1]
        if h > height and len(lines) > 1:
            lines = lines[:-1]
            continue
        if w <= width and h <= height:
            return lines, scale, thick, m
        if scale <= 0.5 * MIN_FONT_SCALE:
            return None
        scale = max(0.5 * MIN_FONT_SCALE, scale * max(0.5, min(0.97, width / w, height / h)))


def _overlap(a: Box, b: Box) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _overlap_area(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Total overlap area of each box in ``a`` (K, 4) with all boxes in ``b`` (M, 4)."""
    if len(b) == 0:
        return np.zeros(len(a), np.int64)
    ix = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    iy = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    return (np.clip(ix, 0, None) * np.clip(iy, 0, None)).sum(1)


SIDES = {
    "right": ("right", "left", "bottom", "top"),
    "left": ("left", "right", "bottom", "top"),
    "top": ("top", "bottom", "right", "left"),
    "bottom": ("bottom", "top", "right", "left"),
}


def _candidates(face: Box, w: int, h: int, gap: int, side: str) -> list[tuple[int, int]]:
    """Top-left corners for a ``w`` x ``h`` block around ``face``: preferred side first, then the other
    sides, then inside the face box's corners."""
    x0, y0, x1, y1 = face
    pos = {
        "right": [(x1 + gap, y0), (x1 + gap, y1 - h), (x1 + gap, (y0 + y1 - h) // 2)],
        "left": [(x0 - gap - w, y0), (x0 - gap - w, y1 - h), (x0 - gap - w, (y0 + y1 - h) // 2)],
        "top": [(x0, y0 - gap - h), (x1 - w, y0 - gap - h), ((x0 + x1 - w) // 2, y0 - gap - h)],
        "bottom": [(x0, y1 + gap), (x1 - w, y1 + gap), ((x0 + x1 - w) // 2, y1 + gap)],
    }
    out = [p for s in SIDES.get(side, SIDES["right"]) for p in pos[s]]
    inner = {"right": [(x1 - gap - w, y0 + gap), (x1 - gap - w, y1 - gap - h)],
             "left": [(x0 + gap, y0 + gap), (x0 + gap, y1 - gap - h)],
             "top": [(x0 + gap, y0 + gap), (x1 - gap - w, y0 + gap)],
             "bottom": [(x0 + gap, y1 - gap - h), (x1 - gap - w, y1 - gap - h)]}
    out += inner.get(side, inner["right"])
    out += [(x0 + gap, y0 + gap), (x1 - gap - w, y0 + gap), (x0 + gap, y1 - gap - h), (x1 - gap - w, y1 - gap - h)]
    return out


def face_box(bbox: Sequence[float], shape: tuple[int, ...]) -> Box:
    """A face's box in whole pixels, clipped to an image of ``shape``."""
    h, w = shape[:2]
    x0, y0, x1, y1 = (float(v) for v in bbox[:4])
    return (int(np.clip(math.floor(x0), 0, w)), int(np.clip(math.floor(y0), 0, h)),
            int(np.clip(math.ceil(x1), 0, w)), int(np.clip(math.ceil(y1), 0, h)))


def place_labels(shape: tuple[int, ...], boxes: Sequence[Box], styles: Sequence[Style],
                 labels: Sequence[tuple[int, Label]], avoid: Sequence[Box] = ()) -> list[PlacedLabel]:
    """Lay out ``labels`` (``(face index, Label)`` pairs, placed greedily in this order) on an image of
    ``shape`` whose faces have ``boxes`` and ``styles``.

    Every block lies inside the image (trailing lines dropped, then the font shrunk, when the image is too
    small for it; left out when even that fails). Candidate spots are the block's preferred side of its
    face, the other sides, inside the face box's corners, and each of those slid flush against any nearby
    obstacle; it takes the one with the least overlap with, in this order: other faces' boxes and
    ``avoid`` (e.g. a HUD), blocks placed before, its own face box; ties go to the preferred spot.
    """
    height, width = shape[:2]
    placed: list[PlacedLabel] = []
    for fi, label in labels:
        if not label.lines:
            continue
        style = styles[fi]
        fitted = _fit(label, style, width, height)
        if fitted is None:  # the image is too small for any legible text
            continue
        lines, scale, thick, (w, h, origins, texts, bar_box) = fitted
        own = boxes[fi]
        hard = np.array([b for j, b in enumerate(boxes) if j != fi] + list(avoid), np.int64).reshape(-1, 4)
        soft = np.array([p.box for p in placed], np.int64).reshape(-1, 4)
        base = np.array(_candidates(own, w, h, style.gap, label.side), np.int64)
        # also every spot flush against an obstacle near the face (slides a block off what it would cover)
        near_box = (own[0] - w - 2 * style.gap, own[1] - h - 2 * style.gap, own[2] + w + 2 * style.gap,
                    own[3] + h + 2 * style.gap)
        near = [b for b in np.concatenate([hard, soft, [own]]) if _overlap(tuple(b), near_box) > 0]
        cands, rank = [base], [np.arange(len(base))]
        for b in near:
            for dx, dy in ((None, b[3]), (None, b[1] - h), (b[2], None), (b[0] - w, None)):
                c = base.copy()
                if dx is not None:
                    c[:, 0] = dx
                if dy is not None:
                    c[:, 1] = dy
                cands.append(c)
                rank.append(np.arange(len(base)))
        xy = np.concatenate(cands)
        xy[:, 0] = np.clip(xy[:, 0], 0, max(width - w, 0))
        xy[:, 1] = np.clip(xy[:, 1], 0, max(height - h, 0))
        home = np.tile(np.clip(base, 0, [max(width - w, 0), max(height - h, 0)]), (len(cands), 1))
        cand_boxes = np.concatenate([xy, xy + (w, h)], 1)
        own_cover = _overlap_area(cand_boxes, np.array([own])) * 5 // (w * h)  # own face: in fifths of the block
        key = (np.abs(xy - home).sum(1), np.concatenate(rank), own_cover, _overlap_area(cand_boxes, soft),
               _overlap_area(cand_boxes, hard))
        # lexsort's last key is the primary one: least cover of other faces / avoided boxes, then of placed
        # blocks, then of the own face (in fifths); then the preferred spot, then the smallest slide
        best = tuple(int(v) for v in cand_boxes[int(np.lexsort(key)[0])])
        x, y = best[:2]
        placed.append(PlacedLabel(
            label=label, face=fi, lines=lines, box=best, font_scale=scale, thickness=thick,
            origins=[(x + ox, y + oy) for ox, oy in origins],
            bar_box=None if bar_box is None else (x + bar_box[0], y + bar_box[1], x + bar_box[2], y + bar_box[3]),
            text_boxes=[(x + a, y + b, x + c, y + d) for a, b, c, d in texts]))
    return placed


def place_at(label: Label, x: int, y: int, font_scale: float, shape: tuple[int, ...]) -> PlacedLabel | None:
    """``label`` with its top-left corner at (x, y), moved and shrunk to stay inside an image of ``shape``
    (``None`` when the image is too small for it)."""
    style = Style.for_size(1.0)
    style = Style(style.size, font_scale, text_thickness(font_scale), style.line, style.point_radius, 0)
    placed = place_labels(shape, [(x, y, x, y)], [style], [(0, Label(label.lines, label.colour, "bottom", label.bar))])
    return placed[0] if placed else None


def render_label(canvas: np.ndarray, p: PlacedLabel) -> None:
    """Draw a placed block: darkened backing, each line once at its measured thickness, optional bar."""
    x0, y0, x1, y1 = p.box
    canvas[y0:y1, x0:x1] = (canvas[y0:y1, x0:x1] * BACKING).astype(np.uint8)
    colour = tuple(int(c) for c in p.label.colour)
    for text, org in zip(p.lines, p.origins):
        cv2.putText(canvas, text, org, FONT, p.font_scale, colour, p.thickness, cv2.LINE_AA)
    if p.bar_box is not None and p.label.bar is not None:
        bx0, by0, bx1, by1 = p.bar_box
        fill = bx0 + int(round((bx1 - bx0) * float(np.clip(p.label.bar, 0.0, 1.0))))
        if fill > bx0:
            canvas[by0:by1, bx0:fill] = colour
        cv2.rectangle(canvas, (bx0, by0), (bx1 - 1, by1 - 1), colour, 1)


# ---- the overlay ---------------------------------------------------------------------------------
def _check(canvas: np.ndarray, faces: list, layers: Iterable[str] | None) -> set[str]:
    from .api import Face

    layers = set(LAYERS if layers is None else layers)
    unknown = sorted(layers - set(LAYERS))
    if unknown:
        raise FaceAnalysisError(f"unknown draw layer(s) {unknown}; choose from {list(LAYERS)}")
    h, w = canvas.shape[:2]
    for f in faces:
        if not isinstance(f, Face):
            raise FaceAnalysisError(f"draw needs Face objects (from FaceAnalyzer.analyze), got {type(f).__name__}")
        pm = f.parsing
        if pm is not None and pm.mask.size and (pm.box[2] > w or pm.box[3] > h or pm.box[0] < 0 or pm.box[1] < 0):
            raise FaceAnalysisError(f"a face's parsing mask {pm.box} lies outside this {w}x{h} image: "
                                    "draw faces on the image they were found in")
    return layers


def _layout(shape, faces, layers: set[str], labels, avoid) -> list[PlacedLabel]:
    styles = [face_style(f) for f in faces]
    boxes = [face_box(f.bbox, shape) for f in faces]
    blocks: list[tuple[int, Label]] = []
    for i, f in enumerate(faces):
        for name, task in TASKS.items():
            if name in layers:
                blocks += [(i, lab) for lab in task.labels(f, styles[i])]
        if labels is not None and i < len(labels) and labels[i]:
            blocks.append((i, Label([labels[i]], CAPTION_COLOUR, "bottom")))
    return place_labels(shape, boxes, styles, blocks, avoid)


def layout(image_or_shape: ImageInput | tuple[int, ...], faces: Iterable["Face"], layers: Iterable[str] | None = None,
           labels: list[str] | None = None, avoid: Sequence[Box] = ()) -> list[PlacedLabel]:
    """The text blocks :func:`draw` would draw (same arguments), with their boxes in image pixels."""
    if isinstance(image_or_shape, tuple):
        shape = image_or_shape
        canvas = np.zeros((1, 1, 3), np.uint8)
    else:
        canvas = load_image(image_or_shape)
        shape = canvas.shape
    faces = list(faces)
    layer_set = _check(np.broadcast_to(canvas, tuple(shape[:2]) + (3,)), faces, layers)
    return _layout(shape, faces, layer_set, labels, avoid)


def draw(image: ImageInput, faces: Iterable["Face"], layers: Iterable[str] | None = None,
         labels: list[str] | None = None, avoid: Sequence[Box] = ()) -> np.ndarray:
    """A copy of ``image`` (RGB uint8) with boxes and each task's overlay.

    ``layers`` picks what to draw (default all of :data:`LAYERS`); ``labels`` adds a caption per face
    (e.g. a track id or a gallery name); text keeps off the ``avoid`` boxes (x0, y0, x1, y1) when it can.
    """
    canvas = load_image(image)
    faces = list(faces)
    layer_set = _check(canvas, faces, layers)
    styles = [face_style(f) for f in faces]
    # parsing first so other layers are drawn on top of it
    order = ["parsing"] + [n for n in TASKS if n != "parsing"]
    for name in order:
        if name in layer_set:
            for f, s in zip(faces, styles):
                TASKS[name].draw(canvas, f, s)
    if "box" in layer_set:
        for f, s in zip(faces, styles):
            x0, y0, x1, y1 = (int(round(v)) for v in f.bbox)
            cv2.rectangle(canvas, (x0, y0), (x1, y1), BOX_COLOUR, s.line, cv2.LINE_AA)
    for p in _layout(canvas.shape, faces, layer_set, labels, avoid):
        render_label(canvas, p)
    return canvas
