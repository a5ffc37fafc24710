"""Epoch order, rank partition and frame selection: kernels against their numpy twins,
and the properties the loader relies on (permutation, determinism, no replacement)."""
from __future__ import annotations

import collections

import numpy as np
import pytest

from trainer.data import sampling as S


@pytest.mark.parametrize("n,count", [(1, 1), (7, 3), (40, 40), (300, 150), (213, 1), (5, 0)])
def test_select_random_is_sorted_without_replacement(n, count):
    for key in (0, 1, 2**63 + 5, 123456789):
        got = S.select_random_numpy(n, count, np.uint64(key))
        assert len(got) == count
        assert np.all(np.diff(got) > 0) and (count == 0 or (got[0] >= 0 and got[-1] < n))


def test_select_random_compiled_matches_twin():
    """Through a compiled caller (the kernel is inlined into the loader's gathers)."""
    from ingest.jit import njit

    @njit
    def run(n, count, key, out):
        return S.select_random(n, count, key, out)

    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 301))
        count = int(rng.integers(0, n + 1))
        key = np.uint64(rng.integers(0, 2**63))
        out = np.empty(max(count, 1), np.int64)
        assert run(n, count, key, out) == count
        np.testing.assert_array_equal(out[:count], S.select_random_numpy(n, count, key))


def test_select_random_is_uniform_over_frames():
    """Each frame is chosen with probability count/n (chi-square-free check: ±5 sigma)."""
    n, count, trials = 20, 6, 4000
    hits = np.zeros(n)
    for k in range(trials):
        hits[S.select_random_numpy(n, count, S.sample_keys(np.uint64(9), np.array([k]))[0])] += 1
    p = count / n
    sigma = np.sqrt(trials * p * (1 - p))
    assert np.all(np.abs(hits - trials * p) < 5 * sigma)


def test_select_even_twin_and_distinct():
    from ingest.jit import njit

    @njit
    def run(n, count, out):
        return S.select_even(n, count, out)

    for n in range(1, 120):
        for count in range(1, n + 1):
            want = S.select_even_numpy(n, count)
            out = np.empty(count, np.int64)
            run(n, count, out)
            np.testing.assert_array_equal(out, want)
            assert len(set(want.tolist())) == count and want.min() >= 0 and want.max() < n


def test_groups_stay_within_parts():
    parts = np.array([0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2])
    np.testing.assert_array_equal(S.groups_of(parts, 2), [0, 0, 1, 1, 2, 3, 3, 4, 4, 5, 5])


@pytest.mark.parametrize("n,size", [(0, 4), (1, 4), (10, 3), (100, 100), (257, 16), (50, 1000)])
def test_shuffle_buffer_kernel_matches_twin(n, size):
    seq = np.arange(n, dtype=np.int64) * 3
    key = S.stream_key(5, 2, S.SALT_BUFFER)
    out = np.empty_like(seq)
    if n:
        S.shuffle_buffer_kernel(seq, size, key, out)
    want = S.shuffle_buffer_numpy(seq, size, key)
    np.testing.assert_array_equal(out, want)
    assert sorted(out.tolist()) == seq.tolist()


def test_epoch_order_is_a_deterministic_permutation_that_changes_with_seed_and_epoch():
    parts = np.repeat(np.arange(5), 40)
    samples = np.arange(200) + 1000
    a = S.epoch_order(samples, parts, seed=0, epoch=0, group_size=8, buffer_size=16)
    b = S.epoch_order(samples, parts, seed=0, epoch=0, group_size=8, buffer_size=16)
    twin = S.epoch_order(samples, parts, seed=0, epoch=0, group_size=8, buffer_size=16,
                         kernel=False)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, twin)
    assert sorted(a.tolist()) == samples.tolist()
    assert not np.array_equal(a, S.epoch_order(samples, parts, 1, 0, 8, 16))
    assert not np.array_equal(a, S.epoch_order(samples, parts, 0, 1, 8, 16))
    assert not np.array_equal(a, samples)


def test_epoch_order_mixes_parts_but_reads_locally():
    """The first 64 samples come from several parts, yet from few groups at a time."""
    parts = np.repeat(np.arange(10), 100)
    order = S.epoch_order(np.arange(1000), parts, 3, 0, group_size=20, buffer_size=32)
    first = order[:64]
    assert len(set(parts[first].tolist())) >= 2
    groups = S.groups_of(parts, 20)
    assert len(set(groups[first].tolist())) <= 64 // 20 + 4


@pytest.mark.parametrize("n,batch,world,drop_last", [
    (100, 8, 3, False), (100, 8, 3, True), (24, 8, 3, False), (5, 8, 3, False), (7, 1, 2, False)])
def test_partition_every_sample_once_over_ranks(n, batch, world, drop_last):
    order = np.random.default_rng(n).permutation(n) + 10
    seen = collections.Counter()
    n_batches = set()
    for rank in range(world):
        rows, valid = S.partition(order, batch, world, rank, drop_last)
        assert rows.shape == valid.shape and rows.shape[1:] == (batch,)
        n_batches.add(len(rows))
        seen.update(rows[valid].tolist())
    assert len(n_batches) == 1  # every rank steps the same number of times (DDP)
    if drop_last:
        assert sum(seen.values()) == (n // (batch * world)) * batch * world
    else:
        assert seen == collections.Counter(order.tolist())  # each exactly once as valid


def test_partition_global_batch_is_the_single_process_batch():
    """Ranks' batches b together are the single-process batch b of B·W rows (DDP test)."""
    order = np.arange(96)
    whole, _ = S.partition(order, 24, 1, 0, False)
    parts = [S.partition(order, 8, 3, r, False)[0] for r in range(3)]
    for b in range(len(whole)):
        np.testing.assert_array_equal(np.concatenate([p[b] for p in parts]), whole[b])
