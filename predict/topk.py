"""Top-K segments per class over an ensemble of quantised models, in two counting passes.

Scores are integers 0..9999 (predict/predictions.py), so a class's scores fall in
exactly N_BUCKETS buckets and the top K is found without sorting:

1. histogram pass: per class, count the segments of each bucket at or above a
   floor (started from a row sample just below the class's boundary, then rising
   as K counted scores lie above it), so only about K/N of the scores are
   counted; the boundary bucket `t` is the highest with `count(score >= t) >= K`;
2. gather pass: every segment above `t` is appended to its class's output row;
   of the `cnt(t)` segments in the boundary bucket, the `need = K - count(score > t)`
   whose ordinals a seeded `numpy.random.Generator` chose are appended too; then
   each class's K rows are counting-sorted by score in cache (row order within a
   bucket, the boundary rows last) and that tail is shuffled with the same
   generator: the only random part of the output.

Both passes stream row blocks of memory-mapped matrices (nothing of size
n_segments × 1000 is allocated) and run in parallel, one contiguous range of
classes per thread; the gather pass compares four scores at once (SWAR on
uint64 words) with their boundaries. The
ensemble score is the mean of the models' values rounded half up:
`(2 * sum + M) // (2 * M)`, in integers, identically in every path.
Memory: the histogram (1000 × 10,000 int32, 40 MB), block buffers for several
models (sums and means), the result (1000 × K int32, 400 MB at K = 100,000) and
the gathered scores (1000 × K uint16, 200 MB).
"""
from __future__ import annotations

import sys

import numba
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
SAMPLE_ROWS = 8192  # rows sampled to start each class's floor near its boundary
SAMPLE_SIGMAS = 5.0  # the sampled floor sits this many binomial sigmas below the estimate
BLOCK_ROWS = 8192  # rows per streamed block (16 MB per model)
PROGRESS_MIN_ROWS = 200_000  # show progress bars from this many segments on


LANES = 4  # uint16 scores per uint64 word in the SWAR compare
_HIGH = np.uint64(0x8000_8000_8000_8000)  # the top bit of each 16-bit lane
_U16 = np.uint64(0xFFFF)


@njit(inline="always")
def _word_group(g, n_groups, n_words):
    """Words [w0, w1) (classes [4 w0, 4 w1)) of parallel task g of n_groups.

    One contiguous range of classes per thread: each thread streams through the
    rows of a block reading one contiguous run of every row (hardware prefetch
    friendly), and no two threads write the same class's state.
    """
    per = -(-n_words // n_groups)
    w0 = min(g * per, n_words)
    return w0, min(w0 + per, n_words)


@njit(inline="always")
def _pack(values, c):
    """values[c:c + 4] (each < 2**15) packed into the four 16-bit lanes of a uint64."""
    out = np.uint64(0)
    for lane in range(LANES):
        out |= np.uint64(values[c + lane]) << np.uint64(16 * lane)
    return out


@njit(inline="always")
def _at_least(x, bound):
    """SWAR: top bit of each lane set where lane(x) >= lane(bound); lanes < 2**15."""
    return ((x | _HIGH) - bound) & _HIGH


@njit(inline="always")
def _lane(x, lane):
    return np.int64((x >> np.uint64(16 * lane)) & _U16)


@njit(inline="always")
def _lane_set(m, lane):
    return (m >> np.uint64(16 * lane + 15)) & np.uint64(1)


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
def round_mean(sums, n_models, means):
    """means (B, C) uint16 = mean of `n_models` scores summing to sums, rounded half up."""
    for r in prange(sums.shape[0]):
        for c in range(sums.shape[1]):
            means[r, c] = (2 * np.int64(sums[r, c]) + n_models) // (2 * n_models)


@njit(parallel=True)
def histogram(vals, k, n_groups, floor, count_ge, hist, invalid):
    """Count, per class, the block's scores at or above a rising floor.

    vals (B, C) uint16 scores; hist (C, N_BUCKETS) int32; floor (C,) int64 and
    count_ge (C,) int64 = count(score >= floor) so far; n_groups parallel tasks,
    each a contiguous range of classes walked row by row. Scores below `floor[c]`
    are skipped: once `k` scores reach a bucket, the final boundary cannot be
    lower, so after each block the floor rises to the highest bucket that still
    has `k` counted scores at or above it. Counts at or above the final floor are
    exact. A score above 9999 is not counted; invalid[c] counts them.
    """
    n_rows, n_cls = vals.shape
    for g in prange(n_groups):
        w0, w1 = _word_group(g, n_groups, n_cls // LANES)
        c0, c1 = LANES * w0, LANES * w1
        for r in range(n_rows):
            for c in range(c0, c1):
                v = np.int64(vals[r, c])
                if v >= floor[c]:
                    if v < N_BUCKETS:
                        hist[c, v] += 1
                        count_ge[c] += 1
                    else:  # not a quantised score: not counted, refused after the pass
                        invalid[c] += 1
        for c in range(c0, c1):
            f = floor[c]
            while f < N_BUCKETS - 1 and count_ge[c] - hist[c, f] >= k:
                count_ge[c] -= hist[c, f]
                f += 1
            floor[c] = f


@njit(parallel=True)
def gather(words, row0, n_groups, thresh, above, need, seen, taken, count, sel, sel_vals):
    """Append the rows of a score block that make their class's top k to sel (C, K) int32.

    words (B, C / 4) uint64: the (B, C) uint16 scores viewed as words, so that four
    scores are compared with their classes' boundaries at once (SWAR); only the hits
    are visited. A row above its class's boundary `thresh[c]` is appended at
    `count[c]` (its score in sel_vals); in the boundary bucket the row is the
    `seen[c]`-th met and is appended when that ordinal is the next of the sorted
    chosen ordinals stored in `sel[c, above[c] + taken[c]:]` (the append position
    never passes the next unread ordinal). Appends are sequential per class: 1000
    write streams instead of one per (class, bucket), so they stay in cache.
    """
    n_rows, n_words = words.shape
    for g in prange(n_groups):
        w0, w1 = _word_group(g, n_groups, n_words)
        bounds = np.empty(max(w1 - w0, 0), np.uint64)
        for w in range(w0, w1):
            bounds[w - w0] = _pack(thresh, LANES * w)
        for r in range(n_rows):
            for w in range(w0, w1):
                x = words[r, w]
                m = _at_least(x, bounds[w - w0])
                if m:
                    for lane in range(LANES):
                        if _lane_set(m, lane):
                            _append(LANES * w + lane, _lane(x, lane), row0 + r, thresh,
                                    above, need, seen, taken, count, sel, sel_vals)


@njit(inline="always")
def _append(c, v, row, thresh, above, need, seen, taken, count, sel, sel_vals):
    """One row of class c scoring v >= thresh[c] (see `gather`)."""
    if v == thresh[c]:
        p = taken[c]
        keep = p < need[c] and sel[c, above[c] + p] == seen[c]
        seen[c] += 1
        if not keep:
            return
        taken[c] = p + 1
    i = count[c]
    sel[c, i] = row
    sel_vals[c, i] = v
    count[c] = i + 1


@njit(parallel=True)
def order(sel, sel_vals, thresh, starts, above):
    """Sort each class's gathered rows best first, in place: a counting sort by score.

    sel (C, K) rows in row order with their scores sel_vals; starts (C, N_BUCKETS)
    holds, for every bucket v above the boundary, the first output slot of v (from
    `boundaries`). Rows of one bucket keep their row order; the boundary rows go
    last, in row order (shuffled afterwards by the caller's generator).
    """
    n_cls, k = sel.shape
    for c in prange(n_cls):
        rows = sel[c].copy()
        t = thresh[c]
        tail = above[c]
        for i in range(k):
            v = sel_vals[c, i]
            if v > t:
                sel[c, starts[c, v]] = rows[i]
                starts[c, v] += 1
            else:
                sel[c, tail] = rows[i]
                tail += 1


@njit(parallel=True)
def boundaries(hist, k, thresh, above, count_at):
    """Per class from hist (C, N_BUCKETS): the boundary bucket, and slots of the buckets above.

    Writes thresh[c] (the highest bucket with `count(score >= t) >= k`), above[c] =
    count(score > t), count_at[c] = count(score == t); and turns hist[c, v] for every
    v > t into the first output slot of bucket v, count(score > v), in place.
    hist needs to be exact only at and above the boundary.
    """
    for c in prange(hist.shape[0]):
        total = 0
        v = hist.shape[1] - 1
        while v > 0 and total + hist[c, v] < k:
            h = hist[c, v]
            hist[c, v] = total
            total += h
            v -= 1
        thresh[c] = v
        above[c] = total
        count_at[c] = hist[c, v]


def _blocks(models, block_rows, sums, means):
    """Yield (row0, scores) over row blocks: the block's ensemble scores (B, C) uint16.

    One model: a view of its memory map; several: summed into `sums` and rounded
    into `means` (buffers of block_rows rows, allocated once).
    """
    n = models[0].shape[0]
    for r0 in range(0, n, block_rows):
        r1 = min(r0 + block_rows, n)
        if len(models) == 1:
            yield r0, np.asarray(models[0][r0:r1])
            continue
        for m, mat in enumerate(models):
            accumulate(sums[: r1 - r0], np.asarray(mat[r0:r1]), m == 0)
        round_mean(sums[: r1 - r0], len(models), means[: r1 - r0])
        yield r0, means[: r1 - r0]


def sampled_floor(models, k: int, sums: np.ndarray, means: np.ndarray) -> np.ndarray:
    """(C,) int64: per class a floor at or below its boundary bucket, almost surely.

    Ensemble scores of a seeded random sample of S rows (sorted; S = SAMPLE_ROWS, or
    the rows of the block buffers `sums`/`means` when several models need them)
    estimate each class's boundary: with q = k / N, about q·S sampled scores lie
    above it; the floor is the sampled score of rank q·S + SAMPLE_SIGMAS·sqrt(q·S).
    A floor above the real boundary shows as count(score >= floor) < k after the
    histogram pass and those classes are counted again from 0, so the floor only
    ever decides speed, never the result.
    """
    n, n_cls = models[0].shape
    size = SAMPLE_ROWS if len(models) == 1 else min(SAMPLE_ROWS, len(sums))
    expect = k / n * size
    rank = int(expect + SAMPLE_SIGMAS * np.sqrt(expect)) + 1
    if n <= 4 * size or rank > size:  # small inputs: counting everything is cheap
        return np.zeros(n_cls, np.int64)
    rows = np.sort(np.random.default_rng(0).choice(n, size, replace=False))
    if len(models) == 1:
        scores = np.asarray(models[0][rows])  # (S, C) uint16
    else:
        for m, mat in enumerate(models):
            accumulate(sums[:size], np.asarray(mat[rows]), m == 0)
        round_mean(sums[:size], len(models), means[:size])
        scores = means[:size]
    return np.partition(scores, size - rank, axis=0)[size - rank].astype(np.int64)


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
    if n_cls % LANES:
        raise IngestError(f"{n_cls} classes: the kernels need a multiple of {LANES}")
    if n >= 2**31:
        raise IngestError(f"{n} segments: more than int32 row indices can address")
    k = min(k, n)
    sel = np.empty((n_cls, k), np.int32)
    if k == 0:
        return sel
    rows = min(block_rows, n) if len(models) > 1 else 0
    sums, means = np.empty((rows, n_cls), np.uint32), np.empty((rows, n_cls), np.uint16)
    n_blocks = -(-n // block_rows)
    show = n >= PROGRESS_MIN_ROWS if progress is None else progress
    with tqdm(total=2 * n_blocks, desc="top-k", unit="block", file=sys.stderr,
              disable=not show) as bar:
        n_groups = max(1, min(numba.get_num_threads(), n_cls // LANES))
        floor = sampled_floor(models, k, sums, means)
        hist = np.zeros((n_cls, N_BUCKETS), np.int32)
        count_ge = np.zeros(n_cls, np.int64)
        invalid = np.zeros(n_cls, np.int64)
        for _, vals in _blocks(models, block_rows, sums, means):
            histogram(vals, k, n_groups, floor, count_ge, hist, invalid)
            bar.update()
        redo = count_ge < k  # sampled floor above the boundary (rare): count those again
        if redo.any():
            floor[redo], count_ge[redo], hist[redo] = 0, 0, 0
            floor[~redo] = np.iinfo(np.int64).max  # the other classes count nothing
            done = hist[~redo].copy()
            for _, vals in _blocks(models, block_rows, sums, means):
                histogram(vals, k, n_groups, floor, count_ge, hist, invalid)
            hist[~redo] = done
        if invalid.any():
            raise IngestError(f"{invalid.sum()} scores above {QUANT_SCALE} (first in class "
                              f"index {np.flatnonzero(invalid)[0]}): not quantised predictions")
        thresh, above, count_at = (np.zeros(n_cls, np.int64) for _ in range(3))
        boundaries(hist, k, thresh, above, count_at)
        need = k - above
        rng = np.random.default_rng(seed)
        for c in range(n_cls):
            sel[c, above[c]:] = _chosen_ordinals(rng, int(count_at[c]), int(need[c]))
        seen, taken, count = (np.zeros(n_cls, np.int64) for _ in range(3))
        sel_vals = np.empty((n_cls, k), np.uint16)
        for r0, vals in _blocks(models, block_rows, sums, means):
            gather(vals.view(np.uint64), r0, n_groups, thresh, above, need, seen, taken, count, sel,
                   sel_vals)
            bar.update()
    assert np.array_equal(taken, need) and np.all(count == k), "selection incomplete"
    order(sel, sel_vals, thresh, hist, above)
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

