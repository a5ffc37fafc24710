"""Slanted triangular learning rate (Howard & Ruder 2018, "Universal Language Model
Fine-tuning for Text Classification", ULMFiT §3.2), as the paper uses it (§4.2) with
25% of the steps warming up.

For step t of T (the multiplier of each parameter group's peak learning rate):

    cut = WARMUP_FRACTION · T
    x   = t / cut                      for t < cut   (linear rise)
        = 1 − (t − cut) / (T − cut)    for t ≥ cut   (linear decay), clipped to [0, 1]
    η_t / η_max = (1 + x (ratio − 1)) / ratio

so the rate starts at η_max / ratio, peaks at η_max at step cut, and is back to
η_max / ratio at step T (and stays there after). ULMFiT's `ratio` = 32 (its cut_frac
0.1 is replaced by the paper's 0.25). ULMFiT floors cut to an integer; we keep it
exact, so the peak falls on step T/4 whenever T is a multiple of 4.

`slanted_triangular_scheduler(opt, T)` is a `torch.optim.lr_scheduler.LambdaLR`: every
group keeps its own peak (a context-aware model's segment encoder at half), and its
`state_dict()` holds only numbers (JSON-able, trainer/checkpoint.py).
"""
from __future__ import annotations

import torch

# Paper §4.2: 25% of the steps warm up.
WARMUP_FRACTION = 0.25
# ULMFiT (Howard & Ruder 2018, §3.2): the lowest rate is η_max / ratio.
ULMFIT_RATIO = 32.0


def slanted_triangular(
    step: int,
    total_steps: int,
    warmup_fraction: float = WARMUP_FRACTION,
    ratio: float = ULMFIT_RATIO,
) -> float:
    """The multiplier of the peak learning rate at `step` (0-based) of `total_steps`."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, not {total_steps}")
    if not 0.0 < warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in (0, 1), not {warmup_fraction}")
    if ratio < 1.0:
        raise ValueError(f"ratio must be at least 1, not {ratio}")
    cut = warmup_fraction * total_steps
    if step < cut:
        x = step / cut
    else:
        x = 1.0 - (step - cut) / (total_steps - cut)
    x = min(max(x, 0.0), 1.0)
    return (1.0 + x * (ratio - 1.0)) / ratio


class SlantedTriangular:
    """`slanted_triangular` as a callable object for `LambdaLR` (its attributes, numbers
    only, go into the scheduler's state_dict, which a plain function would not)."""

    def __init__(
        self,
        total_steps: int,
        warmup_fraction: float = WARMUP_FRACTION,
        ratio: float = ULMFIT_RATIO,
    ):
        slanted_triangular(0, total_steps, warmup_fraction, ratio)  # validates the arguments
        self.total_steps = total_steps
        self.warmup_fraction = warmup_fraction
        self.ratio = ratio

    def __call__(self, step: int) -> float:
        return slanted_triangular(step, self.total_steps, self.warmup_fraction, self.ratio)


def slanted_triangular_scheduler(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_fraction: float = WARMUP_FRACTION,
    ratio: float = ULMFIT_RATIO,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A `LambdaLR` that scales each group's `lr` (its peak) by `slanted_triangular`.

    Call `scheduler.step()` after each `optimizer.step()`; the first step runs at
    peak / ratio.
    """
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, SlantedTriangular(total_steps, warmup_fraction, ratio)
    )
