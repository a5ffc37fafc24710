"""What every recipe needs around its loop: devices and ranks, precision, seeds, the run
directory (config, metrics log, checkpoints, curves).

A run directory:

    RUN/config.json      the resolved run config (recipe, model config, every option)
    RUN/metrics.jsonl    one JSON object per line: {"step", "split": "train"|"eval", ...}
    RUN/last/  RUN/best/ checkpoints (trainer/checkpoint.py): weights, optimiser, scheduler,
                         the loader's position; best by the evaluation metric
    RUN/curves.png       the run's curves (train plot), rewritten at every evaluation

Distributed runs are started by `torchrun` (its environment variables RANK, WORLD_SIZE,
LOCAL_RANK): gloo on CPU, NCCL on CUDA; rank 0 alone writes the run directory.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from contextlib import nullcontext
from dataclasses import dataclass, fields
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from trainer.errors import TrainerError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# How long a rank waits at a collective before the run fails, set rather than left to each
# backend's default (NCCL 10 min, gloo 30 min): the longest wait is the other ranks at a
# barrier while rank 0 writes a checkpoint and the curves (seconds); evaluation is shared.
PROCESS_GROUP_TIMEOUT = timedelta(minutes=30)
CONFIG = "config.json"
METRICS = "metrics.jsonl"
CURVES = "curves.png"


@dataclass(frozen=True)
class Ranks:
    """This process's place: `rank` of `world`, its `device`."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def start_ranks(device: str = "auto") -> Ranks:
    """Join the `torchrun` process group if there is one; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise TrainerError("--device cuda: no CUDA device is available")
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                timeout=PROCESS_GROUP_TIMEOUT)
    return Ranks(rank, world, dev)


def cpu_threads(ranks: Ranks, loader_threads: int) -> None:
    """On the CPU, leave a core to each loader thread: torch's intra-op pool then never
    waits at a barrier for a thread the OS has descheduled. On the shared 2-core VM a
    nxvlad-tiny step took 1.35 s with 2 torch threads and 0.21 s with 1 beside other jobs
    (docs/training.md). CUDA runs are left alone."""
    if ranks.device.type == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        torch.set_num_threads(max(1, (cores or 1) // ranks.world - loader_threads))


def with_sync_bn(model, sync_bn: bool, ranks: Ranks):
    """`model` with its batch norms synchronised over the ranks (`--sync-bn`,
    trainer/layers/sync_batchnorm.py) when asked and there are several ranks."""
    if sync_bn and ranks.world > 1:
        from trainer.layers.sync_batchnorm import convert_sync_batchnorm

        return convert_sync_batchnorm(model)
    return model


def stop_ranks() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    if ranks.world > 1:
        dist.barrier()


def broadcast(ranks: Ranks, value):
    """Rank 0's `value` (any picklable object) on every rank."""
    if ranks.world == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(ranks: Ranks, value) -> list:
    """Every rank's `value` (any picklable object), in rank order, on every rank."""
    if ranks.world == 1:
        return [value]
    out = [None] * ranks.world
    dist.all_gather_object(out, value)
    return out


def mean_buffers(model, ranks: Ranks) -> None:
    """Every floating-point buffer of `model` (batch-norm statistics) averaged over the
    ranks, so that every rank holds the same model."""
    if ranks.world == 1:
        return
    for buffer in model.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer /= ranks.world


def autocast(ranks: Ranks, precision: str):
    """bf16 autocast on CUDA by default ("auto"); CPU runs float32 ("auto" or "fp32")."""
    if precision not in PRECISIONS:
        raise TrainerError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}")
    if precision == "fp32" or (precision == "auto" and ranks.device.type != "cuda"):
        return nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(ranks.device.type, dtype=dtype)


def step_seed(seed: int, step: int, shard: int) -> int:
    """The torch seed of (run seed, optimiser step, micro-batch shard): dropout masks depend
    on these alone, so a resumed run draws what an uninterrupted one would, and micro-batch
    k of a one-process run draws what DDP rank k draws."""
    digest = hashlib.blake2b(f"{seed}:{step}:{shard}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def split_batch(batch_size: int, ranks: Ranks, accumulate: int) -> int:
    """The rows per rank of a global batch; a one-line error if it does not split evenly
    into ranks × micro-batches."""
    per_rank = batch_size // ranks.world
    if per_rank * ranks.world != batch_size or per_rank % accumulate:
        raise TrainerError(f"--batch-size {batch_size} does not split into {ranks.world} "
                           f"rank(s) × --accumulate {accumulate} micro-batch(es) of equal size")
    return per_rank


def split(batch, parts: int) -> list:
    """A batch dataclass cut into `parts` equal micro-batches along its rows."""
    if parts == 1:
        return [batch]
    out = []
    n = batch.valid.shape[0]
    size = n // parts
    for k in range(parts):
        kw = {f.name: getattr(batch, f.name) for f in fields(batch)}
        out.append(type(batch)(**{name: None if t is None else t[k * size:(k + 1) * size]
                                  for name, t in kw.items()}))
    return out


# ---------------------------------------------------------------- run directory

class RunDir:
    """The files of one run (see the module docstring); writes only on rank 0."""

    def __init__(self, path: str | Path, ranks: Ranks):
        self.path = Path(path)
        self.ranks = ranks

    @property
    def config_file(self) -> Path:
        return self.path / CONFIG

    def check(self, resume: bool) -> None:
        """Refuse, before any work, an `--out` that cannot become this run: a file, a
        directory of other files, a run that has saved a checkpoint (resume it instead), an
        unwritable place. Rank 0 looks and tells the others: a rank that looked for itself
        could see the config rank 0 has just written and refuse its own run (seen in CI)."""
        problem = self._problem(resume) if self.ranks.main else None
        problem = broadcast(self.ranks, problem)
        if problem:
            raise TrainerError(problem)

    def _problem(self, resume: bool) -> str | None:
        """What stands in the way of writing the run at `path`, or None."""
        path = self.path
        if resume:
            return None if self.config_file.is_file() else (
                f"{path}: not a run directory (no {CONFIG}); nothing to resume")
        if path.exists() and not path.is_dir():
            return f"--out {path}: a file, not a directory; choose another --out"
        if path.is_dir() and any(path.iterdir()):
            if not is_run(path):
                return (f"--out {path}: a non-empty directory that is not a run; choose a "
                        f"new or empty directory")
            if has_checkpoint(path):
                return (f"{path}: already holds a run; resume it with --resume {path} "
                        f"or choose another --out")
        return _unwritable(path)

    def create(self, config: dict, resume: bool) -> None:
        """Write the run's config (a new run), once every check has passed. A run that
        saved no checkpoint (stopped before its first save) is replaced, with a note."""
        if self.ranks.main and not resume:
            try:
                if is_run(self.path):
                    self.note(f"{self.path}: replacing a run that saved no checkpoint")
                    _remove_run_files(self.path)
                self.path.mkdir(parents=True, exist_ok=True)
                tmp = self.config_file.with_suffix(".tmp")
                tmp.write_text(json.dumps(config, indent=1, sort_keys=True) + "\n")
                os.replace(tmp, self.config_file)
            except OSError as err:
                raise TrainerError(f"--out {self.path}: cannot write the run "
                                   f"({err.strerror or err})") from None
        barrier(self.ranks)

    def note(self, message: str) -> None:
        """A one-line note to the user on stderr (rank 0)."""
        if self.ranks.main:
            print(message, file=sys.stderr)

    def log(self, record: dict) -> None:
        if self.ranks.main:
            with open(self.path / METRICS, "a") as f:
                f.write(json.dumps(record) + "\n")

    def truncate_log(self, step: int) -> None:
        """Drop log lines after `step` (a resumed run logs them again)."""
        file = self.path / METRICS
        if not self.ranks.main or not file.exists():
            return
        kept = [line for line in file.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] <= step]
        file.write_text("".join(line + "\n" for line in kept))

    def plot(self) -> None:
        if self.ranks.main and (self.path / METRICS).is_file():  # nothing logged yet: no plot
            from trainer.plot import plot_runs

            plot_runs([self.path], self.path / CURVES)


RUN_FILES = (CONFIG, METRICS, CURVES, "tensorboard", "last", "best", ".last.old", ".best.old")


def is_run(path: Path) -> bool:
    """`path` holds a run's config (written by train pretrain / finetune)."""
    try:
        return "recipe" in json.loads((path / CONFIG).read_text())
    except (OSError, ValueError, TypeError):
        return False


def has_checkpoint(path: Path) -> bool:
    return any((path / name).is_dir() for name in ("last", "best", ".last.old"))


def _remove_run_files(path: Path) -> None:
    """The files of a run that saved no checkpoint (nothing else in the directory)."""
    for name in RUN_FILES:
        target = path / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _unwritable(path: Path) -> str | None:
    """Why a run directory cannot be created or written at `path`, or None."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        return f"--out {path}: {probe} is a file, not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"--out {path}: {probe} is not writable (read-only or no permission)"
    return None


def read_run_config(run: str | Path) -> dict:
    """The config of a run directory; TrainerError if `run` is not one."""
    file = Path(run) / CONFIG
    if not file.is_file():
        raise TrainerError(f"{run}: not a run directory (no {CONFIG}; made by train pretrain "
                           f"or train finetune)")
    try:
        return json.loads(file.read_text())
    except ValueError as err:
        raise TrainerError(f"{file}: damaged ({err})") from None


def run_checkpoint(run: str | Path, which: str = "best") -> Path:
    """`RUN/best` (or `RUN/last` when no evaluation chose a best), TrainerError if neither."""
    run = Path(run)
    for name in ((which, "last") if which == "best" else (which,)):
        if (run / name).is_dir():
            return run / name
    raise TrainerError(f"{run}: no checkpoint ({which}/ or last/); has the run saved one?")
