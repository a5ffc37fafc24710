"""NeXtVLAD (Lin et al., "NeXtVLAD: an efficient neural network to aggregate frame-level
features for large-scale video classification", 2018), with the paper's changes (§3):
batch norm of the soft assignment over the K cluster channels, attention masked on
padded frames, 25% cluster dropout.

For a frame x_t (L2-normalised, as the reference design does), expanded to ẋ_t = W_e x_t
of size λD and split into G groups x̃_tg of size d = λD/G:

    α_tgk = softmax_k BN_K(W_a ẋ_t)_gk           grouped soft assignment   (B, L, G, K)
    a_tg  = σ(W_g ẋ_t)_g · mask_t                 group attention           (B, L, G)
    v_k   = Σ_t Σ_g a_tg α_tgk (x̃_tg − c_k)      aggregated residuals      (B, K, d)

then intra-normalisation (L2 over d for each k), flatten, batch norm, cluster dropout.

Both L2 normalisations (`l2_normalize`) compute in float32 at least, so all-zero padded
frames stay finite in fp16 (F.normalize's eps of 1e-12 underflows to 0 in fp16, and
0 / 0 is NaN); float32 results are F.normalize's, bit for bit.

The residual tensor (B, L, K, G, d) is never built: with w_tgk = a_tg α_tgk,
v_k = Σ_{t,g} w_tgk x̃_tg − (Σ_{t,g} w_tgk) c_k, one batched matmul over the L·G axis.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainer.layers.masking import MaskedBatchNorm1d

# F.normalize's default: norms below it are clamped (a near-empty cluster stays near 0).
NORM_EPS = 1e-12


def l2_normalize(x: torch.Tensor, eps: float = NORM_EPS) -> torch.Tensor:
    """`x (..., n)` / max(‖x‖₂, eps) over the last axis, as F.normalize; in x's dtype.

    The values are F.normalize's bit for bit in float32 and float64. fp16 / bf16 are
    widened to float32 for the norm and the division (F.normalize in fp16 rounds eps to 0
    and gives 0 / 0 = NaN on a zero vector; its squares overflow past 65504). A zero
    vector is divided by 1 instead of eps: the same 0, but a finite gradient (g, not
    g / eps, which is inf in fp16 and NaN once masked).
    """
    wide = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    norm = torch.linalg.vector_norm(wide, dim=-1, keepdim=True)
    denominator = norm.clamp_min(eps).masked_fill(norm == 0, 1.0)
    return (wide / denominator).to(x.dtype)


def dropout_rows(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Cluster dropout: zero whole rows of `x (B, K, d)` with probability p (scaled by 1/(1-p))."""
    if not training or p == 0.0:
        return x
    keep = F.dropout(x.new_ones(x.shape[0], x.shape[1], 1), p=p, training=True)
    return x * keep


class NeXtVLAD(nn.Module):
    """`x (B, L, dim)`, `mask (B, L)` or None → `(B, clusters * expansion * dim // groups)`."""

    def __init__(
        self, dim: int, clusters: int, groups: int, expansion: int, cluster_dropout: float
    ):
        super().__init__()
        if (expansion * dim) % groups:
            raise ValueError(f"expansion * dim = {expansion * dim} is not divisible by {groups}")
        self.clusters, self.groups = clusters, groups
        self.group_dim = expansion * dim // groups
        self.out_dim = clusters * self.group_dim
        self.cluster_dropout = cluster_dropout
        self.expand = nn.Linear(dim, expansion * dim)
        # Logits laid out (G, K): column g * K + k. The batch norm, the softmax and the
        # aggregation all read that layout, so each group normalises over its K clusters.
        self.assign = nn.Linear(expansion * dim, groups * clusters, bias=False)
        self.assign_norm = MaskedBatchNorm1d(clusters)  # cluster-wise: K channels
        self.attention = nn.Linear(expansion * dim, groups)
        self.centroids = nn.Parameter(torch.randn(clusters, self.group_dim) / self.group_dim**0.5)
        self.out_norm = nn.BatchNorm1d(self.out_dim)

    def weights(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Expanded frames `(B, L, λD)` → `w_tgk = a_tg α_tgk` as `(B, L, G, K)`."""
        batch, length = x.shape[:2]
        logits = self.assign(x).view(batch, length, self.groups, self.clusters)
        frame_mask = None if mask is None else mask[:, :, None]
        alpha = torch.softmax(self.assign_norm(logits, frame_mask), dim=-1)
        attention = torch.sigmoid(self.attention(x))  # (B, L, G)
        if mask is not None:
            attention = attention * mask[:, :, None].to(attention.dtype)
        return alpha * attention[..., None]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length = x.shape[:2]
        x = self.expand(l2_normalize(x))  # (B, L, λD)
        w = self.weights(x, mask).view(batch, length * self.groups, self.clusters)
        parts = x.view(batch, length * self.groups, self.group_dim)  # x̃_tg: (B, L·G, d)
        vlad = torch.bmm(w.transpose(1, 2), parts)  # Σ w x̃: (B, K, d)
        vlad = vlad - w.sum(dim=1)[:, :, None] * self.centroids  # − (Σ w) c_k
        vlad = l2_normalize(vlad)  # intra-normalisation
        vlad = self.out_norm(vlad.reshape(batch, -1)).view(batch, self.clusters, -1)
        return dropout_rows(vlad, self.cluster_dropout, self.training).reshape(batch, -1)


class AudioVisualNeXtVLAD(nn.Module):
    """Two NeXtVLAD branches: rgb with K clusters, audio with K/2 (reference design).

    `x (B, L, rgb_dim + audio_dim)` → `(B, out_dim)`, the two VLADs concatenated.
    """

    def __init__(
        self,
        rgb_dim: int,
        audio_dim: int,
        clusters: int,
        groups: int,
        expansion: int,
        cluster_dropout: float,
    ):
        super().__init__()
        self.rgb_dim = rgb_dim
        self.rgb = NeXtVLAD(rgb_dim, clusters, groups, expansion, cluster_dropout)
        self.audio = NeXtVLAD(audio_dim, clusters // 2, groups, expansion, cluster_dropout)
        self.out_dim = self.rgb.out_dim + self.audio.out_dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        rgb, audio = x[..., : self.rgb_dim], x[..., self.rgb_dim :]
        return torch.cat([self.rgb(rgb, mask), self.audio(audio, mask)], dim=1)
