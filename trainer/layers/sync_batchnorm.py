"""Batch norm over every rank's rows (`--sync-bn`): the statistics one GPU would take of
the whole global batch.

Under `torchrun` each rank normalises only its own rows: nxvlad-2's global batch of 48
over 8 GPUs is 6 rows per rank, the segment models' 128 is 16, where the paper's single
GPU saw 48 and 128 (§4.2). `SyncMaskedBatchNorm1d` sums, over the ranks, the real-row
count, the per-channel sums and then the centred squares (two all-reduces per layer and
forward, differentiable: the backward all-reduces their gradients), so the mean, the
variance and the running averages are those of the global batch, and DDP's averaged
gradients equal one process's on the whole batch (tests/trainer/test_models_sync_bn.py).
Padded frames stay out of the statistics as in `MaskedBatchNorm1d`. In eval mode, or in
a single process, it is a `MaskedBatchNorm1d`.

`convert_sync_batchnorm(model)` turns every `nn.BatchNorm1d` of a model (masked or not)
into one, in place, keeping parameters and buffers: the state_dict is unchanged, so
checkpoints load into models with or without it.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from trainer.layers.masking import MaskedBatchNorm1d


class _AllReduceSum(torch.autograd.Function):
    """Σ over ranks of a tensor; the backward sums the gradients over ranks (each rank's
    loss depends on every rank's rows through the shared statistics)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        out = grad.clone()
        dist.all_reduce(out)
        return out


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    """`x` summed over the ranks of the default process group, differentiably."""
    return _AllReduceSum.apply(x)


def _synced() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class SyncMaskedBatchNorm1d(MaskedBatchNorm1d):
    """`x (*, C)`, `mask` broadcastable to `x.shape[:-1]` or None → `(*, C)`, normalised
    with the statistics of every rank's real rows (see the module docstring)."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if not (self.training and _synced()):
            return super().forward(x, mask)
        shape = x.shape
        with torch.autocast(x.device.type, enabled=False):  # statistics in float32 at least
            flat = x.reshape(-1, shape[-1])
            if flat.dtype in (torch.float16, torch.bfloat16):
                flat = flat.float()
            m = (torch.ones(flat.shape[0], dtype=flat.dtype, device=flat.device) if mask is None
                 else mask.expand(shape[:-1]).reshape(-1).to(flat.dtype))  # (N,)
            sums = all_reduce(torch.cat([m.sum()[None], m @ flat]))  # (1 + C,) over ranks
            n = sums[0].clamp(min=1.0)
            mean = sums[1:] / n
            centred = flat - mean
            var = all_reduce(m @ centred.square()) / n  # biased, as BatchNorm normalises with
            self._update_running(mean, var, n)
            scale = torch.rsqrt(var + self.eps)
            if self.affine:
                scale = scale * self.weight
            out = centred * scale
            if self.affine:
                out = out + self.bias
        return out.to(x.dtype).reshape(shape)


def _synced_copy(bn: nn.BatchNorm1d) -> SyncMaskedBatchNorm1d:
    """A `SyncMaskedBatchNorm1d` holding `bn`'s very parameters and buffers (a frozen
    weight stays frozen, an optimizer built later sees the same tensors)."""
    synced = SyncMaskedBatchNorm1d(bn.num_features, bn.eps, bn.momentum, bn.affine,
                                   bn.track_running_stats)
    for name, param in bn.named_parameters(recurse=False):
        setattr(synced, name, param)
    for name, buffer in bn.named_buffers(recurse=False):
        setattr(synced, name, buffer)
    synced.train(bn.training)
    return synced


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Every `nn.BatchNorm1d` of `model` (masked or not) becomes a `SyncMaskedBatchNorm1d`
    with the same parameters and buffers; returns `model`."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.BatchNorm1d) and not isinstance(child, SyncMaskedBatchNorm1d):
            setattr(model, name, _synced_copy(child))
        else:
            convert_sync_batchnorm(child)
    return model
