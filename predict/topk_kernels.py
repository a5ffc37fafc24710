"""The numba kernels of the one-pass top-k (predict/topk.py explains the method).

A class's candidates live in its row of a (C, cap) uint32 buffer as packed
entries `score << 18 | row % 2**18`, appended in row order; `epoch_pos[c, e]` is
the buffer position where class c's entries of epoch e (rows
[e * 2**18, (e + 1) * 2**18)) begin (INT64_MAX for an epoch not reached yet).

Order of segments within a class: score descending, then, in the boundary
bucket, tie key descending (a seeded pseudo-random 50-bit key per (class, row)),
and row ascending elsewhere. The floor of a class is a composite key
`score << 50 | tie key`: every entry at or above it is in the buffer.
"""
from __future__ import annotations

import numpy as np
from numba import prange  # behaves as `range` when YT8M_NO_JIT=1 turns njit off

from ingest.jit import njit
from predict.predictions import QUANT_SCALE
from predict.simd import (
    CLOSER_BIT,
    LANE_SHIFT,
    LANES,
    TAG_BITS,
    TAG_SHIFT,
    VALUE_MASK,
    compress_hits,
    prefetch_write,
)

N_BUCKETS = QUANT_SCALE + 1  # 10,000 buckets, one per quantised score 0..9999
EPOCH_BITS = 18  # an entry keeps a row's low 18 bits; its epoch is known from its position
EPOCH_ROWS = 1 << EPOCH_BITS
ROW_MASK = EPOCH_ROWS - 1
KEY_SHIFT = 50  # composite key: score (14 bits) above a 50-bit tie key
NOT_STARTED = np.iinfo(np.int64).max  # epoch_pos of an epoch not reached yet
TILE_ROWS = 256  # rows per tile: a tile's hits of one chunk are appended together
CHUNK_GROUPS = 4  # at most 4 groups (128 classes) per chunk: their write fronts, ~24 KB, stay in L1
TILE_TAG_SHIFT = 4  # hit tag = row-in-tile << 4 | group-in-chunk
PREFETCH_AHEAD = 32  # entries: the class's write front two cache lines ahead
SUB_ROWS = 1024  # rows per compress-then-append round of `scan` (its scratch: SUB_ROWS × C hits)
assert CHUNK_GROUPS <= 1 << TILE_TAG_SHIFT and TILE_ROWS << TILE_TAG_SHIFT <= 1 << TAG_BITS

# the hit loop's fields, in uint64 (see _append_hits): lane and group-in-chunk side by
# side above the score make the class's offset in its chunk; the row-in-tile above them
_U_LANE_SHIFT, _U_ROW_SHIFT = np.uint64(LANE_SHIFT), np.uint64(TAG_SHIFT + TILE_TAG_SHIFT)
_U_CLASS_MASK = np.uint64((1 << (5 + TILE_TAG_SHIFT)) - 1)
_U_TILE_MASK, _U_VALUE_MASK = np.uint64(TILE_ROWS - 1), np.uint64(VALUE_MASK)
_U_CLOSER_BIT, _U_EPOCH_BITS = np.uint64(CLOSER_BIT), np.uint64(EPOCH_BITS)
_U_ROW_MASK, _U_PREFETCH = np.uint64(ROW_MASK), np.uint64(PREFETCH_AHEAD)
_U32_EPOCH_BITS, _U32_ROW_MASK = np.uint32(EPOCH_BITS), np.uint32(ROW_MASK)  # finish's entries
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # splitmix64 constants
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TIE_MASK = np.uint64((1 << KEY_SHIFT) - 1)


@njit(inline="always")
def tie_key(seed, c, row):
    """The 50-bit tie key of (class c, row) under `seed`: the splitmix64 finaliser."""
    x = np.uint64(seed) + np.uint64(row) * _GOLDEN + np.uint64(c + 1) * _MIX1
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return (x ^ (x >> np.uint64(31))) & _TIE_MASK


@njit(inline="always")
def composite(score, seed, c, row):
    """Score above tie key: the order of the output, as one uint64."""
    return (np.uint64(score) << np.uint64(KEY_SHIFT)) | tie_key(seed, c, row)


@njit(inline="always")
def _next_epoch(epoch_pos, c, i, e, nxt):
    """Advance epoch e (next start nxt) of class c to the one that holds position i."""
    while i >= nxt:
        e += 1
        nxt = epoch_pos[c, e + 1]
    return e, nxt


@njit
def compact(c, p, k, seed, epoch, fv, fk, buf, epoch_pos):
    """Keep the k best of class c's p buffered entries (stable); raise its floor to the k-th.

    Rewrites epoch_pos[c, 1:epoch + 1]. Returns k. Rare (the sampled floors leave
    room), so its scratch is allocated here.
    """
    keys = np.empty(p, np.uint64)
    e, nxt = 0, epoch_pos[c, 1]
    for i in range(p):
        e, nxt = _next_epoch(epoch_pos, c, i, e, nxt)
        x = buf[c, i]
        keys[i] = composite(x >> EPOCH_BITS, seed, c, e * EPOCH_ROWS + (x & ROW_MASK))
    kth = np.partition(keys[:p], p - k)[p - k]
    ties = k
    for i in range(p):
        ties -= keys[i] > kth
    q, e, nxt = 0, 0, epoch_pos[c, 1]
    for i in range(p):
        while i >= nxt:
            e += 1
            epoch_pos[c, e] = q
            nxt = epoch_pos[c, e + 1]
        key = keys[i]
        if key > kth or (key == kth and ties > 0):
            ties -= key == kth
            buf[c, q] = buf[c, i]
            q += 1
    while e < epoch:  # epochs that began at position p, with no entry yet
        e += 1
        epoch_pos[c, e] = q
    fv[c] = kth >> np.uint64(KEY_SHIFT)
    fk[c] = kth
    return q


def scan_scratch(n_cls: int, n_threads: int) -> tuple[np.ndarray, np.ndarray]:
    """`scan`'s scratch: hits (n_parts, n_chunks, cap) uint32, tile ends (n_parts, n_chunks, T).

    n_parts = n_threads row ranges of a round; n_chunks class chunks of at most
    CHUNK_GROUPS groups, at least one per thread (the append phase's parallelism).
    """
    n_groups = -(-n_cls // LANES)
    n_chunks = min(n_groups, max(n_threads, -(-n_groups // CHUNK_GROUPS)))
    chunk_groups = -(-n_groups // n_chunks)
    n_chunks = -(-n_groups // chunk_groups)
    rows = -(-SUB_ROWS // n_threads)
    hits = np.empty((n_threads, n_chunks, rows * chunk_groups * LANES + LANES), np.uint32)
    return hits, np.empty((n_threads, n_chunks, -(-rows // TILE_ROWS)), np.int64)


@njit
def scan(vals, row0, epoch, fv, fk, seed, k, buf, cnt, epoch_pos, invalid, hits, ends, path):
    """Append every score of a block at or above its class's floor to the class's buffer.

    vals (B, C) uint16, rows row0.. of one epoch; fv (C,) uint16 floor scores (the
    SIMD compare), fk (C,) uint64 composite floors; buf (C, cap) uint32; cnt (C,)
    int64 entries per class; invalid (C,) counts scores above 9999 (not appended);
    hits, ends: `scan_scratch`; path: `simd.path_index()`, how hits are compressed.
    In rounds of SUB_ROWS rows, two parallel phases: compress, each thread over
    whole rows of its share of the round (a row read front to back: split by
    classes instead, each thread read half of every row and the scan ran at half
    the memory speed), the hits of each class chunk and tile packed into their
    own run (predict/simd.py); then append, each thread over its
    chunks' runs in row order. Only a hit flagged "look closer" (at its floor, or
    above 9999) is checked one by one; a full buffer is compacted to its k best,
    after which the chunk's remaining hits of the round are all checked.
    """
    n_rows = vals.shape[0]
    for s0 in range(0, n_rows, SUB_ROWS):
        s1 = min(s0 + SUB_ROWS, n_rows)
        _compress_round(vals, s0, s1, fv, hits, ends, path)
        _append_round(s0, s1, row0, k, seed, epoch, fv, fk, buf, cnt, epoch_pos, invalid,
                      hits, ends)


@njit(inline="always")
def _groups(n_cls, n_chunks):
    """(groups of LANES classes, groups per chunk) of n_cls classes in n_chunks chunks."""
    n_groups = (n_cls + LANES - 1) // LANES
    return n_groups, (n_groups + n_chunks - 1) // n_chunks


@njit(inline="always")
def _share(s0, s1, n_parts, part):
    """The rows [lo, hi) of rows [s0, s1) that `part` of n_parts compresses."""
    per = (s1 - s0 + n_parts - 1) // n_parts
    return s0 + part * per, min(s0 + (part + 1) * per, s1)


@njit(parallel=True)
def _compress_round(vals, s0, s1, fv, hits, ends, path):
    """Phase 1 of a round: rows [s0, s1) split among n_parts; hits[part, chunk] packed per
    tile, ends[part, chunk, tile] = where each tile's run ends."""
    n_cls = vals.shape[1]
    n_parts, n_chunks = hits.shape[0], hits.shape[1]
    n_groups, chunk_groups = _groups(n_cls, n_chunks)
    for part in prange(n_parts):
        ns = np.zeros(n_chunks, np.int64)
        r_lo, r_hi = _share(s0, s1, n_parts, part)
        for t0 in range(r_lo, r_hi, TILE_ROWS):
            for r in range(t0, min(t0 + TILE_ROWS, r_hi)):
                for h in range(n_chunks):
                    n, g0 = ns[h], h * chunk_groups
                    for g in range(g0, min(g0 + chunk_groups, n_groups)):
                        c0 = g * LANES
                        tag = ((r - t0) << TILE_TAG_SHIFT) | (g - g0)
                        n = compress_hits(vals, r, c0, min(LANES, n_cls - c0), fv, tag,
                                          hits[part, h], n, path)
                    ns[h] = n
            ends[part, :, (t0 - r_lo) // TILE_ROWS] = ns


@njit(parallel=True)
def _append_round(s0, s1, row0, k, seed, epoch, fv, fk, buf, cnt, epoch_pos, invalid, hits,
                  ends):
    """Phase 2 of a round: per class chunk (parallel), its runs in row order."""
    n_parts, n_chunks = hits.shape[0], hits.shape[1]
    chunk_groups = _groups(buf.shape[0], n_chunks)[1]
    for h in prange(n_chunks):
        raised = False  # a floor rose: the flags of the round's remaining hits are stale
        for part in range(n_parts):
            r_lo, r_hi = _share(s0, s1, n_parts, part)
            start = 0
            for t0 in range(r_lo, r_hi, TILE_ROWS):
                end = ends[part, h, (t0 - r_lo) // TILE_ROWS]
                raised = _append_hits(hits[part, h, start:end], h * chunk_groups * LANES,
                                      row0 + t0, k, seed, epoch, fv, fk, buf, cnt, epoch_pos,
                                      invalid, raised)
                start = end


@njit
def _append_hits(hits, c_base, row_base, k, seed, epoch, fv, fk, buf, cnt, epoch_pos,
                 invalid, raised):
    """Append a run of packed hits (see `scan`) to their classes' buffers; returns `raised`.

    A function of its own, so that the loop keeps its few variables in registers.
    """
    cap = np.uint64(buf.shape[1])  # uint64 like p: a mixed compare would go through float64
    flat = buf.reshape(-1)  # one index per entry: no 2-D address arithmetic per hit
    c_base_u, row_base_u = np.uint64(c_base), np.uint64(row_base)
    for i in range(len(hits)):
        # unsigned arithmetic: numba adds no negative-index fix-ups to the indexing below
        x = np.uint64(hits[i])
        c = c_base_u + ((x >> _U_LANE_SHIFT) & _U_CLASS_MASK)
        row = row_base_u + ((x >> _U_ROW_SHIFT) & _U_TILE_MASK)
        v = x & _U_VALUE_MASK
        if (x >> _U_CLOSER_BIT or raised) and not _passes(np.int64(c), np.int64(v),
                                                          np.int64(row), seed, fk, invalid):
            continue
        p = np.uint64(cnt[c])
        if p == cap:
            q = _make_room(np.int64(c), np.int64(v), np.int64(row), k, seed, epoch, fv, fk, buf,
                           cnt, epoch_pos)
            raised = True
            if q < 0:
                continue
            p = np.uint64(q)
        at = c * cap + p
        flat[at] = (v << _U_EPOCH_BITS) | (row & _U_ROW_MASK)
        prefetch_write(buf, c, p + _U_PREFETCH)  # a hint: past the row is harmless
        cnt[c] = p + np.uint64(1)
    return raised


@njit
def _passes(c, v, row, seed, fk, invalid):
    """A flagged hit: False for a score above 9999 (counted) or a key below the floor."""
    if v > QUANT_SCALE:
        invalid[c] += 1
        return False
    return composite(v, seed, c, row) >= fk[c]


@njit
def _make_room(c, v, row, k, seed, epoch, fv, fk, buf, cnt, epoch_pos):
    """Compact class c's full buffer; the slot for (v, row), or -1 if it now falls below."""
    p = compact(c, cnt[c], k, seed, epoch, fv, fk, buf, epoch_pos)
    cnt[c] = p
    return p if composite(v, seed, c, row) >= fk[c] else -1


@njit(parallel=True)
def sample_floors(sample, rows, m, seed, fv, fk):
    """Per class, the composite key of rank m (1 = best) of its sampled scores.

    sample (C, S) uint16 class-major scores of the sampled rows `rows` (S,);
    writes fv (C,) uint16 and fk (C,) uint64; floor 0 where fewer than m scores
    (scores above 9999 are not counted: the scan refuses them).
    """
    n_cls, s = sample.shape
    for c in prange(n_cls):
        hist = np.zeros(N_BUCKETS, np.int64)
        for i in range(s):
            if sample[c, i] <= QUANT_SCALE:
                hist[sample[c, i]] += 1
        above, b = 0, QUANT_SCALE
        while b > 0 and above + hist[b] < m:
            above += hist[b]
            b -= 1
        if above + hist[b] < m:
            fv[c], fk[c] = 0, 0
            continue
        keys = np.empty(hist[b], np.uint64)
        j = 0
        for i in range(s):
            if sample[c, i] == b:
                keys[j] = composite(b, seed, c, rows[i])
                j += 1
        keys.sort()
        fv[c] = b
        fk[c] = keys[hist[b] - (m - above)]


@njit(parallel=True)
def finish(k, seed, buf, cnt, epoch_pos, n_parts):
    """In place: buf[c, :k] = the k best rows of class c (as row numbers), best first.

    A 10,000-bucket counting sort of the class's entries in cache: buckets above
    the boundary bucket in row order, then the boundary bucket's `need` best tie
    keys (descending; row order on equal keys).
    """
    n_cls, cap = buf.shape
    for part in prange(n_parts):
        hist = np.empty(N_BUCKETS + 1, np.uint32)  # uint32: 40 KB, stays in L1
        entries = np.empty(cap, np.uint32)
        tie_rows = np.empty(cap, np.int64)
        tie_keys = np.empty(cap, np.uint64)
        for c in range(part * n_cls // n_parts, (part + 1) * n_cls // n_parts):
            _finish_class(c, cnt[c], k, seed, buf[c], epoch_pos, hist, entries, tie_rows,
                          tie_keys)


@njit(inline="always")
def bucket_offsets(hist, k):
    """(t, above): the boundary bucket t, the highest score whose bucket, with all above
    it, holds k entries, and `above` = the entries above t; hist[t + 1:] becomes each
    bucket's first output slot (best first)."""
    above, t = 0, QUANT_SCALE
    while t > 0 and above + hist[t] < k:
        h = hist[t]
        hist[t] = above
        above += h
        t -= 1
    return t, above


@njit
def _finish_class(c, p, k, seed, out, epoch_pos, hist, entries, tie_rows, tie_keys):
    """`finish` for class c, whose p entries are out[:p] (out: buf[c]; scratch: the rest).

    The placement loop has no branch on the score: an entry below the boundary
    bucket goes to a trash bucket whose slot, the buffer's last (beyond k), never
    advances.
    """
    for i in range(p):
        entries[i] = out[i]
    hist[:] = 0
    for i in range(p):
        hist[entries[i] >> EPOCH_BITS] += np.uint32(1)
    t, above = bucket_offsets(hist, k)
    trash, tu = np.uint32(N_BUCKETS), np.uint32(t)
    hist[trash] = out.shape[0] - 1
    j, e, i0 = 0, 0, 0
    while i0 < p:  # epoch by epoch: an entry's row is its epoch's base + its low bits
        i1 = min(epoch_pos[c, e + 1], p)
        row0 = np.uint32(e * EPOCH_ROWS)
        for i in range(i0, i1):
            x = entries[i]
            v = x >> _U32_EPOCH_BITS
            row = row0 + (x & _U32_ROW_MASK)
            if v == tu:  # rare: a few dozen per class
                tie_rows[j] = row
                tie_keys[j] = ~tie_key(seed, c, row)
                j += 1
            keep = v > tu
            b = v if keep else trash
            slot = hist[b]
            out[slot] = row
            hist[b] = slot + np.uint32(keep)
        i0 = max(i0, i1)
        e += 1
    place_ties(tie_rows, tie_keys, j, out, above, k - above)


@njit
def place_ties(tie_rows, tie_keys, j, out, at, n):
    """out[at:at + n] = the rows of the n best of the j ties of the boundary bucket (tie key
    descending: the keys are stored negated; row order on equal keys). Once per class.
    (The placement loop before it is written out in `_finish_class` and in prior_kernels'
    `_fill_class`: as a shared function, inlined or not, top_k took 2.3-4x the time.)"""
    order = np.argsort(tie_keys[:j], kind="mergesort")
    for i in range(n):
        out[at + i] = tie_rows[order[i]]


@njit(parallel=True)
def ensemble_mean(blocks, means):
    """means (B, C) uint16 = rounded-half-up mean of the tuple of (B, C) uint16 `blocks`.

    `(2 * sum + M) // (2 * M)` computed as a float64 division (exact: both operands
    are integers below 2**53 and a non-integer quotient is at least 1 / (2 M) away
    from the next integer), so that the row loop vectorises.
    """
    n_rows, n_cls = means.shape
    n_models = len(blocks)
    for t in prange((n_rows + TILE_ROWS - 1) // TILE_ROWS):
        total = np.empty(n_cls, np.uint32)
        for r in range(t * TILE_ROWS, min((t + 1) * TILE_ROWS, n_rows)):
            total[:] = 0
            for block in blocks:
                for c in range(n_cls):
                    total[c] += block[r, c]
            for c in range(n_cls):
                means[r, c] = np.uint16((2.0 * total[c] + n_models) / (2.0 * n_models))


@njit(parallel=True)
def weighted_mean(blocks, weights, means):
    """means (B, C) uint16 = rounded-half-up weighted mean `(2 Σ w_m x_m + W) // (2 W)` of
    the tuple of (B, C) uint16 `blocks`, weights (M,) int64 >= 0, W = Σ w_m in 1..65536 (so
    that Σ w_m x_m fits uint32). Equal weights give `ensemble_mean`'s values; the division
    is an exact float64 one, as there (issue 23 §3, `predict topk --weights`).
    """
    n_rows, n_cls = means.shape
    total_w = 0
    for m in range(len(weights)):
        total_w += weights[m]
    for t in prange((n_rows + TILE_ROWS - 1) // TILE_ROWS):
        total = np.empty(n_cls, np.uint32)
        for r in range(t * TILE_ROWS, min((t + 1) * TILE_ROWS, n_rows)):
            total[:] = 0
            for m, block in enumerate(blocks):
                w = np.uint32(weights[m])
                for c in range(n_cls):
                    total[c] += w * block[r, c]
            for c in range(n_cls):
                means[r, c] = np.uint16((2.0 * total[c] + total_w) / (2.0 * total_w))


@njit(parallel=True)
def gather_transposed(src, rows, dst):
    """dst (C, S) = src[rows].T: the rows `rows` (S,) of src (N, C), class-major (uint16).

    Per block of LANES rows: the rows are copied whole into a tile (sequential
    reads of the memory map), then each class's LANES scores written out as one
    run: no (S, C) intermediate, no strided read per score.
    """
    n_cls = src.shape[1]
    s = rows.shape[0]
    for b in prange((s + LANES - 1) // LANES):
        i0 = b * LANES
        i1 = min(i0 + LANES, s)
        tile = np.empty((LANES, n_cls), np.uint16)
        for i in range(i0, i1):
            row, t = src[rows[i]], tile[i - i0]
            for c in range(n_cls):
                t[c] = row[c]
        for c in range(n_cls):
            d = dst[c]
            for i in range(i1 - i0):
                d[i0 + i] = tile[i, c]
