"""The numba one-pass top-k against a plain numpy twin, on inputs with many ties."""
from __future__ import annotations

import numpy as np
import pytest

from ingest.jit import JIT_ENABLED
from predict import simd
from predict import topk as T
from predict import topk_kernels as K
from predict.topk import N_BUCKETS, ensemble_scores, top_k

# compiles the intrinsic / tie key itself with numba: nothing to compare with YT8M_NO_JIT=1
NEEDS_JIT = pytest.mark.skipif(not JIT_ENABLED, reason="compiles a kernel with numba itself")

U64 = np.uint64


def twin_tie_key(seed, c, rows):
    """Plain numpy splitmix64 of (seed, class, row), low 50 bits: topk_kernels.tie_key."""
    with np.errstate(over="ignore"):
        x = U64(seed) + rows.astype(U64) * U64(0x9E3779B97F4A7C15) + U64(c + 1) * U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> U64(30))) * U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> U64(27))) * U64(0x94D049BB133111EB)
    return (x ^ (x >> U64(31))) & U64((1 << 50) - 1)


def twin_top_k(models, k, seed, weights=None):
    """Plain numpy: rounded-half-up (weighted) mean; per class the k largest (score, tie
    key, -row), then the buckets above the boundary in row order and the boundary bucket by
    tie key."""
    vals = ensemble_scores(models, weights=weights)
    return twin_order(vals, k, seed), vals


def twin_order(vals, k, seed):
    """`twin_top_k`'s order of the (n, C) integer scores `vals` (any range)."""
    n, n_cls = vals.shape
    k = min(k, n)
    rows = np.arange(n)
    out = np.empty((n_cls, k), np.int64)
    for c in range(n_cls):
        v = vals[:, c]
        chosen = np.lexsort((rows, ~twin_tie_key(seed, c, rows), -v))[:k]
        t = v[chosen[-1]]
        top = chosen[v[chosen] > t]
        out[c] = np.concatenate([top[np.lexsort((top, -v[top]))], chosen[v[chosen] == t]])
    return out


def random_models(rng, n_rows, n_models, high, n_cls=1000):
    return [rng.integers(0, high, (n_rows, n_cls)).astype(np.uint16) for _ in range(n_models)]


@pytest.mark.parametrize("compress", simd.PATHS)
@pytest.mark.parametrize(
    "n_rows,n_models,high,k,block,n_cls",
    [(500, 1, 4, 37, 64, 1000), (700, 3, 6, 100, 129, 1000), (300, 2, 3, 300, 1000, 1000),
     (250, 1, N_BUCKETS, 40, 33, 1000), (120, 4, 2, 500, 50, 1000), (1, 1, 5, 3, 8, 1000),
     (40_000, 1, N_BUCKETS, 900, 4096, 40), (30_000, 2, 30, 2000, 8192, 7)],
)
def test_top_k_equals_twin(n_rows, n_models, high, k, block, n_cls, compress):
    """Every compress path (the target's and the others, forced) selects what the twin does."""
    rng = np.random.default_rng(n_rows + n_models)
    models = random_models(rng, n_rows, n_models, high, n_cls)
    sel = top_k(models, k=k, seed=7, block_rows=block, compress=compress)
    ref, vals = twin_top_k(models, k, seed=7)
    assert sel.shape == ref.shape == (n_cls, min(k, n_rows))
    assert np.array_equal(sel, ref)
    for c in range(0, n_cls, 97):
        assert np.all(np.diff(vals[sel[c], c]) <= 0)  # best first
        assert len(np.unique(sel[c])) == sel.shape[1]  # no duplicate entry


@pytest.mark.parametrize("compress", simd.PATHS)
def test_several_epochs_with_compaction_and_rescan(monkeypatch, compress):
    """Rows past 2**18 (entries keep 18 row bits), full buffers, and floors set too high."""
    rng = np.random.default_rng(3)
    n, k = K.EPOCH_ROWS + 40_000, 5000
    models = random_models(rng, n, 1, 300, n_cls=9)
    ref, vals = twin_top_k(models, k, seed=2)
    assert np.array_equal(top_k(models, k=k, seed=2, block_rows=50_000, compress=compress), ref)
    monkeypatch.setattr(T, "BUFFER_SLACK", 0.0)  # compact whenever TILE_ROWS extra arrive
    monkeypatch.setattr(T, "FLOOR_SIGMAS", 0.0)
    assert np.array_equal(top_k(models, k=k, seed=2, block_rows=50_000, compress=compress), ref)
    monkeypatch.setattr(T, "FLOOR_SIGMAS", -10.0)  # every sampled floor too high
    _, fk = T.starting_floors(models, k, seed=2)
    for c in range(9):
        kth = ref[c, -1]
        assert fk[c] > (U64(vals[kth, c]) << U64(50)) | twin_tie_key(2, c, np.array([kth]))[0]
    assert np.array_equal(top_k(models, k=k, seed=2, block_rows=50_000, compress=compress),
                          ref)  # so: rescanned


def test_compact_keeps_the_k_best_in_order_across_epochs():
    rng = np.random.default_rng(4)
    p, k, seed, c = 900, 300, 9, 1
    rows = np.sort(rng.choice(3 * K.EPOCH_ROWS, p, replace=False))
    scores = rng.integers(0, 20, p)
    buf = np.zeros((2, p), np.uint32)
    buf[c] = (scores << K.EPOCH_BITS) | (rows & K.ROW_MASK)
    epoch_pos = np.full((2, 4), K.NOT_STARTED, np.int64)
    epoch_pos[:, 0] = 0
    epoch_pos[c, 1:3] = np.searchsorted(rows, [K.EPOCH_ROWS, 2 * K.EPOCH_ROWS])
    fv, fk = np.zeros(2, np.uint16), np.zeros(2, U64)
    q = K.compact(c, p, k, seed, 2, fv, fk, buf, epoch_pos)
    keys = (scores.astype(U64) << U64(50)) | twin_tie_key(seed, c, rows)
    keep = np.sort(np.argsort(keys)[::-1][:k])
    assert q == k and fk[c] == np.sort(keys)[-k] and fv[c] == fk[c] >> U64(50)
    assert np.array_equal(buf[c, :k], (scores[keep] << K.EPOCH_BITS) | (rows[keep] & K.ROW_MASK))
    kept_rows = rows[keep]
    assert np.array_equal(epoch_pos[c, 1:3], np.searchsorted(kept_rows, [K.EPOCH_ROWS, 2 * K.EPOCH_ROWS]))


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


def test_fortran_ordered_models_are_read_right():
    rng = np.random.default_rng(12)
    models = random_models(rng, 300, 2, 50)
    want = top_k(models, k=40, seed=3)
    assert np.array_equal(top_k([np.asfortranarray(m) for m in models], k=40, seed=3), want)
    assert np.array_equal(top_k([np.asfortranarray(models[0])], k=40, seed=3),
                          top_k(models[:1], k=40, seed=3))


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
    m[:, 999] = 65535  # in the last, partial, group of 32 classes
    with pytest.raises(Exception, match="51 scores above 9999"):
        top_k([m], k=5)


def test_k_below_one_refused():
    with pytest.raises(Exception, match="at least 1"):
        top_k([np.zeros((3, 1000), np.uint16)], k=0)


# The kernels against their plain numpy twins.

@NEEDS_JIT
@pytest.mark.parametrize("path", simd.PATHS)
def test_compress_hits_matches_python_twin(path):
    """Each compress path (all compile for this host) against the Python twin."""
    check_compress_path(path)


def check_compress_path(path):
    """compress_hits on `path` against the Python twin: random rows, scores above 9999 and
    at their floors, a partial group, then rows whose every 8 lanes hit in each of the 256
    patterns (the permute path's table). Also run compiled for another CPU
    (tests/predict/test_compress_path.py)."""
    rng = np.random.default_rng(8)
    vals = rng.integers(0, 60, (40, 70)).astype(np.uint16)
    vals[5, :6] = [10_000, 65_535, 9_999, 16_383, 20_000, 0]
    floors = rng.integers(1, 60, 70).astype(np.uint16)
    vals[9] = floors  # every score at its floor: all flagged "look closer"
    pattern = (np.arange(256)[:, None] >> (np.arange(70) % 8)) & 1  # row r: byte r per 8 lanes
    vals = np.concatenate([vals, np.where(pattern, floors + 1, floors - 1).astype(np.uint16)])
    got = np.zeros(vals.size + simd.LANES, np.uint32)
    want = np.zeros_like(got)
    n_got = n_want = 0
    for r in range(vals.shape[0]):
        for c0 in range(0, 70, 32):
            lanes = min(32, 70 - c0)
            tag = (r * 7 + c0) % (1 << simd.TAG_BITS)
            n_got = _compress_jit(vals, r, c0, lanes, floors, tag, got, n_got,
                                  simd.path_index(path))
            n_want = simd.compress_hits_py(vals, r, c0, lanes, floors, tag, want, n_want)
    assert n_got == n_want == int((vals >= floors).sum())
    assert np.array_equal(got[:n_got], want[:n_want])


def _compress_jit(*args):
    from numba import njit

    global _compress_kernel
    if "_compress_kernel" not in globals():
        _compress_kernel = njit(lambda vals, row, col, lanes, floors, tag, out, n, path:
                                simd.compress_hits(vals, row, col, lanes, floors, tag, out, n,
                                                   path))
    return _compress_kernel(*args)


@NEEDS_JIT
def test_tie_key_matches_numpy_twin():
    from numba import njit

    keys = njit(lambda seed, c, rows: np.array([K.tie_key(seed, c, r) for r in rows]))
    rows = np.arange(0, 3_000_000, 997)
    for seed, c in [(0, 0), (7, 999), (2**40, 3)]:
        assert np.array_equal(keys(seed, c, rows).astype(U64), twin_tie_key(seed, c, rows))


@pytest.mark.parametrize("weights", [(3, 3, 1), (0, 2, 5), (1, 1, 1), (65534, 1, 1)])
def test_weighted_top_k_equals_twin(weights):
    """`--weights`: the weighted mean's top-k (models of weight 0 dropped) against the twin."""
    rng = np.random.default_rng(sum(weights))
    models = random_models(rng, 900, 3, 40)
    models[1][:5] = 9999
    ref, vals = twin_top_k(models, 120, seed=1, weights=weights)
    assert np.array_equal(top_k(models, k=120, seed=1, block_rows=256, weights=weights), ref)
    if len(set(weights)) == 1:  # equal weights: the plain mean, byte for byte
        assert np.array_equal(vals, ensemble_scores(models))


def test_weighted_mean_matches_twin():
    rng = np.random.default_rng(15)
    blocks = tuple(rng.integers(0, 65_536, (300, 37)).astype(np.uint16) for _ in range(3))
    for weights in ([1, 1, 1], [3, 3, 1], [7, 0, 2], [65534, 1, 1]):
        means = np.empty((300, 37), np.uint16)
        K.weighted_mean(blocks, np.array(weights, np.int64), means)
        want = ensemble_scores(blocks, weights=weights)
        assert np.array_equal(means, want.astype(np.uint16))  # (wraps like the kernel's cast)
    plain = np.empty((300, 37), np.uint16)
    K.ensemble_mean(blocks, plain)
    K.weighted_mean(blocks, np.array([2, 2, 2], np.int64), means)
    assert np.array_equal(means, plain)


def test_bad_weights_refused():
    models = [np.zeros((3, 1000), np.uint16)] * 2
    for weights, words in [((1,), "1 weights for 2"), ((0, 0), "at least one above 0"),
                           ((-1, 2), "integers >= 0"), ((65536, 1), "at most 65536")]:
        with pytest.raises(Exception, match=words):
            top_k(models, k=2, weights=weights)


def test_ensemble_mean_matches_twin():
    rng = np.random.default_rng(5)
    for n_models in (2, 3, 7):
        blocks = tuple(rng.integers(0, 65_536, (300, 37)).astype(np.uint16) for _ in range(n_models))
        blocks[0][:5] = 65_535
        means = np.empty((300, 37), np.uint16)
        K.ensemble_mean(blocks, means)
        assert np.array_equal(means, ensemble_scores(blocks))


def test_gather_transposed_matches_numpy():
    rng = np.random.default_rng(6)
    src = rng.integers(0, 9999, (177, 45)).astype(np.uint16)
    for rows in (np.arange(177), np.sort(rng.choice(177, 77, replace=False)), np.array([5])):
        dst = np.empty((45, len(rows)), np.uint16)
        K.gather_transposed(src, rows, dst)
        assert np.array_equal(dst, src[rows].T)


def test_sample_floors_rank_m():
    rng = np.random.default_rng(9)
    sample = rng.integers(0, 40, (6, 500)).astype(np.uint16)
    sample[2] = 5  # one class all in one bucket: the tie key decides the rank
    rows = np.arange(500) * 3
    fv, fk = np.zeros(6, np.uint16), np.zeros(6, U64)
    K.sample_floors(sample, rows, 60, 4, fv, fk)
    for c in range(6):
        keys = (sample[c].astype(U64) << U64(50)) | twin_tie_key(4, c, rows)
        assert fk[c] == np.sort(keys)[-60] and fv[c] == fk[c] >> U64(50)
    K.sample_floors(sample, rows, 501, 4, fv, fk)  # fewer than m scores: floor 0
    assert not fv.any() and not fk.any()


def test_plain_python_kernels_agree(tmp_path):
    """With YT8M_NO_JIT=1 the same kernels run as Python and give the same selection."""
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(21)
    models = [rng.integers(0, 4, (60, 37)).astype(np.uint16) for _ in range(2)]
    for i, m in enumerate(models):
        np.save(tmp_path / f"m{i}.npy", m)
    code = (
        "import sys, numpy as np; from predict.topk import top_k\n"
        f"ms = [np.load({str(tmp_path)!r} + f'/m{{i}}.npy') for i in range(2)]\n"
        f"np.save({str(tmp_path / 'sel.npy')!r}, top_k(ms, k=15, seed=4, block_rows=16))\n"
        "print(type(sys.modules['predict.topk_kernels'].scan).__name__)\n"
    )
    env = dict(os.environ, YT8M_NO_JIT="1")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    assert res.stdout.strip() == "function"  # really the plain Python kernel
    assert np.array_equal(np.load(tmp_path / "sel.npy"), top_k(models, k=15, seed=4, block_rows=16))


LOOSE_FLOORS = {"BUFFER_SLACK": 0.0, "FLOOR_SIGMAS": 2.0, "SAMPLE_ROWS": 300}


@pytest.mark.parametrize("threads,compress", [(1, ""), (11, ""), (1, "permute"), (11, "scalar")])
def test_any_thread_count_gives_the_same_selection(tmp_path, threads, compress, monkeypatch):
    """The scan splits a round's rows among the threads, and the classes into at least one
    chunk per thread: 1 thread (8 chunks of 4 groups) and 11 (11 row shares; 11 chunks of
    3 groups, the last of 2) select what the twin does, with compactions and rescans; with
    the target's compress path and with others forced (YT8M_COMPRESS)."""
    import os
    import subprocess
    import sys

    rng = np.random.default_rng(22)
    m = rng.integers(0, 40, (3000, 1000)).astype(np.uint16)
    k, seed = 700, 3
    np.save(tmp_path / "m.npy", m)
    # these loose floors make some classes overflow their buffers (compaction) and
    # leave others with fewer than k candidates (rescan)
    for name, value in LOOSE_FLOORS.items():
        monkeypatch.setattr(T, name, value)
    _, fk = T.starting_floors([m], k, seed)
    reach = np.array([((m[:, c].astype(U64) << U64(50)) | twin_tie_key(seed, c, np.arange(3000))
                       >= fk[c]).sum() for c in range(1000)])
    assert (reach > T.capacity(k)).sum() > 50 and (reach < k).sum() > 0
    code = (
        "import numpy as np; from predict import topk as T\n"
        f"for name, value in {LOOSE_FLOORS!r}.items(): setattr(T, name, value)\n"
        f"m = np.load({str(tmp_path / 'm.npy')!r})\n"
        f"np.save({str(tmp_path / 'sel.npy')!r}, T.top_k([m], k={k}, seed={seed}, block_rows=2500))\n"
    )
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), YT8M_COMPRESS=compress)
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    assert np.array_equal(np.load(tmp_path / "sel.npy"), twin_top_k([m], k, seed)[0])


@pytest.mark.skipif(not JIT_ENABLED, reason="60 million scores: minutes in plain Python")
def test_memory_stays_below_the_matrices(tmp_path):
    """top_k streams memory maps: its allocations stay far below the matrices' size."""
    import tracemalloc

    n, k = 60_000, 10  # 120 MB per model
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
    top_k(models, k=k, block_rows=4096)  # compile outside the measurement
    tracemalloc.start()
    sel = top_k(models, k=k, block_rows=4096)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert sel.shape == (1000, k)
    buffers = 1000 * (k + K.TILE_ROWS) * 4 + 4096 * 1000 * 2  # candidates, one mean block
    sample = T.SAMPLE_ROWS * 1000 * 2 * 3  # gathered rows, their mean, class-major
    assert peak < buffers + sample + 8 * 2**20 < n * 1000 * 2
