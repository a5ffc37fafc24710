"""`torchrun ... eval_ranks.py STORE FOLD OUT.json RUN...`: the held-out evaluation of each
RUN's best weights on fold FOLD of STORE (at most 8 videos), by the recipes' task and the
loop's evaluation, shared by the torchrun ranks; rank 0 writes {RUN: metrics} as JSON.
Used by tests/trainer/test_train_recipes.py to compare one process with two."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from trainer.checkpoint import load_checkpoint
from trainer.data import Loader, LoaderConfig, StoreIndex, eval_config
from trainer.models.config import config_from_dict
from trainer.recipes.finetune import SegmentTask
from trainer.recipes.loop import LoopConfig, _evaluate
from trainer.recipes.pretrain import VideoTask
from trainer.recipes.runtime import read_run_config, run_checkpoint, start_ranks, stop_ranks
from trainer.registry import build_config


def evaluate(run: str, index: StoreIndex, fold: int, ranks) -> dict:
    saved = read_run_config(run)
    model = build_config(config_from_dict(saved["model"]))
    load_checkpoint(run_checkpoint(run), model, restore_rng=False)
    kind = {"pretrain": "video", "finetune-agnostic": "segment",
            "finetune-aware": "aware"}[saved["recipe"]]
    lc = eval_config(LoaderConfig(kind=kind, batch_size=4, max_len=20, folds=(fold,),
                                  threads=1, world_size=ranks.world, rank=ranks.rank),
                     max_videos=8)
    loader = Loader(index, lc)
    task = (VideoTask(model, None, loader) if kind == "video"
            else SegmentTask(model, kind == "aware", None, loader))
    return _evaluate(task, model, ranks, LoopConfig(steps=1, lr=1.0, weight_decay=0.0))


def main(store: str, fold: int, out: str, runs: list[str]) -> None:
    ranks = start_ranks("cpu")
    try:
        index = StoreIndex.build(store)
        found = {run: evaluate(run, index, fold, ranks) for run in runs}
        if ranks.main:
            Path(out).write_text(json.dumps(found))
    finally:
        stop_ranks()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:])
