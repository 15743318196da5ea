"""Parsing refiner: the stride-2 pixel features lifted to the crop's full resolution with the image's own edges.

The shared pixel features are at half the crop resolution (64x64 for a 128 px crop), where eyes and brows are 2-4
pixels tall; ground-truth masks taken through such a map lose about 8 points of mean F1 on CelebAMask (82.6 vs
90.5 %, an oracle run in session 8). The refiner upsamples the features bilinearly and adds a residual computed
from them and a small conv on the input crop (guided upsampling, in the spirit of the guided filter, He et al.,
ECCV 2010, learned end to end). Its last conv starts at zero, so a model grown from stride-2 weights starts
with exactly their parsing maps, bilinearly upsampled.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .common import conv_bn_act


class ParsingRefiner(nn.Module):
    """``(B, C, S/2, S/2)`` pixel features + ``(B, 3, S, S)`` normalised crop -> ``(B, C, S, S)`` features."""

    def __init__(self, *, pixel_dim: int, image_dim: int = 16, hidden_dim: int = 24) -> None:
        super().__init__()
        self.image = conv_bn_act(3, image_dim)
        self.fuse = conv_bn_act(pixel_dim + image_dim, hidden_dim, kernel=1)
        self.spatial = nn.Sequential(nn.Conv2d(hidden_dim, hidden_dim, 3, 1, 1, groups=hidden_dim, bias=False),
                                     nn.BatchNorm2d(hidden_dim), nn.GELU())
        self.out = nn.Conv2d(hidden_dim, pixel_dim, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, pixels: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(pixels, size=image.shape[-2:], mode="bilinear", align_corners=False)
        h = self.fuse(torch.cat([up, self.image(image)], dim=1))
        return up + self.out(self.spatial(h))
