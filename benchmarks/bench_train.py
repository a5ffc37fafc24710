"""Training throughput with the loader included (issue #17): steps/s, samples/s and the share
of step time spent waiting for data, for the project's loader against, in the same run on
the same data and the same model step, the reference solution's loading design (baseline
(a) of benchmarks/bench_loader.py: a torch DataLoader, 4 worker processes parsing the raw
TFRecord shards with TensorFlow record by record, frames sampled in Python).

    .venv/bin/python benchmarks/bench_train.py [--models dbof-3,nxvlad-2,aware] [--steps 4]
        [--warmup 1] [--device cpu|cuda] [--precision auto|fp32|bf16] [--compile]
        [--store STORE --shards GLOB] [--reference auto|on|off] [--json FILE]

Rows (paper batch sizes, Lm = 150): dbof-3 pre-training (B = 128), nxvlad-2 pre-training
(B = 48), a context-aware dbof-3+nxvlad-2 fine-tuning step (B = 128, context Lm = 150);
`dbof-tiny`, `nxvlad-tiny`, `aware-tiny` are the tiny variants (quick checks of the script;
`--batch-size` / `--max-len` override every row's). The step: forward, Eq. 1 or Eq. 2,
backward, AdamW step, under the recipes' precision (`--precision auto`: bf16 autocast on
CUDA, float32 on the CPU); `--compile` wraps the model in torch.compile as `train --compile`
does (the first warm-up step compiles: give it `--warmup 2` or more). Data: 2 synthetic
validate shards (`ingest synth`) and their store in a temporary folder, or `--store` (and
`--shards`, the TFRecords it was converted from, for the reference). The reference needs
TensorFlow (the `tf` extra): `--reference auto` runs it where TensorFlow is installed and
says so where not. Times are medians over `--steps` timed steps after `--warmup` steps; on
CUDA each row also reports the peak GPU memory (torch.cuda.max_memory_allocated, the
row's model, optimiser and batches). `--json FILE` writes every row measured so far after
each row (`scripts/gpu_check.py` reads it).
"""
from __future__ import annotations

import argparse
import gc
import glob
import importlib.util
import json
import os
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
from trainer.recipes.runtime import Ranks, autocast, cpu_threads
from trainer.registry import build

ROWS = {"dbof-3": ("dbof-3", "video", 128), "nxvlad-2": ("nxvlad-2", "video", 48),
        "aware": ("dbof-3+nxvlad-2", "aware", 128),
        "dbof-tiny": ("dbof-tiny", "video", 128), "nxvlad-tiny": ("nxvlad-tiny", "video", 48),
        "aware-tiny": ("dbof-tiny+nxvlad-tiny", "aware", 128)}
MAX_LEN = 150
PRECISIONS = ("auto", "fp32", "bf16")  # of trainer/recipes/runtime.py; fp16 needs a scaler
MIB = 1 << 20


def make_data(root: Path) -> tuple[list[str], Path]:
    cfg = SynthConfig(out_dir=str(root / "shards"), split="validate", shards=2,
                      videos_per_shard=160, seed=3)
    shards = [str(p) for p in write_synth(cfg, progress=False) if p.suffix == ".tfrecord"]
    convert(ConvertConfig(sources=tuple(shards), out=str(root / "store"), progress=False))
    return shards, root / "store"


def project_batches(store: Path, kind: str, batch: int, max_len: int, device: str,
                    threads: int):
    loader = Loader(store, LoaderConfig(kind=kind, batch_size=batch, max_len=max_len,
                                        device=device, threads=threads))
    for b in loader.forever():
        if kind == "video":
            yield b.frames, b.mask, b.labels
        else:
            yield b.context, b.context_mask, b.windows, b.class_index, b.score, b.negatives


def reference_batches(shards: list[str], kind: str, batch: int, max_len: int, device: str):
    """Baseline (a). The aware row uses segment items; their context is the whole window
    (the reference parser yields no context video), so its batches are smaller: a
    lower bound on the reference's data cost."""
    ds = TFRecordSamples(shards, "video" if kind == "video" else "segment", max_len, seed=0)
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


def step_fn(model, kind: str, device: str, precision: str, compile_: bool):
    """One training step of `model` (the optimiser holds its parameters; with `compile_`
    the forward runs through torch.compile's wrapper of the same module)."""
    opt = build_optimizer(model, 3e-4, 0.1)
    net = torch.compile(model) if compile_ else model
    ranks = Ranks(0, 1, torch.device(device))

    def step(batch) -> None:
        with autocast(ranks, precision):
            if kind == "video":
                frames, mask, labels = batch
                loss = video_loss(net(frames, mask), labels)
            else:
                context, cmask, windows, c, score, negatives = batch
                loss = segment_loss(net(context, cmask, windows), c, score, negatives)
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


def reference_off(args) -> str | None:
    """Why the reference rows are not run, or None when they are."""
    if args.reference == "off":
        return "--reference off"
    if importlib.util.find_spec("tensorflow") is None:
        if args.reference == "on":
            sys.exit("bench_train: --reference on needs TensorFlow (pip install -e .[tf])")
        return "TensorFlow is not installed (the tf extra)"
    if args.store and not args.shards:
        return "no --shards given beside --store"
    return None


def run_row(row: str, way: str, batches, args) -> dict:
    name, kind, batch = ROWS[row]
    batch = args.batch_size or batch
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    torch.manual_seed(0)
    model = build(name, device=args.device).train()
    r = measure(batches, step_fn(model, kind, args.device, args.precision, args.compile),
                args.warmup, args.steps)
    peak = torch.cuda.max_memory_allocated() / MIB if args.device == "cuda" else None
    precision = args.precision if args.precision != "auto" else (
        "bf16" if args.device == "cuda" else "fp32")
    return {"row": row, "model": name, "kind": kind, "batch": batch, "max_len": args.max_len,
            "way": way, "device": args.device, "precision": precision,
            "compile": args.compile, "warmup": args.warmup, "steps": args.steps,
            "step_s": r["step_s"], "steps_per_s": 1 / r["step_s"],
            "samples_per_s": batch / r["step_s"], "wait_share": r["wait_share"],
            "peak_gpu_mib": peak}


def row_line(r: dict) -> str:
    peak = "" if r["peak_gpu_mib"] is None else f"  peak GPU memory {r['peak_gpu_mib']:,.0f} MiB"
    return (f"{r['row']:11s} B={r['batch']:3d} {r['way']:15s} {r['steps_per_s']:7.3f} steps/s "
            f"{r['samples_per_s']:9.1f} samples/s  waiting for data "
            f"{100 * r['wait_share']:5.1f}% of step time{peak}")


def write_json(path: str | None, rows: list[dict], meta: dict) -> None:
    """Every row so far, replaced atomically (a reader never sees half a file)."""
    if path is None:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump({**meta, "rows": rows}, f, indent=1)
    os.replace(tmp, path)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="dbof-3,nxvlad-2,aware",
                        help=f"rows, comma-separated: {', '.join(ROWS)}")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--batch-size", type=int, help="every row's batch (default: its own)")
    parser.add_argument("--max-len", type=int, default=MAX_LEN, help="Lm (default 150)")
    parser.add_argument("--threads", type=int, default=2, help="the project loader's threads")
    parser.add_argument("--store", help="an existing store (default: make one)")
    parser.add_argument("--shards", help="glob of the TFRecords --store was converted from")
    parser.add_argument("--reference", choices=("auto", "on", "off"), default="auto",
                        help="the reference rows (auto: where TensorFlow is installed)")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args()
    if unknown := [r for r in args.models.split(",") if r not in ROWS]:
        parser.error(f"unknown row {unknown[0]!r}: one of {', '.join(ROWS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit(f"bench_train: --device cuda, but torch {torch.__version__} sees no CUDA device")
    return args


def main() -> None:
    args = parse_args()
    cpu_threads(Ranks(0, 1, torch.device(args.device)), args.threads)  # as the recipes do
    print(f"device {args.device}, torch threads {torch.get_num_threads()}", flush=True)
    no_reference = reference_off(args)
    if no_reference:
        print(f"reference (a): not run ({no_reference})", flush=True)
    meta = {"device": args.device, "torch": torch.__version__, "reference_skipped": no_reference}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.store:
            store, shards = Path(args.store), sorted(glob.glob(args.shards or ""))
        else:
            shards, store = make_data(Path(tmp))
        for row in args.models.split(","):
            _, kind, batch = ROWS[row]
            batch = args.batch_size or batch
            ways = [("project loader", project_batches(store, kind, batch, args.max_len,
                                                       args.device, args.threads))]
            if not no_reference:
                ways.append(("reference (a)", reference_batches(shards, kind, batch,
                                                                 args.max_len, args.device)))
            for way, batches in ways:
                rows.append(run_row(row, way, batches, args))
                batches.close()  # stops this row's loader before the next row's peak
                release(args)
                print(row_line(rows[-1]), flush=True)
                write_json(args.json, rows, meta)


def release(args) -> None:
    """Free the last row's model, optimiser and compiled graphs before the next row."""
    if args.compile:
        torch._dynamo.reset()
    gc.collect()
    if args.device == "cuda":
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
