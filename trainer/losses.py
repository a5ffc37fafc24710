"""Losses of the paper, computed from the MoE head's log-probabilities (stable at p = 0, 1).

Eq. 1 (video-level pre-training): binary cross-entropy over all classes, averaged.
Eq. 2 (segment fine-tuning, §3.6): a rated segment is one (segment, class) pair with a
score y ∈ {0, 1}; its cross-entropy is weighted y + 1/2 (3/2 for positives, 1/2 for rated
negatives). Mined negatives (classes outside the video's labels, `negatives` mask) add a
cross-entropy towards 0 averaged over the mined entries, weighted 1/2:

    L = mean_b [(y_b + 1/2) · BCE(p_b,c_b, y_b)] + 1/2 · Σ_bc n_bc BCE(p_bc, 0) / Σ_bc n_bc
"""
from __future__ import annotations

import torch

from trainer.layers.moe import MoEOutput

# Paper §3.6, Eq. 2: weight of a rated positive, of a rated negative, of the mined negatives.
POSITIVE_WEIGHT = 3.0 / 2.0
RATED_NEGATIVE_WEIGHT = 1.0 / 2.0
MINED_NEGATIVE_WEIGHT = 1.0 / 2.0


def binary_cross_entropy(out: MoEOutput, target: torch.Tensor) -> torch.Tensor:
    """Element-wise −[y log p + (1 − y) log(1 − p)], from log-probabilities (same shape)."""
    return -(target * out.log_p + (1.0 - target) * out.log_not_p)


def video_loss(out: MoEOutput, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 1: `labels (B, C)` multi-hot (float or bool) → scalar mean cross-entropy."""
    return binary_cross_entropy(out, labels.to(out.log_p.dtype)).mean()


def segment_loss(
    out: MoEOutput,
    class_index: torch.Tensor,
    score: torch.Tensor,
    negatives: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 2: `class_index (B,)` int, `score (B,)` 0/1, `negatives (B, C)` bool mined mask."""
    rated = MoEOutput(
        out.log_p.gather(1, class_index[:, None])[:, 0],
        out.log_not_p.gather(1, class_index[:, None])[:, 0],
    )
    y = score.to(out.log_p.dtype)
    weight = RATED_NEGATIVE_WEIGHT + (POSITIVE_WEIGHT - RATED_NEGATIVE_WEIGHT) * y
    loss = (weight * binary_cross_entropy(rated, y)).mean()
    if negatives is None:
        return loss
    n = negatives.to(out.log_p.dtype)
    mined = -(n * out.log_not_p).sum() / n.sum().clamp(min=1.0)
    return loss + MINED_NEGATIVE_WEIGHT * mined
