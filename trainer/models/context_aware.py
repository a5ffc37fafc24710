"""Context-aware segment classifier (paper §3, Tables 4 and 5).

A frozen video encoder (pre-trained, always in eval mode, no gradients) embeds the whole
video; a trainable segment encoder embeds the 11-frame segment; the two are concatenated:

    [context (B, Dc) ‖ segment (B, Ds)] → BN → dropout → FC + ReLU (B, D)
                                        → SE gating (optional) → MoE (B, C)

`encode_context` and `classify` are separate so that prediction computes a video's
context once and reuses it for all of its segments.
"""
from __future__ import annotations

import torch
from torch import nn

from trainer.layers.context_gating import ContextGating
from trainer.layers.moe import MixtureOfExperts, MoEOutput
from trainer.models.config import ContextAwareConfig
from trainer.models.mixture import build_encoder
from trainer.models.video import VideoEncoder, VideoModel, init_weights


class ContextAwareModel(nn.Module):
    """`video (B, L, 1152)`, `video_mask (B, L)`, `segments (B, 11, 1152)` → `MoEOutput`."""

    def __init__(self, cfg: ContextAwareConfig):
        super().__init__()
        self.cfg = cfg
        self.context = build_encoder(cfg.context).requires_grad_(False).eval()
        self.segment = VideoEncoder(cfg.segment)
        joint = self.context.out_dim + self.segment.out_dim
        self.fc = nn.Sequential(
            nn.BatchNorm1d(joint), nn.Dropout(cfg.dropout), nn.Linear(joint, cfg.fc_dim)
        )
        gated = cfg.gating_reduction > 0
        self.gating = ContextGating(cfg.fc_dim, cfg.gating_reduction) if gated else None
        head = cfg.head
        self.head = MixtureOfExperts(cfg.fc_dim, head.classes, head.mixtures, head.dropout)
        init_weights(self.fc)
        if self.gating is not None:
            init_weights(self.gating)
        init_weights(self.head)

    def train(self, mode: bool = True) -> ContextAwareModel:
        """Switch the trainable parts; the frozen context encoder stays in eval mode."""
        super().train(mode)
        self.context.eval()
        return self

    def load_encoders(self, context_model: VideoModel, segment_model: VideoModel) -> None:
        """Copy the encoders of two pre-trained video models (heads are not used).

        A segment encoder that stops at the FC takes only the layers it has.
        """
        self.context.load_state_dict(context_model.encoder.state_dict())
        source = segment_model.encoder.state_dict()
        wanted = self.segment.state_dict().keys()
        self.segment.load_state_dict({k: v for k, v in source.items() if k in wanted})

    @torch.no_grad()
    def encode_context(self, video: torch.Tensor, video_mask: torch.Tensor | None) -> torch.Tensor:
        """`(B, L, 1152)`, `(B, L)` → context embedding `(B, Dc)`, without gradients."""
        return self.context(video, video_mask)

    def classify(self, context: torch.Tensor, segments: torch.Tensor) -> MoEOutput:
        """Context embeddings `(B, Dc)` + segments `(B, 11, 1152)` → `MoEOutput` `(B, C)`."""
        h = torch.relu(self.fc(torch.cat([context, self.segment(segments, None)], dim=1)))
        if self.gating is not None:
            h = self.gating(h)
        return self.head(h)

    def forward(
        self, video: torch.Tensor, video_mask: torch.Tensor | None, segments: torch.Tensor
    ) -> MoEOutput:
        return self.classify(self.encode_context(video, video_mask), segments)
