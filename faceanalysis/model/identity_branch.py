"""The identity task's own late layers (``ModelConfig.identity_branch``).

Every task reads one shared encoder, and identity loses that tug of war: identity-only training of the whole model
raises the teacher cosine quickly while landmarks, pose and age slip (model card, "Why identity does not move").
The branch gives identity a private copy of the encoder's last ``k`` ViT blocks (with the encoder's final norm) and
of the two-way decoder; the shared layers below the fork still feed it, and the other tasks keep the shared copies.
Grown from weights without a branch (:meth:`IdentityBranch.copy_from`), the copies start equal to the shared layers,
so the model's answers are unchanged until the branch is trained (``weights/refit_identity_head.py --branch``).
A multi-task design in the manner of task-specific late sub-networks (e.g. SwinFace's per-task subnets, Qin et al.,
TCSVT 2023).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class IdentityBranch(nn.Module):
    """Copies of the last ``len(blocks)`` encoder blocks, the encoder's final norm and the two-way decoder."""

    def __init__(self, blocks: nn.Sequential, norm: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.blocks = copy.deepcopy(blocks)
        self.norm = copy.deepcopy(norm)
        self.decoder = copy.deepcopy(decoder)

    def copy_from(self, blocks: nn.Sequential, norm: nn.Module, decoder: nn.Module) -> None:
        """Load the shared layers' weights into the branch (growing a branch on trained weights)."""
        self.blocks.load_state_dict(blocks.state_dict())
        self.norm.load_state_dict(norm.state_dict())
        self.decoder.load_state_dict(decoder.state_dict())

    def forward(self, mid: torch.Tensor, task_tokens: torch.Tensor, image_pe: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``mid`` ``(B, N, D)``: face tokens where the branch forks off. Returns the branch's decoded task tokens
        ``(B, T, D)`` and face tokens ``(B, N, D)``."""
        face = self.norm(self.blocks(mid))
        return self.decoder(task_tokens.expand(mid.shape[0], -1, -1), face, task_tokens, image_pe)
