"""Pixel decoder: face tokens back to a stride-2 feature map, with the conv stem's skips (FPN-style)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .common import conv_bn_act


class PixelDecoder(nn.Module):
    """Upsample ``(B, D, S/16, S/16)`` to ``(B, out_dim, S/2, S/2)`` through the s8, s4, s2 skips."""

    def __init__(self, *, embed_dim: int, skip_channels: tuple[int, int, int], out_dim: int) -> None:
        super().__init__()
        c2, c4, c8 = skip_channels
        w8, w4, w2 = out_dim * 3, out_dim * 2, out_dim
        self.top = nn.Conv2d(embed_dim, w8, 1)
        self.lat8, self.lat4, self.lat2 = nn.Conv2d(c8, w8, 1), nn.Conv2d(c4, w4, 1), nn.Conv2d(c2, w2, 1)
        self.fuse8 = conv_bn_act(w8, w4)
        self.fuse4 = conv_bn_act(w4, w2)
        self.fuse2 = conv_bn_act(w2, w2)
        self.out = nn.Conv2d(w2, out_dim, 1)

    def forward(self, grid: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        f2, f4, f8 = skips
        x = F.interpolate(self.top(grid), scale_factor=2.0, mode="bilinear", align_corners=False)
        x = self.fuse8(x + self.lat8(f8))
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = self.fuse4(x + self.lat4(f4))
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = self.fuse2(x + self.lat2(f2))
        return self.out(x)
