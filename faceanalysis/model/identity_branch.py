"""The identity task's own late layers (``ModelConfig.identity_branch``).

Every task reads one shared encoder, and identity loses that tug of war: identity-only training of the whole model
raises the teacher cosine quickly while landmarks, pose and age slip (model card, "Why identity does not move").
The branch gives identity a private copy of the encoder's last ``k`` ViT blocks (with the encoder's final norm) and
of the two-way decoder; the shared layers below the fork still feed it, and the other tasks keep the shared copies.
Grown from weights without a branch (:meth:`IdentityBranch.copy_from`), the copies start equal to the shared layers,
so the model's answers are unchanged until the branch is trained (``weights/refit_identity_head.py --branch``).
A multi-task design in the manner of task-specific late sub-networks (e.g. SwinFace's per-task subnets, Qin et al.,
TCSVT 2023).

Only the branch's identity token is read. With ``alone`` (``ModelConfig.identity_branch_tokens = "identity"``) the
branch's decoder carries that token alone instead of every task token: the same layers and weights, 0.687 -> 0.583
GMACs per face for the shipped configuration, but the token no longer attends to the other tasks' tokens, so its answers
change until the branch is refitted, and refitted it stayed short of the full branch (the model card's stage 26).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class IdentityBranch(nn.Module):
    """Copies of the last ``len(blocks)`` encoder blocks, the encoder's final norm and the two-way decoder."""

    def __init__(self, blocks: nn.Sequential, norm: nn.Module, decoder: nn.Module, token: int,
                 alone: bool = False) -> None:
        """``token``: the identity token's index among the task tokens; ``alone``: the decoder carries it alone."""
        super().__init__()
        self.blocks = copy.deepcopy(blocks)
        self.norm = copy.deepcopy(norm)
        self.decoder = copy.deepcopy(decoder)
        self.token = token
        self.alone = alone

    def copy_from(self, blocks: nn.Sequential, norm: nn.Module, decoder: nn.Module) -> None:
        """Load the shared layers' weights into the branch (growing a branch on trained weights)."""
        self.blocks.load_state_dict(blocks.state_dict())
        self.norm.load_state_dict(norm.state_dict())
        self.decoder.load_state_dict(decoder.state_dict())

    def forward(self, mid: torch.Tensor, task_tokens: torch.Tensor, image_pe: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``mid`` ``(B, N, D)``: face tokens where the branch forks off; ``task_tokens`` ``(1, T, D)``. Returns the
        branch's decoded identity token ``(B, 1, D)`` and face tokens ``(B, N, D)``."""
        face = self.norm(self.blocks(mid))
        i = self.token
        pe = task_tokens[:, i:i + 1] if self.alone else task_tokens
        tokens, face = self.decoder(pe.expand(mid.shape[0], -1, -1), face, pe, image_pe)
        return (tokens if self.alone else tokens[:, i:i + 1]), face
