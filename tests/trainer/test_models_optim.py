"""AdamW parameter groups: biases and norm parameters exempt, segment encoder at lr / 2,
over every registered variant; build_optimizer's decoupled weight decay."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from trainer.layers.masking import MaskedBatchNorm1d
from trainer.models.context_aware import ContextAwareModel
from trainer.optim import (
    FINETUNE_LR,
    FINETUNE_WEIGHT_DECAY,
    PRETRAIN_LR,
    PRETRAIN_WEIGHT_DECAY,
    SEGMENT_ENCODER_LR,
    SEGMENT_ENCODER_LR_FACTOR,
    build_optimizer,
    parameter_groups,
)
from trainer.registry import VARIANTS, build


def _names(model, group):
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def _norm_parameters(model: nn.Module) -> set[str]:
    """Parameters of modules whose class is a norm by name (independent of optim's list)."""
    return {
        f"{mn}.{pn}" if mn else pn
        for mn, m in model.named_modules()
        if "Norm" in type(m).__name__
        for pn, _ in m.named_parameters(recurse=False)
    }


@pytest.mark.parametrize("name", list(VARIANTS))
def test_groups_of_every_variant(name):
    model = build(name, device="meta")
    groups = parameter_groups(model, lr=1e-3, weight_decay=0.1)
    seen: dict[int, int] = {}
    for g in groups:
        for p in g["params"]:
            seen[id(p)] = seen.get(id(p), 0) + 1
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(seen) == trainable and set(seen.values()) == {1}  # each in exactly one group
    decays = set().union(*(_names(model, g) for g in groups if g["weight_decay"] > 0))
    exempt = set().union(*(_names(model, g) for g in groups if g["weight_decay"] == 0))
    norms = _norm_parameters(model)
    assert norms and not decays & norms
    assert not any(n.endswith(".bias") for n in decays)
    listed = {n for n, p in model.named_parameters() if p.requires_grad}
    assert decays == {n for n in listed if n not in norms and not n.endswith(".bias")}
    assert exempt == listed - decays
    assert all(n.endswith((".weight", "centroids")) for n in decays)


def test_every_torch_norm_layer_is_exempt():
    class Zoo(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))
            self.linear = nn.Linear(4, 4)
            self.plain = nn.Linear(4, 4, bias=False)
            self.conv = nn.Conv1d(4, 4, 3)
            self.embedding = nn.Embedding(5, 4)
            self.norms = nn.ModuleList(
                [
                    nn.LayerNorm(4),
                    nn.GroupNorm(2, 4),
                    nn.RMSNorm(4),
                    nn.BatchNorm1d(4),
                    nn.BatchNorm2d(4),
                    nn.InstanceNorm1d(4, affine=True),
                    nn.SyncBatchNorm(4),
                    MaskedBatchNorm1d(4),
                    nn.LocalResponseNorm(2),
                ]
            )

    model = Zoo()
    by = {g["name"]: _names(model, g) for g in parameter_groups(model, 1e-3, 0.1)}
    weights = {"linear.weight", "plain.weight", "conv.weight", "embedding.weight"}
    assert by["decay"] == weights | {"scale"}
    assert "norms.2.weight" in by["no_decay"]  # nn.RMSNorm
    assert by["no_decay"] == _norm_parameters(model) | {"linear.bias", "conv.bias"}


def test_groups_for_a_context_aware_model():
    model = build("nxvlad-tiny+dbof-tiny")
    groups = parameter_groups(model, lr=FINETUNE_LR, weight_decay=FINETUNE_WEIGHT_DECAY)
    by = {g["name"]: g for g in groups}
    assert set(by) == {"decay", "no_decay", "segment_decay", "segment_no_decay"}
    listed = set().union(*(_names(model, g) for g in groups))
    assert listed == {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith("context.") for n in listed)
    for name in ("segment_decay", "segment_no_decay"):
        assert by[name]["lr"] == FINETUNE_LR * SEGMENT_ENCODER_LR_FACTOR == SEGMENT_ENCODER_LR
        assert all(n.startswith("segment.") for n in _names(model, by[name]))
    assert not any(n.startswith("segment.") for n in _names(model, by["decay"]))
    assert by["decay"]["lr"] == FINETUNE_LR


def test_paper_settings():
    """§4.2: peaks 3e-4 / 2e-4 / 1e-4, weight decay 0.1 / 0.02."""
    assert (PRETRAIN_LR, FINETUNE_LR, SEGMENT_ENCODER_LR) == (3e-4, 2e-4, 1e-4)
    assert (PRETRAIN_WEIGHT_DECAY, FINETUNE_WEIGHT_DECAY) == (0.1, 0.02)
    assert isinstance(build("nxvlad-tiny+dbof-tiny"), ContextAwareModel)


def test_build_optimizer_decays_decoupled_and_only_the_decay_group():
    """With zero gradients Adam's update is 0, so a step shows the decay alone:
    decoupled, p ← p (1 − lr·wd) in the decay groups; exempt parameters unchanged."""
    model = build("dbof-tiny+nxvlad-tiny")
    opt = build_optimizer(model, lr=0.5, weight_decay=0.1)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p) if p.requires_grad else None
    opt.step()
    for g in opt.param_groups:
        factor = 1 - g["lr"] * g["weight_decay"]
        assert factor == {"decay": 0.95, "segment_decay": 0.975}.get(g["name"], 1.0)
        for n in _names(model, g):
            p = dict(model.named_parameters())[n]
            torch.testing.assert_close(p.detach(), before[n] * factor, rtol=0, atol=0)
