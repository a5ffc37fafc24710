"""Cross-check with TensorFlow: TF parses our shards to the same values, and our decoder
parses shards that TensorFlow wrote (protos built with TF's own API) to the same values."""
from __future__ import annotations

import numpy as np
import pytest

from ingest.codec import encode as E
from ingest.codec.decode import decode_shard
from ingest.codec.tfrecord import write_tfrecord
from ingest.codec.video import DecodedShard, Video
from tests.ingest.pydecode import assert_same_shard

tf = pytest.importorskip("tensorflow")
pytestmark = [pytest.mark.tf, pytest.mark.slow]


def frame_videos(seed: int, n: int = 6) -> list[Video]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        nf, ns = int(rng.integers(0, 30)), int(rng.integers(0, 5)) if i % 2 else 0
        out.append(Video(
            id=f"id{i}", labels=rng.integers(-3, 3862, int(rng.integers(1, 5))) if i % 3 else None,
            rgb=rng.integers(0, 256, (nf, 1024), dtype=np.uint8),
            audio=rng.integers(0, 256, (nf, 128), dtype=np.uint8),
            segment_labels=rng.integers(0, 3862, ns) if ns else None,
            segment_start_times=rng.integers(0, 60, ns) * 5 if ns else None,
            segment_end_times=rng.integers(0, 60, ns) * 5 + 5 if ns and i % 4 == 1 else None,
            segment_scores=rng.integers(0, 2, ns).astype(np.float32) if ns else None))
    return out


def tf_sequence_example(v: Video):
    ctx = {"id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.id.encode()]))}
    for key in ("labels", "segment_labels", "segment_start_times", "segment_end_times"):
        if getattr(v, key) is not None:
            ctx[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=getattr(v, key)))
    if v.segment_scores is not None:
        ctx["segment_scores"] = tf.train.Feature(
            float_list=tf.train.FloatList(value=v.segment_scores))
    lists = {key: tf.train.FeatureList(feature=[
        tf.train.Feature(bytes_list=tf.train.BytesList(value=[row.tobytes()])) for row in arr])
        for key, arr in (("rgb", v.rgb), ("audio", v.audio))}
    return tf.train.SequenceExample(context=tf.train.Features(feature=ctx),
                                    feature_lists=tf.train.FeatureLists(feature_list=lists))


def test_tensorflow_parses_our_shards(tmp_path):
    videos = frame_videos(0)
    path = str(tmp_path / "ours.tfrecord")
    write_tfrecord(path, [E.encode_video(v, packed=i % 2 == 0) for i, v in enumerate(videos)])
    records = [r.numpy() for r in tf.data.TFRecordDataset(path)]
    assert len(records) == len(videos)
    ctx_spec = {"id": tf.io.FixedLenFeature([], tf.string),
                "labels": tf.io.VarLenFeature(tf.int64),
                "segment_labels": tf.io.VarLenFeature(tf.int64),
                "segment_start_times": tf.io.VarLenFeature(tf.int64),
                "segment_scores": tf.io.VarLenFeature(tf.float32)}
    seq_spec = {k: tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)
                for k in ("rgb", "audio")}
    for rec, v in zip(records, videos):
        proto = tf.train.SequenceExample.FromString(rec)
        feat = proto.context.feature
        assert feat["id"].bytes_list.value == [v.id.encode()]
        assert ("labels" in feat) == (v.labels is not None)
        if v.labels is not None:
            assert list(feat["labels"].int64_list.value) == v.labels.tolist()
        if v.segment_end_times is not None:
            assert list(feat["segment_end_times"].int64_list.value) == v.segment_end_times.tolist()
        ctx, seq = tf.io.parse_single_sequence_example(rec, ctx_spec, seq_spec)
        assert ctx["id"].numpy() == v.id.encode()
        want = [] if v.labels is None else v.labels.tolist()
        assert ctx["labels"].values.numpy().tolist() == want
        n = v.segment_labels is not None and len(v.segment_labels)
        assert ctx["segment_labels"].values.numpy().tolist() == (
            v.segment_labels.tolist() if n else [])
        assert ctx["segment_start_times"].values.numpy().tolist() == (
            v.segment_start_times.tolist() if n else [])
        np.testing.assert_array_equal(ctx["segment_scores"].values.numpy(),
                                      v.segment_scores if n else np.zeros(0, np.float32))
        rgb = tf.io.decode_raw(seq["rgb"], tf.uint8).numpy().reshape(-1, 1024)
        audio = tf.io.decode_raw(seq["audio"], tf.uint8).numpy().reshape(-1, 128)
        np.testing.assert_array_equal(rgb, v.rgb)
        np.testing.assert_array_equal(audio, v.audio)


def test_we_parse_tensorflow_written_shards(tmp_path):
    videos = frame_videos(1, n=8)
    path = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for v in videos:
            w.write(tf_sequence_example(v).SerializeToString())
    assert_same_shard(decode_shard(path), DecodedShard.from_videos(videos))


def test_we_parse_tensorflow_written_examples(tmp_path):
    rng = np.random.default_rng(2)
    videos = [Video(f"e{i}", labels=rng.integers(0, 3862, 3) if i % 2 else None,
                    mean_rgb=rng.standard_normal(1024).astype(np.float32),
                    mean_audio=rng.standard_normal(128).astype(np.float32)) for i in range(5)]
    path = str(tmp_path / "tfv.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for v in videos:
            feat = {"id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.id.encode()])),
                    "mean_rgb": tf.train.Feature(float_list=tf.train.FloatList(value=v.mean_rgb)),
                    "mean_audio": tf.train.Feature(
                        float_list=tf.train.FloatList(value=v.mean_audio))}
            if v.labels is not None:
                feat["labels"] = tf.train.Feature(int64_list=tf.train.Int64List(value=v.labels))
            w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())
    assert_same_shard(decode_shard(path), DecodedShard.from_videos(videos))


def test_duplicate_keys_last_wins_like_tensorflow(tmp_path):
    """A map key given twice: protobuf and TF's fast parser keep the last entry; so do we."""
    ctx = E.features([("id", E.bytes_list([b"first"])), ("labels", E.int64_list([1, 2])),
                      ("labels", E.int64_list([7])), ("id", E.bytes_list([b"last"]))])
    lists = E.field(1, E.LEN, E.map_entry("rgb", E.field(1, E.LEN, E.bytes_list([bytes(1024)]))))
    lists += E.field(1, E.LEN, E.map_entry("rgb", b""))
    rec = E.field(1, E.LEN, ctx) + E.field(2, E.LEN, lists)
    c, s = tf.io.parse_single_sequence_example(
        rec, {"id": tf.io.FixedLenFeature([], tf.string), "labels": tf.io.VarLenFeature(tf.int64)},
        {"rgb": tf.io.FixedLenSequenceFeature([], tf.string, allow_missing=True)})
    path = tmp_path / "dup.tfrecord"
    write_tfrecord(path, [rec])
    got = decode_shard(path)
    assert got.ids == [c["id"].numpy().decode()] == ["last"]
    assert got.labels.tolist() == c["labels"].values.numpy().tolist() == [7]
    assert got.frames.shape[0] == s["rgb"].shape[0] == 0
