"""Round trip: `ingest synth` shards decoded by `ingest.codec.decode` give back what was drawn."""
from __future__ import annotations

import numpy as np
import pytest

from ingest.codec.decode import decode_shard
from ingest.codec.encode import encode_sequence_example
from ingest.codec.tfrecord import FOOTER_BYTES, HEADER_BYTES
from ingest.codec.video import DecodedShard
from ingest.synth.shards import SynthConfig, synth_shard, write_synth
from tests.ingest.pydecode import assert_same_shard


def _assert_same(got: DecodedShard, want: DecodedShard) -> None:
    assert got.kind == want.kind == "frame"
    assert got.ids == want.ids and got.skipped == want.skipped == []
    assert_same_shard(got, want)  # every column (record offsets are checked below)


@pytest.mark.parametrize("split", ["train", "validate", "test"])
@pytest.mark.parametrize("edge_cases", [False, True])
def test_decode_round_trip(tmp_path, split, edge_cases):
    cfg = SynthConfig(out_dir=str(tmp_path), split=split, shards=2, videos_per_shard=30,
                      seed=12, edge_cases=edge_cases, beyond_end_rate=0.3)
    paths = write_synth(cfg, progress=False)
    for k in range(2):
        videos = synth_shard(cfg, split, k)
        got = decode_shard(paths[k])
        _assert_same(got, DecodedShard.from_videos(videos))
        sizes = [HEADER_BYTES + len(encode_sequence_example(v)) + FOOTER_BYTES for v in videos]
        np.testing.assert_array_equal(got.record_offsets, np.cumsum([0] + sizes[:-1]))
        assert got.has_labels.all() == (split != "test") and got.has_labels.any() == (
            split != "test")
        if split != "validate":
            assert len(got.segment_labels) == 0
