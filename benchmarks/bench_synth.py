"""Benchmark `ingest synth`: generation + encoding + writing, against per-row and TensorFlow writers.

Run:  .venv/bin/python benchmarks/bench_synth.py [--videos 3300 --shards 4 --repeats 3]
      .venv/bin/python benchmarks/bench_synth.py --help

One process, one core. Measures, on the same videos (seed 0, validate split):

1. end to end: `write_synth` of `--videos` videos in `--shards` shards (~800 MB
   with the defaults) under bench_data/synth/ (deleted afterwards): draw, render,
   encode, frame with CRCs, write;
2. encode + write only, of one shard's videos drawn beforehand:
   - project: `encode_sequence_example` (vectorised feature lists) + `write_tfrecord`;
   - baseline "per-row": the same protobuf built one frame at a time with
     `ingest.encode.field`/`bytes_list` (the encoder before vectorisation);
   - baseline "tensorflow" (own subprocess, the videos redrawn there):
     `tf.train.SequenceExample` filled from the arrays, `SerializeToString`,
     `tf.io.TFRecordWriter`.

Prints medians over `--repeats`, MB/s of shard bytes and the ratios.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from timing import median_time

DATA = ROOT / "bench_data" / "synth"


def _shard_videos(videos: int):
    from ingest.synth.shards import SynthConfig, synth_shard

    return synth_shard(SynthConfig(split="validate", videos_per_shard=videos), "validate", 0)


def _per_row_encode(v) -> bytes:
    from ingest.codec.encode import LEN, _context_entries, bytes_list, features, field, map_entry

    lists = b"".join(
        field(1, LEN, map_entry(k, b"".join(field(1, LEN, bytes_list([r.tobytes()])) for r in f)))
        for k, f in (("rgb", v.rgb), ("audio", v.audio)))
    return field(1, LEN, features(_context_entries(v, True))) + field(2, LEN, lists)


def tf_worker(videos: int, repeats: int, path: Path) -> None:
    """Child process: TensorFlow builds and writes the same shard; prints JSON."""
    import tensorflow as tf

    vids = _shard_videos(videos)

    def ints(x):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=x))

    def write():
        with tf.io.TFRecordWriter(str(path)) as w:
            for v in vids:
                ex = tf.train.SequenceExample()
                ctx = ex.context.feature
                ctx["id"].bytes_list.value.append(v.id.encode())
                ctx["labels"].CopyFrom(ints(v.labels))
                if v.segment_labels is not None:
                    ctx["segment_labels"].CopyFrom(ints(v.segment_labels))
                    ctx["segment_start_times"].CopyFrom(ints(v.segment_start_times))
                    if v.segment_end_times is not None:
                        ctx["segment_end_times"].CopyFrom(ints(v.segment_end_times))
                    ctx["segment_scores"].float_list.value.extend(v.segment_scores)
                for key, frames in (("rgb", v.rgb), ("audio", v.audio)):
                    fl = ex.feature_lists.feature_list[key].feature
                    for row in frames:
                        fl.add().bytes_list.value.append(row.tobytes())
                w.write(ex.SerializeToString())

    t = median_time(write, repeats)
    print(json.dumps({"seconds": t, "bytes": path.stat().st_size}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=3300, help="videos end to end (~800 MB)")
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--encode-videos", type=int, default=400,
                    help="videos of the encode + write comparison")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-tf", action="store_true")
    ap.add_argument("--tf-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    if args.tf_worker:
        tf_worker(args.encode_videos, args.repeats, DATA / "tf.tfrecord")
        return

    from ingest.codec.encode import encode_sequence_example
    from ingest.codec.tfrecord import write_tfrecord
    from ingest.synth.shards import SynthConfig, write_synth

    try:
        per_shard = -(-args.videos // args.shards)
        cfg = SynthConfig(out_dir=str(DATA / "e2e"), split="validate", shards=args.shards,
                          videos_per_shard=per_shard)
        t_e2e = median_time(lambda: write_synth(cfg, progress=False), args.repeats)
        e2e_mb = sum(p.stat().st_size for p in (DATA / "e2e").iterdir()) / 1e6
        print(f"end to end  write_synth {args.shards * per_shard} videos, {e2e_mb:.0f} MB: "
              f"{t_e2e:.2f} s  ({e2e_mb / t_e2e:.0f} MB/s, "
              f"{args.shards * per_shard / t_e2e:.0f} videos/s)")
        shutil.rmtree(DATA / "e2e")

        vids = _shard_videos(args.encode_videos)
        ours = DATA / "ours.tfrecord"
        t_ours = median_time(
            lambda: write_tfrecord(ours, (encode_sequence_example(v) for v in vids)),
            args.repeats)
        mb = ours.stat().st_size / 1e6
        rows = [("project (vectorised)", t_ours)]
        t_row = median_time(lambda: write_tfrecord(DATA / "row.tfrecord",
                                                    (_per_row_encode(v) for v in vids)),
                             args.repeats)
        assert (DATA / "row.tfrecord").read_bytes() == ours.read_bytes()
        rows.append(("baseline per-row encoder", t_row))
        if not args.skip_tf:
            out = subprocess.run([sys.executable, __file__, "--tf-worker", "--encode-videos",
                                  str(args.encode_videos), "--repeats", str(args.repeats)],
                                 check=True, capture_output=True, text=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(("baseline tensorflow", res["seconds"]))
        print(f"encode + write {args.encode_videos} videos ({mb:.0f} MB), "
              f"median of {args.repeats}:")
        for name, t in rows:
            print(f"  {name:26s} {t:7.3f} s  {mb / t:7.0f} MB/s  "
                  f"ratio to project {t / t_ours:5.1f}x")
    finally:
        for name in ("ours.tfrecord", "row.tfrecord", "tf.tfrecord"):
            (DATA / name).unlink(missing_ok=True)
        shutil.rmtree(DATA / "e2e", ignore_errors=True)


if __name__ == "__main__":
    main()
