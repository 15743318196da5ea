"""Overlay every task's result on an image (each task draws itself)."""
from __future__ import annotations

from typing import Iterable

import cv2
import numpy as np

from .api import Face
from .errors import FaceAnalysisError
from .preprocess import ImageInput, load_image
from .tasks import TASKS

LAYERS = ("box",) + tuple(TASKS)


def draw(image: ImageInput, faces: Iterable[Face], layers: Iterable[str] | None = None,
         labels: list[str] | None = None) -> np.ndarray:
    """A copy of ``image`` (RGB uint8) with boxes and each task's overlay.

    ``layers`` picks what to draw (default all of :data:`LAYERS`); ``labels`` adds a caption per face
    (e.g. a track id or a gallery name).
    """
    canvas = load_image(image)
    layers = set(LAYERS if layers is None else layers)
    unknown = sorted(layers - set(LAYERS))
    if unknown:
        raise FaceAnalysisError(f"unknown draw layer(s) {unknown}; choose from {list(LAYERS)}")
    faces = list(faces)
    h, w = canvas.shape[:2]
    for f in faces:
        if not isinstance(f, Face):
            raise FaceAnalysisError(f"draw needs Face objects (from FaceAnalyzer.analyze), got {type(f).__name__}")
        pm = f.parsing
        if pm is not None and pm.mask.size and (pm.box[2] > w or pm.box[3] > h or pm.box[0] < 0 or pm.box[1] < 0):
            raise FaceAnalysisError(f"a face's parsing mask {pm.box} lies outside this {w}x{h} image: "
                                    "draw faces on the image they were found in")
    # parsing first so other layers are drawn on top of it
    order = ["parsing"] + [n for n in TASKS if n != "parsing"]
    for name in order:
        if name in layers:
            for f in faces:
                TASKS[name].draw(canvas, f)
    thick = max(1, round(max(canvas.shape[:2]) / 500))
    for i, f in enumerate(faces):
        x0, y0, x1, y1 = (int(round(v)) for v in f.bbox)
        if "box" in layers:
            cv2.rectangle(canvas, (x0, y0), (x1, y1), (0, 200, 255), thick, cv2.LINE_AA)
        if labels is not None and i < len(labels) and labels[i]:
            from .tasks.attributes import put_lines

            put_lines(canvas, [labels[i]], (x0, y1 + 2), colour=(120, 255, 120))
    return canvas
