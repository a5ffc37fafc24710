"""`ingest synth --short-ids`: 4-character ids as the real dataset's, unique within a call
and across the splits of a seed; nothing else in the shards changes."""
from __future__ import annotations

import numpy as np
from click.testing import CliRunner

from ingest.cli.main import main
from ingest.codec import decode_shard
from ingest.synth.shards import SHORT_ID_ALPHABET, SynthConfig, short_id, synth_shard


def test_short_ids_are_4_characters_unique_per_call_and_split():
    ids = {}
    for split in ("train", "validate", "test"):
        config = SynthConfig(split=split, shards=3, videos_per_shard=40, short_ids=True)
        found = [v.id for k in range(3) for v in synth_shard(config, split, k)]
        assert len(set(found)) == 120
        assert all(len(i) == 4 and set(i) <= set(SHORT_ID_ALPHABET) for i in found)
        ids[split] = set(found)
    assert not (ids["train"] & ids["validate"] or ids["train"] & ids["test"]
                or ids["validate"] & ids["test"])
    assert [short_id(n) for n in (0, 61, 62, 62**4 - 1)] == ["0000", "000z", "0010", "zzzz"]


def test_only_the_ids_change(tmp_path):
    for flag in ([], ["--short-ids"]):
        out = tmp_path / ("short" if flag else "long")
        result = CliRunner().invoke(main, ["synth", str(out), "--split", "validate",
                                           "--videos-per-shard", "6", "--quiet", *flag])
        assert result.exit_code == 0, result.output
    (long_shard,), (short_shard,) = (sorted((tmp_path / d).glob("*.tfrecord"))
                                     for d in ("long", "short"))
    long, short = decode_shard(long_shard), decode_shard(short_shard)
    assert [len(i) for i in short.ids] == [4] * 6 and long.ids[0].startswith("V0_")
    for name in ("frame_offsets", "frames", "labels", "segment_labels", "segment_start_times",
                 "segment_scores"):
        np.testing.assert_array_equal(getattr(long, name), getattr(short, name), err_msg=name)


def test_too_many_videos_for_short_ids_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["synth", str(tmp_path), "--shards", "5000",
                                       "--videos-per-shard", "1000", "--short-ids"])
    assert result.exit_code == 1 and "at most 4,925,445 videos per call" in result.output
