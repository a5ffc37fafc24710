"""AdamW with the paper's settings (§4.2): decoupled weight decay, biases and every
normalisation parameter exempt from it, a context-aware model's segment encoder at half
the learning rate.

    opt = build_optimizer(model, lr=PRETRAIN_LR, weight_decay=PRETRAIN_WEIGHT_DECAY)

The learning rates are peaks: the slanted triangular schedule (trainer/schedule.py)
scales every group's own peak.
"""
from __future__ import annotations

import torch
from torch import nn

from trainer.models.context_aware import ContextAwareModel

# Paper §4.2: peak learning rates and weight decay.
PRETRAIN_LR = 3e-4  # video-level pre-training
FINETUNE_LR = 2e-4  # segment classifiers (context-agnostic and context-aware)
# Paper §3, §4.2: the (pre-trained) segment encoder of a context-aware model, at lr / 2.
SEGMENT_ENCODER_LR_FACTOR = 0.5
SEGMENT_ENCODER_LR = FINETUNE_LR * SEGMENT_ENCODER_LR_FACTOR  # 1e-4
PRETRAIN_WEIGHT_DECAY = 0.1
FINETUNE_WEIGHT_DECAY = 0.02
# The paper gives no Adam betas or epsilon: PyTorch's (and the Adam paper's) defaults.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8

# Every torch normalisation layer with parameters: _NormBase covers BatchNorm*, SyncBatchNorm,
# InstanceNorm* and our MaskedBatchNorm1d; LocalResponseNorm has no parameters.
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def no_decay_names(model: nn.Module) -> set[str]:
    """Names of the parameters exempt from weight decay: every `bias` and every parameter
    of a normalisation layer (`NORM_LAYERS`)."""
    names = set()
    for mod_name, module in model.named_modules():
        for p_name, _ in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if isinstance(module, NORM_LAYERS) or p_name == "bias":
                names.add(full)
    return names


def parameter_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Trainable parameters of `model` as AdamW groups: (decay | no decay) × (lr | lr / 2).

    Groups carry `lr`, `weight_decay` and a `name` (`decay`, `no_decay`, and for a
    context-aware model `segment_decay`, `segment_no_decay`); empty groups are left out;
    frozen parameters (requires_grad False) are in none.
    """
    no_decay = no_decay_names(model)
    context_aware = isinstance(model, ContextAwareModel)
    groups: dict[tuple[bool, bool], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        slow = context_aware and name.startswith("segment.")
        groups.setdefault((name in no_decay, slow), []).append(p)
    out = []
    for (exempt, slow), params in sorted(groups.items()):
        out.append(
            {
                "name": ("segment_" if slow else "") + ("no_decay" if exempt else "decay"),
                "params": params,
                "lr": lr * (SEGMENT_ENCODER_LR_FACTOR if slow else 1.0),
                "weight_decay": 0.0 if exempt else weight_decay,
            }
        )
    return out


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = ADAM_BETAS,
    eps: float = ADAM_EPS,
) -> torch.optim.AdamW:
    """AdamW (decoupled weight decay) over `parameter_groups(model, lr, weight_decay)`.

    The fused kernel where every parameter is on CUDA; elsewhere PyTorch's default
    implementation (for-each on accelerators, a plain loop on CPU: deterministic, which
    the exact-resume test relies on).
    """
    groups = parameter_groups(model, lr, weight_decay)
    devices = {p.device.type for g in groups for p in g["params"]}
    fused = True if devices == {"cuda"} else None
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)
