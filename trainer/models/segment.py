"""Context-agnostic segment model (paper §3): the video model fed 11-frame segment windows
with masking off (the zero padding at a video's edges is seen as frames, as in training)."""
from __future__ import annotations

import torch
from torch import nn

from trainer.layers.moe import MoEOutput
from trainer.models.video import VideoModel


class ContextAgnosticSegmentModel(nn.Module):
    """Wraps a (pre-trained) `VideoModel`: `segments (B, 11, 1152)` → `MoEOutput` `(B, C)`."""

    def __init__(self, video_model: VideoModel):
        super().__init__()
        self.model = video_model

    def forward(self, segments: torch.Tensor) -> MoEOutput:
        return self.model(segments, None)
