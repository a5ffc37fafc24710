"""Top-K segments per class over an ensemble of quantised models, in two counting passes.

Scores are integers 0..9999 (predict/predictions.py), so a class's scores fall in
exactly N_BUCKETS buckets and the top K is found without sorting:

1. histogram pass: per class, count the segments of each bucket at or above a
   floor that rises, after each block, to the highest bucket with K counted scores
   at or above it (so only about K/N of the scores are counted); a score above
   9999 is refused; the boundary bucket `t` is the highest with
   `count(score >= t) >= K`;
2. collect pass: every segment above `t` goes straight to its place in a
   descending counting sort (row order within a bucket); of the `cnt(t)` segments
   in the boundary bucket, the `need = K - count(score > t)` whose ordinals a
   seeded `numpy.random.Generator` chose are kept, and that tail is then shuffled
   with the same generator: the only random part of the output.

Both passes stream row blocks of memory-mapped matrices (nothing of size
n_segments × 1000 is allocated) and run in parallel over groups of classes;
inside a block they walk tiles of rows; the histogram pass first compacts,
branch-free, the few scores of a column that pass the floor, the collect pass
compares four scores at once (SWAR on uint64 words) with their boundaries. The
ensemble score is the mean of the models' values rounded half up:
`(2 * sum + M) // (2 * M)`, in integers, identically in every path.
Memory: the histogram (1000 × 10,000 int32, 40 MB), block buffers for several
models (sums and means), and the result (1000 × K int32, 400 MB at K = 100,000).
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
ROW_TILE = 128  # rows per tile inside a block: 128 × 2000 B rows span few pages (TLB)
BLOCK_ROWS = 8192  # rows per streamed block (16 MB per model)
PROGRESS_MIN_ROWS = 200_000  # show progress bars from this many segments on


LANES = 4  # uint16 scores per uint64 word in the SWAR compare
_HIGH = np.uint64(0x8000_8000_8000_8000)  # the top bit of each 16-bit lane
_U16 = np.uint64(0xFFFF)


@njit(inline="always")
def _word_group(g, n_words):
    """Words [w0, w1) (classes [4 w0, 4 w1)) of parallel task g."""
    w0 = g * (CLASS_GROUP // LANES)
    return w0, min(w0 + CLASS_GROUP // LANES, n_words)


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
def histogram(vals, k, floor, count_ge, hist, invalid):
    """Count, per class, the block's scores at or above a rising floor.

    vals (B, C) uint16 scores; hist (C, N_BUCKETS) int32; floor (C,) int64 and
    count_ge (C,) int64 = count(score >= floor) so far. Per tile and class the
    scores at or above the floor are first compacted branch-free, then counted.
    Scores below `floor[c]` are skipped: once `k` scores reach a bucket, the final
    boundary cannot be lower, so after each block the floor rises to the highest
    bucket that still has `k` counted scores at or above it. Counts at or above
    the final floor are exact. A score above 9999 is not counted; invalid[c] counts them.
    """
    n_rows, n_cls = vals.shape
    for g in prange((n_cls + CLASS_GROUP - 1) // CLASS_GROUP):
        c0 = g * CLASS_GROUP
        c1 = min(c0 + CLASS_GROUP, n_cls)
        hits = np.empty(ROW_TILE, np.int64)
        for r0 in range(0, n_rows, ROW_TILE):
            r1 = min(r0 + ROW_TILE, n_rows)
            for c in range(c0, c1):  # class-major inside a tile that stays in L1 and the TLB
                f = floor[c]
                n = 0
                for r in range(r0, r1):
                    v = np.int64(vals[r, c])
                    hits[n] = v
                    n += v >= f
                h = hist[c]
                counted = n
                for i in range(n):
                    if hits[i] < N_BUCKETS:
                        h[hits[i]] += 1
                    else:  # not a quantised score: not counted, refused after the pass
                        invalid[c] += 1
                        counted -= 1
                count_ge[c] += counted
        for c in range(c0, c1):
            f = floor[c]
            while f < N_BUCKETS - 1 and count_ge[c] - hist[c, f] >= k:
                count_ge[c] -= hist[c, f]
                f += 1
            floor[c] = f


@njit(parallel=True)
def collect(words, row0, thresh, starts, above, need, seen, taken, sel):
    """Place rows `row0 ..` of a score block into sel (C, K) int32.

    words (B, C / 4) uint64: the (B, C) uint16 scores viewed as words, so that four
    scores are compared with their classes' boundaries at once (SWAR).
    A row above its class's boundary `thresh[c]` goes to slot `starts[c, v]` (then
    incremented: a descending counting sort; `starts` from `boundaries`). In the
    boundary bucket the row is the `seen[c]`-th met; it is kept when that ordinal
    is the next of the sorted chosen ordinals stored in
    `sel[c, above[c] + taken[c]:]`, and overwrites it there.
    """
    n_rows, n_words = words.shape
    for g in prange((n_words * LANES + CLASS_GROUP - 1) // CLASS_GROUP):
        w0, w1 = _word_group(g, n_words)
        bounds = np.empty(CLASS_GROUP // LANES, np.uint64)
        for w in range(w0, w1):
            bounds[w - w0] = _pack(thresh, LANES * w)
        for r0 in range(0, n_rows, ROW_TILE):
            for w in range(w0, w1):
                bound = bounds[w - w0]
                for r in range(r0, min(r0 + ROW_TILE, n_rows)):
                    x = words[r, w]
                    m = _at_least(x, bound)
                    if m:
                        for lane in range(LANES):
                            if _lane_set(m, lane):
                                _place(LANES * w + lane, _lane(x, lane), row0 + r, thresh,
                                       starts, above, need, seen, taken, sel)


@njit(inline="always")
def _place(c, v, row, thresh, starts, above, need, seen, taken, sel):
    """One row of class c scoring v >= thresh[c] (see `collect`)."""
    if v > thresh[c]:
        sel[c, starts[c, v]] = row
        starts[c, v] += 1
        return
    p = taken[c]
    if p < need[c] and sel[c, above[c] + p] == seen[c]:
        sel[c, above[c] + p] = row
        taken[c] = p + 1
    seen[c] += 1


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
        hist = np.zeros((n_cls, N_BUCKETS), np.int32)
        floor = np.zeros(n_cls, np.int64)
        count_ge = np.zeros(n_cls, np.int64)
        invalid = np.zeros(n_cls, np.int64)
        for _, vals in _blocks(models, block_rows, sums, means):
            histogram(vals, k, floor, count_ge, hist, invalid)
            bar.update()
        if invalid.any():
            raise IngestError(f"{invalid.sum()} scores above {QUANT_SCALE} (first in class "
                              f"index {np.flatnonzero(invalid)[0]}): not quantised predictions")
        thresh, above, count_at = (np.zeros(n_cls, np.int64) for _ in range(3))
        boundaries(hist, k, thresh, above, count_at)
        need = k - above
        rng = np.random.default_rng(seed)
        for c in range(n_cls):
            sel[c, above[c]:] = _chosen_ordinals(rng, int(count_at[c]), int(need[c]))
        seen = np.zeros(n_cls, np.int64)
        taken = np.zeros(n_cls, np.int64)
        for r0, vals in _blocks(models, block_rows, sums, means):
            collect(vals.view(np.uint64), r0, thresh, hist, above, need, seen, taken, sel)
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

