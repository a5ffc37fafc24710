"""`ingest synth`: determinism, the distributions of what it draws, truth, CLI behaviour."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from ingest.cli.main import main
from ingest.codec.encode import encode_sequence_example
from ingest.codec.tfrecord import write_tfrecord
from ingest.errors import IngestError
from ingest.store.segments import DROP_FIRST_SEGMENTS, DROP_LAST_SEGMENTS, candidates
from ingest.store.truth import read_truth
from ingest.synth.shards import (
    POSITIVE_RATE,
    SynthConfig,
    iter_shard,
    shard_name,
    shard_truth,
    synth_shard,
    write_synth,
)
from ingest.synth.world import dequantize, make_world
from ingest.vocab import N_VOCAB, segment_class_ids, to_class_index
from tests.ingest.clirun import one_line_error
from tests.readonly import error_line, run_read_only, script

VALIDATE = SynthConfig(split="validate", videos_per_shard=150, seed=5)


@pytest.fixture(scope="module")
def validate_videos():
    return synth_shard(VALIDATE, "validate", 0) + synth_shard(VALIDATE, "validate", 1)


def _frames(v):
    return np.concatenate([v.rgb, v.audio], axis=1)


# ------------------------------------------------------------------ determinism

def test_same_seed_same_bytes_and_shard_alone(tmp_path):
    cfg = SynthConfig(out_dir=str(tmp_path / "a"), split="validate", shards=3,
                      videos_per_shard=6, seed=9, edge_cases=True, beyond_end_rate=0.3)
    paths = write_synth(cfg, progress=False)
    again = write_synth(SynthConfig(**{**cfg.__dict__, "out_dir": str(tmp_path / "b")}),
                        progress=False)
    assert [p.name for p in paths] == [shard_name("validate", k, 3) for k in range(3)]
    for p, q in zip(paths, again):
        assert p.read_bytes() == q.read_bytes()
    # shard 2 alone, from synth_shard, is byte-identical to the file
    alone = tmp_path / "alone.tfrecord"
    write_tfrecord(alone, [encode_sequence_example(v) for v in synth_shard(cfg, "validate", 2)])
    assert alone.read_bytes() == paths[2].read_bytes()
    # the shard count does not change a shard's content
    one = synth_shard(SynthConfig(split="validate", shards=1, videos_per_shard=6, seed=9,
                                  edge_cases=True, beyond_end_rate=0.3), "validate", 2)
    assert [encode_sequence_example(v) for v in one] == [
        encode_sequence_example(v) for v in synth_shard(cfg, "validate", 2)]
    assert not list(tmp_path.glob("**/*.tmp-*"))


def test_seed_split_and_shard_change_the_data():
    cfg = SynthConfig(videos_per_shard=3, seed=1)
    base = synth_shard(cfg, "train", 0)
    others = [synth_shard(cfg, "train", 1), synth_shard(SynthConfig(videos_per_shard=3, seed=2),
                                                        "train", 0),
              synth_shard(cfg, "validate", 0)]
    for other in others:
        assert not np.array_equal(base[0].rgb[:1], other[0].rgb[:1])
    ids = {v.id for vs in [base, *others] for v in vs}
    assert len(ids) == 12  # ids are unique across seeds, splits and shards


def test_world_is_shared_across_seeds():
    """Train and validate drawn with different seeds show the same class patterns."""
    world = make_world(0)
    for seed in (1, 2):
        cfg = SynthConfig(split="validate", videos_per_shard=60, seed=seed)
        diff = []
        for v in synth_shard(cfg, "validate", 0):
            if v.segment_labels is None:
                continue
            x = dequantize(_frames(v))
            c = int(to_class_index(v.segment_labels[:1])[0])
            proj = [(x[s:s + 5].mean(0) - x.mean(0)) @ world.pattern[c]
                    for s in v.segment_start_times]
            diff += [p * (1 if sc else -1) for p, sc in zip(proj, v.segment_scores)]
        assert np.mean(diff) > 0.2  # positives carry the world-0 pattern of their class


# ------------------------------------------------------------------ distributions

def test_labels(validate_videos):
    world = make_world(0)
    counts = np.array([len(v.labels) for v in validate_videos])
    assert counts.min() >= 1 and counts.max() <= 5 and len(set(counts)) == 5
    seg_ids = set(segment_class_ids().tolist())
    per_class = np.zeros(N_VOCAB, int)
    for v in validate_videos:
        assert v.labels.dtype == np.int64 and len(set(v.labels)) == len(v.labels)
        assert ((v.labels >= 0) & (v.labels < N_VOCAB)).all()
        assert int(v.labels[0]) in seg_ids  # every video has a segment class
        cls = to_class_index(v.labels)
        cls = set(cls[cls >= 0].tolist())
        assert not any(int(world.partner[c]) in cls for c in cls)  # never both partners
        per_class[v.labels] += 1
    seg_counts = np.sort(per_class[segment_class_ids()])[::-1]
    assert seg_counts[0] >= 10 * max(1, np.median(seg_counts))  # skewed (Zipf-like)
    assert (seg_counts > 0).sum() > 100  # and many segment classes present
    assert (per_class > 0).sum() > (seg_counts > 0).sum()  # non-segment classes too


def test_lengths_default_and_edge_cases():
    vs = synth_shard(SynthConfig(videos_per_shard=150, seed=3), "train", 0)
    n = np.array([v.n_frames for v in vs])
    assert n.min() >= 120 and n.max() <= 300 and n.min() < 130 and n.max() > 290
    vs = synth_shard(SynthConfig(videos_per_shard=50, seed=3, min_frames=50, max_frames=60),
                     "train", 0)
    assert {v.n_frames for v in vs} <= set(range(50, 61))
    vs = synth_shard(SynthConfig(split="validate", videos_per_shard=250, seed=3,
                                 edge_cases=True), "validate", 0)
    n = np.array([v.n_frames for v in vs])
    assert (n == 1).sum() >= 5 and (n == 300).sum() >= 5 and ((n > 1) & (n < 40)).sum() >= 10
    for v in vs:
        assert v.rgb.shape == (v.n_frames, 1024) and v.audio.shape == (v.n_frames, 128)
        if v.n_frames < 45:  # 8 segments or fewer: no segment 6 .. n_seg - 3
            assert v.segment_labels is None and v.segment_scores is None


def test_ratings(validate_videos):
    scores, with_end, n_rated = [], 0, []
    for v in validate_videos:
        if v.segment_labels is None:
            assert v.n_frames // 5 - DROP_LAST_SEGMENTS <= DROP_FIRST_SEGMENTS
            continue
        s = v.segment_start_times
        assert s.dtype == np.int64 and v.segment_labels.dtype == np.int64
        assert v.segment_scores.dtype == np.float32
        assert (s % 5 == 0).all() and len(set(s)) == len(s) and (np.diff(s) > 0).all()
        seg = s // 5
        assert (seg >= DROP_FIRST_SEGMENTS).all()
        assert (seg <= -(-v.n_frames // 5) - 1 - DROP_LAST_SEGMENTS).all()
        assert (s + 5 <= v.n_frames).all()  # whole segments
        assert len(set(v.segment_labels)) == 1 and int(v.segment_labels[0]) in v.labels
        assert to_class_index(v.segment_labels[:1])[0] >= 0
        assert set(v.segment_scores.tolist()) <= {0.0, 1.0}
        if v.segment_end_times is not None:
            with_end += 1
            np.testing.assert_array_equal(v.segment_end_times, s + 5)
        scores.append(v.segment_scores)
        n_rated.append(len(s))
    scores = np.concatenate(scores)
    assert abs(scores.mean() - POSITIVE_RATE) < 0.05
    assert 0.3 < with_end / len(n_rated) < 0.7
    assert 4.5 < np.mean(n_rated) <= 5.0


def test_rated_segments_lie_within_the_candidates(validate_videos):
    n = np.array([v.n_frames for v in validate_videos])
    video, index = candidates(n)
    cand = set(zip(video.tolist(), index.tolist()))
    for i, v in enumerate(validate_videos):
        for s in [] if v.segment_start_times is None else v.segment_start_times:
            assert (i, int(s) // 5) in cand


def test_positive_means_the_event_is_there(validate_videos):
    """Projection of a rated segment (minus its video mean) on the class pattern: pos >> neg."""
    world = make_world(0)
    pos, neg = [], []
    for v in validate_videos:
        if v.segment_labels is None:
            continue
        x = dequantize(_frames(v))
        c = int(to_class_index(v.segment_labels[:1])[0])
        for s, sc in zip(v.segment_start_times, v.segment_scores):
            p = (x[s:s + 5].mean(0) - x.mean(0)) @ world.pattern[c]
            (pos if sc else neg).append(p)
    norm2 = float(world.pattern[0] @ world.pattern[0])
    # a positive segment carries the whole pattern, a negative none (the video mean
    # carries ~EVENT_RATE of it in both cases)
    assert abs((np.mean(pos) - np.mean(neg)) / norm2 - 1) < 0.15
    assert np.mean(np.array(pos)[:, None] > np.array(neg)[None, :]) > 0.95


def test_beyond_end_ratings():
    cfg = SynthConfig(split="validate", videos_per_shard=80, seed=4, beyond_end_rate=1.0)
    rated = [v for v in synth_shard(cfg, "validate", 0) if v.segment_labels is not None]
    assert rated
    for v in rated:
        assert (v.segment_start_times >= v.n_frames).sum() == 1
        assert (v.segment_start_times % 5 == 0).all()


def test_train_has_labels_only():
    for v in synth_shard(SynthConfig(videos_per_shard=30), "train", 0):
        assert v.labels is not None and len(v.labels) >= 1
        assert v.segment_labels is None and v.segment_start_times is None
        assert v.segment_end_times is None and v.segment_scores is None


def test_test_split_and_truth(tmp_path):
    cfg = SynthConfig(out_dir=str(tmp_path), split="test", shards=2, videos_per_shard=40,
                      seed=6, edge_cases=True)
    paths = write_synth(cfg, progress=False)
    assert [p.name for p in paths] == [shard_name("test", 0, 2), shard_name("test", 1, 2),
                                       "truth.parquet"]
    truth = read_truth(paths[-1])
    assert truth.columns == ["video_id", "start_time", "label", "class_index", "score"]
    expect = pl.concat([shard_truth(cfg, 0), shard_truth(cfg, 1)])
    assert truth.equals(expect)
    world = make_world(0)
    videos = {}
    for k in range(2):
        for v, r in iter_shard(cfg, "test", k):
            assert v.labels is None and v.segment_labels is None
            assert v.segment_start_times is None and v.segment_scores is None
            videos[v.id] = v
    assert set(truth["video_id"]) <= set(videos)
    assert len(truth) > 4 * 60 and abs(truth["score"].mean() - POSITIVE_RATE) < 0.08
    np.testing.assert_array_equal(truth["class_index"].to_numpy(),
                                  to_class_index(truth["label"].to_numpy()))
    gap = []
    for vid, start, c, score in truth.select("video_id", "start_time", "class_index",
                                             "score").iter_rows():
        v = videos[vid]
        assert start % 5 == 0 and DROP_FIRST_SEGMENTS * 5 <= start <= v.n_frames - 15
        x = dequantize(_frames(v))
        p = (x[start:start + 5].mean(0) - x.mean(0)) @ world.pattern[c]
        gap.append(p if score else -p)
    assert np.mean(gap) > 0.2


# ------------------------------------------------------------------ config and CLI

@pytest.mark.parametrize("kwargs", [
    {"split": "dev"}, {"shards": 0}, {"videos_per_shard": -1}, {"min_frames": 0},
    {"max_frames": 301}, {"min_frames": 200, "max_frames": 100}, {"beyond_end_rate": 1.5},
    {"seed": -1},
])
def test_config_rejects_bad_values(kwargs):
    with pytest.raises(IngestError):
        SynthConfig(**kwargs)


def test_cli_writes_shards(tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["synth", str(out), "--split", "validate", "--shards", "2",
                                    "--videos-per-shard", "3", "--seed", "4", "--edge-cases",
                                    "--quiet"])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == [shard_name("validate", k, 2)
                                                     for k in range(2)]
    cfg = SynthConfig(split="validate", videos_per_shard=3, seed=4, edge_cases=True)
    alone = tmp_path / "alone.tfrecord"
    write_tfrecord(alone, [encode_sequence_example(v) for v in synth_shard(cfg, "validate", 1)])
    assert alone.read_bytes() == (out / shard_name("validate", 1, 2)).read_bytes()


def test_cli_user_mistake_is_one_line(tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["synth", str(out), "--min-frames", "200",
                                    "--max-frames", "100"])
    assert res.exit_code == 1
    assert "Traceback" not in res.output and "--min-frames" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not out.exists()


def test_cli_help():
    res = CliRunner().invoke(main, ["synth", "--help"])
    assert res.exit_code == 0 and "--edge-cases" in res.output and "--world-seed" in res.output


@pytest.mark.parametrize("split, clash", [("validate", "validate-00001-of-00002.tfrecord"),
                                          ("test", "truth.parquet")])
def test_cli_refuses_to_overwrite_unless_asked(tmp_path, split, clash):
    out = tmp_path / "out"
    out.mkdir()
    (out / clash).write_bytes(b"someone's file")
    (out / "other.txt").write_text("not ours to touch")
    args = ["synth", str(out), "--split", split, "--shards", "2", "--videos-per-shard", "2",
            "--quiet"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert lines == [(f"Error: {out / clash}: exists already; give --overwrite to replace "
                      "them, or another OUT_DIR")]
    assert sorted(p.name for p in out.iterdir()) == sorted([clash, "other.txt"])  # untouched
    assert (out / clash).read_bytes() == b"someone's file"
    res = CliRunner().invoke(main, [*args, "--overwrite"])
    assert res.exit_code == 0, res.output
    assert (out / clash).read_bytes() != b"someone's file"
    assert (out / "other.txt").read_text() == "not ours to touch"
    again = CliRunner().invoke(main, args)  # now every file it would write exists
    assert again.exit_code == 1
    first = "test-00000-of-00002.tfrecord" if split == "test" else \
        "validate-00000-of-00002.tfrecord"
    n_files = 3 if split == "test" else 2
    assert f"{out / first}: exists already (and {n_files - 1} more of the files to write)" \
        in again.output


def test_cli_output_that_cannot_be_written_is_one_line(tmp_path):
    """(Before: a mkdir / open traceback.)"""
    (tmp_path / "afile").write_text("x")
    args = ["--split", "test", "--shards", "1", "--videos-per-shard", "2", "--quiet"]
    line = one_line_error(CliRunner().invoke(main, ["synth", str(tmp_path / "afile" / "s"),
                                                    *args]))
    assert line == f"Error: {tmp_path / 'afile' / 's'}: cannot create the folder (Not a " \
                   f"directory: {tmp_path / 'afile' / 's'})"
    ro = tmp_path / "ro"
    ro.mkdir()
    res = run_read_only(ro, [script("ingest"), "synth", ro / "s", *args])
    assert error_line(res) == f"Error: {ro / 's'}: cannot create the folder (Read-only file " \
                              f"system: {ro / 's'})"
    res = run_read_only(ro, [script("ingest"), "synth", ro, *args])  # an existing folder
    assert error_line(res) == (f"Error: {ro / 'test-00000-of-00001.tfrecord'}: cannot write "
                               f"(read-only file system: {ro})")
    assert list(ro.iterdir()) == []
