"""The gathers: ingest's rated-segment window gather against two baselines, and the loader's
kernels compiled for this host against AVX2.

Run:  .venv/bin/python benchmarks/bench_gather.py [--windows 90 --repeats 200]
      .venv/bin/python benchmarks/bench_gather.py --loader [--isa host,avx2] [--repeats 60]
          [--rounds 3]

On one chunk's worth of data (random frames of one 3,500-frame video, `--windows`
windows of 11 frames at random starts, as `ingest convert` gathers them):

  project   ingest.segments.gather_windows (one memcpy per window, zero loops)
  slice     the same gather with numba's 2-D slice assignment (the kernel before
            2026-11-26, kept here as the baseline)
  memcpy    numpy's copy of as many contiguous bytes into a touched buffer: the limit

Prints medians over `--repeats` calls, GB/s of window bytes, and the ratios.

`--loader` (issue #22 §1): the loader's kernels (trainer/data/gather.py) on batches as the
loader makes them (B = 128, Lm = 150 of videos of 120-300 frames, windows, labels,
negatives), read from a 230 MB source so that rows come from memory, cycling through 8
prepared batches. Each instruction set runs in `--rounds` fresh processes, alternating, each
with an empty numba cache (`NUMBA_CACHE_DIR`): `host` as numba compiles by default, `avx2`
as for an AVX2 CPU without AVX-512 (`NUMBA_CPU_NAME=haswell` and an empty
`NUMBA_CPU_FEATURES`: with the name alone numba keeps the host's features and still emits
AVX-512). Each process says how many zmm (512-bit) register uses its kernels' assembly
holds, so the target is checked, not assumed. Prints, per kernel and instruction set, the
median of the processes' medians of `--repeats` calls, and avx2 / host (> 1.5 is the
issue's threshold for a kernel of its own on AVX2).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
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


# ---------------------------------------------------------------- the loader's kernels, by ISA

ISA_ENV = {"host": {}, "avx2": {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": ""}}
SOURCE_ROWS = 200_000  # frames of 1152 bytes: 230 MB, more than the CPU's caches
BATCHES = 8  # prepared batches the timing cycles through


def _loader_inputs(rng) -> list[dict]:
    """BATCHES batches of every kernel's arguments (but the table of addresses)."""
    from ingest.store.segments import WINDOW_FRAMES, window_spans
    from trainer.data.sampling import sample_keys

    window_rows = SOURCE_ROWS // WINDOW_FRAMES
    out = []
    for k in range(BATCHES):
        n = rng.integers(120, 301, 128)
        offset = rng.integers(0, SOURCE_ROWS - 300, 128)
        starts = rng.integers(0, 300, 128)
        lo, hi, pad_left, _ = window_spans(np.minimum(starts, n - 1), n)
        counts = rng.integers(1, 5, 50_000)
        out.append({
            "part": np.zeros(128, np.int64), "offset": offset.astype(np.int64),
            "lo": np.zeros(128, np.int64), "hi": n.astype(np.int64),
            "keys": sample_keys(np.uint64(k + 1), np.arange(128)),
            "wlo": lo.astype(np.int64), "whi": hi.astype(np.int64),
            "pad_left": pad_left.astype(np.int64),
            "seg_window": rng.integers(0, window_rows, 4096).astype(np.int64),
            "rows": rng.integers(0, 4096, 128).astype(np.int64),
            "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            "classes": rng.integers(0, 1000, counts.sum()).astype(np.int16),
            "label_rows": rng.integers(0, 50_000, 128).astype(np.int64),
            "packed": rng.integers(0, 256, (128, 125), dtype=np.uint8)})
    return out


def loader_child(repeats: int) -> dict:
    """This process's medians (µs) of each loader kernel, and the zmm uses of their assembly."""
    from ingest.store.segments import WINDOW_FRAMES
    from trainer.data import gather as G

    rng = np.random.default_rng(0)
    source = rng.integers(0, 256, SOURCE_ROWS * seg.FRAME_BYTES, dtype=np.uint8)
    addr, base = np.array([source.ctypes.data], np.int64), np.zeros(1, np.int64)
    big = np.array([1 << 40], np.int64)  # one "file" of every row
    frames = np.empty((128, 150, seg.FRAME_BYTES), np.uint8)
    mask, lengths = np.empty((128, 150), bool), np.empty(128, np.int64)
    windows = np.empty((128, WINDOW_FRAMES, seg.FRAME_BYTES), np.uint8)
    seg_out = (np.empty((128, WINDOW_FRAMES * seg.FRAME_BYTES), np.uint8), np.empty(128, np.int64),
               np.empty(128, np.float32), np.empty((128, 125), np.uint8))
    seg_cols = (np.zeros(4096, np.int64), np.zeros(4096, np.int16), np.zeros(4096, np.float32),
                rng.integers(0, 50_000, 4096).astype(np.int64),
                rng.integers(0, 256, (50_000, 125), dtype=np.uint8))
    labels, unpacked = np.empty((128, 125), np.uint8), np.empty((128, 1000), bool)
    inputs = _loader_inputs(rng)
    calls = {
        "gather_frames (training: random frames)": lambda b: G.gather_frames_kernel(
            addr, base, big, b["part"], b["offset"], b["lo"], b["hi"], b["keys"], 150, False,
            frames, mask, lengths),
        "gather_frames (evaluation: evenly spaced)": lambda b: G.gather_frames_kernel(
            addr, base, big, b["part"], b["offset"], b["lo"], b["hi"], b["keys"], 150, True,
            frames, mask, lengths),
        "gather_windows (candidates)": lambda b: G.gather_windows_kernel(
            addr, base, big, b["part"], b["offset"], b["wlo"], b["whi"], b["pad_left"], windows),
        "fill_segment": lambda b: G.fill_segment_kernel(
            addr, base, big, seg_cols[0], b["seg_window"], seg_cols[1], seg_cols[2],
            seg_cols[3], seg_cols[4], b["rows"], *seg_out),
        "pack_classes (video labels)": lambda b: G.pack_classes_kernel(
            b["offsets"], b["classes"], b["label_rows"], labels),
        "unpack_bits (CPU batches)": lambda b: G.unpack_bits_kernel(b["packed"], unpacked),
    }
    out = {}
    for name, call in calls.items():
        for b in inputs:  # compile, touch
            call(b)
        i = iter(range(1 << 62))
        out[name] = median_time(lambda call=call, i=i: call(inputs[next(i) % BATCHES]),
                                repeats) * 1e6
    kernels = (G.gather_frames_kernel, G.gather_windows_kernel, G.fill_segment_kernel,
               G.pack_classes_kernel, G.unpack_bits_kernel)
    zmm = sum(asm.count("zmm") for k in kernels for asm in k.inspect_asm().values())
    return {"us": out, "zmm": zmm}


def loader_isas(isas: list[str], repeats: int, rounds: int) -> None:
    """`rounds` fresh processes per instruction set, alternating; medians of their medians."""
    got: dict[str, list[dict]] = {isa: [] for isa in isas}
    for r in range(rounds):
        for isa in isas[:: -1 if r % 2 else 1]:
            with tempfile.TemporaryDirectory() as cache:
                env = dict(os.environ, NUMBA_CACHE_DIR=cache, **ISA_ENV[isa])
                run = subprocess.run([sys.executable, __file__, "--loader-child", "--repeats",
                                      str(repeats)], env=env, check=True, capture_output=True,
                                     text=True)
            got[isa].append(json.loads(run.stdout.splitlines()[-1]))
    us = {isa: {name: statistics.median(g["us"][name] for g in runs) for name in runs[0]["us"]}
          for isa, runs in got.items()}
    print(f"loader kernels: medians of {rounds} processes' medians of {repeats} calls (µs); "
          f"load average {os.getloadavg()[0]:.2f}; zmm uses in the kernels' assembly: "
          + ", ".join(f"{isa} {runs[0]['zmm']}" for isa, runs in got.items()))
    pair = len(isas) == 2
    print("| kernel | " + " | ".join(f"{i} µs" for i in isas)
          + (f" | {isas[1]} / {isas[0]}: median of the rounds' ratios [range] |" if pair else " |"))
    print("| --- |" + " ---: |" * (len(isas) + pair))
    for name in us[isas[0]]:
        cells = [f"{us[i][name]:,.1f}" for i in isas]
        if pair:
            ratios = [b["us"][name] / a["us"][name] for a, b in zip(*got.values())]
            cells.append(f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]")
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", type=int, default=90)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--loader", action="store_true", help="the loader's kernels, by ISA")
    ap.add_argument("--isa", default="host,avx2", help="with --loader: host, avx2 or both")
    ap.add_argument("--rounds", type=int, default=3,
                    help="with --loader: processes per instruction set, alternating")
    ap.add_argument("--loader-child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.loader_child:
        print(json.dumps(loader_child(a.repeats)))
        return
    if a.loader:
        loader_isas(a.isa.split(","), a.repeats if a.repeats != 200 else 60, a.rounds)
        return
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
