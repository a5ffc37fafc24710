"""The numba 10,000-bucket top-k against an argsort twin, on inputs with many ties."""
from __future__ import annotations

import numpy as np
import pytest

from predict import topk as T
from predict.topk import N_BUCKETS, ensemble_scores, top_k


def twin_top_k(models, k):
    """Plain numpy: rounded-half-up mean, stable argsort descending, first k per class."""
    total = np.sum([m.astype(np.int64) for m in models], axis=0)
    n = len(models)
    vals = (2 * total + n) // (2 * n)
    order = np.argsort(-vals, axis=0, kind="stable")[: min(k, vals.shape[0])]
    return order.T, vals


def random_models(rng, n_rows, n_models, high):
    return [rng.integers(0, high, (n_rows, 1000)).astype(np.uint16) for _ in range(n_models)]


@pytest.mark.parametrize(
    "n_rows,n_models,high,k,block",
    [(500, 1, 4, 37, 64), (700, 3, 6, 100, 129), (300, 2, 3, 300, 1000),
     (250, 1, N_BUCKETS, 40, 33), (120, 4, 2, 500, 50), (1, 1, 5, 3, 8)],
)
def test_top_k_matches_argsort_twin(n_rows, n_models, high, k, block):
    rng = np.random.default_rng(n_rows + n_models)
    models = random_models(rng, n_rows, n_models, high)
    sel = top_k(models, k=k, seed=7, block_rows=block)
    ref, vals = twin_top_k(models, k)
    assert sel.shape == ref.shape == (1000, min(k, n_rows))
    for c in range(1000):
        got = vals[sel[c], c]
        want = vals[ref[c], c]
        assert np.array_equal(np.sort(got), np.sort(want)), c  # same multiset of scores
        assert np.all(np.diff(got) <= 0), c  # best first
        assert len(np.unique(sel[c])) == sel.shape[1], c  # no duplicate entry
        above = got > got[-1]  # everything above the boundary: exactly the twin's set
        assert set(sel[c][above]) == set(ref[c][want > want[-1]]), c


def test_above_boundary_keeps_row_order():
    rng = np.random.default_rng(3)
    models = random_models(rng, 400, 1, 5)
    sel = top_k(models, k=150, seed=0, block_rows=77)
    vals = models[0].astype(np.int64)
    for c in range(0, 1000, 50):
        v = vals[sel[c], c]
        for score in np.unique(v[v > v[-1]]):
            rows = sel[c][v == score]
            assert np.all(np.diff(rows) > 0)


def test_boundary_choice_reproducible_and_seeded():
    rng = np.random.default_rng(11)
    models = random_models(rng, 600, 2, 3)
    a = top_k(models, k=200, seed=5, block_rows=100)
    b = top_k(models, k=200, seed=5, block_rows=37)
    c = top_k(models, k=200, seed=6, block_rows=100)
    assert np.array_equal(a, b)  # same seed: same choice and order, whatever the block size
    assert not np.array_equal(a, c)  # another seed chooses (or orders) differently
    vals = ensemble_scores(models)
    for cl in range(1000):
        assert np.array_equal(np.sort(vals[a[cl], cl]), np.sort(vals[c[cl], cl]))


def test_boundary_choice_is_spread_over_the_bucket():
    # All scores equal: the whole output is the boundary bucket, chosen at random.
    models = [np.full((1000, 1000), 17, np.uint16)]
    sel = top_k(models, k=100, seed=1)
    assert sel.max() > 500 and sel.min() < 500
    assert len({tuple(sel[c]) for c in range(1000)}) > 990


def test_k_larger_than_rows_takes_all():
    rng = np.random.default_rng(2)
    models = random_models(rng, 50, 1, 3)
    sel = top_k(models, k=10_000)
    assert sel.shape == (1000, 50)
    assert all(set(sel[c]) == set(range(50)) for c in range(1000))


def test_ensemble_rounds_half_up():
    a = np.zeros((1, 1000), np.uint16)
    b = np.zeros((1, 1000), np.uint16)
    a[0, :4] = [1, 2, 9999, 3]
    b[0, :4] = [2, 2, 9998, 6]
    got = ensemble_scores([a, b])[0, :4]
    assert got.tolist() == [2, 2, 9999, 5]  # 1.5 → 2, 2 → 2, 9998.5 → 9999, 4.5 → 5
    assert ensemble_scores([a, a, b])[0, :4].tolist() == [1, 2, 9999, 4]  # 4/3, 2, 9998.67, 4


def test_scores_above_9999_refused():
    m = np.zeros((50, 1000), np.uint16)
    m[7, 3] = 10_000
    with pytest.raises(Exception, match="1 scores above 9999 .*class index 3"):
        top_k([m], k=5)
    with pytest.raises(Exception, match="above 9999"):
        top_k([m, np.full((50, 1000), 9999, np.uint16)], k=5)  # mean 10000 - 0.5 rounds up


def test_k_below_one_refused():
    with pytest.raises(Exception, match="at least 1"):
        top_k([np.zeros((3, 1000), np.uint16)], k=0)


# The kernels against their plain numpy twins.

def test_accumulate_matches_numpy():
    rng = np.random.default_rng(4)
    blocks = [rng.integers(0, N_BUCKETS, (33, 1000)).astype(np.uint16) for _ in range(3)]
    sums = np.empty((33, 1000), np.uint32)
    for i, b in enumerate(blocks):
        T.accumulate(sums, b, i == 0)
    assert np.array_equal(sums, np.sum(blocks, axis=0, dtype=np.uint32))


def test_round_mean_matches_twin():
    rng = np.random.default_rng(5)
    for n_models in (1, 2, 3, 7):
        sums = rng.integers(0, 10_000 * n_models, (40, 1000)).astype(np.uint32)
        means = np.empty((40, 1000), np.uint16)
        T.round_mean(sums, n_models, means)
        assert np.array_equal(means, (2 * sums.astype(np.int64) + n_models) // (2 * n_models))


@pytest.mark.parametrize("high,k", [(30, 20), (5, 5), (N_BUCKETS, 40), (60, 1000)])
def test_histogram_exact_at_and_above_floor(high, k):
    rng = np.random.default_rng(high)
    vals = rng.integers(0, high, (300, 1000)).astype(np.uint16)
    hist = np.zeros((1000, N_BUCKETS), np.int32)
    floor = np.zeros(1000, np.int64)
    count_ge = np.zeros(1000, np.int64)
    invalid = np.zeros(1000, np.int64)
    for r0 in range(0, 300, 64):
        T.histogram(vals[r0:r0 + 64], k, floor, count_ge, hist, invalid)
    assert not invalid.any()
    for c in range(1000):
        full = np.bincount(vals[:, c], minlength=N_BUCKETS)
        f = floor[c]
        assert np.array_equal(hist[c, f:], full[f:])
        assert count_ge[c] == full[f:].sum() >= min(k, 300)
        assert full[f + 1:].sum() < k or f == N_BUCKETS - 1  # the floor never passes the boundary


def test_swar_compare_matches_lanewise():
    rng = np.random.default_rng(8)
    x = rng.integers(0, N_BUCKETS, (5000, 4)).astype(np.uint16)
    b = rng.integers(0, N_BUCKETS, (5000, 4)).astype(np.uint16)
    x[:50] = b[:50]  # equal lanes count as >=
    words = zip(x.view(np.uint64)[:, 0], b.view(np.uint64)[:, 0])
    m = np.array([T._at_least(xw, bw) for xw, bw in words], np.uint64)
    got = np.stack([(m >> np.uint64(16 * i + 15)) & np.uint64(1) for i in range(4)], axis=1)
    assert np.array_equal(got.astype(bool), x >= b)


def test_boundaries_match_cumsum_twin():
    rng = np.random.default_rng(9)
    hist = rng.integers(0, 4, (1000, N_BUCKETS)).astype(np.int32)
    hist[:, 9000:] = 0
    hist[5] = 0
    hist[5, 3] = 800  # one class entirely in one bucket
    k = 700
    desc = np.cumsum(hist[:, ::-1], axis=1)
    i = np.argmax(desc >= k, axis=1)
    want_t = N_BUCKETS - 1 - i
    work = hist.copy()
    thresh, above, count_at = (np.zeros(1000, np.int64) for _ in range(3))
    T.boundaries(work, k, thresh, above, count_at)
    assert np.array_equal(thresh, want_t)
    rows = np.arange(1000)
    assert np.array_equal(count_at, hist[rows, want_t])
    assert np.array_equal(above, desc[rows, i] - hist[rows, want_t])
    for c in range(0, 1000, 37):
        t = want_t[c]
        starts = np.concatenate([[0], np.cumsum(hist[c, ::-1])])[: N_BUCKETS][::-1]
        assert np.array_equal(work[c, t + 1:], starts[t + 1:])


def test_plain_python_kernels_agree(tmp_path):
    """With YT8M_NO_JIT=1 the same kernels run as Python and give the same selection."""
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(21)
    # 4 classes only: plain Python walks the 10,000 buckets of each class
    models = [rng.integers(0, 4, (60, 4)).astype(np.uint16) for _ in range(2)]
    for i, m in enumerate(models):
        np.save(tmp_path / f"m{i}.npy", m)
    code = (
        "import sys, numpy as np; from predict.topk import top_k\n"
        f"ms = [np.load({str(tmp_path)!r} + f'/m{{i}}.npy') for i in range(2)]\n"
        f"np.save({str(tmp_path / 'sel.npy')!r}, top_k(ms, k=15, seed=4, block_rows=16))\n"
        "print(type(sys.modules['predict.topk'].histogram).__name__)\n"
    )
    env = dict(os.environ, YT8M_NO_JIT="1")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert res.stdout.strip() == "function"  # really the plain Python kernel
    assert np.array_equal(np.load(tmp_path / "sel.npy"), top_k(models, k=15, seed=4, block_rows=16))


def test_memory_stays_below_the_matrices(tmp_path):
    """top_k streams memory maps: its allocations stay far below the matrices' size."""
    import tracemalloc

    n = 60_000  # 120 MB per model; the fixed costs (histogram 40 MB, buffers) are less
    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        path = tmp_path / f"m{i}.npy"
        mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint16, shape=(n, 1000))
        for r0 in range(0, n, 10_000):
            mm[r0:r0 + 10_000] = rng.integers(0, 50, (10_000, 1000))
        del mm
        paths.append(path)
    models = [np.load(p, mmap_mode="r") for p in paths]
    top_k(models, k=10, block_rows=4096)  # compile outside the measurement
    tracemalloc.start()
    sel = top_k(models, k=10, block_rows=4096)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sel.shape == (1000, 10)
    hist = 1000 * N_BUCKETS * 4
    buffers = 4096 * 1000 * (4 + 2)
    assert peak < hist + buffers + 8 * 2**20 < n * 1000 * 2
