"""A direct, naive NeXtVLAD: the formula of trainer/layers/nextvlad.py written out literally,
materialising the residual tensor (B, L, K, G, d). For tests and benchmarks/bench_nextvlad.py.

It reads the parameters of a `trainer.layers.nextvlad.NeXtVLAD` layer, so both compute
the same function; it shares none of the layer's forward code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trainer.layers.nextvlad import NeXtVLAD


def naive_batch_norm(x, bn, mask=None):
    """Batch norm over the last axis of `x (*, C)`: batch statistics over the real rows in
    training (boolean indexing, biased variance), running statistics in eval."""
    if bn.training:
        rows = x.reshape(-1, x.shape[-1]) if mask is None else x[mask]
        rows = rows.reshape(-1, x.shape[-1])
        mean, var = rows.mean(dim=0), rows.var(dim=0, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    return (x - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias


def naive_nextvlad(layer: NeXtVLAD, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """`x (B, L, D)` → `(B, K * d)`, without cluster dropout (the caller applies it)."""
    B, L, _ = x.shape
    G, K, d = layer.groups, layer.clusters, layer.group_dim
    if mask is None:
        mask = torch.ones(B, L, dtype=torch.bool, device=x.device)
    xe = layer.expand(F.normalize(x, dim=-1))  # (B, L, λD)
    logits = (xe @ layer.assign.weight.T).reshape(B, L, G, K)
    logits = naive_batch_norm(logits, layer.assign_norm, mask)
    alpha = torch.softmax(logits, dim=-1)  # (B, L, G, K)
    att = torch.sigmoid(xe @ layer.attention.weight.T + layer.attention.bias) * mask[..., None]
    xg = xe.reshape(B, L, G, d)
    resid = xg[:, :, None, :, :] - layer.centroids[None, None, :, None, :]  # (B, L, K, G, d)
    w = (alpha * att[..., None]).permute(0, 1, 3, 2)  # (B, L, K, G)
    v = (w[..., None] * resid).sum(dim=(1, 3))  # (B, K, d)
    v = v / v.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    return naive_batch_norm(v.reshape(B, K * d), layer.out_norm)


class NaiveNeXtVLAD(NeXtVLAD):
    """Same parameters as `NeXtVLAD`, forward by the naive formula (+ cluster dropout)."""

    def forward(self, x, mask=None):
        v = naive_nextvlad(self, x, mask).view(x.shape[0], self.clusters, -1)
        if self.training and self.cluster_dropout:
            keep = F.dropout(v.new_ones(v.shape[0], self.clusters, 1), self.cluster_dropout)
            v = v * keep
        return v.reshape(x.shape[0], -1)
