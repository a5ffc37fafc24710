"""Context-gated deep bag of frames (DBoF; paper §3, YouTube-8M starter code `DbofModel`).

Every frame is projected up by one linear layer shared across frames, passed through a
ReLU and gated frame by frame with SE context gating (§3.5); the frames are then pooled
by max and by mean over the real frames only. There is no L2 normalisation.

    frames (B, L, F) → up-projection + ReLU (B, L, H) → frame gating (B, L, H)
                     → [max ‖ mean] over real frames (B, 2H)
"""
from __future__ import annotations

import torch
from torch import nn

from trainer.layers.context_gating import ContextGating
from trainer.layers.masking import masked_max_mean


class GatedDBoF(nn.Module):
    """`x (B, L, in_dim)`, `mask (B, L)` or None → `(B, 2 * hidden)`."""

    def __init__(self, in_dim: int, hidden: int, gating_reduction: int):
        super().__init__()
        self.out_dim = 2 * hidden
        self.project = nn.Linear(in_dim, hidden)
        self.gating = ContextGating(hidden, gating_reduction)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        frames = torch.relu(self.project(x))  # (B, L, H)
        frames = self.gating(frames, mask)  # padded frames stay out of its batch statistics
        return masked_max_mean(frames, mask)
