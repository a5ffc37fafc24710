"""Which samples an epoch visits in which order, and which frames a video shows.

Everything random here comes from a counter-based generator: the splitmix64 finaliser
of a key and a counter (`mix64`). A sample's randomness depends only on `(seed, epoch,
sample)`, never on the order in which threads or ranks reach it, so an epoch is the
same whatever the thread count, and a resumed run draws exactly what an uninterrupted
one would.

- `epoch_order`: sample ids in store order, split into groups of consecutive samples
  of one part (`group_size`); the groups are put in a random order, then a shuffle
  buffer (`buffer_size`) mixes samples across neighbouring groups. Reads stay mostly
  sequential on a disk (a group is one contiguous region of a part's files) while a
  batch mixes videos from across the store.
- `partition`: the order padded (or cut) to whole global batches and dealt to ranks.
- `select_random` (training): `L` of a video's `n` frames without replacement, in
  temporal order (Knuth's selection sampling, Algorithm S): every L-subset is equally
  likely. `select_even` (evaluation): the frames at the centres of `L` equal slices,
  `lo + floor((2i + 1) n / 2L)`, deterministic, distinct when `n >= L`.

Each numba kernel (decorated with `ingest.jit.njit`) has a plain numpy twin named
`*_numpy` that tests compare it with.
"""
from __future__ import annotations

import numpy as np

from ingest.jit import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # splitmix64 constants
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_TO_UNIT = 1.0 / 9007199254740992.0  # 2**-53: a uint64's top 53 bits as a float in [0, 1)

# Salts separate the streams drawn from one (seed, epoch).
SALT_GROUPS = 1  # the order of groups
SALT_BUFFER = 2  # the shuffle buffer
SALT_FRAMES = 3  # a video's frames (video batches)
SALT_CONTEXT = 4  # a segment's context frames (context-aware batches)
SALT_SUBSET = 5  # the fixed subset of videos of a bounded evaluation (seed 0, epoch 0)


@njit(inline="always")
def mix64(x):
    """splitmix64 finaliser of a uint64 (a bijection with good avalanche)."""
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


@njit(inline="always")
def counter_key(key, i):
    """The `i`-th uint64 of the stream `key`."""
    return mix64(np.uint64(key) + np.uint64(i) * _GOLDEN)


@njit(inline="always")
def unit_float(key, i):
    """The `i`-th float in [0, 1) of the stream `key` (53 random bits)."""
    return float(counter_key(key, i) >> np.uint64(11)) * _TO_UNIT


def stream_key(seed: int, epoch: int, salt: int) -> np.uint64:
    """The key of one (seed, epoch, salt) stream."""
    with np.errstate(over="ignore"):
        x = np.uint64(seed & (2**64 - 1))
        x = _mix64_numpy(x + np.uint64(epoch) * _GOLDEN)
        return _mix64_numpy(x + np.uint64(salt) * _MIX1)


def sample_keys(key: np.uint64, samples: np.ndarray) -> np.ndarray:
    """Per-sample keys `(n,)` uint64 of the stream `key` for sample ids `samples (n,)`."""
    with np.errstate(over="ignore"):
        return _mix64_numpy(np.uint64(key) + np.asarray(samples, np.uint64) * _GOLDEN)


def _mix64_numpy(x):
    with np.errstate(over="ignore"):
        x = np.asarray(x, np.uint64)
        x = (x ^ (x >> np.uint64(30))) * _MIX1
        x = (x ^ (x >> np.uint64(27))) * _MIX2
        return x ^ (x >> np.uint64(31))


def _unit_float_numpy(key, i):
    with np.errstate(over="ignore"):
        x = _mix64_numpy(np.uint64(key) + np.asarray(i, np.uint64) * _GOLDEN)
    return (x >> np.uint64(11)).astype(np.float64) * _TO_UNIT


# ---------------------------------------------------------------- frames of one video

@njit(inline="always")
def select_random(n, count, key, out):
    """out[:count] = `count` of `range(n)` without replacement, ascending (Algorithm S).

    Frame t is taken with probability (still needed) / (still left): exactly `count`
    are taken, each count-subset with equal probability. Needs count <= n.
    """
    need = count
    j = 0
    for t in range(n):
        if need == 0:
            break
        if unit_float(key, t) * (n - t) < need:
            out[j] = t
            j += 1
            need -= 1
    return j


def select_random_numpy(n: int, count: int, key) -> np.ndarray:
    """Plain numpy twin of `select_random`: `(count,)` int64 ascending."""
    u = _unit_float_numpy(key, np.arange(n))
    out, need = [], count
    for t in range(n):
        if need and u[t] * (n - t) < need:
            out.append(t)
            need -= 1
    return np.asarray(out, np.int64)


@njit(inline="always")
def select_even(n, count, out):
    """out[:count] = the centres of `count` equal slices of `range(n)`: (2i+1)·n // 2count."""
    for i in range(count):
        out[i] = ((2 * i + 1) * n) // (2 * count)
    return count


def select_even_numpy(n: int, count: int) -> np.ndarray:
    """Plain numpy twin of `select_even`: `(count,)` int64."""
    return ((2 * np.arange(count, dtype=np.int64) + 1) * n) // (2 * count)


# ---------------------------------------------------------------- epoch order

def groups_of(parts: np.ndarray, group_size: int) -> np.ndarray:
    """Group id `(n,)` int64 of samples listed in store order with their `parts (n,)`: runs
    of at most `group_size` consecutive samples of one part."""
    parts = np.asarray(parts)
    n = len(parts)
    if n == 0:
        return np.zeros(0, np.int64)
    new_part = np.concatenate([[True], parts[1:] != parts[:-1]])
    part_start = np.maximum.accumulate(np.where(new_part, np.arange(n), 0))
    within = np.arange(n) - part_start
    starts = new_part | (within % group_size == 0)
    return np.cumsum(starts) - 1


@njit
def shuffle_buffer_kernel(seq, size, key, out):
    """Streaming shuffle: fill a buffer of `size`, then for each next sample emit a random
    buffered one and put the new one in its place; drain the rest in random order."""
    n = seq.shape[0]
    size = min(size, n)
    buf = np.empty(size, seq.dtype)
    j = 0
    for i in range(n):
        if i < size:
            buf[i] = seq[i]
            continue
        r = counter_key(key, i) % np.uint64(size)
        out[j] = buf[r]
        j += 1
        buf[r] = seq[i]
    for k in range(size - 1, 0, -1):  # Fisher-Yates over what is left
        r = counter_key(key, n + k) % np.uint64(k + 1)
        tmp = buf[k]
        buf[k] = buf[r]
        buf[r] = tmp
    for k in range(size):
        out[j + k] = buf[k]


def shuffle_buffer_numpy(seq: np.ndarray, size: int, key) -> np.ndarray:
    """Plain numpy twin of `shuffle_buffer_kernel`."""
    n = len(seq)
    size = min(size, n)
    with np.errstate(over="ignore"):
        rand = _mix64_numpy(np.uint64(key) + np.arange(n + size, dtype=np.uint64) * _GOLDEN)
    buf, out = list(seq[:size]), []
    for i in range(size, n):
        r = int(rand[i] % np.uint64(size))
        out.append(buf[r])
        buf[r] = seq[i]
    for k in range(size - 1, 0, -1):
        r = int(rand[n + k] % np.uint64(k + 1))
        buf[k], buf[r] = buf[r], buf[k]
    return np.asarray(out + buf, dtype=seq.dtype)


def epoch_order(samples: np.ndarray, parts: np.ndarray, seed: int, epoch: int,
                group_size: int, buffer_size: int, kernel: bool = True) -> np.ndarray:
    """The order `(n,)` in which an epoch visits `samples (n,)` (ids in store order, with
    their parts): groups in random order, then a shuffle buffer. Deterministic in
    `(seed, epoch)`; a permutation of `samples`."""
    samples = np.asarray(samples, np.int64)
    if len(samples) == 0:
        return samples.copy()
    group = groups_of(parts, group_size)
    n_groups = int(group[-1]) + 1
    group_rank = np.argsort(sample_keys(stream_key(seed, epoch, SALT_GROUPS),
                                        np.arange(n_groups)), kind="stable")
    position = np.empty(n_groups, np.int64)
    position[group_rank] = np.arange(n_groups)
    seq = samples[np.argsort(position[group], kind="stable")]  # groups reordered, inside kept
    key = stream_key(seed, epoch, SALT_BUFFER)
    if not kernel:
        return shuffle_buffer_numpy(seq, buffer_size, key)
    out = np.empty_like(seq)
    shuffle_buffer_kernel(seq, max(int(buffer_size), 1), key, out)
    return out


# ---------------------------------------------------------------- ranks

def partition(order: np.ndarray, batch_size: int, world_size: int, rank: int,
              drop_last: bool) -> tuple[np.ndarray, np.ndarray]:
    """Deal an epoch's order to ranks in global batches of `batch_size * world_size`.

    Global batch b is `order[b·B·W : (b+1)·B·W]`; rank r takes its r-th slice of B.
    The remainder: `drop_last` drops it; otherwise the last global batch is completed with
    repeats from the start of the order, flagged invalid, so that every sample appears
    exactly once as a valid row over all ranks, and every rank has as many batches.
    Returns `rows (n_batches, B)` int64 and `valid (n_batches, B)` bool for `rank`.
    """
    order = np.asarray(order, np.int64)
    per_global = batch_size * world_size
    n = len(order)
    n_global = n // per_global if drop_last else -(-n // per_global)
    total = n_global * per_global
    valid = np.arange(total) < n
    rows = np.resize(order, total) if n else np.zeros(total, np.int64)
    rows = rows.reshape(n_global, world_size, batch_size)[:, rank]
    return rows, valid.reshape(n_global, world_size, batch_size)[:, rank]
