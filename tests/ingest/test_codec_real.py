"""The three real video-level shards decode to exactly TensorFlow's values (expected.json)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from ingest.codec.decode import ShardDecoder, decode_shard

SHARDS = ["test0z_video_level_2018.tfrecord", "validate0067_video_level_2018.tfrecord",
          "validate00_video_level_2018.tfrecord"]


def sha256(arr: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(arr, "<f4").tobytes()).hexdigest()


@pytest.fixture(scope="module")
def expected(real_dir):
    return json.loads((real_dir / "expected.json").read_text())


@pytest.mark.parametrize("name", SHARDS)
def test_real_shard_matches_tensorflow(real_dir, expected, name):
    want = expected[name]
    path = real_dir / name
    assert hashlib.sha256(path.read_bytes()).hexdigest() == want["sha256"]
    got = decode_shard(path)
    assert got.kind == "video" and got.n_videos == want["records"] == len(want["videos"])
    assert got.ids == [v["id"] for v in want["videos"]]
    for i, v in enumerate(want["videos"]):
        labels = got.labels[got.label_offsets[i] : got.label_offsets[i + 1]].tolist()
        assert (labels if got.has_labels[i] else None) == v["labels"]
        assert got.mean_rgb[i].shape == (v["mean_rgb_len"],)
        assert got.mean_audio[i].shape == (v["mean_audio_len"],)
        assert sha256(got.mean_rgb[i]) == v["mean_rgb_f32le_sha256"]
        assert sha256(got.mean_audio[i]) == v["mean_audio_f32le_sha256"]
        assert got.mean_rgb[i, :3].tolist() == v["mean_rgb_first3"]
    assert got.frames.shape == (0, 1152) and got.segment_labels.shape == (0,)
    assert got.skipped == []


def test_real_shards_in_small_chunks_equal_whole(real_dir):
    dec = ShardDecoder()
    for name in SHARDS:
        whole = decode_shard(real_dir / name)
        ids, rgb = [], []
        for chunk in dec.iter_chunks(real_dir / name, chunk_bytes=64 << 10):
            ids += chunk.ids
            rgb.append(chunk.mean_rgb.copy())
        assert ids == whole.ids
        np.testing.assert_array_equal(np.concatenate(rgb), whole.mean_rgb)
