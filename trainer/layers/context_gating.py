"""Squeeze-and-excitation context gating, as modified in paper §3.5.

Hu et al.'s SE block used as context gating (Miech et al.): `y = x ⊙ σ(W2 ρ(W1 x))`.
The paper's change (§3.5): a batch norm first, on the input of the squeeze, and a
second batch norm after the ReLU:

    y = x ⊙ σ(W2 BN2(ReLU(W1 BN1(x)))).

Works on vectors `(B, C)` (video-level gating) and on frames `(B, L, C)` (frame-level
gating in DBoF); with frames, a mask keeps padded frames out of the batch statistics.
"""
from __future__ import annotations

import torch
from torch import nn

from trainer.layers.masking import MaskedBatchNorm1d


class ContextGating(nn.Module):
    """SE gating of the last axis: `x (*, C)` → `(*, C)`, bottleneck `C // reduction`."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        squeezed = channels // reduction
        self.norm_in = MaskedBatchNorm1d(channels)
        self.squeeze = nn.Linear(channels, squeezed)
        self.norm_mid = MaskedBatchNorm1d(squeezed)
        self.excite = nn.Linear(squeezed, channels)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.squeeze(self.norm_in(x, mask))
        h = self.norm_mid(torch.relu(h), mask)
        return x * torch.sigmoid(self.excite(h))
