"""Where one convert worker's time goes: cProfile, or the floor under a conversion.

Run:  .venv/bin/python benchmarks/profile_convert.py [--top 15]
      .venv/bin/python benchmarks/profile_convert.py --floor [--rounds 7]

Converts the 795 MB benchmark shards of benchmarks/bench_convert.py (made there if
missing) to tmpfs with one worker in this process, after one untimed conversion
(numba kernels loaded, buffers touched).

Default: one conversion under cProfile; prints the wall time and the functions with
the most time of their own (docs/store.md, "Where one worker's time goes").

`--floor`: what a conversion costs at the least with this decoder, in rounds that
alternate (a round runs each step once, in reverse order every other round):
`decode` (read, both CRCs per record, decode into the frame buffer), `+ windows`
(also gather the rated windows), `+ write` (also write the frames and windows to
one file each: the store's bytes with no tables, index or checksum) and `convert`
(the real thing). Prints the medians and, per step, the median of its per-round
ratio to `convert`. Neither mode is a benchmark against a baseline.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from bench_convert import make_shards

from ingest.codec.decode import ShardDecoder
from ingest.store.convert import CHUNK_BYTES, ConvertConfig, convert
from ingest.store.writer import rated_windows


def floor_pass(shards: list[str], out: Path, windows: bool, write: bool,
               decoder: ShardDecoder) -> None:
    """Decode every shard in convert's chunks; gather windows and write raw bytes if asked."""
    out.mkdir(parents=True, exist_ok=True)
    for k, src in enumerate(shards):
        with open(out / f"{k}.frames", "wb") as ff, open(out / f"{k}.windows", "wb") as fw:
            for ch in decoder.iter_chunks(src, chunk_bytes=CHUNK_BYTES):
                if not (windows and ch.n_videos):
                    continue
                fo = np.asarray(ch.frame_offsets, np.int64)
                so = np.asarray(ch.segment_offsets, np.int64)
                win = rated_windows(ch, fo, np.diff(fo), so)[-1]
                if write:
                    ff.write(ch.frames[: fo[-1]])
                    fw.write(win)


def run_floor(cfg: ConvertConfig, rounds: int) -> None:
    out = Path(cfg.out)
    dec = ShardDecoder()
    steps = {
        "decode": lambda: floor_pass(list(cfg.sources), out, False, False, dec),
        "+ windows": lambda: floor_pass(list(cfg.sources), out, True, False, dec),
        "+ write": lambda: floor_pass(list(cfg.sources), out, True, True, dec),
        "convert": lambda: convert(cfg),
    }
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(rounds):
        for name in (list(steps) if r % 2 == 0 else list(steps)[::-1]):
            shutil.rmtree(out, ignore_errors=True)
            t0 = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - t0)
    full = times["convert"]
    for name, ts in times.items():
        ratio = statistics.median(t / f for t, f in zip(ts, full, strict=True))
        print(f"{name:10s} median {statistics.median(ts):.3f} s  / convert {ratio:.2f}  "
              f"(runs: {', '.join(format(t, '.2f') for t in ts)})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--floor", action="store_true", help="Time the floor steps (see above).")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tmpfs-dir", default="/dev/shm")
    a = ap.parse_args()
    cfg = ConvertConfig(tuple(str(p) for p in make_shards()),
                        str(Path(a.tmpfs_dir) / "yt8m-profile-convert"), progress=False)
    try:
        convert(cfg)  # untimed: kernels loaded, buffers touched
        shutil.rmtree(cfg.out)
        if a.floor:
            run_floor(cfg, a.rounds)
            return
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.runcall(convert, cfg)
        print(f"one worker, in-process convert under cProfile: {time.perf_counter() - t0:.2f} s")
        pstats.Stats(prof).sort_stats("tottime").print_stats(a.top)
    finally:
        shutil.rmtree(cfg.out, ignore_errors=True)


if __name__ == "__main__":
    main()
