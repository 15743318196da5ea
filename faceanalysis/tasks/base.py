"""The task interface and registry.

A task owns everything about itself: how many decoder tokens it gets, its head, how its raw head
outputs become user-facing values (inside the exported graph), its loss, how its labels move under
the alignment warp and a horizontal flip, how its outputs map back to the source image, and how it
draws. The model, trainer, evaluator, exporter and demo loop over :data:`TASKS`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .._lazy import torch  # imported on first use: the ONNX runtime needs no torch
from ..config import ModelConfig, PreprocessConfig


@dataclass
class HeadInputs:
    """What every head reads after the two-way decoder."""

    tokens: torch.Tensor  # (B, num_tokens, D): this task's tokens
    image: torch.Tensor  # (B, N, D): face tokens
    pixels: torch.Tensor  # (B, C, S/2, S/2): pixel features
    fine_pixels: torch.Tensor | None = None  # (B, C, S, S): the parsing refiner's features (parsing_stride 1)
    #: training only: the rows ``fine_pixels`` were computed for (then it is (len(fine_rows), C, S, S))
    fine_rows: torch.Tensor | None = None


@dataclass
class Geometry:
    """How one training sample was cropped: ``matrix`` maps source pixels to crop pixels (before the
    optional horizontal ``flip`` of the crop); ``size`` is the crop side."""

    matrix: np.ndarray
    flip: bool
    size: int


class Task:
    """Base class; subclasses set the class attributes and override what they need."""

    name: ClassVar[str]
    num_tokens: ClassVar[int] = 1
    #: exported output name -> (shape after batch, meaning)
    outputs: ClassVar[dict[str, tuple[str, str]]] = {}
    #: the names in ``outputs`` that only some model configs give (see :meth:`output_names`)
    optional_outputs: ClassVar[frozenset[str]] = frozenset()

    def output_names(self, cfg: ModelConfig) -> list[str]:
        """The outputs of this task that a model built from ``cfg`` gives, in ``outputs`` order."""
        return list(self.outputs)

    def for_model(self, cfg: ModelConfig) -> "Task":
        """This task set up for a model built from ``cfg`` (training targets that depend on the architecture,
        e.g. the parsing field); the default needs nothing and returns ``self``."""
        return self

    def build_head(self, cfg: ModelConfig) -> torch.nn.Module:
        raise NotImplementedError

    def head_forward(self, head: torch.nn.Module, x: HeadInputs) -> dict[str, torch.Tensor]:
        """Run this task's head; returns raw outputs by name."""
        return {self.name: head(x)}

    def activate(self, raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Raw head outputs -> the exported, user-facing tensors (probabilities, degrees, pixels)."""
        return raw

    # ---- training ---------------------------------------------------------------------------
    def fine_rows(self, target: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Training only: the batch rows (int64 indices) whose full-resolution maps this task's loss needs, or
        ``None`` when the task needs none (the model then skips its full-resolution path for the other rows)."""
        return None

    def fit(self, sources: dict[str, Any]) -> "Task":
        """This task set up for training on ``sources`` (dataset name -> decoded train split), e.g.
        class weights or a teacher bank taken from the training labels. Returns a copy; the registry's
        instance stays untouched. The default needs nothing and returns ``self``."""
        return self

    def empty_target(self, size: int) -> dict[str, np.ndarray]:
        """A target with every value missing (NaN, or 255 for masks): masked out of the loss."""
        raise NotImplementedError

    def warp_target(self, target: dict[str, np.ndarray], geo: Geometry) -> dict[str, np.ndarray]:
        """Move a source-image target into the crop (and flip it when ``geo.flip``)."""
        return target

    def loss(self, raw: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """Loss over the labelled samples of the batch, ``None`` when none is labelled."""
        raise NotImplementedError

    def metrics(self, pred: dict[str, np.ndarray], target: dict[str, np.ndarray]) -> dict[str, float]:
        """Validation metrics over a whole set, both in the crop frame (labelled rows only)."""
        return {}

    # ---- inference --------------------------------------------------------------------------
    def unflip(self, out: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
        """This task's exported outputs for horizontally mirrored crops (side ``size``), mapped into the frame
        of the unmirrored crops, batch first. The default suits outputs a mirror does not change
        (probabilities, ages, embeddings)."""
        return out

    def combine(self, views: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """One output from several views of the same crops, all in one frame (see :meth:`unflip`): the mean."""
        return {k: np.mean([v[k] for v in views], axis=0).astype(views[0][k].dtype) for k in views[0]}

    def to_face(self, out: dict[str, np.ndarray], matrix: np.ndarray, image_shape: tuple[int, int],
                pre: PreprocessConfig) -> dict[str, Any]:
        """One face's outputs (crop frame) -> :class:`~faceanalysis.Face` fields (image frame)."""
        raise NotImplementedError

    def draw(self, canvas: np.ndarray, face: Any, style: Any = None) -> None:
        """Draw this task's markers for ``face`` onto ``canvas`` (RGB uint8, in place), sized by ``style``
        (a :class:`faceanalysis.draw.Style`, from the face's size when ``None``). Text goes in :meth:`labels`."""

    def labels(self, face: Any, style: Any = None) -> list:
        """Text blocks (:class:`faceanalysis.draw.Label`) to show next to ``face``; :func:`faceanalysis.draw.draw`
        lays them out (inside the image, off other faces) and renders them."""
        return []


def finite_rows(x: torch.Tensor) -> torch.Tensor:
    """Boolean ``(B,)``: rows whose values are all finite."""
    return torch.isfinite(x.reshape(x.shape[0], -1)).all(1)


def MapHead(dim: int, pixel_dim: int) -> "torch.nn.Module":  # noqa: N802 - stands for the class
    """:class:`faceanalysis.tasks.heads.MapHead` (spatial maps: token vectors dotted with pixel features);
    torch is imported here, on first use, not when the tasks are imported."""
    from .heads import MapHead as cls

    return cls(dim, pixel_dim)


def ParsingHead(cfg: ModelConfig, num_classes: int) -> "torch.nn.Module":  # noqa: N802
    """:class:`faceanalysis.tasks.heads.ParsingHead` (a map head, plus the parsing context ring when
    ``cfg.parsing_field`` > 1); torch imported on first use."""
    from .heads import ParsingHead as cls

    return cls(cfg, num_classes)


def VectorHead(dim: int, out_dim: int, pool_image: bool = False) -> "torch.nn.Module":  # noqa: N802
    """:class:`faceanalysis.tasks.heads.VectorHead` (an MLP on the task's token); torch imported on first use."""
    from .heads import VectorHead as cls

    return cls(dim, out_dim, pool_image)


def masked_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor | None:
    """Weighted mean, ``None`` when all weights are zero."""
    total = weights.sum()
    if total <= 0:
        return None
    return (values * weights).sum() / total


def weighted_terms(*terms: tuple[float, torch.Tensor | None]) -> torch.Tensor | None:
    """``sum(weight * term)`` over the ``(weight, term)`` pairs whose term is not ``None`` (a loss term with no
    labelled sample in the batch), in the order given; ``None`` when every term is."""
    present = [w * t for w, t in terms if t is not None]
    return None if not present else sum(present[1:], present[0])
