"""A mixture of video models trained with online distillation: MOD, the 3rd place of the 3rd
YouTube-8M challenge (Lin, Xiao, Fan, arXiv 1910.12295, code linrongc/solution_youtube8m_v3
`MixNeXtVladModel`), first in the NeXtVLAD paper (§3.4, "knowledge distillation with
on-the-fly naive ensemble").

    frames (B, L, 1152), mask (B, L)
      → K branches, each a whole video model (encoder + MoE head, own weights)
                                                   → MoEOutput_k, logits z_k     (B, C) each
      → gate a(x̄) on the mean of the real frames   → (B, K)
      → mixture z_e = Σ_k a_k z_k, p = σ(z_e)      → MixtureOutput                (B, C)

Prediction reads the mixture (`out.probs()`); training adds each branch's label loss and
the distillation of the mixture into every branch (trainer/losses.py `with_distillation`).

The mixture's *encoder* is its K branch encoders side by side (`MixtureEncoder`, output the
K encodings concatenated, `(B, K·D)`): what a context-aware model's frozen context encoder
copies from a mixture run (docs/models.md, "Mixture of NeXtVLADs").
"""
from __future__ import annotations

import torch
from torch import nn

from trainer.layers.branch_mixing import BranchGate, MixtureOutput, mix
from trainer.layers.masking import dequantize
from trainer.layers.moe import MixtureOfExperts
from trainer.models.config import FRAME_DIM, EncoderConfig, MixtureConfig, MixtureEncoderConfig
from trainer.models.video import VideoEncoder, init_weights


class MixtureEncoder(nn.Module):
    """K `VideoEncoder`s: `frames (B, L, 1152)`, `mask (B, L)` → `(B, K·D)` (concatenated)."""

    def __init__(self, cfg: MixtureEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.branches = nn.ModuleList(VideoEncoder(cfg.branch) for _ in range(cfg.branches))
        self.out_dim = sum(b.out_dim for b in self.branches)

    def encodings(self, frames: torch.Tensor, mask: torch.Tensor | None) -> list[torch.Tensor]:
        """Each branch's encoding `(B, D)`."""
        return [branch(frames, mask) for branch in self.branches]

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.cat(self.encodings(frames, mask), dim=1)


def build_encoder(cfg: EncoderConfig | MixtureEncoderConfig) -> nn.Module:
    """The encoder a config describes: one `VideoEncoder` or a mixture's `MixtureEncoder`."""
    return MixtureEncoder(cfg) if isinstance(cfg, MixtureEncoderConfig) else VideoEncoder(cfg)


class MixtureModel(nn.Module):
    """`frames (B, L, 1152)`, `mask (B, L)` → `MixtureOutput` `(B, C)` with K branch outputs."""

    def __init__(self, cfg: MixtureConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = MixtureEncoder(cfg.encoder)
        head = cfg.head
        self.heads = nn.ModuleList(
            MixtureOfExperts(branch.out_dim, head.classes, head.mixtures, head.dropout)
            for branch in self.encoder.branches
        )
        self.gate = BranchGate(FRAME_DIM, cfg.encoder.branches)
        init_weights(self.heads)
        init_weights(self.gate)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> MixtureOutput:
        x = dequantize(frames, self.gate.linear.weight.dtype)  # once, for every branch
        encodings = self.encoder.encodings(x, mask)
        branches = tuple(head(h) for head, h in zip(self.heads, encodings))
        return mix(self.gate(x, mask), branches)
