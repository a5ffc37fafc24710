"""Training throughput with the loader included (issue #17): steps/s, samples/s and the share
of step time spent waiting for data, for the project's loader against, in the same run on
the same data and the same model step, the reference solution's loading design (baseline
(a) of benchmarks/bench_loader.py: a torch DataLoader, 4 worker processes parsing the raw
TFRecord shards with TensorFlow record by record, frames sampled in Python).

    .venv/bin/python benchmarks/bench_train.py [--models dbof-3,nxvlad-2,aware] [--steps 4]
                                               [--warmup 1] [--device cpu|cuda]

Rows (paper batch sizes, Lm = 150): dbof-3 pre-training (B = 128), nxvlad-2 pre-training
(B = 48), a context-aware dbof-3+nxvlad-2 fine-tuning step (B = 128, context Lm = 150).
The step: forward, Eq. 1 or Eq. 2, backward, AdamW step (bf16 autocast on CUDA, float32 on
the CPU). Data: 2 synthetic validate shards (`ingest synth`) and their store, in a
temporary folder. Times are medians over `--steps` timed steps after `--warmup` steps.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, default_collate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loader import TFRecordSamples, collate_padded

from ingest.store.convert import ConvertConfig, convert
from ingest.synth import SynthConfig, write_synth
from trainer.data import Loader, LoaderConfig
from trainer.losses import segment_loss, video_loss
from trainer.optim import build_optimizer
from trainer.recipes.runtime import Ranks, cpu_threads
from trainer.registry import build

ROWS = {"dbof-3": ("dbof-3", "video", 128), "nxvlad-2": ("nxvlad-2", "video", 48),
        "aware": ("dbof-3+nxvlad-2", "aware", 128)}
MAX_LEN = 150


def make_data(root: Path) -> tuple[list[str], Path]:
    cfg = SynthConfig(out_dir=str(root / "shards"), split="validate", shards=2,
                      videos_per_shard=160, seed=3)
    shards = [str(p) for p in write_synth(cfg, progress=False) if p.suffix == ".tfrecord"]
    convert(ConvertConfig(sources=tuple(shards), out=str(root / "store"), progress=False))
    return shards, root / "store"


def project_batches(store: Path, kind: str, batch: int, device: str):
    loader = Loader(store, LoaderConfig(kind=kind, batch_size=batch, max_len=MAX_LEN,
                                        device=device, threads=2))
    for b in loader.forever():
        if kind == "video":
            yield b.frames, b.mask, b.labels
        else:
            yield b.context, b.context_mask, b.windows, b.class_index, b.score, b.negatives


def reference_batches(shards: list[str], kind: str, batch: int, device: str):
    """Baseline (a). The aware row uses segment items; their context is the whole window
    (the reference parser yields no context video), so its batches are smaller: a
    lower bound on the reference's data cost."""
    ds = TFRecordSamples(shards, "video" if kind == "video" else "segment", MAX_LEN, seed=0)
    collate = collate_padded if kind == "video" else default_collate
    while True:
        loader = DataLoader(ds, batch_size=batch, num_workers=4,
                            multiprocessing_context="spawn", collate_fn=collate)
        for b in loader:
            b = [t.to(device, non_blocking=True) for t in b]
            if kind == "video":
                yield b[0], b[1], b[2]
            else:
                windows, c, score, negatives = b
                mask = torch.ones(windows.shape[:2], dtype=torch.bool, device=device)
                yield windows, mask, windows, c, score.float(), negatives


def step_fn(model, kind: str, device: str):
    opt = build_optimizer(model, 3e-4, 0.1)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else None

    def step(batch) -> None:
        with amp or torch.autocast("cpu", enabled=False):
            if kind == "video":
                frames, mask, labels = batch
                loss = video_loss(model(frames, mask), labels)
            else:
                context, cmask, windows, c, score, negatives = batch
                loss = segment_loss(model(context, cmask, windows), c, score, negatives)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    return step


def measure(batches, step, warmup: int, steps: int) -> dict:
    waits, totals = [], []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        batch = next(batches)
        t1 = time.perf_counter()
        step(batch)
        t2 = time.perf_counter()
        if i >= warmup:
            waits.append(t1 - t0)
            totals.append(t2 - t0)
    total = statistics.median(totals)
    return {"step_s": total, "wait_share": sum(waits) / sum(totals)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="dbof-3,nxvlad-2,aware")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    cpu_threads(Ranks(0, 1, torch.device(args.device)), 2)  # as the recipes / predict do
    print(f"device {args.device}, torch threads {torch.get_num_threads()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        shards, store = make_data(Path(tmp))
        for row in args.models.split(","):
            name, kind, batch = ROWS[row]
            for way, batches in (("project loader", project_batches(store, kind, batch,
                                                                    args.device)),
                                 ("reference (a)", reference_batches(shards, kind, batch,
                                                                     args.device))):
                torch.manual_seed(0)
                model = build(name, device=args.device).train()
                r = measure(batches, step_fn(model, kind, args.device), args.warmup, args.steps)
                print(f"{row:9s} B={batch:3d} {way:15s} {1 / r['step_s']:7.3f} steps/s "
                      f"{batch / r['step_s']:9.1f} samples/s  waiting for data "
                      f"{100 * r['wait_share']:5.1f}% of step time", flush=True)


if __name__ == "__main__":
    main()
