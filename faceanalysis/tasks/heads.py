"""Task heads (torch modules). Imported only when a model is built, so the tasks' post-processing
(``Task.to_face``) and the ONNX runtime work without torch."""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..model.common import MLP
from .base import HeadInputs


class MapHead(nn.Module):
    """Spatial maps from tokens: each token's MLP output (a hypernetwork vector) dotted with the pixel
    features, as in segment-anything's mask decoder. Used by parsing (one map per class) and landmarks
    (one heatmap per point)."""

    def __init__(self, dim: int, pixel_dim: int) -> None:
        super().__init__()
        self.hyper = MLP(dim, dim, pixel_dim, num_layers=3)

    def forward(self, x: HeadInputs) -> torch.Tensor:
        w = self.hyper(x.tokens)  # (B, K, C)
        b, c, h, wd = x.pixels.shape
        return (w @ x.pixels.reshape(b, c, h * wd)).reshape(b, -1, h, wd)


class ParsingHead(MapHead):
    """The parsing map head; with ``ModelConfig.parsing_field`` > 1 it also owns the
    :class:`~faceanalysis.model.parsing_context.ParsingContext` that widens the maps beyond the crop (its
    parameters are ``context.*``, so weights without it load unchanged)."""

    def __init__(self, cfg: ModelConfig, num_classes: int) -> None:
        super().__init__(cfg.embed_dim, cfg.pixel_dim)
        self.context = None
        if cfg.parsing_field != 1.0:
            from ..model.parsing_context import ParsingContext

            self.context = ParsingContext(num_classes=num_classes, embed_dim=cfg.embed_dim,
                                          map_size=cfg.input_size // cfg.parsing_stride,
                                          grid=cfg.input_size // 16, field=cfg.parsing_field)


class VectorHead(nn.Module):
    """A vector from a task's single token (optionally with mean-pooled face tokens)."""

    def __init__(self, dim: int, out_dim: int, pool_image: bool = False) -> None:
        super().__init__()
        self.pool_image = pool_image
        self.mlp = MLP(dim * (2 if pool_image else 1), dim * 2, out_dim)

    def forward(self, x: HeadInputs) -> torch.Tensor:
        t = x.tokens[:, 0]
        if self.pool_image:
            t = torch.cat([t, x.image.mean(1)], dim=1)
        return self.mlp(t)
