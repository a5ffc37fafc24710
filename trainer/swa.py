"""Stochastic weight averaging (`--swa-from STEP`; the 2nd place of the 3rd YouTube-8M
challenge averaged late checkpoints; Izmailov et al. 2018, "Averaging Weights Leads to
Wider Optima and Better Generalization").

From step STEP on, every scheduled checkpoint (each `--checkpoint-every` or `--eval-every`
step, and the last) adds the model's weights to a running average. At an evaluation the
averaged model is evaluated beside the trained one, after its batch-norm statistics are
recomputed on training batches (the averaged weights' activations have statistics of
their own), and `best/` takes whichever of the two is the best so far.

`WeightAverage` keeps the float64 sum of each floating-point parameter and the count: the
average is `sum / count` in the parameter's dtype, what a hand average of the saved
checkpoints gives (tested). Buffers (batch-norm statistics) are not averaged: they are
recomputed. The sums travel with the checkpoint (`checkpoint.EXTRA_FILE`), so a resumed
run averages exactly what an uninterrupted one does.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from trainer.checkpoint import unwrap

# Batches of the training folds over which an averaged model's batch-norm statistics are
# recomputed (cumulative averages, as torch.optim.swa_utils.update_bn): the first of a
# fixed epoch of the training loader's configuration, the same at every evaluation.
BN_BATCHES = 50
_PREFIX = "swa."


class WeightAverage:
    """The running average of a model's floating-point parameters (module docstring)."""

    def __init__(self, model: nn.Module):
        self.count = 0
        self.sums = {name: torch.zeros_like(p, dtype=torch.float64)
                     for name, p in unwrap(model).named_parameters() if p.is_floating_point()}

    def update(self, model: nn.Module) -> None:
        """Add the model's current weights."""
        with torch.no_grad():
            for name, p in unwrap(model).named_parameters():
                if name in self.sums:
                    self.sums[name] += p.detach().double()
        self.count += 1

    def averaged(self, model: nn.Module) -> nn.Module:
        """A copy of `model` holding the average (its buffers still the model's)."""
        out = copy.deepcopy(unwrap(model))
        with torch.no_grad():
            for name, p in out.named_parameters():
                if name in self.sums:
                    p.copy_((self.sums[name] / self.count).to(p.dtype))
        return out

    def tensors(self) -> dict[str, torch.Tensor]:
        """The state as named tensors (for `save_checkpoint(..., tensors=)`)."""
        out = {_PREFIX + name: s for name, s in self.sums.items()}
        out[_PREFIX + "count"] = torch.tensor(self.count, dtype=torch.int64)
        return out

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore the state `tensors()` gave; nothing saved leaves it empty."""
        if _PREFIX + "count" not in tensors:
            return
        self.count = int(tensors[_PREFIX + "count"])
        for name, s in self.sums.items():
            s.copy_(tensors[_PREFIX + name])


def recompute_batchnorm(model: nn.Module, batches, forward) -> None:
    """Reset `model`'s batch-norm statistics and recompute them as the cumulative average
    over `batches` (train mode, no gradients; `forward(model, batch)` runs the model).
    The model is left in eval mode, its momenta as they were."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative: every batch weighs the same
    model.train()
    with torch.no_grad():
        for batch in batches:
            forward(model, batch)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()
