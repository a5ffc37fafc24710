"""Segment fine-tuning (paper §3.6-3.9, Tables 3-4): Eq. 2 on rated segments with mined
negatives, as a context-agnostic or a context-aware classifier.

    train finetune --kind agnostic --store STORE --init RUN --out RUN2 [--fold K]
    train finetune --kind aware --store STORE --context RUN_A --segment RUN_B --out RUN3 [--fold K]

- agnostic (§3.7-3.8): the pre-trained video model of RUN (its best checkpoint) fed the
  11-frame expanded segments with masking off.
- aware (§3.9): a frozen context encoder (RUN_A's video encoder, always in eval mode), a
  segment encoder initialised from RUN_B's at half the learning rate, and a new FC / SE
  gating / MoE head; the context is the segment's video without its first 6 and last 2
  segments, sampled to Lm without replacement.
Evaluation on the held-out fold (`--fold K`, §4.1; the rated segments of at most
`--eval-videos` of its videos, spread over the ranks): ROC AUC over the rated labels only
(mined negatives excluded) and the Eq. 2 loss; the best checkpoint is the highest AUC.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import partial

import torch

from trainer.checkpoint import load_checkpoint
from trainer.data import Loader, LoaderConfig, StoreIndex, eval_config
from trainer.errors import TrainerError
from trainer.losses import FINETUNE_DISTILLATION, segment_loss, with_distillation
from trainer.metrics import SegmentEvaluation
from trainer.models.config import config_from_dict, config_to_dict
from trainer.recipes.defaults import EVAL_VIDEOS, finetune_defaults
from trainer.recipes.loop import loop_config, train
from trainer.recipes.pretrain import train_folds
from trainer.recipes.runtime import (
    RunDir,
    cpu_threads,
    read_run_config,
    run_checkpoint,
    split_batch,
    start_ranks,
    step_seed,
    stop_ranks,
    with_sync_bn,
)
from trainer.registry import VARIANTS, aware_config, build_config

KINDS = ("agnostic", "aware")
VIDEO_RECIPES = ("pretrain", "finetune-agnostic")  # runs whose model is a video model


@dataclass(frozen=True)
class FinetuneConfig:
    kind: str
    store: str
    out: str
    init: str | None = None  # agnostic: the pre-trained run
    context: str | None = None  # aware: the run of the frozen context encoder
    segment: str | None = None  # aware: the run of the segment encoder
    fold: int | None = None
    batch_size: int | None = None  # None: 128 (§4.2)
    max_len: int | None = None  # aware: the context's Lm; None: 150 (Table 4)
    eval_videos: int = EVAL_VIDEOS  # the held-out fold's fixed subset (`--eval-videos`)
    sync_bn: bool = False  # batch statistics over every rank's rows (`--sync-bn`)
    threads: int = 2
    device: str = "auto"


def load_video_model(run: str, role: str):
    """(name, VideoModel with the run's best weights) of a video-model run."""
    saved = read_run_config(run)
    if saved.get("recipe") not in VIDEO_RECIPES:
        raise TrainerError(f"{role} {run}: a {saved.get('recipe')} run; {role} takes a "
                           f"pre-training or context-agnostic run")
    model = build_config(config_from_dict(saved["model"]))
    load_checkpoint(run_checkpoint(run), model, restore_rng=False)
    return saved["model_name"], model


class SegmentTask:
    """Eq. 2 on segment (or aware) batches; AUC on the held-out fold."""

    metric, mode = "auc", "max"

    def __init__(self, model, aware: bool, loader: Loader, eval_loader: Loader | None):
        self.model, self.aware = model, aware
        self.loader, self.eval_loader = loader, eval_loader

    def forward(self, net, batch):
        if self.aware:
            return net(batch.context, batch.context_mask, batch.windows)
        return net(batch.windows, None)

    def loss(self, net, batch) -> torch.Tensor:
        """Eq. 2; a mixture adds its branches' Eq. 2 and the distillation (Eq. 16)."""
        label_loss = partial(segment_loss, class_index=batch.class_index, score=batch.score,
                             negatives=batch.negatives, valid=batch.valid)
        return with_distillation(self.forward(net, batch), label_loss, FINETUNE_DISTILLATION,
                                 batch.valid)

    def evaluate(self, model) -> SegmentEvaluation:
        ev = SegmentEvaluation()
        for batch in self.eval_loader:
            out = self.forward(model, batch)
            rated = out.probs().gather(1, batch.class_index[:, None])[:, 0]
            loss = segment_loss(out, batch.class_index, batch.score, batch.negatives,
                                reduction="none")
            ev.update(rated, batch.score, loss, batch.valid)
        return ev


def build_model(cfg: FinetuneConfig):
    """(model, model config, name, segment encoder's variant) for the fine-tuning kind."""
    if cfg.kind == "agnostic":
        if cfg.init is None or cfg.context or cfg.segment:
            raise TrainerError("--kind agnostic takes --init RUN (not --context/--segment)")
        name, model = load_video_model(cfg.init, "--init")
        return model, model.cfg, name, name
    if cfg.context is None or cfg.segment is None or cfg.init:
        raise TrainerError("--kind aware takes --context RUN_A and --segment RUN_B (not --init)")
    ctx_name, ctx = load_video_model(cfg.context, "--context")
    seg_name, seg = load_video_model(cfg.segment, "--segment")
    name = f"{ctx_name}+{seg_name}"
    model_cfg = (VARIANTS[name].config if name in VARIANTS
                 else aware_config(ctx.cfg, seg.cfg))
    model = build_config(model_cfg)
    model.load_encoders(ctx, seg)
    return model, model_cfg, name, seg_name


def run(cfg: FinetuneConfig, options: dict, resume: bool = False) -> dict:
    """Fine-tune (or resume); returns the last evaluation's metrics."""
    if cfg.kind not in KINDS:
        raise TrainerError(f"--kind {cfg.kind!r}: one of {', '.join(KINDS)}")
    ranks = start_ranks(cfg.device)
    cpu_threads(ranks, cfg.threads)
    try:
        torch.manual_seed(step_seed(options.get("seed") or 0, -1, 0))  # the new head's weights
        model, model_cfg, name, seg_name = build_model(cfg)
        d = finetune_defaults(cfg.kind, seg_name)
        cfg = FinetuneConfig(**{**asdict(cfg), "batch_size": cfg.batch_size or d["batch_size"],
                                "max_len": cfg.max_len or d["max_len"]})
        loop = loop_config({**d, **{k: v for k, v in options.items() if v is not None}})
        config = {"recipe": f"finetune-{cfg.kind}", "finetune": asdict(cfg), "loop": asdict(loop),
                  "model": config_to_dict(model_cfg), "model_name": name,
                  "world_size": ranks.world}
        rundir = RunDir(cfg.out, ranks)
        rundir.check(resume)
        per_rank = split_batch(cfg.batch_size, ranks, loop.accumulate)
        index = StoreIndex.build(cfg.store)
        lc = LoaderConfig(kind="segment" if cfg.kind == "agnostic" else "aware",
                          batch_size=per_rank, max_len=cfg.max_len, folds=train_folds(cfg.fold),
                          seed=loop.seed, threads=cfg.threads, world_size=ranks.world,
                          rank=ranks.rank, device=str(ranks.device))
        loader = Loader(index, lc)
        evaluation = None
        if cfg.fold is not None:
            evaluation = Loader(index, eval_config(lc, folds=(cfg.fold,),
                                                   max_videos=cfg.eval_videos))
        task = SegmentTask(with_sync_bn(model, cfg.sync_bn, ranks), cfg.kind == "aware", loader,
                           evaluation)
        loop.check()
        rundir.create(config, resume)  # everything checked: training can start
        return train(task, loop, ranks, rundir, config, resume)
    finally:
        stop_ranks()


def resume_run(run_dir: str, device: str = "auto", threads: int | None = None) -> dict:
    """Continue a fine-tuning run from its last checkpoint, with its saved config."""
    saved = read_run_config(run_dir)
    if not str(saved.get("recipe", "")).startswith("finetune-"):
        raise TrainerError(f"{run_dir}: a {saved.get('recipe')} run, not a fine-tuning run")
    cfg = FinetuneConfig(**{**saved["finetune"], "out": run_dir, "device": device,
                            **({"threads": threads} if threads else {})})
    return run(cfg, saved["loop"], resume=True)

