"""Round trips: Video objects -> ingest.codec.encode + write_tfrecord -> ingest.codec.decode == from_videos."""
from __future__ import annotations

import numpy as np
import pytest

from ingest.codec import encode as E
from ingest.codec.decode import ShardDecoder, decode_shard
from ingest.codec.tfrecord import iter_records, write_tfrecord
from ingest.codec.video import DecodedShard, Video
from tests.ingest.pydecode import assert_same_shard, decode_file
from tests.ingest.videos import random_video


def video_level(rng: np.random.Generator, i: int, labels: bool = True) -> Video:
    return Video(id=f"v{i}", labels=rng.integers(0, 3862, 3) if labels else None,
                 mean_rgb=rng.standard_normal(1024).astype(np.float32),
                 mean_audio=rng.standard_normal(128).astype(np.float32))


def write(path, records: list[bytes]):
    write_tfrecord(path, records)
    return path


def check(path, videos: list[Video]) -> DecodedShard:
    got = decode_shard(path)
    want = DecodedShard.from_videos(videos)
    want.record_offsets = np.array([off for _, off, _ in iter_records(path)], np.int64)
    assert_same_shard(got, want)
    assert got.skipped == []
    return got


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("packed", [True, False])
def test_random_videos_round_trip(tmp_path, seed, packed):
    rng = np.random.default_rng(seed)
    videos = [random_video(rng, i, labels=bool(i % 3)) for i in range(12)]
    path = write(tmp_path / "s.tfrecord", [E.encode_video(v, packed) for v in videos])
    got = check(path, videos)
    assert got.kind == "frame"
    assert_same_shard(DecodedShard.from_videos(decode_file(path).videos), DecodedShard.from_videos(videos))


def test_edge_case_videos(tmp_path):
    rng = np.random.default_rng(7)
    videos = [
        random_video(rng, 0, n_frames=0, segments=False),
        random_video(rng, 1, n_frames=1),
        random_video(rng, 2, n_frames=300, ends=True),
        random_video(rng, 3, n_frames=5, labels=False, segments=False),
        random_video(rng, 4, n_frames=2, ends=False),
        Video("neg", labels=np.array([-1, -(1 << 63), (1 << 63) - 1, 0]),
              rgb=np.zeros((1, 1024), np.uint8), audio=np.full((1, 128), 255, np.uint8),
              segment_labels=np.array([-5]), segment_start_times=np.array([-1]),
              segment_end_times=np.array([1 << 40]), segment_scores=np.array([0.5], np.float32)),
        Video("", labels=np.zeros(0, np.int64), rgb=np.zeros((0, 1024), np.uint8),
              audio=np.zeros((0, 128), np.uint8)),
        Video("ünïcode-id", rgb=np.ones((3, 1024), np.uint8), audio=np.ones((3, 128), np.uint8)),
    ]
    check(write(tmp_path / "e.tfrecord", [E.encode_video(v) for v in videos]), videos)


def test_video_level_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    videos = [video_level(rng, i, labels=i != 2) for i in range(5)]
    for packed in (True, False):
        got = check(write(tmp_path / f"v{packed}.tfrecord",
                          [E.encode_video(v, packed) for v in videos]), videos)
        assert got.kind == "video" and got.mean_rgb.dtype == np.float32
        assert got.frames.shape == (0, 1152)


def test_empty_file(tmp_path):
    path = write(tmp_path / "empty.tfrecord", [])
    got = decode_shard(path)
    assert got.n_videos == 0 and got.kind == "frame" and got.frames.shape == (0, 1152)
    assert list(ShardDecoder().iter_chunks(path)) == []


def odd_record(v: Video) -> bytes:
    """Valid but unusual encoding: fields reordered, unknown fields and keys, duplicated
    keys (the last wins), lists split in two (protobuf merges them), map entries with
    the value before the key, unpacked scalars."""
    unknown = E.field(15, E.VARINT, 1 << 62) + E.field(9, E.I64, bytes(8)) + E.field(
        10, E.I32, bytes(4)) + E.field(11, E.LEN, b"\x00\x01garbage")
    half = len(v.labels) // 2
    labels = (E.field(3, E.LEN, E.field(1, E.LEN, b"".join(E.varint(int(x)) for x in v.labels[:half])))
              + unknown
              + E.field(3, E.LEN, b"".join(E.field(1, E.VARINT, x) for x in v.labels[half:])))
    ctx = E.features([
        ("labels", E.int64_list([99999])),  # replaced by the later entry
        ("unknown_key", E.float_list([1.0, 2.0])),
        ("segment_scores", E.float_list(v.segment_scores, packed=False)),
        ("segment_start_times", E.int64_list(v.segment_start_times)),
        ("id", E.bytes_list([b"wrong"])),
        ("segment_labels", E.int64_list(v.segment_labels, packed=False)),
    ])
    ctx += E.field(1, E.LEN, E.field(2, E.LEN, labels) + unknown + E.field(1, E.LEN, b"labels"))
    ctx += E.features([("id", E.bytes_list([v.id.encode()]))]) + unknown
    lists = E.field(1, E.LEN, E.map_entry("audio", b"".join(
        E.field(1, E.LEN, unknown + E.bytes_list([r.tobytes()])) for r in v.audio)))
    lists += E.field(1, E.LEN, E.map_entry("rgb", b"ignored"))  # replaced below
    lists += E.field(1, E.LEN, E.map_entry("rgb", b"".join(
        E.field(1, E.LEN, E.bytes_list([r.tobytes()])) + unknown for r in v.rgb)))
    lists += E.field(1, E.LEN, E.map_entry("depth", E.field(1, E.LEN, E.bytes_list([b"x"]))))
    # feature_lists first, unknown top-level fields
    return E.field(2, E.LEN, lists) + unknown + E.field(1, E.LEN, ctx)


def test_odd_encodings(tmp_path):
    rng = np.random.default_rng(3)
    videos = [random_video(rng, i, n_frames=int(rng.integers(0, 4)), ends=False)
              for i in range(6)]
    for v in videos:
        v.labels = rng.integers(-10, 3862, 5)
    path = write(tmp_path / "odd.tfrecord", [odd_record(v) for v in videos])
    check(path, videos)


def test_context_split_in_two_messages(tmp_path):
    rng = np.random.default_rng(4)
    v = random_video(rng, 0, n_frames=3, ends=True)
    first = E.features([("id", E.bytes_list([v.id.encode()])), ("labels", E.int64_list(v.labels))])
    second = E.features([
        ("segment_labels", E.int64_list(v.segment_labels)),
        ("segment_start_times", E.int64_list(v.segment_start_times)),
        ("segment_end_times", E.int64_list(v.segment_end_times)),
        ("segment_scores", E.float_list(v.segment_scores)),
    ])
    rgb = E.field(1, E.LEN, E.map_entry("rgb", b"".join(
        E.field(1, E.LEN, E.bytes_list([r.tobytes()])) for r in v.rgb)))
    audio = E.field(1, E.LEN, E.map_entry("audio", b"".join(
        E.field(1, E.LEN, E.bytes_list([r.tobytes()])) for r in v.audio)))
    rec = (E.field(1, E.LEN, first) + E.field(2, E.LEN, audio) + E.field(1, E.LEN, second)
           + E.field(2, E.LEN, rgb))
    check(write(tmp_path / "split.tfrecord", [rec]), [v])


@pytest.mark.parametrize("chunk_bytes", [1, 5000, 200_000, 1 << 30])
def test_chunks_cover_the_shard(tmp_path, chunk_bytes):
    rng = np.random.default_rng(5)
    videos = [random_video(rng, i, n_frames=int(rng.integers(0, 60))) for i in range(25)]
    path = write(tmp_path / "c.tfrecord", [E.encode_video(v) for v in videos])
    offsets = [off for _, off, _ in iter_records(path)]
    dec = ShardDecoder()
    seen = 0
    for chunk in dec.iter_chunks(path, chunk_bytes=chunk_bytes):
        assert chunk.n_videos >= 1
        want = DecodedShard.from_videos(videos[seen : seen + chunk.n_videos])
        want.record_offsets = np.array(offsets[seen : seen + chunk.n_videos], np.int64)
        assert_same_shard(chunk, want)
        seen += chunk.n_videos
    assert seen == len(videos)
    if chunk_bytes == 1:  # every record is larger than the chunk: one record per chunk
        assert len(list(dec.iter_chunks(path, chunk_bytes=1))) == len(videos)


def test_decoder_reuses_buffers_across_shards(tmp_path):
    rng = np.random.default_rng(6)
    a = [random_video(rng, i) for i in range(8)]
    b = [random_video(rng, i, n_frames=80) for i in range(3)]
    c = [video_level(rng, i) for i in range(4)]
    paths = [write(tmp_path / f"{n}.tfrecord", [E.encode_video(v) for v in vs])
             for n, vs in (("a", a), ("b", b), ("c", c))]
    dec = ShardDecoder()
    for _ in range(2):
        for path, vs in zip(paths, (a, b, c)):
            assert_same_shard(dec.decode(path), DecodedShard.from_videos(vs))
    first = dec.decode(paths[0]).frames
    dec.decode(paths[1])
    assert np.shares_memory(first, dec.decode(paths[1]).frames)  # views into one buffer


def test_video_round_trip_through_decoded_shard(tmp_path):
    rng = np.random.default_rng(8)
    videos = [random_video(rng, i, ends=True) for i in range(4)]
    got = decode_shard(write(tmp_path / "r.tfrecord", [E.encode_video(v) for v in videos]))
    for i, v in enumerate(videos):
        back = got.video(i)
        np.testing.assert_array_equal(back.rgb, v.rgb)
        np.testing.assert_array_equal(back.segment_end_times, v.segment_end_times)


@pytest.mark.parametrize("block", [1, 3000, 50_000])
@pytest.mark.parametrize("chunk_bytes", [20_000, 1 << 30])
def test_chunks_of_many_blocks_with_buffer_growth(tmp_path, monkeypatch, block, chunk_bytes):
    """Chunks gather several read blocks; outputs grow mid-chunk keeping earlier records
    (records with more labels and segments than the buffers' first guess)."""
    import ingest.codec.decode

    monkeypatch.setattr(ingest.codec.decode, "BLOCK_BYTES", block)
    rng = np.random.default_rng(9)
    videos = [random_video(rng, i, n_frames=int(rng.integers(0, 12))) for i in range(30)]
    for v in videos[5:]:
        v.labels = rng.integers(0, 3862, int(rng.integers(0, 200)))
        n = int(rng.integers(0, 60))
        v.segment_labels, v.segment_start_times = rng.integers(0, 9, n), rng.integers(0, 9, n)
        v.segment_end_times, v.segment_scores = None, rng.random(n, np.float32)
        if n == 0:
            v.segment_labels = v.segment_start_times = v.segment_scores = None
    videos[7].id = "x" * 5000  # longer than the id buffer's first guess
    path = write(tmp_path / "b.tfrecord", [E.encode_video(v) for v in videos])
    offsets = [off for _, off, _ in iter_records(path)]
    seen = 0
    for chunk in ShardDecoder().iter_chunks(path, chunk_bytes=chunk_bytes):
        want = DecodedShard.from_videos(videos[seen : seen + chunk.n_videos])
        want.record_offsets = np.array(offsets[seen : seen + chunk.n_videos], np.int64)
        assert_same_shard(chunk, want)
        seen += chunk.n_videos
    assert seen == len(videos)
