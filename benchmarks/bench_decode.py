"""Decode throughput of frame-level shards: our CRC-verified numba decoder vs the baselines.

Every method runs in its own subprocess pinned to one CPU core, on the same shards,
page cache warm, and reports the medians of `--repeats` passes over all shards, of wall
time and of the process's CPU time (the machine is shared: CPU time is what a method
costs even when another job takes turns on its core):

  ours           ingest.decode.ShardDecoder.iter_chunks (both CRCs, columnar arrays)
  tf-pipeline    TFRecordDataset -> batch -> tf.io.parse_sequence_example + decode_raw,
                 TensorFlow's intra/inter-op and tf.data thread pools at 1
  tf-fromstring  TFRecordDataset records -> tf.train.SequenceExample.FromString per record
                 -> numpy frames
  tfrecord-pkg   the `tfrecord` pip package's sequence_loader -> numpy frames (no CRC check)
  memcpy         numpy copy of the same bytes into a pre-touched buffer: the physical limit

`--targets host,avx2` measures `ours` once per target, in turn, `--rounds` times
(the other methods once): numba compiled for this CPU and for an AVX2-only one
(benchmarks/isa.py); each row says its target, and the last line the median of the
per-round ratios of CPU time, avx2 / host.

Data: ~`--size-mb` MB of synthetic frame-level shards made with `ingest synth` under
bench_data/codec/ (reused when present). Run:

    .venv/bin/python benchmarks/bench_decode.py --help
    .venv/bin/python benchmarks/bench_decode.py                     # ~800 MB, 3 repeats
    .venv/bin/python benchmarks/bench_decode.py --size-mb 100 --repeats 2   # quick
    .venv/bin/python benchmarks/bench_decode.py --methods ours --targets host,avx2 --rounds 3
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

import isa

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench_data" / "codec"
METHODS = ("ours", "tf-pipeline", "tf-fromstring", "tfrecord-pkg", "memcpy")
MB_PER_SHARD = 100  # shards of `ingest synth` (default lengths: ~241 kB per video)
BYTES_PER_VIDEO = 250_000  # so that 800 MB = 8 shards x 400 videos


# ---------------------------------------------------------------- data


def make_shards(size_mb: int) -> list[Path]:
    """~size_mb MB of frame-level shards (made once with `ingest synth`, then reused)."""
    out = DATA / f"synth-{size_mb}mb"
    files = sorted(out.glob("*.tfrecord"))
    if files:
        return files
    shards = max(1, round(size_mb / MB_PER_SHARD))
    per_shard = max(1, round(size_mb * 1e6 / shards / BYTES_PER_VIDEO))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ingest = Path(sys.executable).with_name("ingest")
    subprocess.run([str(ingest), "synth", str(tmp), "--split", "train", "--shards", str(shards),
                    "--videos-per-shard", str(per_shard), "--seed", "0"], check=True)
    tmp.rename(out)
    return sorted(out.glob("*.tfrecord"))


# ---------------------------------------------------------------- workers (one per process)


def run_ours(files: list[str]):
    from ingest.codec.decode import ShardDecoder

    dec = ShardDecoder()
    dec.warm_up()

    def one_pass() -> int:
        n = 0
        for f in files:
            for chunk in dec.iter_chunks(f):
                n += chunk.n_videos
        return n

    return one_pass


def run_tf_pipeline(files: list[str], batch: int = 32):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    ctx = {"id": tf.io.FixedLenFeature([], tf.string), "labels": tf.io.VarLenFeature(tf.int64)}
    seq = {k: tf.io.FixedLenSequenceFeature([], tf.string) for k in ("rgb", "audio")}

    def parse(records):
        c, s, lengths = tf.io.parse_sequence_example(records, context_features=ctx,
                                                     sequence_features=seq)
        # videos of a batch differ in length: the padding frames are empty strings, which
        # fixed_length turns into zero frames
        return (c["id"], c["labels"].values,
                tf.io.decode_raw(s["rgb"], tf.uint8, fixed_length=1024),
                tf.io.decode_raw(s["audio"], tf.uint8, fixed_length=128), lengths["rgb"])

    opts = tf.data.Options()
    opts.threading.private_threadpool_size = 1
    opts.threading.max_intra_op_parallelism = 1
    ds = (tf.data.TFRecordDataset(files, buffer_size=8 << 20).batch(batch).map(parse)
          .with_options(opts))

    def one_pass() -> int:
        n = 0
        for ids, _, rgb, audio, _ in ds:
            rgb.numpy(), audio.numpy()
            n += int(ids.shape[0])
        return n

    return one_pass


def run_tf_fromstring(files: list[str]):
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    ds = tf.data.TFRecordDataset(files, buffer_size=8 << 20)
    parse = tf.train.SequenceExample.FromString

    def one_pass() -> int:
        n = 0
        for rec in ds:
            ex = parse(rec.numpy())
            fl = ex.feature_lists.feature_list
            rgb = np.frombuffer(b"".join(f.bytes_list.value[0] for f in fl["rgb"].feature), np.uint8)
            audio = np.frombuffer(b"".join(f.bytes_list.value[0] for f in fl["audio"].feature),
                                  np.uint8)
            _ = (ex.context.feature["id"].bytes_list.value[0],
                 list(ex.context.feature["labels"].int64_list.value), rgb, audio)
            n += 1
        return n

    return one_pass


def run_tfrecord_pkg(files: list[str]):
    import numpy as np
    from tfrecord.reader import sequence_loader

    def one_pass() -> int:
        n = 0
        for f in files:
            for ctx, feats in sequence_loader(f, None, {"id": "byte", "labels": "int"},
                                              {"rgb": "byte", "audio": "byte"}):
                _ = (np.frombuffer(b"".join(feats["rgb"]), np.uint8),
                     np.frombuffer(b"".join(feats["audio"]), np.uint8), ctx["labels"])
                n += 1
        return n

    return one_pass


def run_memcpy(files: list[str]):
    import numpy as np

    sizes = [os.path.getsize(f) for f in files]
    src = np.ones(max(sizes), np.uint8)  # pre-touched
    dst = np.ones(max(sizes), np.uint8)

    def one_pass() -> int:
        for s in sizes:
            np.copyto(dst[:s], src[:s])
        return 0

    return one_pass


RUNNERS = {"ours": run_ours, "tf-pipeline": run_tf_pipeline, "tf-fromstring": run_tf_fromstring,
           "tfrecord-pkg": run_tfrecord_pkg, "memcpy": run_memcpy}


def worker(method: str, files: list[str], repeats: int) -> dict:
    """Time `repeats` passes of one method (in this process, pinned to one core)."""
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    one_pass = RUNNERS[method](files)
    times, cpu, videos = [], [], 0
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        videos = one_pass()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    out = {"method": method, "times": times, "cpu": cpu, "videos": videos,
           "bytes": sum(os.path.getsize(f) for f in files)}
    if method == "ours":
        out["target"] = isa.describe()
    return out


# ---------------------------------------------------------------- driver


def measure(method: str, files: list[Path], repeats: int, target: str = "host") -> dict | None:
    env = isa.target_env(target, dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
                                      CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1",
                                      NUMBA_NUM_THREADS="1"))
    cmd = [sys.executable, __file__, "--worker", method, "--repeats", str(repeats),
           *map(str, files)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        print(f"{method}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    """Medians of wall time and of CPU time (all threads; every method is pinned to one
    core, so CPU time is the work done, not inflated when a neighbour's job shares the core)."""
    ours = next(r for r in results if r["method"].startswith("ours"))
    w_ours, c_ours = statistics.median(ours["times"]), statistics.median(ours["cpu"])
    lines = [("| method | wall s | CPU s | first wall s | videos/s (CPU) | MB/s (CPU) "
              "| ours x faster (wall) | ours x faster (CPU) |"),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        w, c = statistics.median(r["times"]), statistics.median(r["cpu"])
        vps = f"{ours['videos'] / c:,.0f}" if r["method"] != "memcpy" else "-"
        lines.append(f"| {r['method']} | {w:.3f} | {c:.3f} | {r['times'][0]:.3f} | {vps} | "
                     f"{r['bytes'] / 1e6 / c:,.0f} | {w / w_ours:.2f} | {c / c_ours:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=800, help="shard bytes to decode (default 800)")
    ap.add_argument("--repeats", type=int, default=3, help="passes per method (median reported)")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help=f"comma-separated subset of {','.join(METHODS)}")
    ap.add_argument("--targets", default="host",
                    help="comma-separated numba targets of `ours`: host, avx2 (benchmarks/isa.py)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="with several targets: rounds of `ours` on each target in turn")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("files", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.files, args.repeats)))
        return
    files = make_shards(args.size_mb)
    total = sum(f.stat().st_size for f in files)
    for f in files:  # warm the page cache
        with open(f, "rb") as fh:
            while fh.read(64 << 20):
                pass
    print(f"{len(files)} shards, {total / 1e6:.0f} MB, {args.repeats} repeats, one core each")
    targets = isa.check(args.targets)
    results, rounds = [], []
    for method in args.methods.split(","):
        for i in range(args.rounds if method == "ours" else 1):
            per_target = {}
            for target in targets if method == "ours" else ["host"]:
                r = measure(method, files, args.repeats, target)
                if r is None:
                    continue
                if method == "ours":
                    r["method"] = f"ours ({target}: {r['target']})"
                    per_target[target] = statistics.median(r["cpu"])
                results.append(r)
                print(f"  {r['method']}: wall {', '.join(f'{t:.3f}' for t in r['times'])} s; "
                      f"CPU {', '.join(f'{t:.3f}' for t in r['cpu'])} s", flush=True)
            if len(per_target) > 1:
                rounds.append(per_target)
    print(table(results))
    for target in targets[1:]:
        ratios = [r[target] / r[targets[0]] for r in rounds]
        print(f"ours, CPU time {target} / {targets[0]}: median of {len(ratios)} per-round "
              f"ratios {statistics.median(ratios):.3f} (range {min(ratios):.3f}-"
              f"{max(ratios):.3f})")


if __name__ == "__main__":
    main()
