"""Video-level pre-training (paper §3.1, Tables 1-2): a video model on the 1000 segment
classes, Eq. 1, `Lm` frames per video sampled without replacement.

    train pretrain --store STORE --model nxvlad-2 --out RUN [--fold K] [--steps ...]

Each named variant defaults to its row of the paper's Table 1 or 2 (batch, steps, max
length; `defaults.py`). With `--fold K` the store's fold K is held out and a fixed subset of
it (at most `--eval-videos`, default 32,000, spread over the ranks) evaluated every
`--eval-every` steps: Eq. 1 log loss, recall and precision of the positive labels at 0.5
(the paper's columns); the best checkpoint is the lowest evaluation loss.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial

import torch

from trainer.data import Loader, LoaderConfig, StoreIndex, eval_config
from trainer.errors import TrainerError
from trainer.losses import PRETRAIN_DISTILLATION, video_loss, with_distillation
from trainer.metrics import VideoEvaluation
from trainer.models.config import VideoModelConfig, config_to_dict
from trainer.recipes.defaults import EVAL_VIDEOS, pretrain_defaults
from trainer.recipes.loop import LoopConfig, loop_config, train
from trainer.recipes.runtime import (
    RunDir,
    cpu_threads,
    read_run_config,
    split_batch,
    start_ranks,
    step_seed,
    stop_ranks,
    with_sync_bn,
)
from trainer.registry import VARIANTS, build

RECIPE = "pretrain"
N_FOLDS = 8  # folds 0..7 of a store (ingest.store.writer.N_FOLDS)


@dataclass(frozen=True)
class PretrainConfig:
    store: str
    model: str
    out: str
    fold: int | None = None
    batch_size: int | None = None  # None: the variant's (defaults.py)
    max_len: int | None = None  # None with whole_videos False: the variant's
    whole_videos: bool = False  # Lm = ∞
    eval_videos: int = EVAL_VIDEOS  # the held-out fold's fixed subset (`--eval-videos`)
    sync_bn: bool = False  # batch statistics over every rank's rows (`--sync-bn`)
    threads: int = 2
    device: str = "auto"


def train_folds(fold: int | None) -> tuple[int, ...] | None:
    return None if fold is None else tuple(f for f in range(N_FOLDS) if f != fold)


class VideoTask:
    """Eq. 1 on video batches; evaluation on the held-out fold."""

    metric, mode = "loss", "min"

    def __init__(self, model, loader: Loader, eval_loader: Loader | None):
        self.model, self.loader, self.eval_loader = model, loader, eval_loader

    def loss(self, net, batch) -> torch.Tensor:
        """Eq. 1; a mixture adds its branches' Eq. 1 and the distillation (Eq. 16)."""
        label_loss = partial(video_loss, labels=batch.labels, valid=batch.valid)
        return with_distillation(net(batch.frames, batch.mask), label_loss,
                                 PRETRAIN_DISTILLATION, batch.valid)

    def evaluate(self, model) -> VideoEvaluation:
        ev = VideoEvaluation()
        for batch in self.eval_loader:
            out = model(batch.frames, batch.mask)
            ev.update(out.probs(), batch.labels, video_loss(out, batch.labels, reduction="none"),
                      batch.valid)
        return ev


def resolve(cfg: PretrainConfig, options: dict) -> tuple[PretrainConfig, LoopConfig]:
    """Fill the variant's paper defaults (batch, max length, steps, lr, weight decay)."""
    if cfg.model not in VARIANTS or not isinstance(VARIANTS[cfg.model].config, VideoModelConfig):
        video = [n for n, v in VARIANTS.items() if isinstance(v.config, VideoModelConfig)]
        raise TrainerError(f"--model {cfg.model!r}: pre-training takes a video model: "
                           f"{', '.join(video)}")
    d = pretrain_defaults(cfg.model)
    max_len = None if cfg.whole_videos else (cfg.max_len or d["max_len"])
    cfg = PretrainConfig(**{**asdict(cfg), "batch_size": cfg.batch_size or d["batch_size"],
                            "max_len": max_len})
    options = {k: v for k, v in options.items() if v is not None}
    loop = loop_config({**d, **options})
    return cfg, loop


def run(cfg: PretrainConfig, options: dict, resume: bool = False) -> dict:
    """Pre-train (or resume) a video model; returns the last evaluation's metrics."""
    ranks = start_ranks(cfg.device)
    cpu_threads(ranks, cfg.threads)
    try:
        cfg, loop = resolve(cfg, options)
        config = {"recipe": RECIPE, "pretrain": asdict(cfg), "loop": asdict(loop),
                  "model": config_to_dict(VARIANTS[cfg.model].config), "model_name": cfg.model,
                  "world_size": ranks.world}
        rundir = RunDir(cfg.out, ranks)
        rundir.check(resume)
        index = StoreIndex.build(cfg.store)
        per_rank = split_batch(cfg.batch_size, ranks, loop.accumulate)
        lc = LoaderConfig(kind="video", batch_size=per_rank, max_len=cfg.max_len,
                          folds=train_folds(cfg.fold), seed=loop.seed, threads=cfg.threads,
                          world_size=ranks.world, rank=ranks.rank, device=str(ranks.device))
        loader = Loader(index, lc)
        evaluation = None
        if cfg.fold is not None:
            evaluation = Loader(index, eval_config(lc, folds=(cfg.fold,),
                                                   max_videos=cfg.eval_videos))
        torch.manual_seed(step_seed(loop.seed, -1, 0))  # the initial weights
        task = VideoTask(with_sync_bn(build(cfg.model), cfg.sync_bn, ranks), loader, evaluation)
        loop.check()
        rundir.create(config, resume)  # everything checked: training can start
        return train(task, loop, ranks, rundir, config, resume)
    finally:
        stop_ranks()


def resume_run(run_dir: str, device: str = "auto", threads: int | None = None) -> dict:
    """Continue a pre-training run from its last checkpoint, with its saved config."""
    saved = read_run_config(run_dir)
    if saved.get("recipe") != RECIPE:
        raise TrainerError(f"{run_dir}: a {saved.get('recipe')} run, not a pre-training run")
    cfg = PretrainConfig(**{**saved["pretrain"], "out": run_dir, "device": device,
                            **({"threads": threads} if threads else {})})
    return run(cfg, saved["loop"], resume=True)

