"""The store's content equals the decoder's output: synthetic, TensorFlow-written, real shards."""
from __future__ import annotations

import collections
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr

from ingest.codec.decode import decode_shard
from ingest.codec.encode import encode_video
from ingest.codec.tfrecord import write_tfrecord
from ingest.codec.video import FRAME_BYTES, Video
from ingest.store import Store, verify_store
from ingest.store import segments as seg
from ingest.store.convert import ConvertConfig, convert
from ingest.store.writer import N_FOLDS, fold_of
from ingest.synth.shards import SynthConfig, write_synth
from ingest.vocab import segment_class_ids, to_class_index


def make_store(sources, out, **kw) -> Store:
    convert(ConvertConfig(sources=tuple(str(s) for s in sources), out=str(out), progress=False,
                          **kw))
    return Store(out)


def synth_shards(out: Path, shards=2, videos=30, split="validate", seed=3, **kw) -> list[Path]:
    cfg = SynthConfig(out_dir=str(out), split=split, shards=shards, videos_per_shard=videos,
                      seed=seed, edge_cases=True, **kw)
    return [p for p in write_synth(cfg, progress=False) if p.suffix == ".tfrecord"]


def assert_part_matches_decoder(store: Store, part_index: int, shard: Path) -> None:
    """Every table row and array of one part against `decode_shard` of its source."""
    dec = decode_shard(shard)
    v = store.videos.filter(store.videos["part_index"] == part_index)
    n = dec.n_videos
    assert v["video_id"].to_list() == dec.ids
    fo = dec.frame_offsets
    np.testing.assert_array_equal(v["n_frames"].to_numpy(), np.diff(fo))
    np.testing.assert_array_equal(v["record"].to_numpy(), np.arange(n))
    np.testing.assert_array_equal(v["record_offset"].to_numpy(), dec.record_offsets)
    assert set(v["fold"].to_list()) <= {fold_of(shard.name)}
    for i, row in enumerate(v["video_row"].to_list()):
        lab = dec.labels[dec.label_offsets[i] : dec.label_offsets[i + 1]]
        assert v["labels"][i].to_list() == lab.tolist()
        cls = to_class_index(lab)
        assert v["class_indices"][i].to_list() == cls[cls >= 0].tolist()
        np.testing.assert_array_equal(store.frames(row), dec.frames[fo[i] : fo[i + 1]])
    # an independent reader (zarr itself) sees the same frames
    part = store.parts[part_index]
    z = zarr.open_array(str(store.path / "parts" / part / "frames.zarr"), mode="r")
    np.testing.assert_array_equal(z[:], dec.frames[: fo[-1]])
    # rated segments, in record order, with windows from the definition
    s = store.segments.filter(store.segments["part_index"] == part_index)
    so = dec.segment_offsets
    np.testing.assert_array_equal(s["start_time"].to_numpy(), dec.segment_start_times)
    np.testing.assert_array_equal(s["label"].to_numpy(), dec.segment_labels)
    np.testing.assert_array_equal(s["score"].to_numpy(), dec.segment_scores)
    np.testing.assert_array_equal(s["class_index"].to_numpy(), to_class_index(dec.segment_labels))
    video = np.repeat(np.arange(n), np.diff(so))
    np.testing.assert_array_equal(s["video_row"].to_numpy(), v["video_row"].to_numpy()[video])
    nf = np.diff(fo)[video]
    lo, hi, pl_, pr = seg.window_spans(dec.segment_start_times, nf)
    want = np.empty((len(video), seg.WINDOW_FRAMES, FRAME_BYTES), np.uint8)
    seg.gather_windows_numpy(dec.frames, fo[video], lo, hi, pl_, want)
    np.testing.assert_array_equal(store.windows(s["segment_row"].to_numpy()), want)
    np.testing.assert_array_equal(s["pad_left"].to_numpy(), pl_)
    np.testing.assert_array_equal(s["pad_right"].to_numpy(), pr)
    np.testing.assert_array_equal(s["outside_video"].to_numpy(),
                                  seg.outside_video(dec.segment_start_times, nf))
    # candidates: plain numpy twin, windows gathered from frames
    c = store.candidates.filter(store.candidates["part_index"] == part_index)
    cv, ci = seg.candidates_numpy(np.diff(fo))
    np.testing.assert_array_equal(c["video_row"].to_numpy(), v["video_row"].to_numpy()[cv])
    np.testing.assert_array_equal(c["start_time"].to_numpy(), ci * seg.SEGMENT_FRAMES)
    pick = np.linspace(0, len(c) - 1, min(len(c), 50)).astype(int) if len(c) else []
    lo, hi, pl_, _ = seg.window_spans(ci[pick] * 5, np.diff(fo)[cv[pick]])
    want = np.empty((len(pick), seg.WINDOW_FRAMES, FRAME_BYTES), np.uint8)
    seg.gather_windows_numpy(dec.frames, fo[cv[pick]], lo, hi, pl_, want)
    rows = c["candidate_row"].to_numpy()[pick] if len(c) else []
    np.testing.assert_array_equal(store.candidate_windows(rows), want)
    # mined negatives
    neg = store.negatives(packed=True)[v["video_row"].to_numpy()]
    np.testing.assert_array_equal(neg, seg.negatives_numpy(
        dec.label_offsets, dec.labels, so, dec.segment_labels, dec.segment_scores,
        dec.has_labels))


@pytest.mark.slow
def test_synthetic_store_equals_decoder(tmp_path):
    shards = synth_shards(tmp_path / "src", shards=2, videos=80, beyond_end_rate=0.2,
                          min_frames=250)
    store = make_store(shards, tmp_path / "store", workers=1)
    assert store.parts == [s.stem for s in shards]
    for i, shard in enumerate(shards):
        assert_part_matches_decoder(store, i, shard)
    t = store.manifest["totals"]
    assert t["videos"] == 160 == len(store.videos)
    assert t["outside_video"] == int(store.segments["outside_video"].sum()) > 0
    assert t["positives"] == int((store.segments["score"] > 0).sum())
    assert verify_store(store.path) == []
    # the frames of part 0 span two Zarr shard files: the reader crosses the boundary
    assert store.manifest["parts"][0]["counts"]["frames"] > 16384


def test_test_split_store_has_no_segments(tmp_path):
    shards = synth_shards(tmp_path / "src", shards=1, videos=20, split="test")
    store = make_store(shards, tmp_path / "store")
    assert len(store.segments) == 0 and len(store.candidates) > 0
    assert not store.videos["has_labels"].any()
    assert not store.negatives().any()  # unlabelled videos: no negatives mined
    assert_part_matches_decoder(store, 0, shards[0])


def _sha(a) -> str:
    return hashlib.sha256(np.asarray(a, "<f4").tobytes()).hexdigest()


@pytest.mark.slow
def test_real_video_level_shards(tmp_path, real_dir):
    expected = json.loads((real_dir / "expected.json").read_text())
    srcs = sorted(real_dir.glob("*.tfrecord"))
    store = make_store(srcs, tmp_path / "store", workers=2)
    vl = store.video_level
    assert len(store.videos) == 0
    assert len(vl) == sum(e["records"] for e in expected.values())
    for entry in store.manifest["parts"]:
        exp = expected[entry["source"]]
        assert entry["source_bytes"] == (real_dir / entry["source"]).stat().st_size
        assert entry["kind"] == "video"
        rows = vl.filter(vl["source"] == entry["source"])
        assert rows["video_id"].to_list() == [x["id"] for x in exp["videos"]]
        for i, x in enumerate(exp["videos"]):
            assert rows["labels"][i].to_list() == (x["labels"] or [])
            assert bool(rows["has_labels"][i]) == (x["labels"] is not None)
            assert _sha(rows["mean_rgb"][i].to_numpy()) == x["mean_rgb_f32le_sha256"]
            assert _sha(rows["mean_audio"][i].to_numpy()) == x["mean_audio_f32le_sha256"]
        dec = decode_shard(real_dir / entry["source"])
        np.testing.assert_array_equal(np.stack(rows["mean_rgb"].to_numpy()), dec.mean_rgb)
    assert verify_store(store.path) == []


def _tf_videos(rng) -> list[Video]:
    ids = segment_class_ids()
    out = []
    for i, n in enumerate([1, 7, 39, 60, 151]):
        k = int(rng.integers(1, 4))
        out.append(Video(
            f"tf{i}", labels=rng.integers(0, 3862, 2),
            rgb=rng.integers(0, 256, (n, 1024), dtype=np.uint8),
            audio=rng.integers(0, 256, (n, 128), dtype=np.uint8),
            segment_labels=ids[rng.integers(0, 1000, k)].astype(np.int64),
            segment_start_times=np.array([(n // 5) * 5, 0, n + 10][:k], np.int64),
            segment_scores=np.ones(k, np.float32)))
    return out


@pytest.mark.tf
@pytest.mark.slow
def test_tensorflow_written_shard(tmp_path):
    tf = pytest.importorskip("tensorflow")
    videos = _tf_videos(np.random.default_rng(7))
    path = tmp_path / "tfwritten.tfrecord"

    def feat(kind, values):
        if kind == "bytes":
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        if kind == "int":
            return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    with tf.io.TFRecordWriter(str(path)) as w:
        for v in videos:
            ctx = {"id": feat("bytes", [v.id.encode()]), "labels": feat("int", v.labels),
                   "segment_labels": feat("int", v.segment_labels),
                   "segment_start_times": feat("int", v.segment_start_times),
                   "segment_scores": feat("float", v.segment_scores)}
            fl = {name: tf.train.FeatureList(feature=[feat("bytes", [r.tobytes()]) for r in arr])
                  for name, arr in (("rgb", v.rgb), ("audio", v.audio))}
            ex = tf.train.SequenceExample(context=tf.train.Features(feature=ctx),
                                          feature_lists=tf.train.FeatureLists(feature_list=fl))
            w.write(ex.SerializeToString())
    store = make_store([path], tmp_path / "store")
    assert_part_matches_decoder(store, 0, path)
    for row, v in enumerate(videos):  # and against the videos TensorFlow was given
        np.testing.assert_array_equal(store.frames(row), np.concatenate([v.rgb, v.audio], 1))
    s = store.segments
    assert s["start_time"].to_list() == np.concatenate(
        [v.segment_start_times for v in videos]).tolist()
    assert store.manifest["totals"]["outside_video"] == int(
        sum((v.segment_start_times >= v.n_frames).sum() for v in videos))


def test_store_copy_is_self_contained(tmp_path):
    """A store moved elsewhere still opens and verifies (no absolute paths inside)."""
    shards = synth_shards(tmp_path / "src", shards=1, videos=10)
    make_store(shards, tmp_path / "a")
    shutil.move(tmp_path / "a", tmp_path / "b")
    assert verify_store(tmp_path / "b") == []
    assert len(Store(tmp_path / "b").videos) == 10


def test_folds_spread_over_names_that_differ_in_one_digit():
    counts = collections.Counter(fold_of(f"train{i:04d}.tfrecord") for i in range(3844))
    assert set(counts) == set(range(N_FOLDS))
    assert max(counts.values()) < 1.2 * 3844 / N_FOLDS
    assert len({fold_of(f"validate-{i:05d}-of-00008.tfrecord") for i in range(8)}) >= 4


class _AnyChecksum:
    """Compares equal to every checksum: a store whose file CRCs were rewritten to match."""

    def __eq__(self, other):
        return True

    def __ne__(self, other):
        return False


def test_verify_finds_bytes_in_a_window_outside_its_video(tmp_path, monkeypatch):
    shards = synth_shards(tmp_path / "src", shards=1, videos=20, beyond_end_rate=0.3)
    store = make_store(shards, tmp_path / "store", workers=1)
    s = store.segments
    nf = store.videos["n_frames"].to_numpy()[s["video_index"].to_numpy()]
    lo, hi, _, _ = seg.window_spans(s["start_time"].to_numpy(), nf)
    row = int(np.flatnonzero(hi <= lo)[0])  # a window with no frame of its video
    assert verify_store(store.path) == []
    z = zarr.open_array(str(store.path / "parts" / store.parts[0] / "windows.zarr"), mode="r+")
    z[row, 5, 7] = 1
    monkeypatch.setattr("ingest.store.verify.file_checksum", lambda path: (0, _AnyChecksum()))
    assert (f"{store.parts[0]}: windows.zarr has non-zero bytes in a window outside its video"
            in verify_store(store.path))


def test_tables_do_not_depend_on_the_chunk_size(tmp_path, real_dir):
    """Chunks reuse the decoder's buffers: no table column may still point into them."""
    shards = synth_shards(tmp_path / "src", shards=1, videos=40, beyond_end_rate=0.2)
    small = make_store(shards, tmp_path / "small", workers=1, chunk_bytes=64 << 10)
    whole = make_store(shards, tmp_path / "whole", workers=1, chunk_bytes=1 << 30)
    for name in ("videos", "segments", "candidates"):
        assert getattr(small, name).equals(getattr(whole, name)), name
    real = [real_dir / "validate00_video_level_2018.tfrecord"]  # real video-level records
    a = make_store(real, tmp_path / "real-small", workers=1, chunk_bytes=16 << 10)
    b = make_store(real, tmp_path / "real-whole", workers=1, chunk_bytes=1 << 30)
    assert len(a.video_level) > 100 and a.video_level.equals(b.video_level)


def test_mined_negatives_follow_the_paper_end_to_end(tmp_path, monkeypatch):
    """§3.6 through convert, the reader and verify: a class rated only negatively in a
    video (not among its labels) is a mined negative; one rated positive, or a label, is
    not. (Synthetic shards rate only labelled classes, where the two rules agree.)"""
    a, b, c = (int(x) for x in segment_class_ids()[[1, 2, 3]])
    ca, cb, cc = (int(x) for x in to_class_index(np.array([a, b, c])))
    rng = np.random.default_rng(0)
    video = Video("v", labels=np.array([a]), rgb=rng.integers(0, 256, (60, 1024), np.uint8),
                  audio=rng.integers(0, 256, (60, 128), np.uint8),
                  segment_labels=np.array([b, c]), segment_start_times=np.array([30, 35]),
                  segment_scores=np.array([1.0, 0.0], np.float32))
    write_tfrecord(tmp_path / "hand.tfrecord", [encode_video(video)])
    store = make_store([tmp_path / "hand.tfrecord"], tmp_path / "store")
    neg = store.negatives()[0]
    assert neg[cc] and not neg[ca] and not neg[cb] and int(neg.sum()) == 998
    assert verify_store(store.path) == []
    # negatives mined by the rule of store format 2 (every rated class left out), with the
    # file checksums made to match: verify mines them again and finds the difference
    old = store.negatives(packed=True).copy()
    old[0, cc >> 3] &= ~np.uint8(1 << (cc & 7))
    np.save(store.path / "parts" / "hand" / "negatives.npy", old)
    monkeypatch.setattr("ingest.store.verify.file_checksum", lambda path: (0, _AnyChecksum()))
    assert verify_store(store.path) == [
        "hand: negatives.npy differs from the negatives mined from the tables (§3.6)"]
