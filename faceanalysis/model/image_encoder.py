"""Image encoder: a small conv stem (stride 16, keeps stride 2/4/8 skips) and a timm ViT.

The stem turns an ``S x S`` crop into an ``S/16 x S/16`` grid; timm's ``VisionTransformer`` with a
1x1 patch embedding reads that grid as tokens (``patch_size=1``), so position embeddings, blocks and
norm are timm's. The skips feed the pixel decoder that spatial heads (parsing, landmarks) read.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import _compat  # noqa: F401  (must precede timm)
from timm.models.vision_transformer import VisionTransformer

from .common import conv_bn_act


class ConvStem(nn.Module):
    """Four stride-2 stages; returns features at strides 2, 4, 8 and 16."""

    def __init__(self, *, channels: tuple[int, int, int, int]) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        self.s2 = conv_bn_act(3, c1, 2)
        self.s4 = nn.Sequential(conv_bn_act(c1, c2, 2), conv_bn_act(c2, c2))
        self.s8 = nn.Sequential(conv_bn_act(c2, c3, 2), conv_bn_act(c3, c3))
        self.s16 = conv_bn_act(c3, c4, 2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f2 = self.s2(x)
        f4 = self.s4(f2)
        f8 = self.s8(f4)
        return [f2, f4, f8, self.s16(f8)]


class ImageEncoder(nn.Module):
    """Conv stem + ViT. Returns face tokens ``(B, N, D)`` and the stem skips."""

    def __init__(
        self,
        *,
        input_size: int,
        stem_channels: tuple[int, int, int, int],
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        drop_path_rate: float,
    ) -> None:
        super().__init__()
        if input_size % 16:
            raise ValueError(f"input_size must be a multiple of 16, got {input_size}")
        self.grid = input_size // 16
        self.stem = ConvStem(channels=stem_channels)
        self.vit = VisionTransformer(
            img_size=self.grid,
            patch_size=1,
            in_chans=stem_channels[-1],
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            class_token=False,
            global_pool="",
            num_classes=0,
            drop_path_rate=drop_path_rate,
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        feats = self.stem(x)
        tokens = self.vit.forward_features(feats[-1])
        return tokens, feats[:-1]

    def trunk(self, x: torch.Tensor, upto: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The stem and the first ``upto`` ViT blocks: tokens ``(B, N, D)`` before block ``upto``, and the skips.
        ``tail(trunk(x, k)[0], k)`` computes exactly what :meth:`forward` does (same operations, same order)."""
        feats = self.stem(x)
        vit = self.vit
        t = vit.norm_pre(vit.patch_drop(vit._pos_embed(vit.patch_embed(feats[-1]))))
        return vit.blocks[:upto](t), feats[:-1]

    def tail(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """ViT blocks ``start..`` and the final norm on the tokens :meth:`trunk` returned."""
        return self.vit.norm(self.vit.blocks[start:](tokens))
