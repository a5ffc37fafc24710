"""Where one convert worker's time goes: cProfile of an in-process conversion.

Run:  .venv/bin/python benchmarks/profile_convert.py [--top 15]

Converts the 795 MB benchmark shards of benchmarks/bench_convert.py (made there if
missing) to tmpfs with one worker in this process: one untimed conversion first
(numba kernels loaded, buffers touched), then one under cProfile; prints the wall
time and the functions with the most time of their own (docs/store.md, "Where one
worker's time goes"). A profile, not a benchmark: no baseline.
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_convert import make_shards

from ingest.convert import ConvertConfig, convert


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--tmpfs-dir", default="/dev/shm")
    a = ap.parse_args()
    cfg = ConvertConfig(tuple(str(p) for p in make_shards()),
                        str(Path(a.tmpfs_dir) / "yt8m-profile-convert"), progress=False)
    try:
        convert(cfg)  # untimed: kernels loaded, buffers touched
        shutil.rmtree(cfg.out)
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        prof.runcall(convert, cfg)
        print(f"one worker, in-process convert under cProfile: {time.perf_counter() - t0:.2f} s")
        pstats.Stats(prof).sort_stats("tottime").print_stats(a.top)
    finally:
        shutil.rmtree(cfg.out, ignore_errors=True)


if __name__ == "__main__":
    main()
