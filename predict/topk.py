"""Top-K segments per class over an ensemble of quantised models, in one streaming pass.

Scores are integers 0..9999 (predict/predictions.py). The output order of a class
is score descending; ties are broken by a seeded pseudo-random tie key per
(class, segment) (`topk_kernels.tie_key`, splitmix64 of seed, class and row) in
the boundary bucket, and by row order in the buckets above it. So the K chosen
are the K largest composite keys `score << 50 | tie key`: the boundary bucket's
segments are a uniform random choice, reproducible from the seed, and the only
shuffled part of the output.

0. prefault: each memory-mapped matrix's pages are mapped in one madvise call;
1. floors: the ensemble scores of SAMPLE_ROWS evenly spaced rows give each class
   a composite floor that FLOOR_SIGMAS binomial standard deviations more than K
   segments are expected to reach (floor 0 where the sample cannot tell);
2. scan: one pass over row blocks of the memory-mapped matrices, in rounds of
   rows: the threads share a round's rows (whole rows: memory speed) and compare
   32 scores at a time with their floors, compressing the hits (predict/simd.py);
   then, parallel over class chunks, the hits are appended to their class's buffer of
   `K + K/4` packed uint32 entries; a full buffer is compacted to its K best and
   its floor rises to the K-th (nothing at or above the final K-th is ever lost);
3. a class left with fewer than K entries (its floor was set too high by the
   sample: rare) is scanned again from floor 0 with every other class switched off;
4. finish, per class in cache: a 10,000-bucket counting sort of its entries, the
   boundary bucket ordered by tie key, written over the buffer's first K slots.

Memory: the buffers (C × 1.25 K × 4 bytes, 500 MB at K = 100,000, of which about
1.1 K per class is touched), per-thread scratch, the sample, and one block of
means for a multi-model ensemble; nothing of size n_segments × C. The ensemble
score is the mean of the models' values rounded half up, `(2 * sum + M) // (2 * M)`
(an exact float64 division in the kernel, integers in `ensemble_scores`; equal).
"""
from __future__ import annotations

import math
import sys

import numba
import numpy as np
from tqdm import tqdm

from ingest.errors import IngestError
from predict import simd
from predict import topk_kernels as K
from predict.predictions import QUANT_SCALE, prefault

N_BUCKETS = K.N_BUCKETS
# The paper's inference step keeps the top 100,000 segments per class (the challenge's K).
DEFAULT_K = 100_000
BLOCK_ROWS = 8192  # rows per streamed block (16 MB per model)
SAMPLE_ROWS = 16384  # rows sampled for the starting floors
FLOOR_SIGMAS = 6.0  # margin of the sampled floors, in binomial standard deviations
BUFFER_SLACK = 0.25  # buffer = K (1 + slack): room for the sample's margin before compaction
PROGRESS_MIN_ROWS = 200_000  # show progress bars from this many segments on
UNSET_FLOOR = np.uint16(0xFFFF)  # switches a class off for a rescan: no score is valid above


def top_k(models, k: int = DEFAULT_K, seed: int = 0, block_rows: int = BLOCK_ROWS,
          progress: bool | None = None, compress: str | None = None,
          weights=None, restriction=None) -> np.ndarray:
    """Top-k rows per class of the rounded mean of `models`, best first.

    models: list of (N, C) uint16 arrays (memory maps), values 0..9999. compress: one
    of simd.PATHS, the scan's compare-and-compress (default: the compile target's).
    weights: None (the mean) or one integer >= 0 per model (the weighted mean,
    `weighted_models`). restriction: a video prior's `predict.prior.Restriction` (its
    kept segments first; gathered in the same pass). Returns (C, min(k, N)) int32 row
    indices (a view of the candidate buffers).
    """
    models, weights = weighted_models(models, weights)
    n, n_cls = _check(models, k)
    k = min(k, n)
    buf = np.empty((n_cls, capacity(k)), np.uint32)
    for m in models:  # map the files' pages in one call each, not a fault per 64 KB
        prefault(m)
    fv, fk = starting_floors(models, k, seed, weights)
    state = _ScanState(n, n_cls, simd.path_index(compress))
    if restriction is not None:
        restriction.start(n, _n_parts())
    show = n >= PROGRESS_MIN_ROWS if progress is None else progress
    with tqdm(total=n, desc="top-k", unit="row", unit_scale=True, file=sys.stderr,
              disable=not show) as bar:
        _scan_all(models, block_rows, state, np.ones(n_cls, bool), fv, fk, seed, k, buf, bar,
                  weights, restriction)
        _refuse_invalid(state.invalid, models)
        redo = state.cnt < k  # the sample set these floors too high: scan them from 0
        if redo.any():
            bar.reset(total=n)
            fv = np.where(redo, np.uint16(0), UNSET_FLOOR)
            fk = np.where(redo, np.uint64(0), np.uint64(np.iinfo(np.uint64).max))
            state.reset(redo)
            _scan_all(models, block_rows, state, redo, fv, fk, seed, k, buf, bar, weights)
    assert (state.cnt >= k).all(), "a class has fewer than k candidates"
    if restriction is None:
        K.finish(k, seed, buf, state.cnt, state.epoch_pos, _n_parts())
    else:
        restriction.finish(k, seed, buf, state.cnt, state.epoch_pos, _n_parts())
    return buf[:, :k].view(np.int32)


MAX_TOTAL_WEIGHT = 65536  # Σ w · 65535 must fit the weighted mean's uint32 sums


def weighted_models(models, weights) -> tuple[list, np.ndarray | None]:
    """(models, weights) without the models of weight 0; weights None where the mean is
    unweighted or one model is left (its weighted mean is itself). IngestError for a
    weight count that is not the model count, a negative weight, or a sum of 0 or above
    MAX_TOTAL_WEIGHT."""
    if weights is None:
        return list(models), None
    w = np.asarray(weights, np.int64)
    if w.shape != (len(models),):
        raise IngestError(f"--weights: {w.size} weights for {len(models)} prediction files")
    if (w < 0).any() or not 0 < w.sum() <= MAX_TOTAL_WEIGHT:
        raise IngestError(f"--weights {','.join(map(str, w))}: integers >= 0, at least one "
                          f"above 0, summing to at most {MAX_TOTAL_WEIGHT}")
    kept = [m for m, x in zip(models, w) if x > 0]
    return kept, (w[w > 0] if len(kept) > 1 else None)


def _mean(blocks: tuple, weights, out: np.ndarray) -> None:
    """out = the rounded-half-up (weighted) mean of the (B, C) uint16 `blocks`."""
    if weights is None:
        K.ensemble_mean(blocks, out)
    else:
        K.weighted_mean(blocks, weights, out)


def capacity(k: int) -> int:
    """Entries a class's candidate buffer holds: k plus BUFFER_SLACK (at least a tile)."""
    return k + max(math.ceil(k * BUFFER_SLACK), K.TILE_ROWS)


def _n_parts() -> int:
    """Class ranges the parallel kernels split the work into: one per numba thread."""
    return max(1, numba.get_num_threads())


def _check(models, k: int) -> tuple[int, int]:
    if k < 1:
        raise IngestError(f"--k must be at least 1, got {k}")
    n, n_cls = models[0].shape
    for m in models:
        if m.shape != (n, n_cls) or m.dtype != np.uint16:
            raise IngestError(f"models differ in shape or dtype: {m.shape} {m.dtype}")
    if n >= 2**31:
        raise IngestError(f"{n} segments: more than int32 row indices can address")
    if n == 0:
        raise IngestError("no segments: nothing to rank")
    return n, n_cls


class _ScanState:
    """Per-class scan counters (entries, epoch starts, scores above 9999), the compress path."""

    def __init__(self, n: int, n_cls: int, path: int):
        self.path = path  # simd.path_index(): the compress path of every scan
        n_epochs = -(-n // K.EPOCH_ROWS)
        self.cnt = np.zeros(n_cls, np.int64)
        self.invalid = np.zeros(n_cls, np.int64)
        self.epoch_pos = np.full((n_cls, n_epochs + 1), K.NOT_STARTED, np.int64)
        self.epoch_pos[:, 0] = 0

    def reset(self, classes: np.ndarray) -> None:
        self.cnt[classes] = 0
        self.epoch_pos[classes, 1:] = K.NOT_STARTED


def _scan_all(models, block_rows, state, active, fv, fk, seed, k, buf, bar,
              weights=None, restriction=None) -> None:
    """Scan every row block (blocks never straddle an epoch) for the `active` classes; a
    `restriction` gathers each block's kept scores too."""
    hits, ends = K.scan_scratch(models[0].shape[1], _n_parts())
    for r0, vals in _blocks(models, block_rows, weights):
        epoch = r0 >> K.EPOCH_BITS
        if r0 & K.ROW_MASK == 0 and epoch:
            state.epoch_pos[active, epoch] = state.cnt[active]
        # with a restriction, a round at a time: its gather reads the rows still in cache
        step = len(vals) if restriction is None else K.SUB_ROWS
        for s0 in range(0, len(vals), step):
            part = vals[s0:s0 + step]
            K.scan(part, r0 + s0, epoch, fv, fk, seed, k, buf, state.cnt, state.epoch_pos,
                   state.invalid, hits, ends, state.path)
            if restriction is not None:
                restriction.gather(r0 + s0, part)
        bar.update(len(vals))


def _refuse_invalid(invalid: np.ndarray, models) -> None:
    """One line naming the file (a memory map's `filename`) whose scores exceed 9999."""
    if invalid.any():
        c = int(np.flatnonzero(invalid)[0])
        bad = next((m for m in models if (m[:, c] > QUANT_SCALE).any()), models[0])
        name = getattr(bad, "filename", None) or "the scores"
        where = " in the ensemble mean" if len(models) > 1 else ""
        raise IngestError(f"{name}: {invalid.sum()} scores above {QUANT_SCALE}{where} (first "
                          f"in class index {c}): not quantised predictions")


def _blocks(models, block_rows, weights=None):
    """Yield (row0, scores (B, C) uint16) over row blocks that never cross an epoch.

    One model: views of its memory map; several: their rounded (weighted) mean, in a
    buffer allocated once.
    """
    n, n_cls = models[0].shape
    means = np.empty((min(block_rows, n) if len(models) > 1 else 0, n_cls), np.uint16)
    r0 = 0
    while r0 < n:
        r1 = min(r0 + block_rows, n, ((r0 >> K.EPOCH_BITS) + 1) << K.EPOCH_BITS)
        if len(models) == 1:  # the SIMD compare reads 32 neighbouring scores of a row
            yield r0, np.ascontiguousarray(models[0][r0:r1])
        else:
            _mean(tuple(np.ascontiguousarray(m[r0:r1]) for m in models), weights,
                  means[: r1 - r0])
            yield r0, means[: r1 - r0]
        r0 = r1


def starting_floors(models, k: int, seed: int, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """Per class (fv (C,) uint16, fk (C,) uint64): a composite floor below the k-th best.

    From SAMPLE_ROWS evenly spaced rows (all rows when there are fewer): the sampled
    rank m is chosen so that, were the rows a random sample, at least k segments
    would reach the floor with FLOOR_SIGMAS of margin. With every row sampled the
    floor is the exact k-th. Floor 0 (everything passes) when m exceeds the sample.
    """
    n, n_cls = models[0].shape
    fv = np.zeros(n_cls, np.uint16)
    fk = np.zeros(n_cls, np.uint64)
    s = min(n, SAMPLE_ROWS)
    rows = np.unique(np.linspace(0, n - 1, s).round().astype(np.int64))
    s = len(rows)
    if s == n:
        m = k
    else:
        q = k / n
        m = max(1, math.ceil(s * q + FLOOR_SIGMAS * math.sqrt(s * q * (1 - q)) + FLOOR_SIGMAS))
    if m >= s and s < n:
        return fv, fk
    if len(models) == 1:
        scores, rows_of_scores = models[0], rows  # straight from the memory map
    else:
        scores, rows_of_scores = np.empty((s, n_cls), np.uint16), np.arange(s)
        _mean(tuple(np.asarray(m[rows]) for m in models), weights, scores)
    sample = np.empty((n_cls, s), np.uint16)
    K.gather_transposed(scores, rows_of_scores, sample)
    K.sample_floors(sample, rows, m, seed, fv, fk)
    return fv, fk


def ensemble_scores(models, rows: np.ndarray | None = None, weights=None) -> np.ndarray:
    """The rounded-half-up ensemble mean as int64, of all rows or of `rows` (plain numpy);
    with `weights` (one integer >= 0 per model) the weighted mean
    `(2 Σ w_m x_m + W) // (2 W)`, W = Σ w_m."""
    w = np.ones(len(models), np.int64) if weights is None else np.asarray(weights, np.int64)
    stack = [x * np.asarray(m if rows is None else m[rows], np.int64) for m, x in zip(models, w)]
    total = np.sum(stack, axis=0)
    return (2 * total + w.sum()) // (2 * w.sum())
