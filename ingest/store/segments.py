"""Segments: expanded windows, candidate segments and mined negatives.

A YouTube-8M segment is 5 frames (5 seconds) starting at `start_time`, a multiple
of 5. The model sees it expanded by t = 3 frames on each side: the window
`[start - 3, start + 8)` of 11 frames, clipped to the video, zero padded where it
leaves the video. Prediction scores every segment except the first 6 and the last
2 of each video (they were never rated). Mined negatives (paper §3.6) are, per
video, the segment classes outside `labels ∪ {segment labels rated positive}`.

Each numba kernel (`*_kernel`, decorated with `ingest.jit.njit`) has a plain numpy
twin (`*_numpy`) that the tests compare it with; the public functions call the kernel.
"""
from __future__ import annotations

import numpy as np

from ingest.codec.video import FRAME_BYTES
from ingest.codec.wire import copy_bytes
from ingest.jit import njit
from ingest.vocab import N_SEGMENT_CLASSES, class_index_of_label, to_class_index

SEGMENT_FRAMES = 5  # frames per rated segment: 5 s at 1 frame/s (dataset fact)
CONTEXT_FRAMES = 3  # t, frames of context added on each side of a segment (paper §3, t = 3)
WINDOW_FRAMES = SEGMENT_FRAMES + 2 * CONTEXT_FRAMES  # 11 frames per expanded window
DROP_FIRST_SEGMENTS = 6  # the first 6 segments of a video were never rated (dataset fact)
DROP_LAST_SEGMENTS = 2  # nor were the last 2
NEGATIVE_BYTES = (N_SEGMENT_CLASSES + 7) // 8  # 125: one packed negatives row (bits little-endian)


# ---------------------------------------------------------------- window spans (numpy only)

def window_spans(starts: np.ndarray, n_frames: np.ndarray):
    """Expanded windows of segments, clipped to their videos.

    starts: (n,) int, segment start frames; n_frames: (n,) int, frames of the segment's video.
    Returns int32 arrays (n,) `lo, hi, pad_left, pad_right`: frames `[lo, hi)` of the video
    fill window positions `[pad_left, WINDOW_FRAMES - pad_right)`; the rest is zero.
    `pad_left + (hi - lo) + pad_right == WINDOW_FRAMES` always, also for starts outside
    the video (then `hi == lo`).
    """
    ws = np.asarray(starts, np.int64) - CONTEXT_FRAMES
    n = np.asarray(n_frames, np.int64)
    lo = np.clip(ws, 0, n)
    hi = np.clip(ws + WINDOW_FRAMES, 0, n)
    hi = np.maximum(hi, lo)
    pad_left = np.clip(-ws, 0, WINDOW_FRAMES)
    pad_right = WINDOW_FRAMES - pad_left - (hi - lo)
    return (lo.astype(np.int32), hi.astype(np.int32), pad_left.astype(np.int32),
            pad_right.astype(np.int32))


def outside_video(starts: np.ndarray, n_frames: np.ndarray) -> np.ndarray:
    """(n,) bool: the segment's start lies outside its video (`start < 0 or start >= n`)."""
    starts = np.asarray(starts, np.int64)
    return (starts < 0) | (starts >= np.asarray(n_frames, np.int64))


def n_segments(n_frames: np.ndarray) -> np.ndarray:
    """Segments per video: ceil(n_frames / 5), as the official inference pads the last one."""
    return (np.asarray(n_frames, np.int64) + SEGMENT_FRAMES - 1) // SEGMENT_FRAMES


# ---------------------------------------------------------------- window gather

@njit(inline="always")
def _zero_bytes(dst, a, b):
    """dst[a:b] = 0 (a loop from 0 over a view vectorises; numba's slice assignment and
    offset indexing ran at 1-2 GB/s)."""
    part = dst[a:b]
    for j in range(len(part)):
        part[j] = 0


@njit
def gather_windows_kernel(frames, base, lo, hi, pad_left, out):
    """out[i, pad_left[i] + k] = frames[base[i] + lo[i] + k]; zero elsewhere.

    frames: (F, 1152) uint8; base, lo, hi, pad_left: (n,) int; out: (n, 11, 1152) uint8,
    both C-contiguous. One memcpy per window.
    """
    row = frames.shape[1]
    src = frames.reshape(-1)
    width = out.shape[1] * row
    dst = out.reshape(-1)
    for i in range(out.shape[0]):
        d0 = i * width
        a = pad_left[i] * row
        m = (hi[i] - lo[i]) * row
        _zero_bytes(dst, d0, d0 + a)
        copy_bytes(dst, d0 + a, src, (base[i] + lo[i]) * row, m)
        _zero_bytes(dst, d0 + a + m, d0 + width)


def gather_windows_numpy(frames, base, lo, hi, pad_left, out):
    """Plain numpy twin of `gather_windows_kernel` (fancy indexing with a validity mask)."""
    pos = np.arange(WINDOW_FRAMES)[None, :]  # (1, 11)
    src = base[:, None] + lo[:, None] + pos - pad_left[:, None]  # (n, 11) source frame rows
    valid = (pos >= pad_left[:, None]) & (pos < (pad_left + hi - lo)[:, None])
    out[:] = 0
    if len(frames):
        out[valid] = frames[np.where(valid, src, 0)[valid]]


def gather_windows(frames: np.ndarray, base, lo, hi, pad_left,
                   out: np.ndarray | None = None) -> np.ndarray:
    """Materialise expanded windows: (n, 11, 1152) uint8 from frames (F, 1152) uint8.

    `base[i]` is the first frame row of the video of window i inside `frames`;
    `lo, hi, pad_left` come from `window_spans`. `out` (if given) is reused.
    """
    n = len(lo)
    if out is None:
        out = np.empty((n, WINDOW_FRAMES, FRAME_BYTES), np.uint8)
    out = out[:n]
    gather_windows_kernel(np.ascontiguousarray(frames), np.asarray(base, np.int64),
                          np.asarray(lo, np.int64), np.asarray(hi, np.int64),
                          np.asarray(pad_left, np.int64), out)
    return out


# ---------------------------------------------------------------- candidate segments

@njit
def candidates_kernel(n_frames, first, last_dropped, seg_frames, video_out, index_out):
    """Fill candidate (video, segment index) pairs; returns how many were written.

    n_frames: (V,) int; video_out, index_out: (capacity,) int32, capacity from `candidate_count`.
    """
    m = 0
    for v in range(n_frames.shape[0]):
        nseg = (n_frames[v] + seg_frames - 1) // seg_frames
        for s in range(first, nseg - last_dropped):
            video_out[m] = v
            index_out[m] = s
            m += 1
    return m


def _candidates_per_video(n_frames: np.ndarray) -> np.ndarray:
    """(V,) int64: candidate segments of each video (its segments less the dropped ones)."""
    return np.maximum(n_segments(n_frames) - DROP_FIRST_SEGMENTS - DROP_LAST_SEGMENTS, 0)


def candidates_numpy(n_frames: np.ndarray):
    """Plain numpy twin of `candidates`: (video (m,) int32, segment index (m,) int32)."""
    count = _candidates_per_video(n_frames)
    video = np.repeat(np.arange(len(count), dtype=np.int32), count)
    first = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    index = np.arange(int(count.sum()), dtype=np.int64) - np.repeat(first, count)
    return video, (index + DROP_FIRST_SEGMENTS).astype(np.int32)


def candidate_count(n_frames: np.ndarray) -> int:
    """Number of candidate segments of videos with these frame counts."""
    return int(_candidates_per_video(n_frames).sum())


def candidates(n_frames: np.ndarray):
    """Candidate segments of videos (V,): segment indices 6 .. n_segments - 3 of each.

    Returns (video (m,) int32, segment index (m,) int32); start time = 5 * index.
    """
    n_frames = np.asarray(n_frames, np.int64)
    m = candidate_count(n_frames)
    video, index = np.empty(m, np.int32), np.empty(m, np.int32)
    got = candidates_kernel(n_frames, DROP_FIRST_SEGMENTS, DROP_LAST_SEGMENTS, SEGMENT_FRAMES,
                            video, index)
    assert got == m
    return video, index


# ---------------------------------------------------------------- mined negatives (paper §3.6)
# A video's mined negatives are the segment classes outside Sv ∪ Ss, Sv = its labels and
# Ss = its POSITIVE segment labels (score > 0): a class rated only negatively stays a
# mined negative (store format 3; format 2 also left out classes rated negatively).

@njit
def negatives_kernel(label_offsets, labels, seg_offsets, seg_labels, seg_scores, has_labels,
                     class_of_label, out):
    """Packed mined negatives. out: (V, 125) uint8, bit c (little-endian) = class c is negative.

    label_offsets, seg_offsets: (V+1,) int64; labels: (L,) int64; seg_labels (S,) int64 and
    seg_scores (S,) float32 of the rated segments; has_labels (V,) bool; class_of_label
    (vocabulary,) int: segment class of each label or -1. A video without a `labels` key
    carries no information: its row stays all zero.
    """
    n_vocab = class_of_label.shape[0]
    n_classes = out.shape[1] * 8
    mask = np.empty(n_classes, np.bool_)
    for v in range(out.shape[0]):
        out[v, :] = 0
        if not has_labels[v]:
            continue
        mask[:] = True
        for j in range(label_offsets[v], label_offsets[v + 1]):  # Sv
            lab = labels[j]
            if 0 <= lab < n_vocab and class_of_label[lab] >= 0:
                mask[class_of_label[lab]] = False
        for j in range(seg_offsets[v], seg_offsets[v + 1]):  # Ss: positive ratings only
            lab = seg_labels[j]
            if seg_scores[j] > 0 and 0 <= lab < n_vocab and class_of_label[lab] >= 0:
                mask[class_of_label[lab]] = False
        for c in range(N_SEGMENT_CLASSES):
            if mask[c]:
                out[v, c >> 3] |= np.uint8(1 << (c & 7))


def negatives_numpy(label_offsets, labels, seg_offsets, seg_labels, seg_scores,
                    has_labels) -> np.ndarray:
    """Plain numpy twin of `negatives`: (V, 125) uint8 packed (bitorder little)."""
    n_videos = len(has_labels)
    known = np.zeros((n_videos, N_SEGMENT_CLASSES), bool)
    positive = np.asarray(seg_scores) > 0
    for offsets, labs, keep in ((label_offsets, labels, None), (seg_offsets, seg_labels, positive)):
        video = np.repeat(np.arange(n_videos), np.diff(offsets))
        cls = to_class_index(labs)
        sel = cls >= 0 if keep is None else (cls >= 0) & keep
        known[video[sel], cls[sel]] = True
    neg = ~known & np.asarray(has_labels, bool)[:, None]
    return np.packbits(neg, axis=1, bitorder="little")


def negatives(label_offsets, labels, seg_offsets, seg_labels, seg_scores, has_labels,
              out: np.ndarray | None = None) -> np.ndarray:
    """Mined negatives of V videos (paper §3.6): (V, 125) uint8, packed bits (little-endian
    bit order); the segment classes outside the video's labels and its positively rated
    segment labels. Shapes as in `negatives_kernel`. Unpack with `unpack_negatives`.
    """
    n_videos = len(has_labels)
    if out is None:
        out = np.empty((n_videos, NEGATIVE_BYTES), np.uint8)
    negatives_kernel(np.asarray(label_offsets, np.int64), np.asarray(labels, np.int64),
                     np.asarray(seg_offsets, np.int64), np.asarray(seg_labels, np.int64),
                     np.asarray(seg_scores, np.float32), np.asarray(has_labels, np.bool_),
                     class_index_of_label(), out)
    return out


def unpack_negatives(packed: np.ndarray) -> np.ndarray:
    """(V, 125) uint8 packed → (V, 1000) bool."""
    return np.unpackbits(packed, axis=1, count=N_SEGMENT_CLASSES, bitorder="little").astype(bool)
