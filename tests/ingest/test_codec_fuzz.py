"""Fuzzing the decoder (JIT on, where an out-of-bounds read would crash): malformed
input is always a clean ShardError, a still-valid mutation decodes like the plain-Python
twin (tests/ingest/pydecode.py), and a corrupt CRC is reported as a CRC error."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ingest.codec import encode as E
from ingest.codec.decode import decode_shard
from ingest.codec.tfrecord import HEADER_BYTES, frame_record
from ingest.codec.video import DecodedShard, Video
from ingest.errors import ShardError
from tests.ingest import pydecode

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])


@st.composite
def videos(draw) -> Video:
    """Small random frame- or video-level records (shapes as in the dataset, few frames)."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    ns = draw(st.integers(0, 3))
    v = Video(id=draw(st.text(max_size=6)),
              labels=rng.integers(-(1 << 63), 1 << 63, draw(st.integers(0, 4)), dtype=np.int64)
              if draw(st.booleans()) else None,
              segment_labels=rng.integers(0, 3862, ns) if ns else None,
              segment_start_times=rng.integers(0, 300, ns) if ns else None,
              segment_end_times=rng.integers(0, 300, ns) if ns and draw(st.booleans()) else None,
              segment_scores=rng.random(ns, np.float32) if ns else None)
    if draw(st.booleans()):
        n = draw(st.integers(0, 3))
        v.rgb = rng.integers(0, 256, (n, 1024), dtype=np.uint8)
        v.audio = rng.integers(0, 256, (n, 128), dtype=np.uint8)
    else:
        v.mean_rgb = rng.standard_normal(1024).astype(np.float32)
        v.mean_audio = rng.standard_normal(128).astype(np.float32)
    return v


@st.composite
def shards(draw) -> tuple[list[bytes], list[Video]]:
    level = draw(st.booleans())
    vs = draw(st.lists(videos(), min_size=1, max_size=3))
    for v in vs:  # one kind per shard
        if v.is_frame_level != level:
            v.rgb = v.audio = v.mean_rgb = v.mean_audio = None
            if level:
                v.rgb, v.audio = np.zeros((1, 1024), np.uint8), np.zeros((1, 128), np.uint8)
            else:
                v.mean_rgb, v.mean_audio = np.ones(1024, np.float32), np.ones(128, np.float32)
    packed = draw(st.lists(st.booleans(), min_size=len(vs), max_size=len(vs)))
    return [E.encode_video(v, p) for v, p in zip(vs, packed)], vs


def outcome(path, on_error: str):
    try:
        return "ok", decode_shard(path, on_error=on_error)
    except ShardError as err:
        return "error", err


def twin_outcome(path, skip: bool):
    try:
        return "ok", pydecode.decode_file(path, skip=skip)
    except (pydecode.Bad, pydecode.Fatal) as err:
        return "error", err


def assert_matches_twin(path) -> None:
    for on_error in ("fail", "skip-record"):
        kind, got = outcome(path, on_error)
        tkind, want = twin_outcome(path, on_error == "skip-record")
        assert kind == tkind, (on_error, got, want)
        event(f"{on_error}: {kind}" + (f" ({len(got.skipped)} skipped)" if kind == "ok" else ""))
        if kind == "error":
            assert got.record == want.record
            continue
        expected = DecodedShard.from_videos(want.videos)
        expected.record_offsets = np.array(want.offsets, np.int64)
        if not want.videos:
            assert got.n_videos == 0
        else:
            pydecode.assert_same_shard(got, expected)
        assert [s[:2] for s in got.skipped] == want.skipped


@FUZZ
@given(shards())
def test_valid_shards_decode_like_the_twin(tmp_path, shard):
    records, vs = shard
    path = tmp_path / "v.tfrecord"
    path.write_bytes(b"".join(frame_record(r) for r in records))
    got = decode_shard(path)
    pydecode.assert_same_shard(got, DecodedShard.from_videos(vs))
    assert_matches_twin(path)


MUTATIONS = ["flip", "byte", "insert", "delete", "truncate", "varint", "length"]


def mutate(data: bytes, how: str, pos: int, value: int) -> bytes:
    if not data and how in ("flip", "byte", "delete"):
        return data
    pos %= max(len(data), 1)
    if how == "flip":
        return data[:pos] + bytes([data[pos] ^ (1 << (value % 8))]) + data[pos + 1 :]
    if how == "byte":
        return data[:pos] + bytes([value % 256]) + data[pos + 1 :]
    if how == "insert":
        return data[:pos] + bytes([value % 256]) + data[pos:]
    if how == "delete":
        return data[:pos] + data[pos + 1 :]
    if how == "truncate":
        return data[:pos]
    if how == "varint":  # an overflowing varint (11 bytes)
        return data[:pos] + b"\xff" * 10 + b"\x01" + data[pos:]
    # "length": a large length prefix, pointing far past the end of the enclosing message
    return data[:pos] + E.varint(value) + data[pos + 1 :]


@FUZZ
@given(shards(), st.lists(st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 1 << 20),
                                    st.integers(0, 1 << 40)), min_size=1, max_size=3),
       st.integers(0, 2))
def test_mutated_protobuf_is_an_error_or_a_valid_decode(tmp_path, shard, muts, which):
    """Mutations inside a record's protobuf, CRCs recomputed: the wire parser must cope."""
    records, _ = shard
    which %= len(records)
    data = records[which]
    for how, pos, value in muts:
        data = mutate(data, how, pos, value)
    records = records[:which] + [data] + records[which + 1 :]
    path = tmp_path / "m.tfrecord"
    path.write_bytes(b"".join(frame_record(r) for r in records))
    assert_matches_twin(path)


@FUZZ
@given(st.binary(max_size=300), st.booleans())
def test_garbage_records(tmp_path, garbage, framed):
    path = tmp_path / "g.tfrecord"
    path.write_bytes(frame_record(garbage) if framed else garbage)
    assert_matches_twin(path)


@FUZZ
@given(shards(), st.integers(0, 1 << 30), st.integers(0, 7))
def test_bit_flip_in_file_is_a_crc_error(tmp_path, shard, pos, bit):
    records, _ = shard
    raw = bytearray(b"".join(frame_record(r) for r in records))
    pos %= len(raw)
    raw[pos] ^= 1 << bit
    path = tmp_path / "f.tfrecord"
    path.write_bytes(bytes(raw))
    # the record whose bytes were hit; a hit in the file's first header makes it no TFRecord
    starts = np.cumsum([0] + [len(frame_record(r)) for r in records])
    rec = int(np.searchsorted(starts, pos, side="right") - 1)
    first_header = pos < HEADER_BYTES
    with pytest.raises(ShardError, match="not a TFRecord file" if first_header
                       else "CRC mismatch") as info:
        decode_shard(path)
    assert (info.value.record, info.value.offset) == (rec, int(starts[rec]))
    in_data = starts[rec] + HEADER_BYTES <= pos
    if in_data:  # a data CRC error can be skipped; the other records decode
        got = decode_shard(path, on_error="skip-record")
        assert [s[:2] for s in got.skipped] == [(rec, int(starts[rec]))]
        assert got.n_videos == len(records) - 1


@FUZZ
@given(shards(), st.integers(0, 1 << 30))
def test_truncated_file_is_an_error(tmp_path, shard, cut):
    records, _ = shard
    raw = b"".join(frame_record(r) for r in records)
    cut = 1 + cut % (len(raw) - 1)
    path = tmp_path / "t.tfrecord"
    path.write_bytes(raw[:cut])
    starts = np.cumsum([0] + [len(frame_record(r)) for r in records])
    if cut in starts:  # cut at a record boundary: a valid, shorter shard
        assert decode_shard(path).n_videos == int(np.searchsorted(starts, cut))
        return
    with pytest.raises(ShardError, match="truncated"):
        decode_shard(path, on_error="skip-record")


@FUZZ
@given(st.binary(max_size=24), st.integers(0, 30), st.integers(0, 30))
def test_wire_varint_and_skip_match_the_twin(data, pos, end):
    """The numba wire primitives against the plain-Python twin, on random bytes and bounds."""
    from ingest.codec import wire

    buf = np.frombuffer(data, np.uint8).copy()
    end = min(end, len(buf))
    pos = min(pos, end)
    value, new = wire.read_varint(buf, pos, end)
    try:
        want, want_pos = pydecode.read_varint(data, pos, end)
    except pydecode.Bad:
        assert new < 0
    else:
        assert (int(value), new) == (want, want_pos)
    got = wire.skip_field(buf, pos, end, wire.LEN)
    try:
        n, p = pydecode.read_varint(data, pos, end)
        assert got == (p + n if n <= end - p else -wire.LEN_PAST_END)
    except pydecode.Bad:
        assert got < 0


@FUZZ
@given(st.integers(0, 2000), st.integers(0, 1151), st.integers(0, 3000), st.integers(0, 9))
def test_copy_bytes_matches_numpy(n, dst_off, src_off, row):
    from ingest.codec import wire

    rng = np.random.default_rng(n)
    src = rng.integers(0, 256, src_off + n, dtype=np.uint8)
    dst = rng.integers(0, 256, (10 + (dst_off + n) // 1152 + 1, 1152), dtype=np.uint8)
    want = dst.copy()
    start = row * 1152 + dst_off
    want.reshape(-1)[start : start + n] = src[src_off : src_off + n]
    wire.copy_bytes(dst, start, src, src_off, n)
    np.testing.assert_array_equal(dst, want)
