"""The training loop every recipe runs, read top to bottom (nanoGPT's train.py in spirit).

A recipe (pretrain.py, finetune.py) hands over a *task*: its model, its loaders, its loss
and its evaluation. The loop owns what is the same for all of them: AdamW over the
model's parameter groups, the slanted triangular schedule, micro-batches (`accumulate`),
DDP, mixed precision, gradient clipping, logging, evaluation shared by the ranks, checkpoints
(last and best) and exact resume.

Micro-batch k of rank r draws its dropout masks from `step_seed(seed, step, r·K + k)`:
rank r of a W-rank run and micro-batch r of a one-process run with `accumulate=W` see the
same rows (trainer/data/sampling.py `partition`) and the same masks, so the two compute
the same update (tests/trainer/test_train_ddp.py).
"""
from __future__ import annotations

import importlib.util
import itertools
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel

from trainer.checkpoint import CheckpointKeeper, load_checkpoint, load_tensors, save_checkpoint
from trainer.data import Loader
from trainer.errors import TrainerError
from trainer.optim import build_optimizer
from trainer.recipes.runtime import (
    Ranks,
    RunDir,
    autocast,
    barrier,
    broadcast,
    gather,
    has_checkpoint,
    mean_buffers,
    split,
    step_seed,
)
from trainer.schedule import slanted_triangular_scheduler
from trainer.swa import BN_BATCHES, WeightAverage, recompute_batchnorm

SWA_SHARD = -2  # step_seed's shard of the averaged model's batch-norm pass (not a rank's)
# Save last/ at the first log step after this many minutes without a save, whatever the
# step counts: an interrupted long run loses at most about this much work (issue #21).
CHECKPOINT_MINUTES = 30.0
# The gradient's global norm is clipped to this by default (0: off): the reference code's
# value. On the demo's runs it binds only in dbof-tiny's first fine-tuning steps (norms up
# to 22), where it lowered the loss a little (docs/training.md, "Gradient clipping").
GRAD_CLIP = 10.0


@dataclass(frozen=True)
class LoopConfig:
    """The options every recipe shares (`train pretrain --help`, `train finetune --help`)."""

    steps: int
    lr: float
    weight_decay: float
    seed: int = 0
    eval_every: int = 100
    log_every: int = 10
    checkpoint_every: int = 0  # save last/ every N steps; 0: every eval_every steps
    checkpoint_minutes: float = CHECKPOINT_MINUTES  # also save when this long since the last
    accumulate: int = 1  # micro-batches per optimiser step
    grad_clip: float = GRAD_CLIP  # max gradient norm; 0: no clipping
    precision: str = "auto"  # trainer/recipes/runtime.py PRECISIONS
    compile: bool = False  # torch.compile the model
    tensorboard: bool = False  # also write TensorBoard logs to RUN/tensorboard
    swa_from: int = 0  # average the weights of every scheduled checkpoint from this step; 0: off
    progress: bool = True

    def check(self) -> None:
        if self.steps < 1 or self.eval_every < 1 or self.log_every < 1 or self.accumulate < 1:
            raise TrainerError("steps, eval-every, log-every and accumulate must be at least 1")
        if not 0 <= self.swa_from <= self.steps:
            raise TrainerError(f"--swa-from {self.swa_from}: a step of the run (1..{self.steps})")
        if self.tensorboard and importlib.util.find_spec("tensorboard") is None:
            raise TrainerError("--tensorboard needs the tensorboard package "
                               "(pip install tensorboard)")

    def scheduled(self, done: int) -> bool:
        """A step-scheduled checkpoint (not a time-based one): the ones SWA averages."""
        return done == self.steps or done % (self.checkpoint_every or self.eval_every) == 0


def train(task, loop: LoopConfig, ranks: Ranks, run: RunDir, config: dict,
          resume: bool) -> dict:
    """Train `task` for `loop.steps` optimiser steps; returns the last evaluation's metrics."""
    loop.check()
    model = task.model.to(ranks.device)
    optimizer = build_optimizer(model, loop.lr, loop.weight_decay)
    scheduler = slanted_triangular_scheduler(optimizer, loop.steps)
    keeper = CheckpointKeeper(run.path, task.metric, task.mode) if ranks.main else None
    start, metrics = 0, {}
    swa = WeightAverage(model) if loop.swa_from else None
    swa_bn = Loader(task.loader.index, task.loader.config) if swa is not None else None
    if resume and has_checkpoint(run.path):
        state = load_checkpoint(run.path / "last", model, optimizer, scheduler,
                                restore_rng=False)
        start, metrics = int(state["step"]), state.get("metrics", {})
        task.loader.load_state_dict(state["loader"])
        if swa is not None:
            swa.load(load_tensors(run.path / "last"))
        run.truncate_log(start)
    elif resume:  # stopped before its first checkpoint: the same run from step 0
        run.note(f"{run.path}: no checkpoint saved yet; starting from step 0")
        run.truncate_log(0)
    net = DistributedDataParallel(model) if ranks.world > 1 else model
    net = torch.compile(net) if loop.compile else net
    scaler = torch.amp.GradScaler(ranks.device.type,
                                  enabled=loop.precision == "fp16" and ranks.device.type == "cuda")
    board = _tensorboard(run, loop, ranks)
    bar = _progress(loop, ranks, start)
    batches = task.loader.forever()
    window = _Window()
    clock = _SaveClock(loop.checkpoint_minutes)
    model.train()
    for step in range(start, loop.steps):
        t0 = time.perf_counter()
        batch = next(batches)
        window.wait += time.perf_counter() - t0
        micro = split(batch, loop.accumulate)
        for k, part in enumerate(micro):
            torch.manual_seed(step_seed(loop.seed, step, ranks.rank * loop.accumulate + k))
            last = k == len(micro) - 1
            sync = nullcontext() if last or ranks.world == 1 else net.no_sync()
            with sync, autocast(ranks, loop.precision):
                loss = task.loss(net, part) / len(micro)
            scaler.scale(loss).backward()
            window.loss += loss.detach()
        scaler.unscale_(optimizer)  # (a no-op unless fp16)
        window.grad_norm = torch.maximum(window.grad_norm, _grad_norm(model, loop.grad_clip))
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        window.steps += 1
        window.samples += batch.valid.sum() * ranks.world  # on the device: no sync
        done = step + 1
        logged = done % loop.log_every == 0 or done == loop.steps
        if logged:
            record = window.record(done, scheduler.get_last_lr()[0])  # loss.item(): a sync
            run.log(record)
            _board(board, record)
            if bar is not None:
                bar.set_postfix(loss=f"{record['loss']:.4f}",
                                rate=f"{record['samples_per_s']:.0f}/s")
        if swa is not None and done >= loop.swa_from and loop.scheduled(done):
            swa.update(model)
        evaluate = task.eval_loader is not None and (done % loop.eval_every == 0
                                                     or done == loop.steps)
        averaged = None
        if evaluate:
            metrics = _evaluate(task, model, ranks, loop)
            record = {"step": done, "split": "eval", **metrics}
            if swa is not None and swa.count:
                averaged, swa_metrics = _evaluate_average(task, model, swa, swa_bn, ranks,
                                                          loop, done)
                record.update({f"swa_{k}": v for k, v in swa_metrics.items()})
            run.log(record)
            _board(board, record)
        if evaluate or loop.scheduled(done) or (logged and clock.due(ranks)):
            state = {"step": done, "loader": task.loader.state_dict(), "metrics": metrics}
            extra = swa.tensors() if swa is not None else None
            if ranks.main:
                if evaluate:
                    keeper.save(model, optimizer, scheduler, state, config, tensors=extra)
                else:
                    save_checkpoint(run.path / "last", model, optimizer, scheduler, state,
                                    config, tensors=extra)
                if averaged is not None:
                    keeper.offer(averaged, {"step": done, "swa": swa.count,
                                            "metrics": swa_metrics}, config)
                run.plot()
            barrier(ranks)
            clock.reset()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if board is not None:
        board.close()
    return metrics


def _evaluate(task, model, ranks: Ranks, loop: LoopConfig) -> dict:
    """The task's evaluation, each rank on its share of the held-out samples (unwrapped
    model, eval mode), merged over the ranks: the numbers one process would compute."""
    model.eval()
    with torch.no_grad(), autocast(ranks, loop.precision):
        evaluation = task.evaluate(model)
    model.train()
    if ranks.world > 1:
        evaluation = type(evaluation).merged(gather(ranks, evaluation.state()))
    return evaluation.compute()


def _grad_norm(model, clip: float) -> torch.Tensor:
    """The gradients' global 2-norm (before clipping), clipped in place to `clip` when it
    is positive; a device tensor (no sync)."""
    params = [p for p in model.parameters() if p.grad is not None]
    if clip > 0:
        return torch.nn.utils.clip_grad_norm_(params, clip).detach().float()
    return torch.nn.utils.get_total_norm([p.grad for p in params]).detach().float()


def _evaluate_average(task, model, swa: WeightAverage, loader: Loader, ranks: Ranks,
                      loop: LoopConfig, step: int):
    """(the averaged model, its evaluation): its batch-norm statistics recomputed on the
    first `swa.BN_BATCHES` batches of epoch 0 of the training folds (`loader`: a second
    loader of the training configuration; each rank on its share, then averaged over the
    ranks), dropout seeded by the step."""
    averaged = swa.averaged(model)
    loader.set_epoch(0)
    torch.manual_seed(step_seed(loop.seed, step, SWA_SHARD))
    with autocast(ranks, loop.precision):
        recompute_batchnorm(averaged, itertools.islice(loader, BN_BATCHES), task.loss)
    mean_buffers(averaged, ranks)
    return averaged, _evaluate(task, averaged, ranks, loop)


class _SaveClock:
    """Time since the last save; `due` on every rank at once (rank 0's clock decides)."""

    def __init__(self, minutes: float):
        self.seconds = minutes * 60.0
        self.reset()

    def reset(self) -> None:
        self.t0 = time.monotonic()

    def due(self, ranks: Ranks) -> bool:
        if self.seconds <= 0:
            return False
        return bool(broadcast(ranks, time.monotonic() - self.t0 >= self.seconds))


class _Window:
    """Sums over one logging interval. The loss and the sample count stay device tensors
    until `record` reads them (at a log step, the loop's one CPU-GPU sync point)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.loss, self.steps, self.samples, self.wait = 0.0, 0, 0, 0.0
        self.grad_norm = torch.zeros(())  # the largest over the window (pre-clipping)
        self.t0 = time.perf_counter()

    def record(self, step: int, lr: float) -> dict:
        elapsed = time.perf_counter() - self.t0
        loss = float(self.loss) / max(self.steps, 1)
        out = {"step": step, "split": "train", "loss": loss, "lr": lr,
               "samples_per_s": float(self.samples) / elapsed, "data_wait": self.wait / elapsed,
               "grad_norm": float(self.grad_norm)}
        self.reset()
        return out


def _progress(loop: LoopConfig, ranks: Ranks, start: int):
    if not (loop.progress and ranks.main):
        return None
    import sys

    from tqdm import tqdm

    return tqdm(total=loop.steps, initial=start, unit="step", file=sys.stderr, leave=False)


def _tensorboard(run: RunDir, loop: LoopConfig, ranks: Ranks):
    if not (loop.tensorboard and ranks.main):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrainerError("--tensorboard needs the tensorboard package "
                           "(pip install tensorboard)") from None
    return SummaryWriter(str(run.path / "tensorboard"))


def _board(board, record: dict) -> None:
    if board is None:
        return
    for key, value in record.items():
        if key not in ("step", "split") and isinstance(value, (int, float)):
            board.add_scalar(f"{record['split']}/{key}", value, record["step"])


def loop_config(options: dict) -> LoopConfig:
    """The LoopConfig fields of a dict of options (the rest is the recipe's)."""
    names = set(LoopConfig.__dataclass_fields__)
    return LoopConfig(**{k: v for k, v in options.items() if k in names})
