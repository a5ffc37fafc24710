"""The loader's gather kernels against their numpy twins, over real mapped files."""
from __future__ import annotations

import numpy as np
import pytest

from ingest.store.segments import unpack_negatives
from trainer.data import gather as G
from trainer.data.index import ArrayFiles
from trainer.data.sampling import sample_keys

WIDTH = 24  # narrow rows keep the test fast; the kernels take the width from the buffers


def _files(tmp_path, sizes, width, seed=0):
    """Parts of shard files of random bytes, mapped read-only by the loader's ArrayFiles;
    (addr, file_base, shard_rows) as the kernels take them, and the ArrayFiles."""
    rng = np.random.default_rng(seed)
    paths, rows, base, shard_rows = [], [], [], []
    for p, (n_rows, per_file) in enumerate(sizes):
        base.append(len(paths))
        shard_rows.append(per_file)
        for k in range(-(-n_rows // per_file)):
            n = min(per_file, n_rows - k * per_file)
            paths.append(tmp_path / f"p{p}_{k}.bin")
            rng.integers(0, 256, (n, width), dtype=np.uint8).tofile(paths[-1])
            rows.append(n)
    files = ArrayFiles(paths, np.array(rows, np.int64), np.array(base, np.int64),
                       np.array(shard_rows, np.int64), width, len(paths), tmp_path,
                       [f"p{p}" for p in range(len(sizes))])
    zero = np.zeros(1, np.int64)
    with files.reading(lambda: (zero, zero, zero)):
        pass  # all files fit the capacity: every one is mapped now, for good
    assert files.complete
    return (files.addr, files.file_base, files.shard_rows), files


@pytest.fixture
def mapped(tmp_path):
    return _files(tmp_path, [(1000, 128), (37, 16), (513, 512)], WIDTH)


@pytest.fixture
def files(mapped):
    return mapped[0]


def _videos(rng, n_rows, sizes):
    part = rng.integers(0, len(sizes), n_rows)
    n = np.array([rng.integers(0, min(60, sizes[p][0]) + 1) for p in part], np.int64)
    offset = np.array([rng.integers(0, sizes[p][0] - n[i] + 1) for i, p in enumerate(part)])
    return part.astype(np.int64), offset.astype(np.int64), n


@pytest.mark.parametrize("even", [False, True])
@pytest.mark.parametrize("max_len", [1, 7, 60, G.NO_LIMIT])
def test_gather_frames_matches_twin(files, even, max_len):
    rng = np.random.default_rng(max_len + even)
    sizes = [(1000, 128), (37, 16), (513, 512)]
    part, offset, n = _videos(rng, 50, sizes)
    lo = np.array([rng.integers(0, k + 1) for k in n], np.int64)
    hi = np.array([rng.integers(a, k + 1) for a, k in zip(lo, n)], np.int64)
    keys = sample_keys(np.uint64(7), np.arange(50))
    length = max(1, int(np.minimum(hi - lo, max_len).max()))
    outs = []
    for fn in (G.gather_frames_kernel, G.gather_frames_numpy):
        out = np.full((50, length, WIDTH), 77, np.uint8)
        mask = np.ones((50, length), bool)
        lengths = np.zeros(50, np.int64)
        fn(*files, part, offset, lo, hi, keys, max_len, even, out, mask, lengths)
        outs.append((out, mask, lengths))
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    out, mask, lengths = outs[0]
    np.testing.assert_array_equal(lengths, np.minimum(hi - lo, max_len))
    np.testing.assert_array_equal(mask.sum(1), lengths)
    assert not out[~mask].any()  # padding is zero


def test_gather_windows_matches_twin(files):
    rng = np.random.default_rng(3)
    sizes = [(1000, 128), (37, 16), (513, 512)]
    part, offset, n = _videos(rng, 40, sizes)
    start = np.array([rng.integers(-3, k + 3) for k in n], np.int64)
    from ingest.store.segments import window_spans

    lo, hi, pad_left, _ = window_spans(np.maximum(start, 0), n)
    a = np.full((40, 11, WIDTH), 9, np.uint8)
    b = np.full((40, 11, WIDTH), 5, np.uint8)
    for fn, out in ((G.gather_windows_kernel, a), (G.gather_windows_numpy, b)):
        fn(*files, part, offset, lo.astype(np.int64), hi.astype(np.int64),
           pad_left.astype(np.int64), out)
    np.testing.assert_array_equal(a, b)


def test_pack_classes_matches_twin():
    rng = np.random.default_rng(4)
    counts = rng.integers(0, 6, 30)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    classes = rng.integers(0, 1000, offsets[-1]).astype(np.int16)
    rows = rng.integers(0, 30, 64).astype(np.int64)
    a = np.full((64, 125), 255, np.uint8)
    b = np.zeros((64, 125), np.uint8)
    G.pack_classes_kernel(offsets, classes, rows, a)
    G.pack_classes_numpy(offsets, classes, rows, b)
    np.testing.assert_array_equal(a, b)
    bits = np.unpackbits(a, axis=1, bitorder="little")
    for i, r in enumerate(rows):
        assert set(np.nonzero(bits[i])[0]) == set(classes[offsets[r]:offsets[r + 1]].tolist())


def test_fill_segment_matches_twin(files, mapped):
    """Windows, class, score and packed negatives of random store rows, in one kernel."""
    rng = np.random.default_rng(5)
    n_seg, n_vid = 300, 40
    seg_part = rng.integers(0, 3, n_seg).astype(np.int64)
    seg_window = (rng.random(n_seg) * np.array([1000, 37, 513])[seg_part]).astype(np.int64)
    seg_class = rng.integers(0, 1000, n_seg).astype(np.int16)
    seg_score = rng.random(n_seg).astype(np.float32)
    seg_video = rng.integers(0, n_vid, n_seg).astype(np.int64)
    negatives = rng.integers(0, 256, (n_vid, 125), dtype=np.uint8)
    rows = rng.integers(0, n_seg, 64).astype(np.int64)
    outs = []
    for fn, fill in ((G.fill_segment_kernel, 3), (G.fill_segment_numpy, 200)):
        out = (np.full((64, WIDTH), fill, np.uint8), np.full(64, -fill, np.int64),
               np.full(64, fill, np.float32), np.full((64, 125), fill, np.uint8))
        fn(*files, seg_part, seg_window, seg_class, seg_score, seg_video, negatives, rows, *out)
        outs.append(out)
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(outs[0][1], seg_class[rows])
    np.testing.assert_array_equal(outs[0][3], negatives[seg_video[rows]])
    arrays = mapped[1]
    for i, r in enumerate(rows):  # windows: the stored rows themselves, read from the files
        p, w = seg_part[r], seg_window[r]
        f = arrays.file_base[p] + w // arrays.shard_rows[p]
        stored = np.fromfile(arrays.paths[f], np.uint8).reshape(-1, WIDTH)
        np.testing.assert_array_equal(outs[0][0][i], stored[w % arrays.shard_rows[p]])


@pytest.mark.parametrize("classes", [1000, 13, 8])
def test_unpack_bits_matches_twin_and_the_store_unpack(classes):
    rng = np.random.default_rng(classes)
    packed = rng.integers(0, 256, (70, 125), dtype=np.uint8)
    a = np.ones((70, classes), bool)
    b = np.zeros((70, classes), bool)
    G.unpack_bits_kernel(packed, a)
    G.unpack_bits_numpy(packed, b)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, unpack_negatives(packed)[:, :classes])
    assert a.view(np.uint8).max() == 1  # proper bools: every byte 0 or 1
