"""Benchmark `ingest convert` (decode + CRC + write the store) against TensorFlow parse-only.

Run:  .venv/bin/python benchmarks/bench_convert.py [--shards 8 --videos-per-shard 405]
      .venv/bin/python benchmarks/bench_convert.py --help

Writes ~800 MB of synthetic validate shards (`ingest synth`) under
bench_data/convert/src (kept between runs; delete the folder to regenerate), then,
each measurement in its own fresh subprocess (so peak RSS is per measurement and
TensorFlow never shares a process with anything else):

- convert with 1 worker and with 2 workers (wall time of `ingest.convert.convert`,
  process pool start included; the store is deleted between repeats);
- TensorFlow's parse-only throughput: `TFRecordDataset` → batched
  `tf.io.parse_sequence_example` of every feature, nothing written, with a few
  settings of reader parallelism and batch size; the best one is reported.

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


def make_shards(shards: int, videos: int) -> list[Path]:
    src = DATA / "src"
    want = [src / f"validate-{k:05d}-of-{shards:05d}.tfrecord" for k in range(shards)]
    if not all(p.is_file() for p in want):
        shutil.rmtree(src, ignore_errors=True)
        subprocess.run([sys.executable, "-c", "from ingest.cli import main; main()", "synth",
                        str(src), "--split", "validate", "--shards", str(shards),
                        "--videos-per-shard", str(videos), "--seed", "1", "--quiet"],
                       check=True)
    return want


# ---------------------------------------------------------------- children (one per measurement)

def child_convert(shards: list[str], workers: int) -> dict:
    import resource

    from ingest.convert import ConvertConfig, convert

    out = DATA / f"store-w{workers}"
    shutil.rmtree(out, ignore_errors=True)
    # warm-up: numba caches loaded in this process (not counted)
    warm = DATA / "warm"
    shutil.rmtree(warm, ignore_errors=True)
    convert(ConvertConfig(sources=(shards[0],), out=str(warm), progress=False,
                          chunk_bytes=1 << 20))
    shutil.rmtree(warm)
    t0 = time.perf_counter()
    s = convert(ConvertConfig(sources=tuple(shards), out=str(out), workers=workers,
                              progress=False))
    dt = time.perf_counter() - t0
    shutil.rmtree(out)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": dt, "peak_rss_worker": s["peak_rss"] if workers > 1 else own,
            "videos": s["totals"]["videos"]}


def child_tf(shards: list[str], readers: int, batch: int) -> dict:
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
    t0 = time.perf_counter()
    n = 0
    for ids, _, _ in ds:
        n += int(ids.shape[0])
    return {"seconds": time.perf_counter() - t0, "videos": n}


def run_child(kind: str, shards: list[Path], **kw) -> dict:
    args = [sys.executable, __file__, "--child", kind, "--child-args",
            json.dumps({"shards": [str(s) for s in shards], **kw})]
    out = subprocess.run(args, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--videos-per-shard", type=int, default=405)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-tf", action="store_true", help="Do not run the TensorFlow baseline.")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-args", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kw = json.loads(a.child_args)
        fn = child_convert if a.child == "convert" else child_tf
        print(json.dumps(fn(**kw)))
        return
    shards = make_shards(a.shards, a.videos_per_shard)
    mb = sum(p.stat().st_size for p in shards) / 1e6
    print(f"data: {len(shards)} shards, {mb:.0f} MB; medians of {a.repeats} repeats")
    res = {}
    for workers in (1, 2):
        runs = [run_child("convert", shards, workers=workers) for _ in range(a.repeats)]
        t = statistics.median(r["seconds"] for r in runs)
        rss = max(r["peak_rss_worker"] for r in runs) / 2**20
        res[workers] = mb / t
        print(f"convert, {workers} worker(s): {t:6.2f} s  {mb / t:7.1f} MB/s  "
              f"peak RSS per worker {rss:.0f} MiB")
    print(f"2 workers / 1 worker: {res[2] / res[1]:.2f}x (target >= 1.7x)")
    if a.skip_tf:
        return
    best = None
    for readers, batch in ((1, 32), (4, 32), (4, 128), (8, 64)):
        runs = [run_child("tf", shards, readers=readers, batch=batch)
                for _ in range(a.repeats)]
        t = statistics.median(r["seconds"] for r in runs)
        print(f"TensorFlow parse-only (readers={readers}, batch={batch}): {t:6.2f} s  "
              f"{mb / t:7.1f} MB/s")
        best = max(best or 0.0, mb / t)
    print(f"TensorFlow best parse-only: {best:.1f} MB/s; convert 1 worker / TF: "
          f"{res[1] / best:.2f}x (target >= 1x); 2 workers / TF: {res[2] / best:.2f}x")


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
