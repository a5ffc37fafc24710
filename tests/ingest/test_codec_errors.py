"""Framing and content errors: ShardError names the file, record and offset; skip-record."""
from __future__ import annotations

import numpy as np
import pytest

from ingest.codec import encode as E
from ingest.codec.decode import ShardDecoder, decode_shard
from ingest.codec.tfrecord import frame_record, iter_records, write_tfrecord
from ingest.codec.video import Video
from ingest.errors import ShardError


def frame_video(i: int, n: int = 2, **kw) -> Video:
    rng = np.random.default_rng(i)
    return Video(f"v{i}", rgb=rng.integers(0, 256, (n, 1024), dtype=np.uint8),
                 audio=rng.integers(0, 256, (n, 128), dtype=np.uint8), **kw)


def video_level(i: int) -> Video:
    rng = np.random.default_rng(i)
    return Video(f"v{i}", mean_rgb=rng.random(1024, np.float32),
                 mean_audio=rng.random(128, np.float32))


@pytest.fixture
def shard(tmp_path):
    """Five valid frame-level records; returns (path, bytes, header offsets)."""
    path = tmp_path / "s.tfrecord"
    write_tfrecord(path, [E.encode_video(frame_video(i, n=i)) for i in range(5)])
    raw = path.read_bytes()
    return path, raw, [off for _, off, _ in iter_records(path)]


def rewrite(path, raw: bytes):
    path.write_bytes(raw)
    return path


def raises(path, match: str, record: int, offset: int, on_error: str = "fail") -> ShardError:
    with pytest.raises(ShardError, match=match) as info:
        decode_shard(path, on_error=on_error)
    err = info.value
    assert (err.record, err.offset, err.path) == (record, offset, str(path))
    assert str(err).startswith(f"{path}: record {record} at byte {offset}: ")
    return err


def test_data_crc_fails_or_skips(shard):
    path, raw, offs = shard
    bad = bytearray(raw)
    bad[offs[2] + 30] ^= 0x10  # inside record 2's data
    rewrite(path, bytes(bad))
    raises(path, "data CRC mismatch", 2, offs[2])
    got = decode_shard(path, on_error="skip-record")
    assert got.ids == ["v0", "v1", "v3", "v4"]
    assert got.skipped == [(2, offs[2], "data CRC mismatch (corrupt record)")]
    np.testing.assert_array_equal(got.record_offsets, [offs[0], offs[1], offs[3], offs[4]])


def test_length_crc_always_fails(shard):
    path, raw, offs = shard
    bad = bytearray(raw)
    bad[offs[3] + 1] ^= 0x01  # record 3's length
    rewrite(path, bytes(bad))
    raises(path, "length CRC mismatch", 3, offs[3])
    raises(path, "length CRC mismatch", 3, offs[3], on_error="skip-record")


@pytest.mark.parametrize("cut", [1, 5, 12, 100, 4])
def test_truncated_file(shard, cut):
    path, raw, offs = shard
    rewrite(path, raw[:-cut] if cut != 4 else raw[: offs[4] + 7])
    raises(path, "truncated", 4, offs[4])
    raises(path, "truncated", 4, offs[4], on_error="skip-record")


def test_malformed_protobuf_fails_or_skips(tmp_path):
    good = [E.encode_video(frame_video(i)) for i in range(4)]
    records = good[:1] + [good[1][:-5]] + good[2:]  # record 1: cut inside its protobuf
    path = tmp_path / "m.tfrecord"
    write_tfrecord(path, records)
    offs = [off for _, off, _ in iter_records(path)]
    raises(path, "past the end", 1, offs[1])
    got = decode_shard(path, on_error="skip-record")
    assert got.ids == ["v0", "v2", "v3"]
    assert [s[:2] for s in got.skipped] == [(1, offs[1])]
    assert got.frame_offsets.tolist() == [0, 2, 4, 6]


def lists(rgb: list[list[bytes]], audio: list[list[bytes]]) -> bytes:
    """feature_lists with one Feature per frame, each a BytesList of the given values."""
    return E.field(2, E.LEN, b"".join(
        E.field(1, E.LEN, E.map_entry(k, b"".join(E.field(1, E.LEN, E.bytes_list(r)) for r in fr)))
        for k, fr in (("rgb", rgb), ("audio", audio))))


def content_case(name: str) -> tuple[bytes, str]:
    v = frame_video(0, n=3)
    ctx = E.field(1, E.LEN, E.features([("id", E.bytes_list([b"x"]))]))
    rows = [[r.tobytes()] for r in v.rgb]
    arows = [[r.tobytes()] for r in v.audio]
    cases = {
        "rgb size": (ctx + lists([[b"x" * 1023]], arows[:1]), "rgb frame of 1023 bytes"),
        "audio size": (ctx + lists(rows[:1], [[b"x" * 129]]), "audio frame of 129 bytes"),
        "mismatch": (ctx + lists(rows, arows[:2]), "3 rgb frames but 2 audio frames"),
        "two values": (ctx + lists([rows[0] * 2], arows[:1]), "exactly one bytes value, found 2"),
        "frame type": (ctx + E.field(2, E.LEN, E.field(1, E.LEN, E.map_entry(
            "rgb", E.field(1, E.LEN, E.float_list([1.0]))))), "feature 'rgb' has the wrong type"),
        "frame varint": (ctx + E.field(2, E.LEN, E.field(1, E.LEN, E.map_entry(
            "audio", E.field(1, E.LEN, E.field(1, E.LEN, b"\x0a\xff"))))),
            "(in feature list 'audio')"),
        "no id": (lists(rows, arows), "'id' must hold exactly one"),
        "two ids": (E.field(1, E.LEN, E.features([("id", E.bytes_list([b"a", b"b"]))])),
                    "found 2"),
        "bad utf8": (E.field(1, E.LEN, E.features([("id", E.bytes_list([b"\xff"]))])), "UTF-8"),
        "labels type": (E.field(1, E.LEN, E.features([("id", E.bytes_list([b"a"])),
                                                      ("labels", E.float_list([1.0]))])),
                        "'labels' has the wrong type"),
        "segments": (E.field(1, E.LEN, E.features([
            ("id", E.bytes_list([b"a"])), ("segment_labels", E.int64_list([1, 2])),
            ("segment_start_times", E.int64_list([5])), ("segment_scores", E.float_list([1, 0]))])),
            "unequal lengths"),
        "end times": (E.field(1, E.LEN, E.features([
            ("id", E.bytes_list([b"a"])), ("segment_labels", E.int64_list([1])),
            ("segment_start_times", E.int64_list([5])), ("segment_end_times", E.int64_list([])),
            ("segment_scores", E.float_list([1]))])), "unequal lengths"),
        "mean size": (E.field(1, E.LEN, E.features([
            ("id", E.bytes_list([b"a"])), ("mean_rgb", E.float_list(np.zeros(1023))),
            ("mean_audio", E.float_list(np.zeros(128)))])), "'mean_rgb' holds 1023 floats"),
        "mean missing": (E.field(1, E.LEN, E.features([
            ("id", E.bytes_list([b"a"])), ("mean_rgb", E.float_list(np.zeros(1024)))])),
            "lacks 'mean_audio'"),
        "packed floats": (E.field(1, E.LEN, E.features([
            ("id", E.bytes_list([b"a"])),
            ("segment_scores", E.field(2, E.LEN, E.field(1, E.LEN, b"\0" * 5)))])),
            "multiple of 4"),
        "varint overflow": (E.field(1, E.LEN, E.features([
            ("id", E.bytes_list([b"a"])),
            ("labels", E.field(3, E.LEN, E.field(1, E.LEN, b"\xff" * 10 + b"\x01")))])),
            "longer than 64 bits"),
        "wire type": (ctx + b"\x0b", "wire type"),
        "field zero": (ctx + b"\x00\x00", "field number 0"),
    }
    return cases[name]


CASES = ["rgb size", "audio size", "mismatch", "two values", "frame type", "frame varint",
         "no id", "two ids", "bad utf8", "labels type", "segments", "end times", "mean size",
         "mean missing", "packed floats", "varint overflow", "wire type", "field zero"]


@pytest.mark.parametrize("case", CASES)
def test_content_errors_name_the_record(tmp_path, case):
    rec, message = content_case(case)
    path = tmp_path / "c.tfrecord"
    good = E.encode_video(video_level(9) if case.startswith("mean") else frame_video(9))
    write_tfrecord(path, [good, rec, good])
    offs = [off for _, off, _ in iter_records(path)]
    raises(path, message, 1, offs[1])
    got = decode_shard(path, on_error="skip-record")
    assert got.ids == ["v9", "v9"] and got.skipped[0][:2] == (1, offs[1])
    assert message in got.skipped[0][2]


def test_mixed_kinds_always_fail(tmp_path):
    video = video_level(0)
    path = tmp_path / "mixed.tfrecord"
    write_tfrecord(path, [E.encode_video(frame_video(1)), E.encode_video(video)])
    offs = [off for _, off, _ in iter_records(path)]
    raises(path, "video record in a frame shard", 1, offs[1])
    raises(path, "video record in a frame shard", 1, offs[1], on_error="skip-record")


def test_malformed_record_of_the_other_kind_is_skippable(tmp_path):
    """A corrupt record that merely looks like the other kind is a bad record, not a mix."""
    no_id = E.field(1, E.LEN, E.features([("labels", E.int64_list([3]))]))  # no means: "frame"
    path = tmp_path / "v.tfrecord"
    write_tfrecord(path, [E.encode_video(video_level(0)), no_id, E.encode_video(video_level(2))])
    offs = [off for _, off, _ in iter_records(path)]
    raises(path, "'id' must hold exactly one", 1, offs[1])
    got = decode_shard(path, on_error="skip-record")
    assert got.ids == ["v0", "v2"] and [s[:2] for s in got.skipped] == [(1, offs[1])]


def test_mixed_kinds_across_chunks(tmp_path):
    video = video_level(0)
    path = tmp_path / "mixed.tfrecord"
    write_tfrecord(path, [E.encode_video(video)] * 3 + [E.encode_video(frame_video(1))])
    with pytest.raises(ShardError, match="frame record in a video shard"):
        for _ in ShardDecoder().iter_chunks(path, chunk_bytes=1):
            pass


def test_record_numbers_are_global_across_chunks(tmp_path):
    records = [E.encode_video(frame_video(i)) for i in range(6)]
    path = tmp_path / "g.tfrecord"
    path.write_bytes(b"".join(frame_record(r) for r in records[:4])
                     + frame_record(records[4][:-3]) + frame_record(records[5]))
    offs = [off for _, off, _ in iter_records(path)]
    with pytest.raises(ShardError) as info:
        for _ in ShardDecoder().iter_chunks(path, chunk_bytes=2 * len(frame_record(records[0]))):
            pass
    assert (info.value.record, info.value.offset) == (4, offs[4])
    chunks = ShardDecoder("skip-record").iter_chunks(path, chunk_bytes=len(frame_record(records[0])))
    skipped = [s for c in chunks for s in c.skipped]
    assert [s[:2] for s in skipped] == [(4, offs[4])]


def test_bad_on_error_value():
    with pytest.raises(ValueError):
        ShardDecoder(on_error="ignore")


@pytest.mark.timeout(60)
def test_file_shrinking_while_read_is_an_error_not_a_hang(tmp_path):
    path = tmp_path / "shrink.tfrecord"
    write_tfrecord(path, [E.encode_video(frame_video(i, n=3)) for i in range(6)])
    offs = [off for _, off, _ in iter_records(path)]
    chunks = ShardDecoder().iter_chunks(path, chunk_bytes=offs[1])
    assert next(chunks).ids == ["v0"]
    with open(path, "r+b") as f:
        f.truncate(offs[3] + 20)
    with pytest.raises(ShardError, match="ended early"):
        for _ in chunks:
            pass
