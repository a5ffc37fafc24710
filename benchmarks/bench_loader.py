"""Benchmark the streaming loader (trainer/data) against the reference solution's design and
against what a user would write on the store (issue #13).

Run:  .venv/bin/python benchmarks/bench_loader.py [--repeats 3] [--clean]
      .venv/bin/python benchmarks/bench_loader.py --help

Data: `ingest synth --split validate --shards 8 --videos-per-shard 420` (824 MB of
frame-level shards) and its store (`ingest convert`), both under bench_data/loader on
the disk (kept between runs; `--clean` deletes them at the end).

In one run, for video batches (B = 128, Lm = 150) and segment batches (B = 128), page
cache warm (every file read once first):

- project: `trainer.data.bench.run_bench` (the code of `train loader-bench`), 2 loader
  threads, one whole epoch per call: the first epoch of a fresh index and loader (2
  warm-up batches), during which the process also maps the store's pages (page-table
  faults), and, as a second row, an epoch after a whole warm-up epoch (a training run's
  steady state); the targets are judged on the first;
- (a) the reference solution's design: a torch DataLoader, 4 worker processes (spawn),
  an IterableDataset that reads the raw TFRecord shards with TensorFlow record by record
  (`tf.data.TFRecordDataset` per shard, `tf.io.parse_single_sequence_example`,
  `tf.io.decode_raw`; shards dealt to workers; TensorFlow is imported only inside the
  workers) and samples frames in Python (`random.sample`, sorted); video batches padded to
  the batch's longest in collate, segment windows expanded from the parsed frames with
  their class, score and mined negatives;
- (b) what a user would write on the store: a map-style Dataset over the reader API
  (`open_store(path)`: `store.frames(row)`, `store.windows([row])`, `store.negatives()`),
  frames sampled with numpy and padded to Lm, default collate, DataLoader with 2 workers
  (spawn: polars' thread pool does not survive fork), shuffled;
- (c) the memcpy ceiling of `run_bench`: the same bytes per batch copied by one thread
  from a 256 MiB source (memory, not the CPU caches; see trainer/data/bench.py).

Each baseline runs one epoch: its first `--warmup` batches (worker start, TensorFlow's
import, first reads) are not timed, the rest is cut into `--repeats` windows of equal batch
counts, one rate each. The project (whole epochs, its own warm-up batches excluded) runs
`--repeats` times before and `--repeats` times after the baselines, so that the shared
VM's slow spells hit both sides alike. Rates are medians (of windows, of runs); ratios are
ratios of medians. A DataLoader prefetches while the consumer waits, which only helps the
baselines. CPU seconds of the timed part are counted beside the wall time (the project's
process with its threads; a baseline's main process and its workers, from /proc/PID/stat),
so that bytes per CPU-second compare the designs also when other jobs share the cores.

Cold: `train loader-bench STORE --kind K --cold --json` in a fresh process per repeat (the
store on disk): every store file evicted with posix_fadvise(DONTNEED), one epoch, then the
kind's shard files evicted again and read sequentially; the ratio is the loader's disk
reads per second (/proc/self/io read_bytes) over the sequential read's.

Targets: project ≥ 10× (a), ≥ 3× (b), ≥ 30% of (c) in bytes/s, for both kinds; cold
reads ≥ 70% of the sequential-read ceiling.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate, get_worker_info

from trainer.data.bench import BenchConfig, run_bench, sequential_read, store_files

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench_data" / "loader"
SHARDS, VIDEOS_PER_SHARD = 8, 420  # ~825 MB of frame-level validate shards (issue #13: ≥ 800 MB)
BATCH, MAX_LEN = 128, 150
KINDS = ("video", "segment")
MB = 1e6
TARGETS = {"a": 10.0, "b": 3.0, "c": 0.30, "cold": 0.70}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / args[0]), *args[1:]], check=True,
                          capture_output=True, text=True)


def make_data(shards: int, videos: int) -> tuple[list[Path], Path]:
    src, store = DATA / "src", DATA / "store"
    want = [src / f"validate-{k:05d}-of-{shards:05d}.tfrecord" for k in range(shards)]
    made, params = DATA / "made.json", json.dumps([shards, videos])
    if not made.is_file() or made.read_text() != params:
        shutil.rmtree(DATA, ignore_errors=True)
        run_cli("ingest", "synth", str(src), "--split", "validate", "--shards", str(shards),
                "--videos-per-shard", str(videos), "--seed", "1", "--quiet")
        run_cli("ingest", "convert", str(src / "*.tfrecord"), "--out", str(store),
                "--workers", "2", "--quiet")
        made.write_text(params)
    return want, store


# ---------------------------------------------------------------- (a) the reference's design

def _segment_classes(labels) -> np.ndarray:
    from ingest.vocab import to_class_index
    return to_class_index(np.asarray(labels, np.int64)).astype(np.int64)


class TFRecordSamples(IterableDataset):
    """Raw TFRecord shards parsed by TensorFlow record by record, in the worker processes."""

    def __init__(self, shards: list[str], kind: str, max_len: int, seed: int):
        self.shards, self.kind, self.max_len, self.seed = shards, kind, max_len, seed

    def __iter__(self):
        import tensorflow as tf  # only ever in a worker process

        from ingest.store.segments import CONTEXT_FRAMES, WINDOW_FRAMES
        from ingest.vocab import N_SEGMENT_CLASSES

        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        rng = random.Random(self.seed * 1000 + wid)
        context = {"id": tf.io.FixedLenFeature([], tf.string),
                   "labels": tf.io.VarLenFeature(tf.int64),
                   "segment_labels": tf.io.VarLenFeature(tf.int64),
                   "segment_start_times": tf.io.VarLenFeature(tf.int64),
                   "segment_scores": tf.io.VarLenFeature(tf.float32)}
        sequence = {"rgb": tf.io.FixedLenSequenceFeature([], tf.string),
                    "audio": tf.io.FixedLenSequenceFeature([], tf.string)}
        for shard in self.shards[wid::nw]:
            for record in tf.data.TFRecordDataset(shard):
                ctx, seq = tf.io.parse_single_sequence_example(record, context, sequence)
                rgb = tf.io.decode_raw(seq["rgb"], tf.uint8).numpy()
                audio = tf.io.decode_raw(seq["audio"], tf.uint8).numpy()
                frames = np.concatenate([rgb, audio], axis=1)  # (n, 1152)
                n = len(frames)
                classes = _segment_classes(ctx["labels"].values.numpy())
                classes = classes[classes >= 0]
                if self.kind == "video":
                    if n == 0 or len(classes) == 0:
                        continue
                    pick = sorted(rng.sample(range(n), min(n, self.max_len)))
                    labels = np.zeros(N_SEGMENT_CLASSES, bool)
                    labels[classes] = True
                    yield frames[pick], labels
                    continue
                seg_class = _segment_classes(ctx["segment_labels"].values.numpy())
                starts = ctx["segment_start_times"].values.numpy()
                scores = ctx["segment_scores"].values.numpy()
                negatives = np.ones(N_SEGMENT_CLASSES, bool)
                negatives[classes] = False
                negatives[seg_class[(seg_class >= 0) & (scores > 0)]] = False
                for start, c, score in zip(starts, seg_class, scores):
                    if c < 0 or start < 0 or start >= n:
                        continue
                    window = np.zeros((WINDOW_FRAMES, frames.shape[1]), np.uint8)
                    ws = start - CONTEXT_FRAMES
                    lo, hi = max(ws, 0), min(ws + WINDOW_FRAMES, n)
                    window[lo - ws:hi - ws] = frames[lo:hi]
                    yield window, int(c), float(score), negatives


def collate_padded(items):
    """Video items (frames (n, F), labels) padded to the batch's longest, with a mask."""
    length = max(len(f) for f, _ in items)
    frames = np.zeros((len(items), length, items[0][0].shape[1]), np.uint8)
    mask = np.zeros((len(items), length), bool)
    for i, (f, _) in enumerate(items):
        frames[i, :len(f)] = f
        mask[i, :len(f)] = True
    labels = np.stack([lab for _, lab in items])
    return torch.from_numpy(frames), torch.from_numpy(mask), torch.from_numpy(labels)


def loader_a(shards: list[Path], kind: str) -> DataLoader:
    ds = TFRecordSamples([str(p) for p in shards], kind, MAX_LEN, seed=0)
    return DataLoader(ds, batch_size=BATCH, num_workers=4, multiprocessing_context="spawn",
                      collate_fn=collate_padded if kind == "video" else default_collate)


# ---------------------------------------------------------------- (b) a user's Dataset on the store

class StoreSamples(Dataset):
    """Samples through the reader API, one per __getitem__; the store opens in each worker."""

    def __init__(self, path: str, kind: str, max_len: int):
        from ingest.store import open_store
        self.path, self.kind, self.max_len = path, kind, max_len
        store = open_store(path)
        if kind == "video":
            v = store.videos
            keep = (v["n_frames"] > 0) & (v["class_indices"].list.len() > 0)
            self.rows = np.nonzero(keep.to_numpy())[0]
        else:
            s = store.segments
            keep = (~s["outside_video"]) & (s["class_index"] >= 0)
            self.rows = np.nonzero(keep.to_numpy())[0]
        self._store = None

    def __len__(self) -> int:
        return len(self.rows)

    def _open(self):
        if self._store is None:
            from ingest.store import open_store
            self._store = open_store(self.path)
            self._rng = np.random.default_rng(os.getpid())
            if self.kind == "video":
                self._classes = self._store.videos["class_indices"].to_list()
            else:
                s = self._store.segments
                self._seg = (s["class_index"].to_numpy(), s["score"].to_numpy(),
                             s["video_row"].to_numpy())
                self._negatives = self._store.negatives()
        return self._store

    def __getitem__(self, i: int):
        store, row = self._open(), int(self.rows[i])
        if self.kind == "video":
            f = store.frames(row)
            k = min(len(f), self.max_len)
            pick = np.sort(self._rng.choice(len(f), k, replace=False))
            frames = np.zeros((self.max_len, f.shape[1]), np.uint8)
            frames[:k] = f[pick]
            mask = np.arange(self.max_len) < k
            labels = np.zeros(1000, bool)
            labels[self._classes[row]] = True
            return torch.from_numpy(frames), torch.from_numpy(mask), torch.from_numpy(labels)
        cls, score, video = (c[row] for c in self._seg)
        window = store.windows([row])[0]
        return (torch.from_numpy(window), int(cls), float(score),
                torch.from_numpy(self._negatives[video]))


def loader_b(store: Path, kind: str) -> DataLoader:
    return DataLoader(StoreSamples(str(store), kind, MAX_LEN), batch_size=BATCH, shuffle=True,
                      num_workers=2, multiprocessing_context="spawn")


# ---------------------------------------------------------------- timing

def _cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) of this process and of the processes `pids`."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = time.process_time()
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def time_windows(loader: DataLoader, warmup: int, windows: int) -> dict:
    """One epoch of a DataLoader; the first `warmup` batches (worker start, imports, first
    reads) untimed, the rest cut into `windows` runs of equal batch counts, each one rate.
    CPU seconds of the timed part: the main process and the workers (/proc/PID/stat, read
    after every timed batch: the workers exit as the iterator ends)."""
    marks = []  # (time, samples, feature bytes) after each batch
    samples = nbytes = 0
    t_start = time.perf_counter()
    it = iter(loader)
    pids = [w.pid for w in it._workers]  # the worker processes (a private attribute)
    cpu0 = cpu1 = 0.0
    for batch in it:
        samples += len(batch[0])
        nbytes += batch[0].numel()  # the first tensor: frames or windows
        marks.append((time.perf_counter(), samples, nbytes))
        if len(marks) == warmup:
            cpu0 = _cpu_seconds(pids)
        elif len(marks) > warmup:
            cpu1 = _cpu_seconds(pids)
    cpu = cpu1 - cpu0
    timed = len(marks) - warmup
    if timed < windows:
        raise SystemExit(f"an epoch of {len(marks)} batches is too short for {warmup} warm-up "
                         f"batches and {windows} windows: use more data")
    cuts = [warmup - 1 + round(k * timed / windows) for k in range(windows + 1)]
    rates = []
    for a, b in itertools.pairwise(cuts):
        dt = marks[b][0] - marks[a][0]
        rates.append(((marks[b][1] - marks[a][1]) / dt, (marks[b][2] - marks[a][2]) / dt / MB))
    t0, _, b0 = marks[warmup - 1]
    t1, _, b1 = marks[-1]
    return {"samples": samples, "batches": len(marks), "startup_s": t0 - t_start,
            "seconds": t1 - t0, "samples_per_s": med([r[0] for r in rates]),
            "mb_per_s": med([r[1] for r in rates]), "mb_per_s_all": (b1 - b0) / (t1 - t0) / MB,
            "mb_per_s_range": (min(r[1] for r in rates), max(r[1] for r in rates)),
            "cpu_seconds": cpu, "mb_per_cpu_s": (b1 - b0) / cpu / MB}


WHOLE_EPOCH = 1 << 40  # warm-up batches: more than any epoch has, so the warm-up ends with it


def time_project(store: Path, kind: str, calls: int, warm_epoch: bool = False) -> list[dict]:
    """`calls` whole-epoch runs of run_bench (the code of `train loader-bench`): each builds
    a fresh index and loader and times its first epoch after 2 warm-up batches, so the
    process maps the store's pages during the timed epoch. `warm_epoch`: a whole epoch of
    warm-up first, so the timed epoch is a later one (a training run's steady state)."""
    warmup = WHOLE_EPOCH if warm_epoch else 2
    return [run_bench(BenchConfig(store=str(store), kind=kind, batch_size=BATCH,
                                  max_len=MAX_LEN, threads=2, seconds=1e9,
                                  warmup_batches=warmup)).to_dict()
            for _ in range(calls)]


def _summary(runs: list[dict]) -> dict:
    mb = [r["feature_mb_per_s"] for r in runs]
    p = {"samples": runs[0]["samples"], "samples_per_s": med([r["samples_per_s"] for r in runs]),
         "mb_per_s": med(mb), "mb_per_s_range": (min(mb), max(mb)),
         "seconds": med([r["seconds"] for r in runs]),
         "cpu_seconds": med([r["cpu_seconds"] for r in runs]),
         "mb_per_cpu_s": med([r["feature_mb_per_cpu_s"] for r in runs])}
    for key in ("memcpy_mb_per_s", "of_memcpy", "loader_anon_mb", "anon_peak_mb",
                "file_peak_mb"):
        p[key] = med([r[key] for r in runs])
    return p


def warm_page_cache(paths: list[Path]) -> None:
    sequential_read(paths)


def cold_run(store: Path, kind: str) -> dict:
    out = run_cli("train", "loader-bench", str(store), "--kind", kind, "--batch-size",
                  str(BATCH), "--max-len", str(MAX_LEN), "--threads", "2", "--seconds", "600",
                  "--cold", "--json", "--quiet")
    return json.loads(out.stdout)


def med(values) -> float:
    return statistics.median(values)


def measure_kind(shards: list[Path], store: Path, kind: str, repeats: int, warmup: int) -> dict:
    """Project runs before and after the two baselines (so that the VM's slow spells hit all
    alike); medians over them and over the baselines' windows."""
    warm_page_cache(shards + store_files(store))
    runs = time_project(store, kind, repeats)
    a = time_windows(loader_a(shards, kind), warmup, repeats)
    print(f"{kind} (a): {a}", flush=True)
    b = time_windows(loader_b(store, kind), warmup, repeats)
    print(f"{kind} (b): {b}", flush=True)
    runs += time_project(store, kind, repeats)
    p = _summary(runs)
    print(f"{kind} project: {p}", flush=True)
    steady = _summary(time_project(store, kind, repeats, warm_epoch=True))
    print(f"{kind} project, after a warm-up epoch: {steady}", flush=True)
    if not p["samples"] == a["samples"] == b["samples"]:
        print(f"note: samples per epoch differ: project {p['samples']}, a {a['samples']}, "
              f"b {b['samples']}", flush=True)
    return {"project": p, "steady": steady, "a": a, "b": b,
            "ratio_a": p["mb_per_s"] / a["mb_per_s"], "ratio_b": p["mb_per_s"] / b["mb_per_s"],
            "ratio_a_samples": p["samples_per_s"] / a["samples_per_s"],
            "ratio_a_cpu": p["mb_per_cpu_s"] / a["mb_per_cpu_s"],
            "ratio_b_cpu": p["mb_per_cpu_s"] / b["mb_per_cpu_s"],
            "ratio_b_samples": p["samples_per_s"] / b["samples_per_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3,
                    help="project runs before and after the baselines, and timed windows of "
                         "each baseline's epoch (default 3)")
    ap.add_argument("--warmup", type=int, default=8,
                    help="untimed first batches of each baseline's epoch (default 8)")
    ap.add_argument("--shards", type=int, default=SHARDS)
    ap.add_argument("--videos-per-shard", type=int, default=VIDEOS_PER_SHARD)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--no-cold", action="store_true", help="leave out the cold measurement")
    ap.add_argument("--clean", action="store_true", help="delete bench_data/loader at the end")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the spawned TF workers: fewer logs
    warnings.filterwarnings("ignore", message="This DataLoader will create 4 worker")  # (a)
    kinds = args.kinds.split(",")

    t_run = time.perf_counter()
    shards, store = make_data(args.shards, args.videos_per_shard)
    src_mb = sum(p.stat().st_size for p in shards) / MB
    print(f"data: {len(shards)} shards, {src_mb:.0f} MB of TFRecords; store "
          f"{sum(p.stat().st_size for p in store_files(store)) / MB:.0f} MB ({store}); "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    results = {kind: measure_kind(shards, store, kind, args.repeats, args.warmup)
               for kind in kinds}
    cold = {}
    if not args.no_cold:
        for kind in kinds:
            runs = [cold_run(store, kind) for _ in range(args.repeats)]
            cold[kind] = {key: med([r[key] for r in runs]) for key in (
                "feature_mb_per_s", "samples_per_s", "disk_read_mb", "disk_read_mb_per_s",
                "seq_read_mb_per_s", "of_seq_read", "read_files_mb", "seconds")}
            cold[kind]["of_seq_read_range"] = (min(r["of_seq_read"] for r in runs),
                                               max(r["of_seq_read"] for r in runs))
            print(f"{kind} cold: {cold[kind]}", flush=True)
    report(results, cold, args, time.perf_counter() - t_run)
    if args.clean:
        shutil.rmtree(DATA, ignore_errors=True)


def report(results: dict, cold: dict, args, wall: float) -> None:
    print(f"\nB = {BATCH}, Lm = {MAX_LEN}; project: medians of {2 * args.repeats} first "
          f"epochs of a fresh loader and of {args.repeats} epochs after a warm-up epoch; "
          f"baselines: medians of {args.repeats} windows of one epoch after {args.warmup} "
          f"warm-up batches; load average {os.getloadavg()[0]:.2f}; {wall:.0f} s in all")
    print("| kind | method | samples/s | feature MB/s (range) | timed s | CPU s | MB per CPU-s |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    names = {"project": "project loader, 2 threads (first epoch)",
             "steady": "project loader, 2 threads (after a warm-up epoch)",
             "a": "(a) TF parse, DataLoader 4 workers",
             "b": "(b) reader-API Dataset, DataLoader 2 workers"}
    for kind, r in results.items():
        for who, name in names.items():
            x = r[who]
            lo, hi = x["mb_per_s_range"]
            print(f"| {kind} | {name} | {x['samples_per_s']:,.0f} | {x['mb_per_s']:,.0f} "
                  f"({lo:,.0f}-{hi:,.0f}) | {x['seconds']:.2f} | {x['cpu_seconds']:.2f} | "
                  f"{x['mb_per_cpu_s']:,.0f} |")
        print(f"| {kind} | (c) memcpy, same bytes per batch | | "
              f"{r['project']['memcpy_mb_per_s']:,.0f} | | | |")
    print("\n| kind | vs (a): bytes/s (samples/s) [per CPU-s] | vs (b): bytes/s (samples/s) "
          "[per CPU-s] | of (c) | loader anon MB | file-backed MB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for kind, r in results.items():
        p = r["project"]
        print(f"| {kind} | {r['ratio_a']:.1f}x ({r['ratio_a_samples']:.1f}x) "
              f"[{r['ratio_a_cpu']:.1f}x] | {r['ratio_b']:.1f}x ({r['ratio_b_samples']:.1f}x) "
              f"[{r['ratio_b_cpu']:.1f}x] | {p['of_memcpy']:.1%} | "
              f"{p['loader_anon_mb']:.0f} | {p['file_peak_mb']:.0f} |")
        met = [r["ratio_a"] >= TARGETS["a"], r["ratio_b"] >= TARGETS["b"],
               p["of_memcpy"] >= TARGETS["c"]]
        print(f"  {kind} targets (>= 10x a, >= 3x b, >= 30% of c): "
              + ", ".join(("yes" if m else "no") for m in met)
              + f"; after a warm-up epoch {r['steady']['of_memcpy']:.1%} of c")
    if cold:
        print("\n| kind | cold feature MB/s | disk reads MB/s | sequential read MB/s "
              "| of sequential (range) | MB read / MB of files |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for kind, c in cold.items():
            lo, hi = c["of_seq_read_range"]
            print(f"| {kind} | {c['feature_mb_per_s']:,.0f} | {c['disk_read_mb_per_s']:,.0f} | "
                  f"{c['seq_read_mb_per_s']:,.0f} | {c['of_seq_read']:.1%} ({lo:.0%}-{hi:.0%}) | "
                  f"{c['disk_read_mb']:,.0f} / {c['read_files_mb']:,.0f} |")
    print("\nJSON " + json.dumps({"warm": results, "cold": cold}))


if __name__ == "__main__":
    main()
