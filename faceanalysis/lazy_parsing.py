"""A face's parsing mask mapped back to the image on first use.

Mapping the 19 parsing logit maps back onto the image (a bilinear warp of every class over the face's region,
then the arg-max) is the largest cost of ``analyze`` after detection and the model; callers that never look at
the mask (identity, landmarks, a video overlay of something else) should not pay it. :class:`LazyParsingMask`
is a :class:`~faceanalysis.tasks.parsing.ParsingMask` whose ``mask`` and ``box`` are computed by the parsing
task's own ``to_face`` the first time either is read (then the logits are dropped), so every reader -- ``mask``,
``box``, ``full()``, ``area()``, ``Face.to_dict``, drawing -- sees exactly what the eager path gives.
"""
from __future__ import annotations

import threading
from typing import Any

import numpy as np

from .config import PreprocessConfig
from .tasks.parsing import CLASSES, ParsingMask, parsing_field


class LazyParsingMask(ParsingMask):
    """:class:`ParsingMask` computed on first access of ``mask`` or ``box`` (thread-safe, computed once)."""

    def __init__(self, task: Any, out: dict[str, np.ndarray], matrix: np.ndarray, image_shape: tuple[int, int],
                 pre: PreprocessConfig) -> None:  # noqa: D107 - the dataclass __init__ is replaced on purpose
        maps = {k: out[k] for k in ("parsing", "parsing_wide") if k in out}
        self._args: tuple | None = (task, maps, matrix, tuple(image_shape), pre)
        self._value: ParsingMask | None = None
        self._lock = threading.Lock()
        self.class_names = CLASSES
        self.field = parsing_field(maps)

    def _resolve(self) -> ParsingMask:
        if self._value is None:
            with self._lock:
                if self._value is None:
                    task, out, matrix, shape, pre = self._args
                    self._value = task.to_face(out, matrix, shape, pre)["parsing"]
                    self._args = None  # the logits are not needed any more
        return self._value

    @property  # type: ignore[override]
    def mask(self) -> np.ndarray:
        return self._resolve().mask

    @mask.setter
    def mask(self, value: np.ndarray) -> None:
        self._resolve().mask = value

    @property  # type: ignore[override]
    def box(self) -> tuple[int, int, int, int]:
        return self._resolve().box

    @box.setter
    def box(self, value: tuple[int, int, int, int]) -> None:
        self._resolve().box = value

    @property
    def computed(self) -> bool:
        """Whether the mask has been mapped back already."""
        return self._value is not None

    def resolved(self) -> ParsingMask:
        """The plain :class:`ParsingMask` (computed now if needed)."""
        return self._resolve()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ParsingMask):
            return NotImplemented
        return (np.array_equal(self.mask, other.mask) and tuple(self.box) == tuple(other.box)
                and tuple(self.class_names) == tuple(other.class_names))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        if self._value is None:
            return "LazyParsingMask(<not mapped back yet>)"
        return f"LazyParsingMask(box={self.box}, mask shape={self.mask.shape})"

    def __reduce__(self):  # pickle / copy as the plain mask
        v = self._resolve()
        return (ParsingMask, (v.mask, v.box, tuple(v.class_names)))
