"""`ingest.truth.read_truth` from a truth file or a store directory, and its errors."""
from __future__ import annotations

import json

import polars as pl
import pytest

from ingest.store.layout import COUNT_KEYS, FORMAT_VERSION
from ingest.store.truth import TRUTH_SCHEMA, TruthError, read_truth


def table(n, offset=0, **overrides):
    data = {
        "video_id": [f"v{i + offset}" for i in range(n)],
        "start_time": pl.Series([5 * i for i in range(n)], dtype=pl.Int32),
        "label": pl.Series([3] * n, dtype=pl.Int32),
        "class_index": pl.Series([0] * n, dtype=pl.Int16),
        "score": pl.Series([1.0] * n, dtype=pl.Float32),
    }
    data.update(overrides)
    return pl.DataFrame(data)


def test_truth_file(tmp_path):
    table(4).with_columns(pl.lit(1).alias("extra")).write_parquet(tmp_path / "truth.parquet")
    got = read_truth(tmp_path / "truth.parquet")
    assert got.schema == pl.Schema(TRUTH_SCHEMA)
    assert got.equals(table(4))


def write_manifest(store, parts):
    """A manifest as `ingest convert` writes it, listing `parts` (their tables are the
    test's; the counts and checksums are not looked at by the truth reader)."""
    counts = dict.fromkeys(COUNT_KEYS, 0)
    entries = [{"format_version": FORMAT_VERSION, "part": p, "source": f"{p}.tfrecord",
                "source_path": f"../{p}.tfrecord", "source_bytes": 0, "source_mtime_ns": 0,
                "source_crc32c": "00000000", "fold": 0, "kind": "frame", "counts": counts,
                "skipped_records": [], "files": {}} for p in parts]
    (store / "manifest.json").write_text(json.dumps(
        {"format_version": FORMAT_VERSION, "frames_layout": {}, "windows_layout": {},
         "parts": entries, "skipped_shards": [], "folds": [0],
         "totals": {**counts, "parts": len(parts), "source_bytes": 0}}))


def test_store_parts_concatenated_and_widths_cast(tmp_path):
    for i, name in enumerate(["part-b", "part-a", "part-c"]):
        (tmp_path / "parts" / name).mkdir(parents=True)
        t = table(3, offset=10 * i).with_columns(pl.col("start_time").cast(pl.Int64))
        t.write_parquet(tmp_path / "parts" / name / "segments.parquet")
    write_manifest(tmp_path, ["part-a", "part-b"])  # part-c: on disk, not in the manifest
    got = read_truth(tmp_path)
    assert got.schema == pl.Schema(TRUTH_SCHEMA)
    assert got["video_id"].to_list() == ["v10", "v11", "v12", "v0", "v1", "v2"]  # manifest order


def test_incomplete_store_refused(tmp_path):
    (tmp_path / "parts" / "part-a").mkdir(parents=True)
    table(2).write_parquet(tmp_path / "parts" / "part-a" / "segments.parquet")
    with pytest.raises(TruthError, match="not a complete store .*no manifest.json"):
        read_truth(tmp_path)  # a conversion that has not finished
    write_manifest(tmp_path, ["part-a", "part-b"])
    with pytest.raises(TruthError, match="part-b/segments.parquet: missing"):
        read_truth(tmp_path)


def test_errors(tmp_path):
    with pytest.raises(TruthError, match="no such file"):
        read_truth(tmp_path / "absent")
    with pytest.raises(TruthError, match="not a complete store"):
        read_truth(tmp_path)
    table(2).drop("score").write_parquet(tmp_path / "noscore.parquet")
    with pytest.raises(TruthError, match="missing column 'score'"):
        read_truth(tmp_path / "noscore.parquet")
    table(2, video_id=pl.Series([1, 2])).write_parquet(tmp_path / "intid.parquet")
    with pytest.raises(TruthError, match="'video_id' is Int64"):
        read_truth(tmp_path / "intid.parquet")
    (tmp_path / "junk.parquet").write_text("junk")
    with pytest.raises(TruthError, match="not a readable Parquet"):
        read_truth(tmp_path / "junk.parquet")
