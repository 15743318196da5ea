"""Parsing context: coarse parsing logits for a ring around the aligned crop, beyond what the model sees.

The full-image parsing metric (CelebAMask-HQ: hair, neck and cloth run to the photo's edges) scores everything
outside the aligned crop as a miss when the maps stop at the crop's border (issue 10: "a field of view that covers
what the full-image metric counts"). This module extends the parsing maps to a square ``field`` times the crop's
side, centred on it: the crop's own logits are pooled to a coarse grid (``cell`` map pixels per cell), joined by the
face tokens (what the whole face says: hair length, clothing), zero-padded by the ring and passed through a few
dilated 3x3 convs whose receptive field spans the ring. The convs predict a residual on the crop's edge logits
replicated outward, and their last layer starts at zero, so an untrained module extends each edge class straight
out (the one-pixel padding ``ParsingTask.to_face`` always applied, carried across the ring). Inside the crop the
output is exactly the input maps. Cost: 24 M MACs for a 128 px crop (0.477 -> 0.50 GMACs).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


#: map pixels per coarse cell of the ring (the crop's logits are pooled by this much)
CELL = 4


def ring_size(map_size: int, field: float, cell: int = CELL) -> int:
    """Map pixels of ring on each side for a ``map_size`` map widened to ``field`` x its side; raises ``ValueError``
    unless that is a whole number of ``cell``-pixel cells."""
    ring = (field - 1.0) / 2.0 * map_size
    if ring < 0 or abs(ring - round(ring)) > 1e-6 or round(ring) % cell:
        raise ValueError(f"parsing_field {field}: the ring ((field - 1) / 2 x {map_size} map pixels = {ring:g}) must be "
                         f"a non-negative multiple of {cell}")
    return int(round(ring))


class ParsingContext(nn.Module):
    """``(B, K, m, m)`` crop logits + ``(B, N, D)`` face tokens -> ``(B, K, M, M)`` logits over ``field`` x the crop
    (``M = field * m``), whose centre ``m x m`` is the input unchanged."""

    def __init__(self, *, num_classes: int, embed_dim: int, map_size: int, grid: int, field: float, hidden: int = 32,
                 cell: int = CELL) -> None:
        super().__init__()
        self.cell, self.grid = cell, grid  # grid: the face tokens' side (S / 16)
        self.ring = ring_size(map_size, field, cell)
        self.ring_cells = self.ring // cell
        coarse = map_size // cell
        self.tokens = nn.Conv2d(embed_dim, hidden, 1)
        self.inp = nn.Conv2d(num_classes + hidden + 1, hidden, 3, padding=1)
        self.body = nn.ModuleList([nn.Conv2d(hidden, hidden, 3, padding=d, dilation=d) for d in (2, 4, 1)])
        self.out = nn.Conv2d(hidden, num_classes, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        r = self.ring_cells
        # edge replication as a constant gather (exports to ONNX / TFLite / CoreML as a plain Gather)
        self.register_buffer("edge_index", torch.arange(-r, coarse + r).clamp(0, coarse - 1), persistent=False)
        inside = torch.zeros(1, 1, map_size + 2 * self.ring, map_size + 2 * self.ring)
        inside[..., self.ring:self.ring + map_size, self.ring:self.ring + map_size] = 1
        self.register_buffer("inside", inside, persistent=False)

    def forward(self, logits: torch.Tensor, face: torch.Tensor) -> torch.Tensor:
        b, k, m, _ = logits.shape
        coarse = F.avg_pool2d(logits, self.cell)  # (B, K, m/c, m/c)
        tok = self.tokens(face.transpose(1, 2).reshape(b, -1, self.grid, self.grid))
        tok = F.interpolate(tok, size=coarse.shape[-2:], mode="bilinear", align_corners=False)
        x = torch.cat([coarse, tok, torch.ones_like(coarse[:, :1])], 1)
        r = self.ring_cells
        h = F.gelu(self.inp(F.pad(x, (r, r, r, r))))
        for conv in self.body:
            h = h + F.gelu(conv(h))
        edge = coarse.index_select(2, self.edge_index).index_select(3, self.edge_index)
        wide = F.interpolate(edge + self.out(h), scale_factor=float(self.cell), mode="bilinear", align_corners=False)
        return wide * (1 - self.inside) + F.pad(logits, (self.ring,) * 4) * self.inside
