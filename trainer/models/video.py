"""Video-level models (paper §3): embedding + FC + SE gating + mixture-of-experts head.

    frames (B, L, 1152) uint8 or float, mask (B, L) bool
      → dequantise → embedding (DBoF (B, 2H) or NeXtVLAD (B, V))
      → FC + ReLU (B, D) → SE gating (B, D) → MoE → log p, log(1 − p) (B, C)

The same model, fed 11-frame segments without a mask, is the context-agnostic segment
model (trainer/models/segment.py).
"""
from __future__ import annotations

import torch
from torch import nn

from trainer.layers.context_gating import ContextGating
from trainer.layers.dbof import GatedDBoF
from trainer.layers.masking import dequantize
from trainer.layers.moe import MixtureOfExperts, MoEOutput
from trainer.layers.nextvlad import AudioVisualNeXtVLAD
from trainer.models.config import (
    AUDIO_DIM,
    FRAME_DIM,
    RGB_DIM,
    DBoFConfig,
    EncoderConfig,
    NeXtVLADConfig,
    VideoModelConfig,
)


def init_weights(module: nn.Module) -> None:
    """Reference design's initialisation: Kaiming-normal linear weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _embedding(cfg: DBoFConfig | NeXtVLADConfig) -> nn.Module:
    if isinstance(cfg, DBoFConfig):
        return GatedDBoF(FRAME_DIM, cfg.hidden, cfg.frame_gating_reduction)
    return AudioVisualNeXtVLAD(
        RGB_DIM, AUDIO_DIM, cfg.clusters, cfg.groups, cfg.expansion, cfg.cluster_dropout
    )


def _fc(cfg: EncoderConfig, in_dim: int) -> nn.Sequential:
    """DBoF's pooled features are raw, so BN + dropout come first (and the FC has no bias);
    NeXtVLAD's output is already batch-normed and cluster-dropped (reference design)."""
    if isinstance(cfg.embedding, DBoFConfig):
        return nn.Sequential(
            nn.BatchNorm1d(in_dim), nn.Dropout(cfg.dropout), nn.Linear(in_dim, cfg.fc_dim, False)
        )
    return nn.Sequential(nn.Linear(in_dim, cfg.fc_dim))


class VideoEncoder(nn.Module):
    """`frames (B, L, 1152)`, `mask (B, L)` or None → `(B, fc_dim)`."""

    def __init__(self, cfg: EncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.out_dim = cfg.fc_dim
        self.embedding = _embedding(cfg.embedding)
        self.fc = _fc(cfg, self.embedding.out_dim)
        use_gating = cfg.gating_reduction > 0 and not cfg.stop_at_fc
        self.gating = ContextGating(cfg.fc_dim, cfg.gating_reduction) if use_gating else None
        init_weights(self)

    @property
    def embedding_dtype(self) -> torch.dtype:
        return next(self.embedding.parameters()).dtype

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        dtype = self.embedding_dtype  # dequantised on the device, in the model's dtype
        h = self.fc(self.embedding(dequantize(frames, dtype), mask))
        if self.cfg.stop_at_fc:
            return h
        h = torch.relu(h)
        return h if self.gating is None else self.gating(h)


class VideoModel(nn.Module):
    """Encoder + MoE head: `frames (B, L, 1152)`, `mask (B, L)` → `MoEOutput` `(B, C)`."""

    def __init__(self, cfg: VideoModelConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = VideoEncoder(cfg.encoder)
        head = cfg.head
        self.head = MixtureOfExperts(self.encoder.out_dim, head.classes, head.mixtures, head.dropout)
        init_weights(self.head)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor | None = None) -> MoEOutput:
        return self.head(self.encoder(frames, mask))
