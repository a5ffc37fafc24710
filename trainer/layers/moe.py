"""Mixture-of-experts classifier head (paper §3; YouTube-8M starter code `MoeModel`).

For each class c, N experts predict σ(e_ic); one gate shared by all classes gives
softmax weights over the N experts plus a dummy expert that always predicts 0:

    p_c = Σ_{i<N} g_i σ(e_ic),    g = softmax(W_g h) ∈ Δ^{N+1}.

Both the gate and the experts see `h` through a batch norm and a dropout. The head
returns log p and log(1 − p), computed in log space (log-softmax, log-sigmoid,
logsumexp) so that losses stay finite and exact even when p is 0 or 1 in float32.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class MoEOutput(NamedTuple):
    """Class probabilities in log space: `log_p`, `log_not_p` both `(B, C)`."""

    log_p: torch.Tensor
    log_not_p: torch.Tensor

    def probs(self) -> torch.Tensor:
        """`(B, C)` probabilities p."""
        return self.log_p.exp()

    def logits(self) -> torch.Tensor:
        """`(B, C)` logits log p − log(1 − p) (finite: both terms are, in log space)."""
        return self.log_p - self.log_not_p


class MixtureOfExperts(nn.Module):
    """`h (B, D)` → `MoEOutput` over `classes`, with `mixtures` experts + 1 dummy expert."""

    def __init__(self, dim: int, classes: int, mixtures: int, dropout: float):
        super().__init__()
        self.classes, self.mixtures = classes, mixtures
        self.expert_norm = nn.BatchNorm1d(dim)
        self.gate_norm = nn.BatchNorm1d(dim)
        self.dropout = nn.Dropout(dropout)
        self.experts = nn.Linear(dim, classes * mixtures)
        self.gate = nn.Linear(dim, mixtures + 1)  # last column: the dummy expert

    def forward(self, h: torch.Tensor) -> MoEOutput:
        batch = h.shape[0]
        # (B, C, N) expert logits, (B, 1, N + 1) shared gate log-weights
        # the mixing runs in float32 (at least) even under autocast: log p near 0 needs it
        e = self.experts(self.dropout(self.expert_norm(h))).view(batch, self.classes, -1)
        e = e.float() if e.dtype in (torch.float16, torch.bfloat16) else e
        gate = self.gate(self.dropout(self.gate_norm(h)))
        gate = gate.float() if gate.dtype in (torch.float16, torch.bfloat16) else gate
        log_g = torch.log_softmax(gate, dim=-1)[:, None]
        log_gi, log_g0 = log_g[..., :-1], log_g[..., -1:]
        log_p = torch.logsumexp(log_gi + nn.functional.logsigmoid(e), dim=-1)
        not_p_terms = torch.cat(
            [log_gi + nn.functional.logsigmoid(-e), log_g0.expand(batch, self.classes, 1)], dim=-1
        )
        return MoEOutput(log_p, torch.logsumexp(not_p_terms, dim=-1))
