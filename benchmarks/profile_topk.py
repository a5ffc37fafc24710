"""Where one-model `top_k` spends its time, and its finish against the former kernel.

Run:  .venv/bin/python benchmarks/profile_topk.py [--rows 1000000] [--repeats 7]

On benchmarks/bench_topk.py's one-model prediction file (made there if missing;
page cache warm), in one process, per repeat: the stages of `predict.topk.top_k`
(prefault, starting floors, scan, finish; docs/predictions.md describes them),
each timed alone, then the finish once more on a copy of the same scanned
buffers with the former kernel (the counting sort's placement loop with a branch
on the score, int64 histogram: the kernel before 2026-11-26, kept here as the
baseline), the two finishes in alternating order. Prints the stages' medians and
the median of the per-repeat finish ratios (project / former).

`--read-splits` also reads the whole matrix with two threads (XOR of its 8-byte
words) split two ways: each thread a half of the rows, or each thread a half of
every row (the scan's split by classes before 2026-11-26); and times the scan with
every class switched off (floor 0xFFFF: nothing is appended), which is its
compress phase alone, with each of the compress paths (predict/simd.py). The
stages use the compile target's path (`YT8M_COMPRESS` chooses another).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from numba import prange
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_topk import DATA, generate, read_pass
from vm_memory import warm_guest_memory

from ingest.jit import njit
from predict import simd
from predict import topk as T
from predict import topk_kernels as K
from predict.predictions import open_ensemble, prefault
from predict.topk_kernels import (
    _U_EPOCH_BITS,
    _U_ROW_MASK,
    EPOCH_BITS,
    EPOCH_ROWS,
    N_BUCKETS,
    _next_epoch,
    bucket_offsets,
    tie_key,
)


@njit(parallel=True)
def former_finish(k, seed, buf, cnt, epoch_pos, n_parts):
    """The former `topk_kernels.finish` (int64 histogram, a branch per entry)."""
    n_cls, cap = buf.shape
    for part in prange(n_parts):
        hist = np.empty(N_BUCKETS, np.int64)
        entries = np.empty(cap, np.uint32)
        tie_rows = np.empty(cap, np.int64)
        tie_keys = np.empty(cap, np.uint64)
        for c in range(part * n_cls // n_parts, (part + 1) * n_cls // n_parts):
            _former_finish_class(c, cnt[c], k, seed, buf, epoch_pos, hist, entries, tie_rows,
                                 tie_keys)


@njit
def _former_finish_class(c, p, k, seed, buf, epoch_pos, hist, entries, tie_rows, tie_keys):
    entries[:p] = buf[c, :p]
    hist[:] = 0
    for i in range(p):
        hist[entries[i] >> EPOCH_BITS] += 1
    t, above = bucket_offsets(hist, k)
    flat = buf.reshape(-1)  # unsigned indices into it: no negative-index fix-ups per entry
    base, tu = np.uint64(c) * np.uint64(buf.shape[1]), np.uint64(t)
    j, e, nxt = 0, 0, epoch_pos[c, 1]
    for i in range(p):
        e, nxt = _next_epoch(epoch_pos, c, i, e, nxt)
        x = np.uint64(entries[i])
        v = x >> _U_EPOCH_BITS
        row = np.uint64(e) * np.uint64(EPOCH_ROWS) + (x & _U_ROW_MASK)
        if v > tu:
            slot = np.uint64(hist[v])
            flat[base + slot] = row
            hist[v] = slot + np.uint64(1)
        elif v == tu:
            tie_rows[j] = row
            tie_keys[j] = ~tie_key(seed, c, row)
            j += 1
    order = np.argsort(tie_keys[:j], kind="mergesort")
    for i in range(k - above):
        buf[c, above + i] = tie_rows[order[i]]


@njit(parallel=True)
def xor_read(words, by_rows):
    """XOR of a (N, W) uint64 matrix, 2 threads: each over half the rows, or half of each row."""
    n, w = words.shape
    out = np.zeros(2, np.uint64)
    for t in prange(2):
        acc = np.uint64(0)
        r0, r1 = (t * n // 2, (t + 1) * n // 2) if by_rows else (0, n)
        c0, c1 = (0, w) if by_rows else (t * w // 2, (t + 1) * w // 2)
        for r in range(r0, r1):
            for c in range(c0, c1):
                acc ^= words[r, c]
        out[t] = acc
    return out


def read_splits(model, repeats: int) -> None:
    """Median seconds of reading the matrix split by rows and split within rows."""
    per_row = model.shape[1] * model.itemsize // 8  # whole 8-byte words of a row
    words = model.reshape(-1).view(np.uint64)[: len(model) * per_row].reshape(-1, per_row)
    times = {True: [], False: []}
    xor_read(words[:8], True)
    for _ in range(repeats):
        for by_rows in (True, False):
            t0 = time.perf_counter()
            xor_read(words, by_rows)
            times[by_rows].append(time.perf_counter() - t0)
    rows, cols = (statistics.median(times[b]) for b in (True, False))
    print(f"read the matrix, 2 threads: row halves {rows:.3f} s, halves of each row "
          f"{cols:.3f} s ({cols / rows:.2f}x)")


def scan_nothing(model, k: int, repeats: int) -> None:
    """Median seconds of the scan with every class switched off: the compress phase, per
    compress path (simd.PATHS, taken in turn; the target's own path marked)."""
    n, n_cls = model.shape
    off_v = np.full(n_cls, T.UNSET_FLOOR, np.uint16)
    off_k = np.full(n_cls, np.iinfo(np.uint64).max, np.uint64)
    buf = np.empty((n_cls, T.capacity(k)), np.uint32)
    times = {path: [] for path in simd.PATHS}
    for _ in range(repeats):
        for path in simd.PATHS:
            state = T._ScanState(n, n_cls, simd.path_index(path))
            t0 = time.perf_counter()
            T._scan_all([model], T.BLOCK_ROWS, state, np.ones(n_cls, bool), off_v, off_k, 0,
                        k, buf, tqdm(disable=True))
            times[path].append(time.perf_counter() - t0)
            assert not state.cnt.any()
    own = simd.compress_path()
    print(f"scan appending nothing (its compress phase), {simd.target_isa().cpu} target: "
          + ", ".join(f"{p}{' (own)' if p == own else ''} {statistics.median(t):.3f} s"
                      for p, t in times.items()))


def stages(model, k: int, scanned: np.ndarray, seed: int = 0) -> tuple[dict, T._ScanState]:
    """One top_k of one model, stage by stage → (seconds per stage, scan state); the
    buffers as scanned are copied into `scanned` (allocated once: this VM's first touch
    of fresh memory is slow and erratic, and only the buffers' own touch is top_k's)."""
    t = [time.perf_counter()]
    n, n_cls = model.shape
    buf = np.empty((n_cls, T.capacity(k)), np.uint32)
    prefault(model)
    t.append(time.perf_counter())
    fv, fk = T.starting_floors([model], k, seed)
    t.append(time.perf_counter())
    state = T._ScanState(n, n_cls, simd.path_index())
    T._scan_all([model], T.BLOCK_ROWS, state, np.ones(n_cls, bool), fv, fk, seed, k, buf,
                tqdm(disable=True))
    t.append(time.perf_counter())
    scanned[:] = buf
    t.append(time.perf_counter())
    K.finish(k, seed, buf, state.cnt, state.epoch_pos, T._n_parts())
    t.append(time.perf_counter())
    d = np.diff(t)
    return {"prefault": d[0], "floors": d[1], "scan": d[2], "finish": d[4]}, state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--read-splits", action="store_true",
                    help="also time a plain read of the matrix split by rows and within "
                         "rows, and the scan appending nothing")
    a = ap.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"m{a.rows}_0.npy"
    generate(path, a.rows, seed=0)
    read_pass(path)
    warm = np.zeros((100, 1000), np.uint16)
    warm.setflags(write=False)  # the memory maps are read-only: load that specialisation
    T.top_k([warm], k=10, progress=False)
    model = open_ensemble([path])[0].scores
    if a.read_splits:
        read_splits(model, a.repeats)
        scan_nothing(model, a.k, a.repeats)
    runs, ratios = [], []
    shape = (model.shape[1], T.capacity(a.k))
    scanned, want = np.ones(shape, np.uint32), np.ones(shape, np.uint32)
    for i in range(a.repeats):
        warm_guest_memory(2.0)
        times, state = stages(model, a.k, scanned)
        want[:] = scanned
        if i == 0:
            former_finish(a.k, 0, want, state.cnt, state.epoch_pos, T._n_parts())  # compile
            want[:] = scanned
        pair = {}
        for name, fn in [("project", K.finish), ("former", former_finish)][:: -1 if i % 2 else 1]:
            work = want if name == "former" else scanned
            t0 = time.perf_counter()
            fn(a.k, 0, work, state.cnt, state.epoch_pos, T._n_parts())
            pair[name] = time.perf_counter() - t0
        assert np.array_equal(scanned[:, :a.k], want[:, :a.k])
        runs.append(times)
        ratios.append(pair["project"] / pair["former"])
        print(" ".join(f"{s} {v:.3f} s" for s, v in times.items())
              + f"; finish again: project {pair['project']:.3f} s, former {pair['former']:.3f} s",
              flush=True)
    med = {s: statistics.median(r[s] for r in runs) for s in runs[0]}
    print("medians: " + ", ".join(f"{s} {v:.3f} s" for s, v in med.items())
          + f", total {sum(med.values()):.3f} s")
    print(f"finish, project / former: median of per-repeat ratios {statistics.median(ratios):.3f} "
          f"(range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
