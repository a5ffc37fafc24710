"""`ingest synth --classes N`: only the N most popular segment classes are labels, events
and ratings. (With the default, 1000, no draw changes: the rest of tests/ingest passes as before.)"""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from ingest.cli.main import main
from ingest.errors import IngestError
from ingest.synth import SynthConfig, iter_shard, make_world
from ingest.synth.shards import popular_classes
from ingest.vocab import to_class_index


def test_popular_classes_are_the_most_frequent():
    world = make_world(0)
    keep = popular_classes(world, 50)
    weight = np.diff(world.segment_cdf, prepend=0.0)
    assert keep.sum() == 50 and weight[keep].min() >= weight[~keep].max()
    partner = world.partner[keep]
    assert (partner >= 0).sum() == 10  # pairs of rank 10i, 10i+1: 5 pairs among the top 50


def test_only_classes_in_use_are_labels_and_ratings():
    cfg = SynthConfig(split="validate", videos_per_shard=80, seed=4, classes=20)
    keep = popular_classes(make_world(0), 20)
    seen = set()
    for video, ratings in iter_shard(cfg, "validate", 0):
        cls = to_class_index(np.asarray(video.labels))
        assert keep[cls[cls >= 0]].all()
        if ratings is not None and len(ratings.labels):
            assert keep[to_class_index(ratings.labels)].all()
        seen.update(cls[cls >= 0].tolist())
    assert len(seen) > 5


def test_bad_class_counts(tmp_path):
    with pytest.raises(IngestError, match="--classes"):
        SynthConfig(classes=1)
    result = CliRunner().invoke(main, ["synth", str(tmp_path), "--classes", "1001"])
    assert result.exit_code == 2
