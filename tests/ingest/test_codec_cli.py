"""`ingest decode`: per-shard summary lines, --json, and one-line errors."""
from __future__ import annotations

import json

import numpy as np
from click.testing import CliRunner

from ingest.cli.main import main
from ingest.codec import encode as E
from ingest.codec.tfrecord import write_tfrecord
from ingest.codec.video import Video


def shard(path, n_videos: int, frames: int, segments: int = 0):
    rng = np.random.default_rng(0)
    videos = [Video(f"v{i}", labels=np.array([1, 2]),
                    rgb=rng.integers(0, 256, (frames, 1024), dtype=np.uint8),
                    audio=rng.integers(0, 256, (frames, 128), dtype=np.uint8),
                    segment_labels=np.ones(segments, np.int64) if segments else None,
                    segment_start_times=np.zeros(segments, np.int64) if segments else None,
                    segment_scores=np.ones(segments, np.float32) if segments else None)
              for i in range(n_videos)]
    write_tfrecord(path, [E.encode_video(v) for v in videos])
    return str(path)


def test_decode_json(tmp_path):
    a = shard(tmp_path / "a.tfrecord", 3, 4, segments=2)
    b = shard(tmp_path / "b.tfrecord", 2, 1)
    res = CliRunner().invoke(main, ["decode", "--json", "--quiet", a, b])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in res.output.splitlines()]
    assert [(r["kind"], r["videos"], r["frames"], r["rated_segments"]) for r in rows] == [
        ("frame", 3, 12, 6), ("frame", 2, 2, 0)]
    assert rows[0]["bytes"] == (tmp_path / "a.tfrecord").stat().st_size
    assert rows[0]["mb_per_s"] > 0 and rows[0]["skipped"] == 0


def test_decode_text_and_errors(tmp_path, real_dir):
    real = str(real_dir / "validate00_video_level_2018.tfrecord")
    res = CliRunner().invoke(main, ["decode", "--quiet", real])
    assert res.exit_code == 0, res.output
    assert "video-level, 312 videos, 0 frames, 0 rated segments, 1469972 bytes" in res.output
    bad = tmp_path / "bad.tfrecord"
    bad.write_bytes((real_dir / "validate00_video_level_2018.tfrecord").read_bytes()[:5000])
    res = CliRunner().invoke(main, ["decode", "--quiet", str(bad)])
    assert res.exit_code == 1
    assert res.output.strip().startswith(f"Error: {bad}: record 1 at byte ")
    assert "truncated" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["decode", str(tmp_path / "missing.tfrecord")])
    assert res.exit_code == 1 and "no such file" in res.output
