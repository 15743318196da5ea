"""Two-way transformer (as in segment-anything): task tokens and face tokens attend to each other."""
from __future__ import annotations

import torch
from torch import nn

from .common import MLP


class Attention(nn.Module):
    """Multi-head attention with separate q/k/v inputs (plain matmuls: exports everywhere)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.scale = (dim // num_heads) ** -0.5

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.q(q)), self._split(self.k(k)), self._split(self.v(v))
        attn = (q * self.scale) @ k.transpose(-2, -1)
        out = attn.softmax(dim=-1) @ v
        b, h, n, d = out.shape
        return self.out(out.transpose(1, 2).reshape(b, n, h * d))


class TwoWayBlock(nn.Module):
    """Token self-attention, tokens->face cross-attention, token MLP, face->tokens cross-attention."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.self_attn = Attention(dim, num_heads)
        self.cross_t2i = Attention(dim, num_heads)
        self.mlp = MLP(dim, mlp_dim, dim)
        self.cross_i2t = Attention(dim, num_heads)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(4))

    def forward(self, tokens, image, token_pe, image_pe):
        q = tokens + token_pe
        tokens = self.norms[0](tokens + self.self_attn(q, q, tokens))
        q = tokens + token_pe
        tokens = self.norms[1](tokens + self.cross_t2i(q, image + image_pe, image))
        tokens = self.norms[2](tokens + self.mlp(tokens))
        q = tokens + token_pe
        image = self.norms[3](image + self.cross_i2t(image + image_pe, q, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    """``depth`` two-way blocks and a final token->face attention."""

    def __init__(self, *, dim: int, depth: int, num_heads: int, mlp_dim: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(TwoWayBlock(dim, num_heads, mlp_dim) for _ in range(depth))
        self.final_attn = Attention(dim, num_heads)
        self.final_norm = nn.LayerNorm(dim)

    def forward(self, tokens, image, token_pe, image_pe):
        for block in self.blocks:
            tokens, image = block(tokens, image, token_pe, image_pe)
        q = tokens + token_pe
        tokens = self.final_norm(tokens + self.final_attn(q, image + image_pe, image))
        return tokens, image
