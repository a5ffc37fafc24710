"""The reader API: row arrays across Zarr shard files, tables, negatives, bad paths."""
from __future__ import annotations

import zlib

import numpy as np
import pytest
import zarr

from ingest.store import RowArray, StoreError, open_store, writer
from ingest.store.layout import file_checksum
from tests.ingest.test_convert_content import make_store, synth_shards


@pytest.mark.parametrize("row_shape, chunk, shard", [((5,), 4, 8), ((3, 2), 2, 6)])
def test_sharded_writer_matches_zarr_and_rowarray(tmp_path, row_shape, chunk, shard):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (37, *row_shape), dtype=np.uint8)
    w = writer.ShardedArrayWriter(tmp_path / "a.zarr", row_shape, chunk, shard)
    for piece in np.array_split(data, [1, 2, 9, 20, 20, 33]):  # uneven appends, one empty
        w.append(piece)
    assert w.close() == 37
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a.zarr"), mode="r")[:], data)
    for rel, crc in w.crcs.items():  # CRC-32 kept while streaming = zlib's of the file
        raw = (tmp_path / "a.zarr" / rel).read_bytes()
        assert crc == zlib.crc32(raw), rel
        assert file_checksum(tmp_path / "a.zarr" / rel) == (len(raw), f"{crc:08x}")
    ra = RowArray(tmp_path / "a.zarr")
    assert len(ra) == 37
    for a, b in [(0, 37), (5, 13), (7, 8), (30, 37), (12, 12)]:  # across shard files
        np.testing.assert_array_equal(ra.rows(a, b), data[a:b])
    idx = rng.integers(0, 37, 20)
    np.testing.assert_array_equal(ra.take(idx), data[idx])
    with pytest.raises(IndexError):
        ra.rows(30, 38)


def test_empty_array(tmp_path):
    w = writer.ShardedArrayWriter(tmp_path / "e.zarr", (4,), 2, 4)
    assert w.close() == 0
    assert zarr.open_array(str(tmp_path / "e.zarr"), mode="r").shape == (0, 4)
    assert RowArray(tmp_path / "e.zarr").rows(0, 0).shape == (0, 4)


def test_store_tables_and_negatives(tmp_path):
    shards = synth_shards(tmp_path / "src", shards=2, videos=8, seed=9)
    s = make_store(shards, tmp_path / "store")
    assert s.parts == [p.stem for p in shards] and s.n_videos == 16
    assert s.videos["video_row"].to_list() == list(range(16))
    assert s.videos["part_index"].to_list() == [0] * 8 + [1] * 8
    assert s.segments["segment_row"].to_list() == list(range(len(s.segments)))
    # rows of part 1 point past part 0's videos and windows
    seg1 = s.segments.filter(s.segments["part_index"] == 1)
    assert (seg1["video_row"] >= 8).all()
    n0 = s.manifest["parts"][0]["counts"]["rated_segments"]
    assert seg1["window_row"].to_list() == list(range(n0, len(s.segments)))
    packed = s.negatives(packed=True)
    assert packed.shape == (16, 125) and packed.dtype == np.uint8
    neg = s.negatives()
    assert neg.shape == (16, 1000) and neg.dtype == bool
    np.testing.assert_array_equal(np.packbits(neg, axis=1, bitorder="little"), packed)
    # a labelled video's own segment classes are never its negatives
    for row in range(16):
        own = s.videos["class_indices"][row].to_list()
        assert not neg[row, own].any()
    out = np.full((3, 11, 1152), 9, np.uint8)
    got = s.windows([0, 1, 2], out=out)
    assert np.shares_memory(got, out) and got.shape == (3, 11, 1152)
    np.testing.assert_array_equal(got, s.windows([0, 1, 2]))


def test_open_store_errors(tmp_path):
    with pytest.raises(StoreError, match="not a complete store"):
        open_store(tmp_path)
    (tmp_path / "manifest.json").write_text('{"format_version": 99}')
    with pytest.raises(StoreError, match="format 99"):
        open_store(tmp_path)
