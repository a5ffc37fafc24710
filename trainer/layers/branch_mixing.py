"""Mixing K branches' predictions by a gate on the input (NeXtVLAD paper, Lin et al. 2018,
§3.4 Eq. 12-13; the same structure in MOD, the 3rd place of the 3rd YouTube-8M challenge,
arXiv 1910.12295, code `MixNeXtVladModel`).

Each branch k predicts `MoEOutput` k; its logit is z_k = log p_k − log(1 − p_k). The gate
weighs the branches per example from the mean of the real frames x̄:

    a(x̄) = softmax_k(W BN(x̄) + b)              (B, K)      Eq. 13 (BN: the code's)
    z_e  = Σ_k a_k(x̄) z_k                      (B, C)      Eq. 12
    p_e  = σ(z_e)

`MixtureOutput` carries p_e in log space (as `MoEOutput` does) and the branches' outputs,
which the losses read for online distillation (trainer/losses.py `with_distillation`).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from trainer.layers.masking import frame_mean
from trainer.layers.moe import MoEOutput


class MixtureOutput(NamedTuple):
    """The mixture's `log_p`, `log_not_p` `(B, C)` (what prediction and evaluation read,
    as `MoEOutput`'s) and each branch's `MoEOutput` (for the training loss)."""

    log_p: torch.Tensor
    log_not_p: torch.Tensor
    branches: tuple[MoEOutput, ...]

    def probs(self) -> torch.Tensor:
        """`(B, C)` probabilities of the mixture."""
        return self.log_p.exp()

    def logits(self) -> torch.Tensor:
        """`(B, C)` the mixture's logits z_e."""
        return self.log_p - self.log_not_p


class BranchGate(nn.Module):
    """Eq. 13: `frames (B, L, F)` float, `mask (B, L)` or None → branch weights `(B, K)`
    (float32, rows sum to 1), from the mean of the real frames."""

    def __init__(self, dim: int, branches: int):
        super().__init__()
        self.norm = nn.BatchNorm1d(dim)
        self.linear = nn.Linear(dim, branches)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return torch.softmax(self.linear(self.norm(frame_mean(frames, mask))).float(), dim=-1)


def mix(weights: torch.Tensor, branches: tuple[MoEOutput, ...]) -> MixtureOutput:
    """Eq. 12: `weights (B, K)` and K branch outputs → the mixture σ(Σ_k a_k z_k)."""
    z = torch.stack([b.logits() for b in branches])  # (K, B, C), float32 (the MoE's)
    # elementwise, not a matmul: autocast leaves it in float32 (log p near 0 needs it)
    mixed = (weights.t().to(z.dtype)[:, :, None] * z).sum(dim=0)  # (B, C)
    return MixtureOutput(F.logsigmoid(mixed), F.logsigmoid(-mixed), tuple(branches))
