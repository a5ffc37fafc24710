"""Each named variant's training defaults: the paper's tables (../shared/data/paper_tables.md),
and small ones for the tiny CPU variants.

Pre-training (Tables 1, 2): batch, steps, max length Lm (None = whole videos, "∞").
Fine-tuning (Tables 3, 4): batch 128 for segment classifiers (§4.2: 32 measured worse);
steps: the most common row of the variant's table (context-agnostic nxvlad-2 12k,
dbof-3 8k; context-aware 12k); context max length 150 (Table 4).
Learning rates and weight decays are §4.2's (trainer/optim.py).
"""
from __future__ import annotations

from trainer.errors import TrainerError
from trainer.optim import FINETUNE_LR, FINETUNE_WEIGHT_DECAY, PRETRAIN_LR, PRETRAIN_WEIGHT_DECAY

# Evaluation reads at most this many held-out videos, a fixed subset shared by the ranks
# (`--eval-videos`): the reference code's cap. The real train store's held-out eighth is
# ~480,000 videos; a validate fold ~5,900 (the cap does not bite in fine-tuning).
EVAL_VIDEOS = 32_000

# name: (batch, steps, max length)            Table 1 / Table 2
PRETRAIN = {
    "dbof-1": (32, 120_000, None),
    "dbof-2": (32, 100_000, 200),
    "dbof-3": (128, 100_000, 150),
    "nxvlad-1": (32, 120_000, 200),
    "nxvlad-2": (48, 200_000, 150),
    "dbof-tiny": (32, 300, 60),  # small: CPU tests and the demo
    "nxvlad-tiny": (32, 300, 60),
}
# A mixture of NeXtVLADs (MOD) trains as its branch variant does (the paper has no row for it).
PRETRAIN |= {"mix-nxvlad-3": PRETRAIN["nxvlad-2"], "mix-nxvlad-tiny": PRETRAIN["nxvlad-tiny"]}
SEGMENT_BATCH = 128  # §4.2, Tables 3-4
CONTEXT_MAX_LEN = 150  # Table 4
# segment encoder's variant: context-agnostic steps (Table 3)
AGNOSTIC_STEPS = {"nxvlad-2": 12_000, "dbof-3": 8_000, "dbof-tiny": 200, "nxvlad-tiny": 200}
AGNOSTIC_STEPS |= {"mix-nxvlad-3": AGNOSTIC_STEPS["nxvlad-2"],
                   "mix-nxvlad-tiny": AGNOSTIC_STEPS["nxvlad-tiny"]}
AWARE_STEPS = 12_000  # Table 4's most common row
TINY_AWARE_STEPS = 200
TINY_CONTEXT_MAX_LEN = 60


EVALUATIONS = 50  # evaluations (and checkpoints) per run by default, at least every 100 steps


def eval_every(steps: int) -> int:
    """Evaluate (and save last/) about EVALUATIONS times a run, not more often than every
    100 steps (a held-out eighth of the real train set takes minutes to evaluate)."""
    return min(steps, max(100, steps // EVALUATIONS))


def pretrain_defaults(model: str) -> dict:
    batch, steps, max_len = PRETRAIN.get(model, (32, 100_000, 150))
    return {"batch_size": batch, "steps": steps, "max_len": max_len, "lr": PRETRAIN_LR,
            "weight_decay": PRETRAIN_WEIGHT_DECAY, "eval_every": eval_every(steps)}


def finetune_defaults(kind: str, segment_model: str) -> dict:
    tiny = segment_model.endswith("-tiny")
    if kind == "agnostic":
        steps = AGNOSTIC_STEPS.get(segment_model, 10_000)
    elif kind == "aware":
        steps = TINY_AWARE_STEPS if tiny else AWARE_STEPS
    else:
        raise TrainerError(f"--kind {kind!r}: agnostic or aware")
    return {"batch_size": SEGMENT_BATCH, "steps": steps, "lr": FINETUNE_LR,
            "eval_every": eval_every(steps),
            "weight_decay": FINETUNE_WEIGHT_DECAY,
            "max_len": TINY_CONTEXT_MAX_LEN if tiny else CONTEXT_MAX_LEN}
