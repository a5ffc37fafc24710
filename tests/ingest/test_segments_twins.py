"""Trimming, expansion, padding, candidates and negative mining: kernels vs plain twins.

Random videos plus the edge cases: a 1-frame video, a video shorter than 8
segments, a segment at the very end, a start beyond the video, a negative start.
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from ingest.codec.video import FRAME_BYTES
from ingest.store import segments as seg
from ingest.vocab import N_VOCAB, segment_class_ids, to_class_index


def test_paper_constants():
    assert seg.WINDOW_FRAMES == 11
    assert (seg.DROP_FIRST_SEGMENTS, seg.DROP_LAST_SEGMENTS) == (6, 2)
    assert seg.NEGATIVE_BYTES * 8 >= 1000


def _random_case(rng, n_videos=40):
    n_frames = rng.integers(1, 301, n_videos)
    n_frames[:6] = [1, 2, 5, 39, 40, 300]  # 1 frame; < 8 segments; exactly 8 segments; max
    frames = rng.integers(0, 256, (int(n_frames.sum()), FRAME_BYTES), dtype=np.uint8)
    base_of_video = np.concatenate([[0], np.cumsum(n_frames)[:-1]])
    video = rng.integers(0, n_videos, 200)
    nseg = (n_frames[video] + 4) // 5
    starts = rng.integers(-1, nseg + 3) * 5  # some before, some beyond the video
    starts[:4] = [0, (n_frames[video[1]] - 1) // 5 * 5, n_frames[video[2]] + 7, -15]
    return n_frames, frames, base_of_video, video, starts


def _literal_window(frames, base, n, start):
    """Window frame by frame, straight from the definition [start-3, start+8) ∩ [0, n)."""
    out = np.zeros((11, FRAME_BYTES), np.uint8)
    for j in range(11):
        t = start - 3 + j
        if 0 <= t < n:
            out[j] = frames[base + t]
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_windows_kernel_twin_and_definition(seed):
    rng = np.random.default_rng(seed)
    n_frames, frames, base_of_video, video, starts = _random_case(rng)
    nf = n_frames[video]
    lo, hi, pl_, pr = seg.window_spans(starts, nf)
    assert np.all(pl_ + (hi - lo) + pr == 11) and np.all(pl_ >= 0) and np.all(pr >= 0)
    base = base_of_video[video]
    got = seg.gather_windows(frames, base, lo, hi, pl_)
    twin = np.empty_like(got)
    seg.gather_windows_numpy(frames, base, lo, hi, pl_, twin)
    np.testing.assert_array_equal(got, twin)
    for i in range(len(starts)):
        np.testing.assert_array_equal(got[i], _literal_window(frames, base[i], nf[i], starts[i]))
        # padding each side is what the definition says
        assert pl_[i] == sum(1 for j in range(11) if starts[i] - 3 + j < 0)
        assert pr[i] == sum(1 for j in range(11) if starts[i] - 3 + j >= nf[i])
    outside = seg.outside_video(starts, nf)
    assert outside[2] and outside[3] and not outside[0] and not outside[1]
    assert np.all(hi[outside & (starts >= nf + 3)] == lo[outside & (starts >= nf + 3)])


def test_windows_reuse_out_buffer():
    rng = np.random.default_rng(5)
    n_frames, frames, base_of_video, video, starts = _random_case(rng)
    lo, hi, pl_, _ = seg.window_spans(starts, n_frames[video])
    buf = np.full((500, 11, FRAME_BYTES), 77, np.uint8)
    got = seg.gather_windows(frames, base_of_video[video], lo, hi, pl_, out=buf)
    assert got.base is buf or got.base is buf.base
    want = seg.gather_windows(frames, base_of_video[video], lo, hi, pl_)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("seed", [0, 1])
def test_candidates_kernel_twin_and_polars(seed):
    rng = np.random.default_rng(seed)
    n_frames = rng.integers(1, 301, 100)
    n_frames[:5] = [1, 39, 40, 41, 45]
    video, index = seg.candidates(n_frames)
    tv, ti = seg.candidates_numpy(n_frames)
    np.testing.assert_array_equal(video, tv)
    np.testing.assert_array_equal(index, ti)
    # polars twin: every segment 0..ceil(n/5)-1, minus the first 6 and the last 2
    df = pl.DataFrame({"v": np.arange(len(n_frames)), "n": n_frames})
    df = df.with_columns(((pl.col("n") + 4) // 5).alias("nseg"))
    df = df.with_columns(pl.int_ranges(0, pl.col("nseg")).alias("s")).explode("s")
    df = df.filter((pl.col("s") >= 6) & (pl.col("s") < pl.col("nseg") - 2)).drop_nulls("s")
    np.testing.assert_array_equal(video, df["v"].to_numpy())
    np.testing.assert_array_equal(index, df["s"].to_numpy())
    assert not np.any(video == 0) and not np.any(video == 1)  # 1 and 39 frames: < 9 segments
    assert np.sum(video == 2) == 0 and np.sum(video == 3) == 1  # 8 segments: none; 9: one
    # every candidate is a full 5-frame segment inside its video
    assert np.all(index * 5 + 5 <= n_frames[video])


def _random_labels(rng, n_videos):
    seg_ids = segment_class_ids()
    def ragged(max_len, pool):
        sizes = rng.integers(0, max_len, n_videos)
        return (np.concatenate([[0], np.cumsum(sizes)]),
                rng.choice(pool, int(sizes.sum())).astype(np.int64))
    lab_off, labs = ragged(6, np.concatenate([seg_ids, rng.integers(0, N_VOCAB, 500),
                                              [-1, N_VOCAB + 5]]))
    seg_off, seg_labs = ragged(8, seg_ids)
    scores = rng.choice(np.array([0.0, 1.0, 0.5, -1.0, np.nan], np.float32), len(seg_labs))
    has = rng.random(n_videos) > 0.2
    return lab_off, labs, seg_off, seg_labs, scores, has


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_negatives_kernel_twin_and_sets(seed):
    rng = np.random.default_rng(seed)
    args = _random_labels(rng, 60)
    got = seg.negatives(*args)
    np.testing.assert_array_equal(got, seg.negatives_numpy(*args))
    neg = seg.unpack_negatives(got)
    lab_off, labs, seg_off, seg_labs, scores, has = args
    only_rated_negative = 0
    for v in range(60):
        sv = set(to_class_index(labs[lab_off[v]:lab_off[v + 1]]).tolist())
        rated = slice(seg_off[v], seg_off[v + 1])
        ss = set(to_class_index(seg_labs[rated][scores[rated] > 0]).tolist())  # §3.6: positives
        want = {c for c in range(1000) if c not in sv | ss} if has[v] else set()
        assert set(np.nonzero(neg[v])[0].tolist()) == want
        rated_neg = set(to_class_index(seg_labs[rated][~(scores[rated] > 0)]).tolist())
        only_rated_negative += len(rated_neg - sv - ss) if has[v] else 0
    assert only_rated_negative > 0  # the draw holds classes rated only negatively


def test_negatives_follow_the_paper_by_hand():
    """Paper §3.6: negatives are the classes outside Sv ∪ Ss, Ss the POSITIVE segment labels.

    One video, labels {A}; segments rated B positive, C negative, D negative and positive.
    Mined negatives: every class but A, B, D; C, rated only negatively, IS one."""
    a, b, c, d = (int(x) for x in segment_class_ids()[[3, 10, 20, 30]])
    ca, cb, cc, cd = (int(x) for x in to_class_index(np.array([a, b, c, d])))
    args = (np.array([0, 1]), np.array([a]), np.array([0, 4]), np.array([b, c, d, d]),
            np.array([1.0, 0.0, 0.0, 1.0], np.float32), np.array([True]))
    for impl in (seg.negatives, seg.negatives_numpy):
        neg = seg.unpack_negatives(impl(*args))[0]
        assert neg[cc] and not neg[ca] and not neg[cb] and not neg[cd]
        assert int(neg.sum()) == 1000 - 3


def test_negatives_empty_and_unlabelled():
    off = np.zeros(3, np.int64)
    got = seg.negatives(off, np.zeros(0, np.int64), off, np.zeros(0, np.int64),
                        np.zeros(0, np.float32), np.array([True, False]))
    assert got.shape == (2, 125)
    assert seg.unpack_negatives(got)[0].all() and not got[1].any()
