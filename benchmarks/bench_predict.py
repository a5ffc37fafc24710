"""`predict segments`' core: candidates/s of a context-agnostic and a context-aware model,
the aware one with each video's context encoded once (the project) against, in the same run
on the same batches, the reference solution's way: the context video encoded again for
every segment.

    .venv/bin/python benchmarks/bench_predict.py [--videos 60] [--batches 3] [--repeats 3]
                                                 [--sizes tiny,paper] [--device cpu|cuda]
                                                 [--threads-compare]

`--threads-compare` (CPU): instead, torch on every core of the process (the default of
`predict segments` since 2026-12-07) against one core left to each of the two loader
threads (the training recipes' rule, `cpu_threads`; the default before), alternating, on
the same batches.

Data: one synthetic test shard (`ingest synth --split test`) converted to a store in a
temporary folder; models with random weights (speed does not depend on training):
tiny (`dbof-tiny`, `nxvlad-tiny+dbof-tiny`) and paper-sized (`nxvlad-2`, `dbof-3+nxvlad-2`).
Every timed pass runs the loader's candidate batches (whole videos, store order, contexts
of Lm = 150 frames evenly spaced) through the model in eval mode; medians over repeats.
With CUDA, the extrapolated time of the real test set's 1,704,348 candidates is printed.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ingest.store.convert import ConvertConfig, convert
from ingest.synth import SynthConfig, write_synth
from predict.segments import _probs, prediction_threads
from trainer.data import Loader, LoaderConfig, StoreIndex
from trainer.recipes.runtime import Ranks, cpu_threads
from trainer.registry import build

REAL_CANDIDATES = 1_704_348
MODELS = {"tiny": ("dbof-tiny", "nxvlad-tiny+dbof-tiny"),
          "paper": ("nxvlad-2", "dbof-3+nxvlad-2")}
CONTEXT_LEN = 150  # Table 4


def make_store(root: Path, videos: int) -> Path:
    cfg = SynthConfig(out_dir=str(root / "shards"), split="test", shards=1,
                      videos_per_shard=videos, seed=5)
    sources = [str(p) for p in write_synth(cfg, progress=False) if p.suffix == ".tfrecord"]
    convert(ConvertConfig(sources=tuple(sources), out=str(root / "store"), progress=False))
    return root / "store"


def reference_probs(model, batch):
    """The reference solution's way: every candidate carries its own context video."""
    context = model.encode_context(batch.context[batch.video_slot],
                                   batch.context_mask[batch.video_slot])
    return model.classify(context, batch.windows).probs().float().cpu().numpy()


def time_pass(model, loader, fn, batches: int) -> tuple[float, int]:
    """(seconds, candidates) of `batches` candidate batches through `fn`."""
    n, t0 = 0, time.perf_counter()
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i == batches:
                break
            n += len(fn(model, batch))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, n


def measure(index, name: str, aware: bool, batch: int, args) -> dict:
    model = build(name, device=args.device).eval()
    cfg = LoaderConfig(kind="candidates", batch_size=batch, max_len=CONTEXT_LEN, train=False,
                       with_context=aware, threads=2, device=args.device)
    ways = {"once per video (project)": lambda m, b: _probs(m, "aware" if aware else "video", b)}
    if aware:
        ways["per segment (reference)"] = reference_probs
    out = {}
    for way, fn in ways.items():
        time_pass(model, Loader(index, cfg), fn, 1)  # warm-up
        runs = [time_pass(model, Loader(index, cfg), fn, args.batches)
                for _ in range(args.repeats)]
        rate = statistics.median(n / s for s, n in runs)
        out[way] = rate
        print(f"{name:24s} {way:26s} batch {batch:5d}: {rate:10.1f} candidates/s"
              + (f"  (real test set: {REAL_CANDIDATES / rate / 60:.1f} min)"
                 if args.device == "cuda" else ""), flush=True)
    if aware:
        ours, ref = out["once per video (project)"], out["per segment (reference)"]
        print(f"{'':24s} ratio once / per segment: {ours / ref:.2f}x", flush=True)
    return out


def threads_compare(index, args) -> None:
    """Candidates/s with torch on every core (the default) and on cores − loader threads
    (the training rule), alternating over repeats; the median of the per-repeat ratios."""
    ranks = Ranks(0, 1, torch.device("cpu"))
    settings = {"every core (default)": lambda: prediction_threads(ranks, None),
                "cores - 2 loader threads (training)": lambda: cpu_threads(ranks, 2)}
    for name, aware in zip(MODELS["tiny"], (False, True)):
        model = build(name).eval()
        cfg = LoaderConfig(kind="candidates", batch_size=1024, max_len=CONTEXT_LEN,
                           train=False, with_context=aware, threads=2)
        fn = lambda m, b, aware=aware: _probs(m, "aware" if aware else "video", b)
        rates = {k: [] for k in settings}
        time_pass(model, Loader(index, cfg), fn, 1)  # warm-up
        for _ in range(args.repeats):
            for way, apply in settings.items():
                apply()
                s, n = time_pass(model, Loader(index, cfg), fn, args.batches)
                rates[way].append(n / s)
        for way, r in rates.items():
            print(f"{name:24s} torch threads {way:34s}: {statistics.median(r):10.1f} "
                  f"candidates/s", flush=True)
        ours, before = rates.values()
        ratio = statistics.median(a / b for a, b in zip(ours, before))
        print(f"{'':24s} ratio every core / cores - loader threads: {ratio:.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=60)
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", default="tiny,paper")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads-compare", action="store_true")
    args = parser.parse_args()
    prediction_threads(Ranks(0, 1, torch.device(args.device)), None)  # as predict does
    print(f"device {args.device}, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        index = StoreIndex.build(make_store(Path(tmp), args.videos))
        print(f"store: {len(index.cand_video)} candidates of {index.n_videos} videos")
        if args.threads_compare:
            threads_compare(index, args)
            return
        for size in args.sizes.split(","):
            agnostic, aware = MODELS[size]
            batch = 1024 if size == "tiny" else 256
            measure(index, agnostic, False, batch, args)
            measure(index, aware, True, 128 if size == "paper" else batch, args)


if __name__ == "__main__":
    main()
