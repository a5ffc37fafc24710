"""Top-K segments per class over an ensemble of quantised models, in two counting passes.

Scores are integers 0..9999 (predict/predictions.py), so a class's scores fall in
exactly N_BUCKETS buckets and the top K is found without sorting:

1. histogram pass: per class, count the segments of each bucket; the boundary
   bucket `t` is the highest with `count(score >= t) >= K`;
2. collect pass: every segment above `t` goes straight to its place in a
   descending counting sort (row order within a bucket); of the `cnt(t)` segments
   in the boundary bucket, the `need = K - count(score > t)` whose ordinals a
   seeded `numpy.random.Generator` chose are kept, and that tail is then shuffled
   with the same generator: the only random part of the output.

Both passes stream row blocks of memory-mapped matrices (nothing of size
n_segments × 1000 is allocated) and run in parallel over groups of classes. The
ensemble score is the mean of the models' values rounded half up:
`(2 * sum + M) // (2 * M)`, in integers, identically in every path.
Memory: the histogram (1000 × 10,000 int32, 40 MB), one block buffer, and the
result (1000 × K int32, 400 MB at K = 100,000).
"""
from __future__ import annotations

import sys

import numpy as np
from numba import prange  # behaves as `range` when YT8M_NO_JIT=1 turns njit off
from tqdm import tqdm

from ingest.errors import IngestError
from ingest.jit import njit
from predict.predictions import QUANT_SCALE

# The paper's inference step ranks each class's candidate segments by score
# quantised to 10,000 levels and keeps the top 100,000 (the challenge's K).
N_BUCKETS = QUANT_SCALE + 1  # 10,000 buckets, one per quantised score 0..9999
DEFAULT_K = 100_000  # submission entries per class allowed by the challenge
CLASS_GROUP = 32  # classes per parallel task: 32 uint16 = one 64-byte cache line of a row
BLOCK_ROWS = 8192  # rows per streamed block (16 MB per model)
PROGRESS_MIN_ROWS = 200_000  # show progress bars from this many segments on


@njit(inline="always")
def _mean(total, n_models):
    """Ensemble mean of `n_models` integer scores summing to `total`, rounded half up."""
    if n_models == 1:
        return np.int64(total)
    return (2 * np.int64(total) + n_models) // (2 * n_models)


@njit(inline="always")
def _group(g, n_cls):
    """Classes [c0, c1) of parallel task g."""
    c0 = g * CLASS_GROUP
    return c0, min(c0 + CLASS_GROUP, n_cls)


@njit(parallel=True)
def accumulate(sums, block, first):
    """sums (B, C) uint32 ← block (B, C) uint16 if `first`, else sums + block."""
    for r in prange(block.shape[0]):
        if first:
            for c in range(block.shape[1]):
                sums[r, c] = block[r, c]
        else:
            for c in range(block.shape[1]):
                sums[r, c] += block[r, c]


@njit(parallel=True)
def histogram(vals, n_models, hist):
    """hist (C, N_BUCKETS) int32 += counts of `_mean(vals, n_models)` per class; vals (B, C)."""
    n_rows, n_cls = vals.shape
    for g in prange((n_cls + CLASS_GROUP - 1) // CLASS_GROUP):
        c0, c1 = _group(g, n_cls)
        for r in range(n_rows):
            for c in range(c0, c1):
                hist[c, _mean(vals[r, c], n_models)] += 1


@njit(parallel=True)
def collect(vals, n_models, row0, thresh, offsets, above, need, seen, taken, sel):
    """Place rows `row0 ..` of block vals (B, C) into sel (C, K) int32.

    Above its class's boundary `thresh[c]` a row goes to `offsets[c, v]` (then
    incremented: a descending counting sort). In the boundary bucket the row is the
    `seen[c]`-th met; it is kept when that ordinal is the next of the sorted chosen
    ordinals stored in `sel[c, above[c] + taken[c]:]`, and overwrites it.
    """
    n_rows, n_cls = vals.shape
    for g in prange((n_cls + CLASS_GROUP - 1) // CLASS_GROUP):
        c0, c1 = _group(g, n_cls)
        for r in range(n_rows):
            for c in range(c0, c1):
                v = _mean(vals[r, c], n_models)
                t = thresh[c]
                if v > t:
                    sel[c, offsets[c, v]] = row0 + r
                    offsets[c, v] += 1
                elif v == t:
                    j = seen[c]
                    seen[c] = j + 1
                    p = taken[c]
                    if p < need[c] and sel[c, above[c] + p] == j:
                        sel[c, above[c] + p] = row0 + r
                        taken[c] = p + 1


def boundaries(hist: np.ndarray, k: int):
    """Per class, from hist (C, N_BUCKETS): boundary bucket, count above it, count needed from it.

    Returns thresh (C,) int64, above (C,) int64, need (C,) int64 with
    above + need = k for every class (k ≤ n_segments).
    """
    desc = np.cumsum(hist[:, ::-1], axis=1, dtype=np.int64)  # desc[c, i] = count(v >= 9999 - i)
    i = np.argmax(desc >= k, axis=1)
    thresh = (N_BUCKETS - 1 - i).astype(np.int64)
    rows = np.arange(hist.shape[0])
    above = desc[rows, i] - hist[rows, thresh]
    return thresh, above, k - above


def bucket_offsets(hist: np.ndarray) -> np.ndarray:
    """(C, N_BUCKETS) int64: the first slot of bucket v in a descending order = count(score > v)."""
    desc = np.cumsum(hist[:, ::-1], axis=1, dtype=np.int64)
    return (desc - hist[:, ::-1])[:, ::-1].copy()


def _blocks(models, block_rows, sums):
    """Yield (row0, vals, n_models) over row blocks; vals is uint16 (M = 1) or uint32 sums."""
    n = models[0].shape[0]
    for r0 in range(0, n, block_rows):
        r1 = min(r0 + block_rows, n)
        if len(models) == 1:
            yield r0, np.asarray(models[0][r0:r1]), 1
            continue
        buf = sums[: r1 - r0]
        for m, mat in enumerate(models):
            accumulate(buf, np.asarray(mat[r0:r1]), m == 0)
        yield r0, buf, len(models)


def top_k(models, k: int = DEFAULT_K, seed: int = 0, block_rows: int = BLOCK_ROWS,
          progress: bool | None = None) -> np.ndarray:
    """Top-k rows per class of the rounded mean of `models`, best first.

    models: list of (N, C) uint16 arrays (memory maps), values 0..9999.
    Returns (C, min(k, N)) int32 row indices; row order within a higher bucket,
    the boundary bucket's chosen rows last in an order shuffled by `seed`.
    """
    if k < 1:
        raise IngestError(f"--k must be at least 1, got {k}")
    n, n_cls = models[0].shape
    for m in models:
        if m.shape != (n, n_cls) or m.dtype != np.uint16:
            raise IngestError(f"models differ in shape or dtype: {m.shape} {m.dtype}")
    if n >= 2**31:
        raise IngestError(f"{n} segments: more than int32 row indices can address")
    k = min(k, n)
    sel = np.empty((n_cls, k), np.int32)
    if k == 0:
        return sel
    sums = np.empty((min(block_rows, n), n_cls), np.uint32) if len(models) > 1 else None
    n_blocks = -(-n // block_rows)
    show = n >= PROGRESS_MIN_ROWS if progress is None else progress
    with tqdm(total=2 * n_blocks, desc="top-k", unit="block", file=sys.stderr,
              disable=not show) as bar:
        hist = np.zeros((n_cls, N_BUCKETS), np.int32)
        for _, vals, n_models in _blocks(models, block_rows, sums):
            histogram(vals, n_models, hist)
            bar.update()
        thresh, above, need = boundaries(hist, k)
        offsets = bucket_offsets(hist)
        rng = np.random.default_rng(seed)
        for c in range(n_cls):
            sel[c, above[c]:] = _chosen_ordinals(rng, int(hist[c, thresh[c]]), int(need[c]))
        del hist
        seen = np.zeros(n_cls, np.int64)
        taken = np.zeros(n_cls, np.int64)
        for r0, vals, n_models in _blocks(models, block_rows, sums):
            collect(vals, n_models, r0, thresh, offsets, above, need, seen, taken, sel)
            bar.update()
    assert np.array_equal(taken, need), "boundary selection incomplete"
    for c in range(n_cls):
        rng.shuffle(sel[c, above[c]:])
    return sel


def _chosen_ordinals(rng: np.random.Generator, count: int, need: int) -> np.ndarray:
    """Sorted ordinals of the `need` of `count` boundary-bucket segments to keep."""
    if need == count:
        return np.arange(count)
    return np.sort(rng.choice(count, need, replace=False))


def ensemble_scores(models, rows: np.ndarray | None = None) -> np.ndarray:
    """The rounded-half-up ensemble mean as int64, of all rows or of `rows` (plain numpy)."""
    stack = [np.asarray(m if rows is None else m[rows], np.int64) for m in models]
    total = np.sum(stack, axis=0)
    n_models = len(models)
    return (2 * total + n_models) // (2 * n_models)

