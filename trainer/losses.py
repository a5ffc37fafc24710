"""Losses of the paper, computed from the MoE head's log-probabilities (stable at p = 0, 1).

Eq. 1 (video-level pre-training): binary cross-entropy over all C classes, averaged:

    ℓ_b = mean_c BCE(p_bc, y_bc),        L = mean_b ℓ_b

Eq. 2 (segment fine-tuning, §3.6), as printed: example b is one rated (segment, class)
pair, class j_b with score y_b ∈ {0, 1}, plus the mined negatives M_b of its video
(classes outside the video's labels and its positive segment labels, `negatives` mask):

    ℓ_b = −(3/2 · y_b log p_bj + (1 − y_b) log(1 − p_bj))
          + 1/2 · mean_{c ∈ M_b} −log(1 − p_bc)             (0 when M_b is empty)
    L   = mean_b ℓ_b

So a rated positive weighs 3/2, a rated negative 1, and the mined term is a per-example
mean weighted 1/2. (The reference code weighs rated negatives 1/2 and averages the mined
term over all mined entries of the batch; `REFERENCE_CODE_WEIGHTS` gives its rated weights,
docs/models.md the whole deviation.)

Both losses take an optional per-example `valid (B,)` (bool, or float weights): flagged
rows (e.g. the repeats that pad an epoch's last batch) are left out, even when their
loss is not finite, and the mean is over the rows kept: Σ_b w_b ℓ_b / Σ_b w_b.
`reduction="none"` gives `ℓ_b (B,)` to callers that reduce themselves (e.g. over DDP ranks).

Online distillation of a mixture (trainer/models/mixture.py; NeXtVLAD paper §3.4 Eq. 14-16,
MOD's code): the mixture's logits z_e teach each branch's z_k through the KL divergence of
their softmax over the C classes at temperature T (a "rank" distribution, not per-class
Bernoullis), and a mixture's loss is (Eq. 16, with the label loss ℓ of the recipe)

    L = ℓ(p_e) + Σ_k ℓ(p_k) + λ · mean_b Σ_k KL(softmax(z_e/T) ‖ softmax(z_k/T))

The teacher's gradient is not stopped (as in the source): the KL also pulls the mixture.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from trainer.layers.branch_mixing import MixtureOutput
from trainer.layers.moe import MoEOutput
from trainer.models.config import NUM_CLASSES

# Paper §3.6, Eq. 2: weight of a rated positive, of a rated negative, of the mined term.
POSITIVE_WEIGHT = 3.0 / 2.0
RATED_NEGATIVE_WEIGHT = 1.0
MINED_NEGATIVE_WEIGHT = 1.0 / 2.0


@dataclass(frozen=True)
class SegmentLossWeights:
    """The three weights of Eq. 2 (defaults: the paper's, §3.6)."""

    positive: float = POSITIVE_WEIGHT
    rated_negative: float = RATED_NEGATIVE_WEIGHT
    mined: float = MINED_NEGATIVE_WEIGHT


# The reference code's rated-negative weight (1/2): y + 1/2 for every rated label.
REFERENCE_CODE_WEIGHTS = SegmentLossWeights(rated_negative=1.0 / 2.0)


@dataclass(frozen=True)
class Distillation:
    """Temperature T and weight λ of a mixture's online distillation (Eq. 16)."""

    temperature: float
    weight: float


# MOD's final scripts (linrongc/solution_youtube8m_v3: parallel_script/ and seg_script/
# train_mix_nextvlad_final_submission.sh): pre-training T = 1, λ = 1; segment fine-tuning
# T = 20, λ = 400. Both λ = T², the NeXtVLAD paper's Eq. 16 (§3.4; its 2018 run: T = 3).
PRETRAIN_DISTILL_TEMPERATURE = 1.0
FINETUNE_DISTILL_TEMPERATURE = 20.0
# The source's label losses sum BCE over the classes; Eq. 1 here averages over the C classes,
# so pre-training's λ is divided by C to keep the source's balance (the objective / C). Eq. 2
# and the source's segment loss are both per rated example: its λ as is.
PRETRAIN_DISTILLATION = Distillation(PRETRAIN_DISTILL_TEMPERATURE,
                                     PRETRAIN_DISTILL_TEMPERATURE**2 / NUM_CLASSES)
FINETUNE_DISTILLATION = Distillation(FINETUNE_DISTILL_TEMPERATURE,
                                     FINETUNE_DISTILL_TEMPERATURE**2)


def binary_cross_entropy(out: MoEOutput, target: torch.Tensor) -> torch.Tensor:
    """Element-wise −[y log p + (1 − y) log(1 − p)], from log-probabilities (same shape)."""
    return -(target * out.log_p + (1.0 - target) * out.log_not_p)


def masked_mean(values: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """`values (B,)` → scalar Σ w_b v_b / Σ w_b over `valid (B,)` (bool or float weights).

    Rows with weight 0 are dropped before the product (a NaN there does not leak); with
    no row kept the result is 0.
    """
    if valid is None:
        return values.mean()
    w = valid.to(values.dtype)
    total = torch.where(w > 0, w * values, torch.zeros_like(values)).sum()
    count = w.sum()
    return total / torch.where(count > 0, count, torch.ones_like(count))


def _reduce(per_example: torch.Tensor, valid: torch.Tensor | None, reduction: str):
    if reduction == "mean":
        return masked_mean(per_example, valid)
    if reduction == "none":
        return per_example
    raise ValueError(f"reduction must be 'mean' or 'none', not {reduction!r}")


def video_loss(
    out: MoEOutput,
    labels: torch.Tensor,
    valid: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Eq. 1: `labels (B, C)` multi-hot (float or bool) → scalar mean cross-entropy.

    `valid (B,)` optional (see the module docstring); `reduction="none"` → `(B,)` per-example
    losses (mean over C), `valid` not applied.
    """
    per_example = binary_cross_entropy(out, labels.to(out.log_p.dtype)).mean(dim=1)
    return _reduce(per_example, valid, reduction)


def segment_loss(
    out: MoEOutput,
    class_index: torch.Tensor,
    score: torch.Tensor,
    negatives: torch.Tensor | None = None,
    weights: SegmentLossWeights = SegmentLossWeights(),
    valid: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Eq. 2 → scalar mean over the batch (`reduction="none"`: `(B,)`, `valid` not applied).

    `class_index (B,)` int: the rated class j_b; `score (B,)` 0/1: y_b; `negatives (B, C)`
    bool: the mined negatives M_b (None: no mined term); `valid (B,)` optional.
    """
    log_p = out.log_p.gather(1, class_index[:, None])[:, 0]  # (B,)
    log_not_p = out.log_not_p.gather(1, class_index[:, None])[:, 0]
    y = score.to(out.log_p.dtype)
    loss = -(weights.positive * y * log_p + weights.rated_negative * (1.0 - y) * log_not_p)
    if negatives is not None:
        zero = torch.zeros_like(out.log_not_p)
        mined = torch.where(negatives, -out.log_not_p, zero).sum(dim=1)  # (B,)
        count = negatives.sum(dim=1).to(mined.dtype)
        loss = loss + weights.mined * mined / count.clamp(min=1.0)
    return _reduce(loss, valid, reduction)


def distillation_loss(
    out: MixtureOutput,
    temperature: float,
    valid: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Σ_k KL(softmax(z_e/T) ‖ softmax(z_k/T)) over the C classes, per example → scalar mean
    (`reduction="none"`: `(B,)`, `valid` not applied). Teacher z_e: the mixture's logits;
    students z_k: each branch's (`MoEOutput.logits()`)."""
    teacher = torch.log_softmax(out.logits() / temperature, dim=-1)  # (B, C)
    students = torch.stack([b.logits() for b in out.branches]) / temperature  # (K, B, C)
    kl = teacher.exp() * (teacher - torch.log_softmax(students, dim=-1))
    return _reduce(kl.sum(dim=(0, 2)), valid, reduction)


def with_distillation(
    out: MoEOutput | MixtureOutput,
    label_loss: Callable[[MoEOutput | MixtureOutput], torch.Tensor],
    distillation: Distillation,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """A recipe's training loss: `label_loss(out)` (Eq. 1 or 2, a scalar) for one model; for
    a mixture Eq. 16: the mixture's and every branch's label loss plus λ · distillation."""
    if not isinstance(out, MixtureOutput):
        return label_loss(out)
    total = label_loss(out) + sum(label_loss(branch) for branch in out.branches)
    return total + distillation.weight * distillation_loss(out, distillation.temperature, valid)
