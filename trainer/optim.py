"""AdamW parameter groups (paper §3): biases and every normalisation parameter are exempt
from weight decay; a context-aware model's segment encoder learns at half the rate."""
from __future__ import annotations

from torch import nn

from trainer.models.context_aware import ContextAwareModel

# Paper §3: the (pre-trained) segment encoder of a context-aware model, at lr / 2.
SEGMENT_ENCODER_LR_FACTOR = 0.5

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)  # incl. MaskedBatchNorm1d


def _no_decay_names(model: nn.Module) -> set[str]:
    names = set()
    for mod_name, module in model.named_modules():
        for p_name, _ in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if isinstance(module, _NORMS) or p_name == "bias":
                names.add(full)
    return names


def parameter_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Trainable parameters of `model` as AdamW groups: (decay | no decay) × (lr | lr / 2).

    Groups carry `lr`, `weight_decay` and a `name`; empty groups are left out; frozen
    parameters (requires_grad False) are in none.
    """
    no_decay = _no_decay_names(model)
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
