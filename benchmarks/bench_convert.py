"""Benchmark `ingest convert` (decode + CRC + write the store) against TensorFlow parse-only.

Run:  .venv/bin/python benchmarks/bench_convert.py [--shards 8 --videos-per-shard 405]
      .venv/bin/python benchmarks/bench_convert.py --help

Writes ~800 MB of synthetic validate shards (`ingest synth`) under
bench_data/convert/src (kept between runs; delete the folder to regenerate), then,
each measurement in its own fresh subprocess (so peak RSS is per measurement and
TensorFlow never shares a process with anything else):

- convert with 1 worker and with 2 workers (wall time of `ingest.convert.convert`,
  process pool start included; the store is deleted between repeats), writing the
  store to tmpfs (`--tmpfs-dir`, default /dev/shm: the CPU cost of converting) and
  to the disk under bench_data/convert (this VM's disk sustains ~150 MB/s of
  writes, which bounds any converter that writes a store there);
- TensorFlow's parse-only throughput: `TFRecordDataset` → batched
  `tf.io.parse_sequence_example` of every feature, nothing written: with TensorFlow's
  default thread pools on both cores and pinned to one core (two reader/batch
  settings each, the best compared), and the single-thread pipeline of
  benchmarks/bench_decode.py (`run_tf_pipeline`, reused), pinned to one core.

Every configuration runs once per round, rounds repeated `--repeats` times (slow
spells of a shared VM hit all alike); ratios are medians of per-round ratios.

Before each timed convert the child touches and frees WARM_GB of memory, so that
the store written into tmpfs or the page cache lands on pages the VM backs already
(benchmarks/vm_memory.py; `--cold` leaves it out).

Prints the medians over `--repeats`, source MB/s, the ratios against the targets
(1 worker ≥ TF parse-only; 2 workers ≥ 1.7 × 1 worker) and the peak RSS per worker.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench_data" / "convert"
WARM_GB = 2.0  # memory touched and freed before each timed convert (benchmarks/vm_memory.py)
sys.path.insert(0, str(ROOT / "benchmarks"))


SHARDS, VIDEOS_PER_SHARD = 8, 405  # the ~800 MB of synthetic validate shards (issue #3)


def make_shards(shards: int = SHARDS, videos: int = VIDEOS_PER_SHARD) -> list[Path]:
    src = DATA / "src"
    want = [src / f"validate-{k:05d}-of-{shards:05d}.tfrecord" for k in range(shards)]
    if not all(p.is_file() for p in want):
        shutil.rmtree(src, ignore_errors=True)
        subprocess.run([sys.executable, "-c", "from ingest.cli.main import main; main()", "synth",
                        str(src), "--split", "validate", "--shards", str(shards),
                        "--videos-per-shard", str(videos), "--seed", "1", "--quiet"],
                       check=True)
    return want


# ---------------------------------------------------------------- children (one per measurement)

def child_convert(shards: list[str], workers: int, store_dir: str, cores: int = 0,
                  cold: bool = False, chunk_mb: float = 0) -> dict:
    import resource

    from vm_memory import warm_guest_memory

    from ingest.store.convert import CHUNK_BYTES, ConvertConfig, convert

    chunk_bytes = int(chunk_mb * 2**20) if chunk_mb else CHUNK_BYTES

    _pin(cores)  # this process and the pool it starts

    out = Path(store_dir) / f"store-w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    # warm-up: numba caches loaded in this process (not counted)
    warm = Path(store_dir) / "warm"
    shutil.rmtree(warm, ignore_errors=True)
    convert(ConvertConfig(sources=(shards[0],), out=str(warm), progress=False,
                          chunk_bytes=1 << 20))
    shutil.rmtree(warm)
    if not cold:  # the store (~1.05 GB) and the workers' buffers land on backed pages
        warm_guest_memory(WARM_GB)
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    s = convert(ConvertConfig(sources=tuple(shards), out=str(out), workers=workers,
                              progress=False, chunk_bytes=chunk_bytes))
    dt = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    shutil.rmtree(out)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": dt, "peak_rss_worker": s["peak_rss"] if workers > 1 else own,
            "videos": s["totals"]["videos"], "cpu": cpu}


def _cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children."""
    import resource

    return sum(getattr(resource.getrusage(who), f) for who in
               (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for f in ("ru_utime", "ru_stime"))


def _pin(cores: int) -> None:
    """Run this process (and what it starts) on its first `cores` CPUs; 0: all."""
    if cores:
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))


def child_tf(shards: list[str], readers: int, batch: int, cores: int = 0) -> dict:
    _pin(cores)  # before TensorFlow sizes its thread pools
    import tensorflow as tf

    ctx = {"id": tf.io.FixedLenFeature([], tf.string),
           "labels": tf.io.VarLenFeature(tf.int64),
           "segment_labels": tf.io.VarLenFeature(tf.int64),
           "segment_start_times": tf.io.VarLenFeature(tf.int64),
           "segment_scores": tf.io.VarLenFeature(tf.float32)}
    seq = {"rgb": tf.io.FixedLenSequenceFeature([], tf.string),
           "audio": tf.io.FixedLenSequenceFeature([], tf.string)}

    def parse(x):
        c, s, _ = tf.io.parse_sequence_example(x, context_features=ctx, sequence_features=seq)
        return c["id"], s["rgb"], s["audio"]

    ds = (tf.data.TFRecordDataset(shards, num_parallel_reads=readers).batch(batch)
          .map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2))
    for _ in ds.take(2):  # warm-up (graph tracing)
        pass
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    n = 0
    for ids, _, _ in ds:
        n += int(ids.shape[0])
    return {"seconds": time.perf_counter() - t0, "videos": n, "cpu": _cpu_seconds() - cpu0}


def child_tf_single(shards: list[str], cores: int = 1) -> dict:
    _pin(cores)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_decode import run_tf_pipeline

    one_pass = run_tf_pipeline(shards)
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    n = one_pass()
    return {"seconds": time.perf_counter() - t0, "videos": n, "cpu": _cpu_seconds() - cpu0}


CHILDREN = {"convert": child_convert, "tf": child_tf, "tf-single": child_tf_single}


def run_child(kind: str, shards: list[Path], env: dict | None = None, **kw) -> dict:
    """One measurement in a fresh process (`env`: its environment, e.g. a PYTHONPATH that
    puts another checkout's `ingest` first; benchmarks/ab_convert.py)."""
    args = [sys.executable, __file__, "--child", kind, "--child-args",
            json.dumps({"shards": [str(s) for s in shards], **kw})]
    out = subprocess.run(args, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=SHARDS)
    ap.add_argument("--videos-per-shard", type=int, default=VIDEOS_PER_SHARD)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tmpfs-dir", default="/dev/shm",
                    help="A RAM-backed directory for the CPU-bound measurement ('' to skip).")
    ap.add_argument("--skip-disk", action="store_true", help="Do not convert onto the disk.")
    ap.add_argument("--skip-tf", action="store_true", help="Do not run the TensorFlow baseline.")
    ap.add_argument("--chunk-mb", type=float, default=0,
                    help="Source MB decoded per chunk (default: ingest.convert.CHUNK_BYTES); "
                         "docs/store.md compares 1, 2, 4, 8 and 16.")
    ap.add_argument("--cold", action="store_true",
                    help="No memory warm-up before each timed convert (benchmarks/vm_memory.py).")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-args", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kw = json.loads(a.child_args)
        print(json.dumps(CHILDREN[a.child](**kw)))
        return
    shards = make_shards(a.shards, a.videos_per_shard)
    mb = sum(p.stat().st_size for p in shards) / 1e6
    print(f"data: {len(shards)} shards, {mb:.0f} MB; medians of {a.repeats} repeats")
    places = ([("tmpfs", Path(a.tmpfs_dir) / "yt8m-bench-convert")] if a.tmpfs_dir else [])
    places += [] if a.skip_disk else [("disk", DATA)]
    # (place, workers, cores): cores 0 = not pinned. Pinned runs give a worker count as
    # many cores, so 2 vs 1 measures scaling, not a 1-worker run whose kernel work (page
    # cache, file system) spills onto the idle second core.
    plan = [(p, w, c) for p, _ in places for w, c in ((1, 0), (1, 1), (2, 2))
            if p == "tmpfs" or c != 1]
    dirs = dict(places)
    # TensorFlow parse-only: its default thread pools on both cores and pinned to one
    # (two reader/batch settings each, the best of each reported), and one thread
    tf_plan = [] if a.skip_tf else (
        [("tf", r, b, c) for c in (0, 1) for r, b in ((1, 32), (4, 32))]
        + [("tf-single", 1, 0, 1)])  # (kind, readers, batch, cores)
    # round-robin: every configuration once per round, so that slow spells of this
    # shared VM hit all of them alike; ratios are medians of per-round ratios
    rounds = []
    for _ in range(a.repeats):
        r = {(place, w, c): run_child("convert", shards, workers=w, store_dir=str(dirs[place]),
                                      cores=c, cold=a.cold, chunk_mb=a.chunk_mb)
             for place, w, c in plan}
        for kind, readers, batch, cores in tf_plan:
            kw = {"readers": readers, "batch": batch} if kind == "tf" else {}
            r[kind, readers, batch, cores] = run_child(kind, shards, cores=cores, **kw)
        rounds.append(r)
    for key in plan:
        place, workers, cores = key
        runs = [r[key] for r in rounds]
        pin = f"pinned to {cores} core(s)" if cores else "not pinned"
        rss = max(r["peak_rss_worker"] for r in runs) / 2**20
        print(f"convert to {place}, {workers} worker(s), {pin}: {_line(runs, mb)}  "
              f"peak RSS per worker {rss:.0f} MiB")
    for place, _ in places:
        for ref in ((1, 1), (1, 0)):
            if (place, ref[0], ref[1]) in plan:
                ratio = _ratio(rounds, [(place, 1, ref[1])], [(place, 2, 2)])
                print(f"{place}: 2 workers on 2 cores / 1 worker "
                      f"{'on 1 core' if ref[1] else 'not pinned'}: "
                      f"{ratio:.2f}x (median of per-round ratios; target >= 1.7x)")
    for place, store_dir in places:
        shutil.rmtree(store_dir / "warm", ignore_errors=True)
    if a.tmpfs_dir:
        shutil.rmtree(Path(a.tmpfs_dir) / "yt8m-bench-convert", ignore_errors=True)
    if a.skip_tf:
        return
    for key in tf_plan:
        kind, readers, batch, cores = key
        what = ("one thread (bench_decode.run_tf_pipeline)" if kind == "tf-single" else
                f"default threads, readers={readers}, batch={batch}, "
                f"{'pinned to 1 core' if cores else 'both cores'}")
        print(f"TensorFlow parse-only, {what}: {_line([r[key] for r in rounds], mb)}")
    best_all = [k for k in tf_plan if k[0] == "tf" and k[3] == 0]
    best_one = [k for k in tf_plan if k[3] == 1]
    for key in plan:
        if key[2] > 1:
            continue
        place, workers, cores = key
        print(f"convert to {place}, {workers} worker, "
              f"{'pinned to 1 core' if cores else 'not pinned'}: "
              f"/ TF best (both cores) {_ratio(rounds, best_all, [key]):.2f}x; "
              f"/ TF best on 1 core {_ratio(rounds, best_one, [key]):.2f}x "
              f"(target >= 1x; medians of per-round ratios)")


def _line(runs: list[dict], mb: float) -> str:
    t = statistics.median(r["seconds"] for r in runs)
    cpu = statistics.median(r["cpu"] for r in runs)
    return (f"{t:6.2f} s  {mb / t:7.1f} MB/s  CPU {cpu:5.2f} s  {mb / cpu:6.0f} MB/CPU-s  "
            f"(runs: {', '.join(format(r['seconds'], '.2f') for r in runs)})")


def _ratio(rounds: list[dict], slow: list, fast: list) -> float:
    """Median over rounds of (best time among `slow`) / (best time among `fast`)."""
    return statistics.median(min(r[k]["seconds"] for k in slow) /
                             min(r[k]["seconds"] for k in fast) for r in rounds)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
