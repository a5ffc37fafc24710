"""`train loader-bench` through the CLI on small real stores: what it counts, the cold path's
eviction, and its one-line errors (trainer/data/bench.py, trainer/cli/data.py)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ingest.store import Store
from trainer.cli.main import main
from trainer.data import Loader, LoaderConfig, StoreIndex
from trainer.data.bench import disk_read_bytes, evict, mapped, memcpy_rate, store_files

FRAME_BYTES = 1152


def bench(store, *args: str) -> dict:
    result = CliRunner().invoke(main, ["loader-bench", str(store.path), "--json", "--quiet",
                                       "--seconds", "60", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def fail(*args: str) -> str:
    """A command that must fail with one line on stderr, no traceback; that line."""
    result = CliRunner().invoke(main, ["loader-bench", *args, "--quiet"])
    assert result.exit_code != 0
    assert isinstance(result.exception, SystemExit), result.exception  # not a traceback
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _consistent(r: dict) -> None:
    assert r["seconds"] > 0
    assert r["samples_per_s"] == pytest.approx(r["samples"] / r["seconds"])
    assert r["batches_per_s"] == pytest.approx(r["batches"] / r["seconds"])
    assert r["feature_mb_per_s"] == pytest.approx(r["feature_bytes"] / r["seconds"] / 1e6)
    assert r["of_memcpy"] == pytest.approx(r["feature_mb_per_s"] / r["memcpy_mb_per_s"])
    assert r["memcpy_mb_per_s"] > 0
    assert r["cpu_seconds"] > 0
    assert r["feature_mb_per_cpu_s"] == pytest.approx(r["feature_bytes"] / r["cpu_seconds"] / 1e6)
    assert 0 < r["anon_before_mb"] <= r["anon_peak_mb"]
    assert r["loader_anon_mb"] == pytest.approx(r["anon_peak_mb"] - r["anon_before_mb"])
    assert r["file_peak_mb"] > 0


def test_video_kind_counts_the_epochs_samples_and_bytes(validate_store):
    r = bench(validate_store, "--kind", "video", "--batch-size", "8", "--max-len", "20")
    v = validate_store.videos
    labelled = int(((v["n_frames"] > 0) & (v["class_indices"].list.len() > 0)).sum())
    assert (r["kind"], r["batch_size"], r["max_len"], r["cold"]) == ("video", 8, 20, False)
    assert r["samples"] == labelled  # every labelled video once; padding repeats not counted
    assert r["batches"] == r["epoch_batches"] == -(-labelled // 8) and r["epoch_done"]
    # the bytes are those of the frames tensors the same loader hands out (padding included)
    loader = Loader(validate_store.path, LoaderConfig(kind="video", batch_size=8, max_len=20))
    assert r["feature_bytes"] == sum(b.frames.numel() for b in loader)
    assert r["store_files"] is None and r["seq_read_mb_per_s"] is None
    _consistent(r)


def test_segment_kind_counts_windows(validate_store):
    r = bench(validate_store, "--kind", "segment", "--batch-size", "16", "--threads", "1")
    s = validate_store.segments
    usable = int(((~s["outside_video"]) & (s["class_index"] >= 0)).sum())
    assert r["samples"] == usable and r["epoch_done"]
    assert r["batches"] == -(-usable // 16)
    assert r["feature_bytes"] == r["batches"] * 16 * 11 * FRAME_BYTES
    _consistent(r)


def test_aware_and_candidates_count_contexts_and_windows(validate_store):
    aware = bench(validate_store, "--kind", "aware", "--batch-size", "16", "--max-len", "all")
    assert aware["max_len"] is None
    # windows plus contexts: more than the windows alone
    assert aware["feature_bytes"] > aware["batches"] * 16 * 11 * FRAME_BYTES
    cand = bench(validate_store, "--kind", "candidates", "--batch-size", "64")
    assert cand["samples"] == len(validate_store.candidates)
    assert cand["feature_bytes"] == cand["samples"] * 11 * FRAME_BYTES  # no padding rows


def test_seconds_stops_before_the_epoch_ends(validate_store):
    r = bench(validate_store, "--kind", "segment", "--batch-size", "4", "--seconds", "1e-9")
    assert r["batches"] == 1 and r["epoch_batches"] > 1 and not r["epoch_done"]


def test_cold_evicts_then_reads_the_kinds_files_sequentially(validate_store, tmp_path):
    # a copy of its own: --cold refuses a store that another loader of the process maps
    store = Store(shutil.copytree(validate_store.path, tmp_path / "store"))
    r = bench(store, "--kind", "segment", "--batch-size", "16", "--cold")
    assert r["cold"] and r["store_files"] == len(store_files(store.path))
    windows = [p for p in store_files(store.path)
               if "windows.zarr" in p.parts and p.name != "zarr.json"]
    assert r["read_files_mb"] == pytest.approx(sum(p.stat().st_size for p in windows) / 1e6)
    assert r["seq_read_mb_per_s"] > 0
    if _filesystem(store.path) != "tmpfs":  # evicted: the epoch read from storage
        assert r["disk_read_mb"] > 0
    assert r["of_seq_read"] == pytest.approx(r["disk_read_mb_per_s"] / r["seq_read_mb_per_s"])
    _consistent(r)


def test_cold_refuses_a_store_mapped_elsewhere_in_the_process(validate_store):
    other = Loader(StoreIndex.build(validate_store), LoaderConfig(kind="segment", batch_size=8))
    for _ in other:  # e.g. a training loader of the same store: its files are mapped now
        pass
    line = fail(str(validate_store.path), "--kind", "segment", "--cold")
    assert "still mapped" in line and "--cold" in line
    del other


def test_table_output(validate_store):
    result = CliRunner().invoke(main, ["loader-bench", str(validate_store.path), "--kind",
                                       "segment", "--batch-size", "16", "--quiet"])
    assert result.exit_code == 0, result.output
    labels = [line[:28].strip() for line in result.stdout.splitlines()]
    assert {"samples/s", "feature MB/s", "memcpy MB/s (same bytes)", "of memcpy",
            "anonymous memory, peak MB", "file-backed memory, peak MB"} <= set(labels)
    assert "sequential read MB/s" not in labels  # cold rows only with --cold


def _filesystem(path) -> str:
    """The type of the filesystem holding `path` (the longest mount point above it)."""
    best, kind = "", ""
    with open("/proc/mounts") as f:
        for line in f:
            point, fstype = line.split()[1:3]
            if str(path.resolve()).startswith(point) and len(point) > len(best):
                best, kind = point, fstype
    return kind


def test_eviction_drops_a_files_pages(tmp_path):
    """What --cold relies on: after evict(), reading the file fetches it from storage again
    (on a disk; tmpfs has no storage to fetch from)."""
    if _filesystem(tmp_path) == "tmpfs":
        pytest.skip("tmp_path is on tmpfs")
    path = tmp_path / "blob"
    path.write_bytes(np.random.default_rng(0).bytes(4 << 20))
    path.read_bytes()  # cached
    before = disk_read_bytes()
    path.read_bytes()
    assert disk_read_bytes() - before < 1 << 20  # from the page cache
    evict([path])
    before = disk_read_bytes()
    path.read_bytes()
    assert disk_read_bytes() - before >= 4 << 20


def test_mapped_sees_a_mapping_until_it_is_dropped(tmp_path):
    path = tmp_path / "m"
    path.write_bytes(b"\1" * 8192)
    m = np.memmap(path, np.uint8, "r")
    assert mapped([path]) == [str(path.resolve())]
    del m
    assert mapped([path]) == []


def test_memcpy_rate_is_a_rate():
    assert memcpy_rate(1 << 20) > 1e8  # any machine copies more than 100 MB/s


def test_errors_are_one_line(tmp_path, train_store, monkeypatch):
    assert "no manifest.json" in fail(str(tmp_path / "nope"), "--kind", "video")
    (tmp_path / "file").write_text("x")
    assert str(tmp_path / "file") in fail(str(tmp_path / "file"), "--kind", "video")
    line = fail(str(train_store.path), "--kind", "segment")
    assert str(train_store.path) in line and "no rated segments" in line
    for value, why in (("abc", "'abc' is not a whole number or 'all'"),
                       ("0", "0 is not at least 1 (frames per video; 'all' for whole videos)")):
        usage = CliRunner().invoke(main, ["loader-bench", str(train_store.path), "--kind",
                                          "video", "--max-len", value])  # names the option
        assert usage.exit_code == 2, usage.output
        assert f"Error: Invalid value for '--max-len': {why}\n" in usage.stderr
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "CUDA is not available" in fail(str(train_store.path), "--kind", "video",
                                           "--device", "cuda")
