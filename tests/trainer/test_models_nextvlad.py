"""NeXtVLAD equals the naive formula (tests/trainer/naive_nextvlad.py) on random inputs."""
from __future__ import annotations

import pytest
import torch

from tests.trainer.naive_nextvlad import naive_nextvlad
from trainer.layers.nextvlad import NeXtVLAD


def _layer(seed: int, dim=24, clusters=6, groups=4, expansion=2, dropout=0.0) -> NeXtVLAD:
    torch.manual_seed(seed)
    layer = NeXtVLAD(dim, clusters, groups, expansion, dropout).double()
    with torch.no_grad():  # non-trivial normalisation parameters and running statistics
        for bn in (layer.assign_norm, layer.out_norm):
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    return layer


def _inputs(seed: int, B=5, L=9, dim=24):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, dim, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, L + 1, (B,), generator=g)
    mask = torch.arange(L)[None, :] < lengths[:, None]
    return x, mask


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_nextvlad_equals_naive_formula(seed, training, masked):
    layer = _layer(seed).train(training)
    x, mask = _inputs(seed)
    mask = mask if masked else None
    fast = layer(x, mask)
    slow = naive_nextvlad(layer, x, mask)
    assert fast.shape == (5, layer.out_dim) == (5, 6 * 2 * 24 // 4)
    torch.testing.assert_close(fast, slow, rtol=1e-9, atol=1e-9)


def test_nextvlad_gradients_equal_naive():
    layer = _layer(7).train()
    x, mask = _inputs(7)
    x.requires_grad_(True)
    weight = torch.randn(5, layer.out_dim, dtype=torch.float64)
    (layer(x, mask) * weight).sum().backward()
    fast = [x.grad.clone()] + [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    x.grad = None
    (naive_nextvlad(layer, x, mask) * weight).sum().backward()
    slow = [x.grad] + [p.grad for p in layer.parameters()]
    for a, b in zip(fast, slow):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_cluster_norm_and_softmax_read_the_same_layout():
    """A large bias on one cluster's BN channel must pull every group to that cluster:
    the batch norm's channels are clusters, the same index the softmax and sum run over."""
    layer = _layer(3).eval()
    with torch.no_grad():
        layer.assign_norm.bias.zero_()
        layer.assign_norm.bias[2] = 50.0
        layer.out_norm.weight.fill_(1.0)
        layer.out_norm.bias.zero_()
        layer.out_norm.running_mean.zero_()
        layer.out_norm.running_var.fill_(1.0 - layer.out_norm.eps)
    x, mask = _inputs(3)
    v = layer(x, mask).view(5, layer.clusters, layer.group_dim)
    norms = v.norm(dim=-1)  # intra-normalised: 1 where a cluster got mass, ~0 elsewhere
    torch.testing.assert_close(norms[:, 2], torch.ones(5, dtype=torch.float64))
    assert norms[:, [0, 1, 3, 4, 5]].max() < 1e-6
    assert layer.assign_norm.num_features == layer.clusters


def test_padded_frames_get_no_weight():
    layer = _layer(5).eval()
    x, _ = _inputs(5, B=2, L=6)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    w = layer.weights(layer.expand(torch.nn.functional.normalize(x, dim=-1)), mask)
    assert w.shape == (2, 6, layer.groups, layer.clusters)
    assert torch.all(w[0, 3:] == 0) and torch.all(w[0, :3] > 0)


def test_cluster_dropout_drops_whole_clusters_in_training_only():
    layer = _layer(11, dropout=0.25).train()
    x, mask = _inputs(11, B=64)
    v = layer(x, mask).view(64, layer.clusters, layer.group_dim)
    zero_rows = (v == 0).all(dim=-1)
    partly_zero = ((v == 0).any(dim=-1) & ~zero_rows).sum()
    assert 0.1 < zero_rows.double().mean() < 0.4 and partly_zero == 0
    layer.eval()
    assert not (layer(x, mask).view(64, layer.clusters, -1) == 0).all(dim=-1).any()


@pytest.mark.gpu
@pytest.mark.parametrize("training", [False, True])
def test_nextvlad_equals_naive_formula_on_cuda(training):
    layer = _layer(2).cuda().train(training)
    x, mask = _inputs(2)
    fast = layer(x.cuda(), mask.cuda())
    torch.testing.assert_close(fast, naive_nextvlad(layer, x.cuda(), mask.cuda()))
