"""Mixture-of-experts head (dummy expert, shared gate) and the losses' stability when p is 0
or 1 (their values against Eq. 1 and Eq. 2: tests/trainer/test_train_losses.py)."""
from __future__ import annotations

import math

import pytest
import torch

from trainer.layers.moe import MixtureOfExperts
from trainer.losses import segment_loss, video_loss


def _head(seed=0, dim=8, classes=5, mixtures=3):
    torch.manual_seed(seed)
    return MixtureOfExperts(dim, classes, mixtures, dropout=0.0).double().eval()


def _direct(head: MixtureOfExperts, h: torch.Tensor) -> torch.Tensor:
    """p_c = Σ_i g_i σ(e_ic), gate softmax over N + 1 (last = dummy expert), in probabilities."""
    e = head.experts(head.expert_norm(h)).view(h.shape[0], head.classes, head.mixtures)
    g = torch.softmax(head.gate(head.gate_norm(h)), dim=-1)
    return (g[:, None, :-1] * torch.sigmoid(e)).sum(-1)


def test_moe_equals_direct_mixture():
    head = _head()
    h = torch.randn(6, 8, dtype=torch.float64)
    out = head(h)
    torch.testing.assert_close(out.probs(), _direct(head, h))
    torch.testing.assert_close(out.log_not_p.exp(), 1 - _direct(head, h))


def test_gate_is_shared_by_all_classes():
    head = _head()
    assert head.gate.out_features == head.mixtures + 1


def test_dummy_expert_takes_all_weight_gives_zero():
    head = _head()
    with torch.no_grad():
        head.gate.weight.zero_()
        head.gate.bias.fill_(-200.0)
        head.gate.bias[-1] = 200.0  # all gate weight on the dummy expert
    out = head(torch.randn(4, 8, dtype=torch.float64))
    assert out.probs().max() < 1e-100
    assert torch.all(out.log_not_p == 0)  # p == 0 exactly in log(1 - p)
    assert torch.isfinite(out.log_p).all()


def test_dummy_expert_caps_probability():
    """With gate weight w on the dummy, p <= 1 - w whatever the experts say."""
    head = _head()
    with torch.no_grad():
        head.gate.weight.zero_()
        head.gate.bias.copy_(torch.tensor([0.0, 0.0, 0.0, math.log(3.0)]))  # dummy: 1/2
        head.experts.weight.zero_()
        head.experts.bias.fill_(100.0)  # every expert says 1
    p = head(torch.randn(4, 8, dtype=torch.float64)).probs()
    torch.testing.assert_close(p, torch.full_like(p, 0.5))


@pytest.mark.parametrize("extreme", [1e2, 1e4, 1e30])
def test_losses_are_finite_at_p_zero_and_one(extreme):
    """Expert logits of ±extreme make p = 1 and p = 0 in float32 (gate all on the one
    expert); the losses and every gradient stay finite, and a confident right answer costs 0."""
    head = MixtureOfExperts(dim=1, classes=2, mixtures=1, dropout=0.0).eval()
    with torch.no_grad():
        head.experts.weight.copy_(torch.tensor([[extreme], [-extreme]]))
        head.experts.bias.zero_()
        head.gate.weight.copy_(torch.tensor([[extreme], [-extreme]]))
        head.gate.bias.zero_()
    h = torch.ones(1, 1)
    out = head(h)
    assert out.probs()[0, 0] == 1.0 and out.probs()[0, 1] < 1e-30
    for labels, wrong in (([[1.0, 0.0]], False), ([[0.0, 1.0]], True)):
        head.zero_grad()
        loss = video_loss(head(h), torch.tensor(labels))
        loss.backward()
        assert torch.isfinite(loss) and (loss.item() > 10) == wrong
        assert loss.item() < 1e-6 or wrong  # confident and right: ~0, not NaN
        for p in head.parameters():
            assert p.grad is None or torch.isfinite(p.grad).all()
    cls, score = torch.tensor([1]), torch.tensor([1.0])
    loss = segment_loss(head(h), cls, score, torch.tensor([[True, False]]))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 10
