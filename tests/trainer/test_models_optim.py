"""AdamW parameter groups: biases and norm parameters exempt, segment encoder at lr / 2."""
from __future__ import annotations

import torch

from trainer.optim import SEGMENT_ENCODER_LR_FACTOR, parameter_groups
from trainer.registry import build


def _names(model, group):
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_groups_for_a_video_model():
    model = build("dbof-tiny")
    groups = parameter_groups(model, lr=1e-3, weight_decay=0.1)
    by = {g["name"]: g for g in groups}
    assert set(by) == {"decay", "no_decay"}
    decay, exempt = _names(model, by["decay"]), _names(model, by["no_decay"])
    assert decay.isdisjoint(exempt) and decay | exempt == {n for n, _ in model.named_parameters()}
    norms = {
        f"{mn}.{pn}"
        for mn, m in model.named_modules()
        if isinstance(m, torch.nn.modules.batchnorm._NormBase)
        for pn, _ in m.named_parameters(recurse=False)
    }
    assert norms and norms <= exempt
    assert all(n.endswith(".bias") or n in norms for n in exempt)
    assert all(n.endswith((".weight", "centroids")) for n in decay)
    assert by["no_decay"]["weight_decay"] == 0.0 and by["decay"]["weight_decay"] == 0.1
    torch.optim.AdamW(groups)  # accepted as is


def test_groups_for_a_context_aware_model():
    model = build("nxvlad-tiny+dbof-tiny")
    groups = parameter_groups(model, lr=2e-4, weight_decay=0.02)
    by = {g["name"]: g for g in groups}
    assert set(by) == {"decay", "no_decay", "segment_decay", "segment_no_decay"}
    listed = set().union(*(_names(model, g) for g in groups))
    assert listed == {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.startswith("context.") for n in listed)
    for name in ("segment_decay", "segment_no_decay"):
        assert by[name]["lr"] == 2e-4 * SEGMENT_ENCODER_LR_FACTOR == 1e-4
        assert all(n.startswith("segment.") for n in _names(model, by[name]))
    assert by["decay"]["lr"] == 2e-4
