"""`train pretrain`, `train finetune`, `train plot`: the recipes of trainer/recipes/.

Under `torchrun --nproc_per_node N -m trainer pretrain ...` every rank runs the same
command; on one device (GPU or CPU) it runs as it is.
"""
from __future__ import annotations

import click

from trainer.recipes.defaults import EVAL_VIDEOS
from trainer.recipes.runtime import PRECISIONS

_LOOP_OPTIONS = [
    click.option("--steps", type=click.IntRange(min=1), default=None,
                 help="Optimiser steps (default: the variant's row of the paper's tables)."),
    click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
                 help="Peak learning rate (default §4.2: 3e-4 pre-training, 2e-4 fine-tuning)."),
    click.option("--weight-decay", type=click.FloatRange(min=0), default=None,
                 help="Decoupled weight decay (default 0.1 pre-training, 0.02 fine-tuning)."),
    click.option("--seed", type=click.IntRange(min=0), default=None, help="Seed (default 0)."),
    click.option("--eval-every", type=click.IntRange(min=1), default=None,
                 help="Evaluate the held-out fold and save last/ every N steps "
                      "(default: steps / 50, at least 100)."),
    click.option("--log-every", type=click.IntRange(min=1), default=None,
                 help="Log the training loss every N steps (default 10)."),
    click.option("--checkpoint-every", type=click.IntRange(min=0), default=None,
                 help="Save last/ every N steps instead (default: at --eval-every)."),
    click.option("--checkpoint-minutes", type=click.FloatRange(min=0), default=None,
                 help="Also save last/ at the first log step after M minutes without a save "
                      "(default 30; 0: off)."),
    click.option("--accumulate", type=click.IntRange(min=1), default=None,
                 help="Micro-batches per step (the batch split in K; default 1)."),
    click.option("--grad-clip", type=click.FloatRange(min=0), default=None,
                 help="Clip the gradients' global norm (default 10; 0: off)."),
    click.option("--precision", type=click.Choice(PRECISIONS), default=None,
                 help="auto: bf16 autocast on CUDA, float32 on CPU."),
    click.option("--compile", "compile_", is_flag=True, default=None, help="torch.compile."),
    click.option("--swa-from", type=click.IntRange(min=1), default=None,
                 help="Average the weights of every scheduled checkpoint from step N on "
                      "(SWA); best/ may be the average (docs/training.md)."),
    click.option("--tensorboard", is_flag=True, default=None,
                 help="Also write TensorBoard logs (needs tensorboard)."),
]
_COMMON = [
    click.option("--fold", type=click.IntRange(0, 7), default=None,
                 help="Hold out fold K of the store and evaluate on it."),
    click.option("--batch-size", type=click.IntRange(min=1), default=None,
                 help="Global batch per step (default: the paper's)."),
    click.option("--eval-videos", type=click.IntRange(min=1), default=EVAL_VIDEOS,
                 show_default=True,
                 help="Evaluate a fixed subset of at most N held-out videos (shared by the "
                      "ranks)."),
    click.option("--sync-bn", is_flag=True,
                 help="Under torchrun: batch-norm statistics over every rank's rows (the "
                      "global batch), not each rank's own."),
    click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
                 help="Loader threads."),
    click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                 show_default=True),
    click.option("--quiet", is_flag=True, help="No progress bar."),
]


def _options(decorators):
    def wrap(f):
        for d in reversed(decorators):
            f = d(f)
        return f

    return wrap


def _loop(kw: dict) -> dict:
    loop = {k: kw.pop(k) for k in ("steps", "lr", "weight_decay", "seed", "eval_every",
                                   "log_every", "checkpoint_every", "checkpoint_minutes",
                                   "accumulate", "grad_clip", "precision", "tensorboard",
                                   "swa_from")}
    loop["compile"] = kw.pop("compile_")
    loop["progress"] = not kw.pop("quiet")
    return loop


def _report(metrics: dict, out: str) -> None:
    shown = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                      for k, v in metrics.items())
    click.echo(f"{out}: done" + (f"; held-out {shown}" if shown else ""))


@click.command("pretrain")
@click.option("--store", type=click.Path(), default=None, help="The training store.")
@click.option("--model", default=None, help="A video-model variant (train models).")
@click.option("--out", type=click.Path(), default=None, help="The run directory to create.")
@click.option("--max-len", type=click.IntRange(min=1), default=None,
              help="Lm, frames per video (default: the variant's).")
@click.option("--whole-videos", is_flag=True, help="Lm = ∞: every frame of every video.")
@click.option("--resume", type=click.Path(), default=None,
              help="Continue the run RUN from its last checkpoint (other options ignored).")
@_options(_COMMON + _LOOP_OPTIONS)
def pretrain_cmd(resume, **kw) -> None:
    """Video-level pre-training on the 1000 segment classes (paper §3.1, Eq. 1)."""
    from trainer.errors import TrainerError
    from trainer.recipes import pretrain

    if resume:
        _report(pretrain.resume_run(resume, kw["device"]), resume)
        return
    loop = _loop(kw)
    if not (kw["store"] and kw["model"] and kw["out"]):
        raise TrainerError("train pretrain needs --store, --model and --out (or --resume RUN)")
    cfg = pretrain.PretrainConfig(**kw)
    _report(pretrain.run(cfg, loop), cfg.out)


@click.command("finetune")
@click.option("--kind", type=click.Choice(["agnostic", "aware"]), default=None)
@click.option("--store", type=click.Path(), default=None, help="A store of rated segments.")
@click.option("--init", type=click.Path(), default=None, help="agnostic: a pre-training run.")
@click.option("--context", type=click.Path(), default=None,
              help="aware: the run whose video encoder gives the (frozen) context.")
@click.option("--segment", type=click.Path(), default=None,
              help="aware: the run whose encoder becomes the segment encoder.")
@click.option("--out", type=click.Path(), default=None, help="The run directory to create.")
@click.option("--max-len", type=click.IntRange(min=1), default=None,
              help="aware: Lm of the context video (default 150, Table 4).")
@click.option("--resume", type=click.Path(), default=None,
              help="Continue the run RUN from its last checkpoint (other options ignored).")
@_options(_COMMON + _LOOP_OPTIONS)
def finetune_cmd(resume, **kw) -> None:
    """Segment fine-tuning, context-agnostic or context-aware (paper §3.6-3.9, Eq. 2)."""
    from trainer.errors import TrainerError
    from trainer.recipes import finetune

    if resume:
        _report(finetune.resume_run(resume, kw["device"]), resume)
        return
    loop = _loop(kw)
    if not (kw["kind"] and kw["store"] and kw["out"]):
        raise TrainerError("train finetune needs --kind, --store and --out (or --resume RUN)")
    cfg = finetune.FinetuneConfig(**kw)
    _report(finetune.run(cfg, loop), cfg.out)


@click.command("plot")
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--out", type=click.Path(), default="curves.png", show_default=True)
def plot_cmd(runs, out) -> None:
    """The training and evaluation curves of one or more runs as a PNG."""
    from trainer.plot import plot_runs
    from trainer.recipes.runtime import read_run_config

    for run in runs:
        read_run_config(run)  # a one-line error for a path that is not a run
    plot_runs(list(runs), out)
    click.echo(out)
