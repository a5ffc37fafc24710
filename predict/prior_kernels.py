"""The numba kernels of the video-level candidate restriction (predict/prior.py explains it).

Kept entries of a class live in its run `kept[ptr[c]:ptr[c + 1]]` of one flat uint32
array, as the top-k's candidate entries do (`score << 18 | row % 2**18`, appended in row
order, predict/topk_kernels.py), with the class's epoch starts relative to its run in
`kept_epoch_pos[c, e]`; `score` is the entry's ranking score (the ensemble score, or the
score times the prior to the power A, quantised).
"""
from __future__ import annotations

import numpy as np
from numba import prange  # behaves as `range` when YT8M_NO_JIT=1 turns njit off

from ingest.jit import njit
from predict.predictions import QUANT_SCALE
from predict.topk_kernels import (
    EPOCH_BITS,
    EPOCH_ROWS,
    N_BUCKETS,
    ROW_MASK,
    _finish_class,
    _share,
    bucket_offsets,
    place_ties,
    tie_key,
)

_U32_EPOCH_BITS, _U32_ROW_MASK = np.uint32(EPOCH_BITS), np.uint32(ROW_MASK)


VIDEOS_PER_TASK = 256  # videos per parallel task of `kept_classes` (its scratch, once)
INSERTION_MAX = 32  # n_top up to this: candidates inserted into a sorted array, else sorted


@njit(parallel=True)
def kept_classes(scores, videos, n_top, out):
    """out[u] (n_top,) = the n_top best classes of video `videos[u]` of `scores` (V, C)
    uint16, best by (score descending, class index ascending), written in class order.

    Per video: the classes split into n_top blocks, the least of the blocks' maxima is a
    floor at most the n_top-th best score (each block holds a score at or above it); the
    classes at or above the floor (a few dozen for n_top = 20) are the candidates, whose
    composite keys `score << bits | (2**bits - 1 - class)` (distinct) are kept best first
    in a small sorted array (or sorted, for n_top above INSERTION_MAX).
    """
    n_cls = scores.shape[1]
    bits = 1
    while (1 << bits) < n_cls:
        bits += 1
    low = (1 << bits) - 1
    bounds = np.empty(n_top + 1, np.int64)
    for b in range(n_top + 1):
        bounds[b] = b * n_cls // n_top
    n_tasks = (videos.shape[0] + VIDEOS_PER_TASK - 1) // VIDEOS_PER_TASK
    for task in prange(n_tasks):
        keys = np.empty(n_cls, np.int64)
        for u in range(task * VIDEOS_PER_TASK,
                       min((task + 1) * VIDEOS_PER_TASK, videos.shape[0])):
            row = scores[videos[u]]
            floor = np.uint16(0xFFFF)
            for b in range(n_top):
                m = np.uint16(0)
                for c in range(bounds[b], bounds[b + 1]):
                    m = max(m, row[c])
                floor = min(floor, m)
            n = 0
            for c in range(n_cls):
                v = row[c]
                if v < floor:
                    continue
                key = (np.int64(v) << bits) | (low - c)
                if n_top > INSERTION_MAX:
                    keys[n] = key
                    n += 1
                    continue
                if n == n_top and key <= keys[n - 1]:
                    continue
                j = min(n, n_top - 1)  # keys[:n] best first
                while j > 0 and keys[j - 1] < key:
                    keys[j] = keys[j - 1]
                    j -= 1
                keys[j] = key
                n = min(n + 1, n_top)
            if n_top > INSERTION_MAX:
                keys[:n].sort()
                keys[:n_top] = keys[n - n_top:n][::-1].copy()
            for j in range(n_top):
                out[u, j] = low - (keys[j] & low)
            out[u].sort()


@njit(parallel=True)
def gather_kept(vals, row0, video_of, kept, factor, kept_buf, cursor, starts):
    """Append the kept (row, class) scores of a round of rows to their classes' runs.

    vals (B, C) uint16: the ensemble scores of rows row0..row0 + B (one epoch; B at most
    a round of the scan, SUB_ROWS); video_of (N,) int32: each row's video (its row of
    `kept`); kept (U, n_top) int16: the kept classes of each video; factor (U, n_top)
    float64: prior ** A of each kept (video, class), or (0, 0) for the ensemble score
    unchanged; cursor (C,) int64: each class's next slot in kept_buf (uint32); starts
    (P, C) int64 scratch, P = the scan's thread count. Entry: `score << 18 | row %
    2**18`, score the ranking score floor(s * factor + 1/2) (a score above 9999 is left
    to the scan, which refuses it).

    The threads split the rows as the scan's compress phase does (`_share`), so each
    reads the rows it has just compressed, from its own cache; where each thread's
    entries of a class begin is counted first, in the calling thread (the kept lists
    only, no scores), so that every class's run stays in row order.
    """
    n_rows = vals.shape[0]
    n_parts, n_cls = starts.shape
    n_top = kept.shape[1]
    use_factor = factor.shape[0] > 0
    starts[:] = 0
    for part in range(n_parts):  # per run of rows of one video (a video's rows: one run)
        lo, hi = _share(0, n_rows, n_parts, part)
        r = lo
        while r < hi:
            u = video_of[row0 + r]
            end = r + 1
            while end < hi and video_of[row0 + end] == u:
                end += 1
            for j in range(n_top):
                starts[part, kept[u, j]] += end - r
            r = end
    for c in range(n_cls):
        at = cursor[c]
        for part in range(n_parts):
            count = starts[part, c]
            starts[part, c] = at
            at += count
        cursor[c] = at
    for part in prange(n_parts):
        lo, hi = _share(0, n_rows, n_parts, part)
        if use_factor:
            _append_kept(vals, lo, hi, row0, video_of, kept, factor, kept_buf, starts[part])
        else:
            _append_kept(vals, lo, hi, row0, video_of, kept, None, kept_buf, starts[part])


@njit
def _append_kept(vals, lo, hi, row0, video_of, kept, factor, kept_buf, fronts):
    """`gather_kept`'s appends of rows lo..hi of vals (fronts (C,): each class's next slot),
    a function of its own (its variables stay in registers; compiled apart for factor None,
    the ensemble score unchanged)."""
    n_top = kept.shape[1]
    for r in range(lo, hi):
        row = row0 + r
        u = video_of[row]
        low = np.uint32(row & ROW_MASK)
        values, classes = vals[r], kept[u]
        for j in range(n_top):
            c = np.uint64(classes[j])
            s = values[c]
            if factor is not None:
                s = np.uint16(np.floor(np.float64(s) * factor[u, j] + 0.5))
            p = np.uint64(fronts[c])
            kept_buf[p] = (np.uint32(s) << _U32_EPOCH_BITS) | low
            fronts[c] = p + np.uint64(1)


@njit(parallel=True)
def finish_restricted(k, seed, buf, cnt, epoch_pos, kept_buf, ptr, kept_epoch_pos, n_rows,
                      n_parts):
    """In place: buf[c, :k] = the k rows of class c, best first, under the restriction.

    Class c has n_kept = ptr[c + 1] - ptr[c] kept entries (kept_buf, see the module
    docstring) and its top-k buffer buf[c, :cnt[c]] (every row at or above the k-th key
    of all rows, predict/topk.py). n_kept >= k: the k best kept entries under the top-k's
    rule (`_finish_class`: the boundary bucket by tie key, the buckets above in row
    order). Else every kept entry (ranking score descending, row ascending), then the
    m = k - n_kept best rows of the buffer that are not kept, under the same rule with m:
    together the top-k rule over the tiered score (kept above all others).
    """
    n_cls, cap = buf.shape
    max_kept = 0
    for c in range(n_cls):
        max_kept = max(max_kept, ptr[c + 1] - ptr[c])
    size = max(cap, max_kept)
    for part in prange(n_parts):
        hist = np.empty(N_BUCKETS + 1, np.uint32)
        entries = np.empty(size, np.uint32)
        tie_rows = np.empty(size, np.int64)
        tie_keys = np.empty(size, np.uint64)
        bits = np.zeros((n_rows + 63) // 64, np.uint64)  # the class's kept rows
        fill_pos = np.empty(epoch_pos.shape[1], np.int64)
        for c in range(part * n_cls // n_parts, (part + 1) * n_cls // n_parts):
            run = kept_buf[ptr[c]:ptr[c + 1]]
            n_kept = run.shape[0]
            if n_kept >= k:
                _finish_class(c, n_kept, k, seed, run, kept_epoch_pos, hist, entries,
                              tie_rows, tie_keys)
                buf[c, :k] = run[:k]
                continue
            _mark_rows(run, kept_epoch_pos[c], bits, True)
            _fill_class(c, cnt[c], k - n_kept, n_kept, seed, buf[c], epoch_pos[c], bits, hist,
                        entries, fill_pos, tie_rows, tie_keys)
            _mark_rows(run, kept_epoch_pos[c], bits, False)
            _sort_kept(run, kept_epoch_pos[c], buf[c], hist)


@njit(inline="always")
def _row_of(x, e):
    """The row of entry x of epoch e."""
    return np.uint32(e * EPOCH_ROWS) + (x & _U32_ROW_MASK)


@njit
def _mark_rows(run, epoch_pos, bits, on):
    """Set (on) or clear the bits of the rows of the entries `run` (epoch starts epoch_pos)."""
    p = run.shape[0]
    e, i0 = 0, 0
    while i0 < p:
        i1 = min(epoch_pos[e + 1], p)
        for i in range(i0, i1):
            row = _row_of(run[i], e)
            word, bit = row >> np.uint32(6), np.uint64(1) << np.uint64(row & np.uint32(63))
            bits[word] = (bits[word] | bit) if on else (bits[word] & ~bit)
        i0 = max(i0, i1)
        e += 1


@njit
def _fill_class(c, p, m, at, seed, out, epoch_pos, bits, hist, entries, fill_pos, tie_rows,
                tie_keys):
    """out[at:at + m] = the m best rows of class c's p buffered entries (out[:p]) whose row
    bit is not set in `bits`, under the top-k rule with m (as `_finish_class`; its trash
    slot, out's last, lies beyond at + m). The entries that are not kept are copied to
    `entries` (their epoch starts to fill_pos), counted in the same pass."""
    hist[:] = 0
    n, e, i0 = 0, 0, 0
    while i0 < p:
        i1 = min(epoch_pos[e + 1], p)
        fill_pos[e] = n
        for i in range(i0, i1):  # branch-free: kept rows come in no predictable order
            x = out[i]
            row = _row_of(x, e)
            kept = (bits[row >> np.uint32(6)] >> np.uint64(row & np.uint32(63))) & np.uint64(1)
            other = 1 - np.int64(kept)
            entries[n] = x
            hist[x >> _U32_EPOCH_BITS] += np.uint32(other)
            n += other
        i0 = max(i0, i1)
        e += 1
    fill_pos[e] = n
    t, above = bucket_offsets(hist, m)
    for b in range(t + 1, N_BUCKETS):
        hist[b] += np.uint32(at)
    trash, tu = np.uint32(N_BUCKETS), np.uint32(t)
    hist[trash] = out.shape[0] - 1
    j = 0
    for f in range(e):  # epoch by epoch, as `_finish_class`
        for i in range(fill_pos[f], fill_pos[f + 1]):  # `_finish_class`'s placement, as
            # written there (a shared per-entry function cost top_k 2.3-4x: place_ties)
            x = entries[i]
            v = x >> _U32_EPOCH_BITS
            row = _row_of(x, f)
            if v == tu:
                tie_rows[j] = row
                tie_keys[j] = ~tie_key(seed, c, row)
                j += 1
            keep = v > tu
            b = v if keep else trash
            slot = hist[b]
            out[slot] = row
            hist[b] = slot + np.uint32(keep)
    place_ties(tie_rows, tie_keys, j, out, at + above, m - above)


@njit
def _sort_kept(run, epoch_pos, out, hist):
    """out[:len(run)] = the rows of every entry of `run`, ranking score descending, row
    ascending (a counting sort; the entries are in row order)."""
    p = run.shape[0]
    hist[:] = 0
    for i in range(p):
        hist[run[i] >> _U32_EPOCH_BITS] += np.uint32(1)
    start = np.uint32(0)
    for b in range(QUANT_SCALE, -1, -1):
        h = hist[b]
        hist[b] = start
        start += h
    e, i0 = 0, 0
    while i0 < p:
        i1 = min(epoch_pos[e + 1], p)
        for i in range(i0, i1):
            x = run[i]
            b = x >> _U32_EPOCH_BITS
            out[hist[b]] = _row_of(x, e)
            hist[b] += np.uint32(1)
        i0 = max(i0, i1)
        e += 1
