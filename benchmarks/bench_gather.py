"""The rated-segment window gather: the project's kernel against two baselines.

Run:  .venv/bin/python benchmarks/bench_gather.py [--windows 90 --repeats 200]

On one chunk's worth of data (random frames of one 3,500-frame video, `--windows`
windows of 11 frames at random starts, as `ingest convert` gathers them):

  project   ingest.segments.gather_windows (one memcpy per window, zero loops)
  slice     the same gather with numba's 2-D slice assignment (the kernel before
            2026-11-26, kept here as the baseline)
  memcpy    numpy's copy of as many contiguous bytes into a touched buffer: the limit

Prints medians over `--repeats` calls, GB/s of window bytes, and the ratios.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from ingest.jit import njit
from ingest.store import segments as seg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import median_time


@njit
def gather_slices(frames, base, lo, hi, pad_left, out):
    """The former kernel: 2-D slice assignment per window and per frame."""
    for i in range(out.shape[0]):
        out[i, :, :] = 0
        b = base[i] + lo[i]
        p = pad_left[i]
        for k in range(hi[i] - lo[i]):
            out[i, p + k, :] = frames[b + k, :]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", type=int, default=90)
    ap.add_argument("--repeats", type=int, default=200)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3500, seg.FRAME_BYTES), dtype=np.uint8)
    starts = rng.integers(-2, len(frames) + 2, a.windows)  # a few windows run off the video
    lo, hi, pl, _ = seg.window_spans(starts, np.full(a.windows, len(frames)))
    base = np.zeros(a.windows, np.int64)
    out = np.empty((a.windows, seg.WINDOW_FRAMES, seg.FRAME_BYTES), np.uint8)
    want = np.empty_like(out)
    gather_slices(frames, base, *(np.asarray(x, np.int64) for x in (lo, hi, pl)), want)
    seg.gather_windows(frames, base, lo, hi, pl, out=out)
    assert np.array_equal(out, want)
    flat_src = frames.reshape(-1)[: out.size]
    runs = {
        "project": lambda: seg.gather_windows(frames, base, lo, hi, pl, out=out),
        "slice": lambda: gather_slices(frames, base, *(np.asarray(x, np.int64)
                                                        for x in (lo, hi, pl)), want),
        "memcpy": lambda: np.copyto(out.reshape(-1), flat_src),
    }
    for fn in runs.values():
        fn()  # compile / warm
    t = {name: median_time(fn, a.repeats) for name, fn in runs.items()}
    for name, s in t.items():
        print(f"{name:8s} {s * 1e6:8.1f} us  {out.nbytes / s / 1e9:6.2f} GB/s  "
              f"({t['project'] / s:.2f}x the project's speed)")
    print(f"project is {t['slice'] / t['project']:.1f}x faster than the slice kernel, "
          f"{t['project'] / t['memcpy']:.2f}x memcpy's time")


if __name__ == "__main__":
    main()
