"""TensorFlow parses `ingest synth` shards to exactly the values that were written."""
from __future__ import annotations

import numpy as np
import pytest

from ingest.synth.shards import SynthConfig, synth_shard, write_synth

pytestmark = [pytest.mark.tf, pytest.mark.slow]  # importing TensorFlow takes ~6 s


def _parse(path):
    tf = pytest.importorskip("tensorflow")
    ctx = {"id": tf.io.FixedLenFeature([], tf.string)}
    for key in ("labels", "segment_labels", "segment_start_times", "segment_end_times"):
        ctx[key] = tf.io.VarLenFeature(tf.int64)
    ctx["segment_scores"] = tf.io.VarLenFeature(tf.float32)
    seq = {k: tf.io.FixedLenSequenceFeature([], tf.string) for k in ("rgb", "audio")}
    out = []
    for rec in tf.data.TFRecordDataset(str(path)):
        c, s = tf.io.parse_single_sequence_example(rec, ctx, seq)
        out.append({
            "id": c["id"].numpy().decode(),
            **{k: tf.sparse.to_dense(c[k]).numpy() for k in ctx if k != "id"},
            "rgb": tf.io.decode_raw(s["rgb"], tf.uint8).numpy(),
            "audio": tf.io.decode_raw(s["audio"], tf.uint8).numpy(),
        })
        # keys absent from the record must be absent, not empty: check via the proto
        proto = tf.train.SequenceExample.FromString(rec.numpy())
        out[-1]["keys"] = set(proto.context.feature)
    return out


@pytest.mark.parametrize("split", ["train", "validate", "test"])
def test_tensorflow_parses_synth_shards(tmp_path, split):
    cfg = SynthConfig(out_dir=str(tmp_path), split=split, videos_per_shard=25, seed=8,
                      edge_cases=True, beyond_end_rate=0.2)
    path = write_synth(cfg, progress=False)[0]
    parsed = _parse(path)
    videos = synth_shard(cfg, split, 0)
    assert len(parsed) == len(videos)
    for p, v in zip(parsed, videos):
        assert p["id"] == v.id
        want = {"id"} | {k for k in ("labels", "segment_labels", "segment_start_times",
                                     "segment_end_times", "segment_scores")
                         if getattr(v, k) is not None}
        assert p["keys"] == want
        for k in want - {"id"}:
            np.testing.assert_array_equal(p[k], getattr(v, k))
        assert p["rgb"].reshape(-1, 1024).shape[0] == v.n_frames
        np.testing.assert_array_equal(p["rgb"].reshape(v.n_frames, 1024), v.rgb)
        np.testing.assert_array_equal(p["audio"].reshape(v.n_frames, 128), v.audio)
