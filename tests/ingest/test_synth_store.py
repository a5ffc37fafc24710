"""Synth → `ingest convert` → the store's rated segments are exactly the drawn ratings."""
from __future__ import annotations

from click.testing import CliRunner

from ingest.cli.main import main
from ingest.store.truth import read_truth
from ingest.synth.shards import SynthConfig, iter_shard, truth_table, write_synth


def test_store_truth_equals_synth_ratings(tmp_path):
    cfg = SynthConfig(out_dir=str(tmp_path / "src"), split="validate", shards=2,
                      videos_per_shard=25, seed=3, edge_cases=True, beyond_end_rate=0.3)
    write_synth(cfg, progress=False)
    res = CliRunner().invoke(main, ["convert", str(tmp_path / "src" / "*.tfrecord"),
                                    "--out", str(tmp_path / "store"), "--workers", "1",
                                    "--quiet"])
    assert res.exit_code == 0, res.output
    rows = [(v.id, r) for k in range(2) for v, r in iter_shard(cfg, "validate", k)
            if r is not None]
    want = truth_table(rows).sort(["video_id", "start_time"])
    got = read_truth(tmp_path / "store").sort(["video_id", "start_time"])
    assert len(want) > 100 and got.equals(want)
