"""Dequantisation and padding masks: everything that keeps padded frames out of a model.

A batch of videos is `frames (B, L, 1152)` with `mask (B, L)` bool, True on real frames.
Padded frames must not change a video's output: they are excluded from pooling
(here), from attention (NeXtVLAD) and from batch-norm statistics (`MaskedBatchNorm1d`).
"""
from __future__ import annotations

import torch
from torch import nn

# Starter-code dequantisation (docs/formats.md): x = q * 4/255 + 4/512 - 2.
QUANT_SCALE = 4.0 / 255.0
QUANT_OFFSET = 4.0 / 512.0 - 2.0


def dequantize(frames: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 features `(..., F)` → `dtype` (the model's) in about [-2, 2], on the frames'
    device; float input is returned as is."""
    if frames.dtype == torch.uint8:
        return frames.to(dtype) * QUANT_SCALE + QUANT_OFFSET
    return frames


def frame_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over real frames: `x (B, L, H)`, `mask (B, L)` → `(B, H)`, divided by the number
    of real frames; a video with no real frame gives 0."""
    if mask is None:
        return x.mean(dim=1)
    m = mask.to(x.dtype)
    return torch.einsum("blh,bl->bh", x, m) / m.sum(dim=1, keepdim=True).clamp(min=1.0)


def masked_max_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Max and mean over real frames: `x (B, L, H)`, `mask (B, L)` → `(B, 2H)` = [max ‖ mean].

    The mean divides by the number of real frames; a video with no real frame pools to 0.
    """
    if mask is None:
        return torch.cat([x.amax(dim=1), x.mean(dim=1)], dim=1)
    lengths = mask.sum(dim=1, keepdim=True)  # (B, 1)
    mean = frame_mean(x, mask)
    peak = x.masked_fill(~mask[:, :, None], float("-inf")).amax(dim=1)
    peak = torch.where(lengths > 0, peak, torch.zeros_like(peak))
    return torch.cat([peak, mean], dim=1)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """Batch norm over the last axis of `x (*, C)`, statistics taken over real rows only.

    `mask` (broadcastable to `x.shape[:-1]`, True = real) excludes padded rows from the
    training statistics and the running averages. Without a mask, or in eval mode, it is
    a plain `BatchNorm1d` applied to `x.reshape(-1, C)` (channels last).
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        if mask is None or not self.training:
            return super().forward(flat).reshape(shape)
        with torch.autocast(x.device.type, enabled=False):  # statistics in float32 at least
            if flat.dtype in (torch.float16, torch.bfloat16):
                flat = flat.float()
            m = mask.expand(shape[:-1]).reshape(-1).to(flat.dtype)  # (N,)
            n = m.sum().clamp(min=1.0)
            weights = m / n
            mean = weights @ flat  # (C,)
            centred = flat - mean
            var = weights @ centred.square()  # biased, as BatchNorm normalises with
            self._update_running(mean, var, n)
            scale = torch.rsqrt(var + self.eps)
            if self.affine:
                scale = scale * self.weight
            out = centred * scale
            if self.affine:
                out = out + self.bias
        out = out.to(x.dtype)
        return out.reshape(shape)

    @torch.no_grad()
    def _update_running(self, mean: torch.Tensor, var: torch.Tensor, n: torch.Tensor) -> None:
        if not self.track_running_stats:
            return
        self.num_batches_tracked += 1
        momentum = self.momentum if self.momentum is not None else 1.0 / float(
            self.num_batches_tracked
        )
        unbiased = var * n / (n - 1.0).clamp(min=1.0)
        self.running_mean.lerp_(mean.detach(), momentum)
        self.running_var.lerp_(unbiased.detach(), momentum)

