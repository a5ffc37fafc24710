"""Resumable, idempotent, parallel: kill-and-resume, re-run, and a real Dask cluster."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ingest.store import Store, StoreError, verify_store
from ingest.store.convert import ConvertConfig, convert
from tests.ingest.test_convert_content import synth_shards

INGEST = [sys.executable, "-c", "from ingest.cli.main import main; main()"]


def tree(path: Path) -> dict[str, bytes]:
    """Every file under `path` (relative name → bytes)."""
    return {p.relative_to(path).as_posix(): p.read_bytes()
            for p in sorted(path.rglob("*")) if p.is_file()}


def stamps(path: Path) -> dict[str, int]:
    return {p.relative_to(path).as_posix(): p.stat().st_mtime_ns
            for p in sorted(path.rglob("*"))}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> list[Path]:
    return synth_shards(tmp_path_factory.mktemp("src"), shards=6, videos=40, seed=11)


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "store"
    convert(ConvertConfig(sources=tuple(map(str, shards)), out=str(out), progress=False))
    return out


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(shards, reference, tmp_path):
    out = tmp_path / "store"
    cmd = INGEST + ["convert", str(shards[0].parent / "*.tfrecord"), "--out", str(out),
                    "--workers", "2", "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while not list(out.glob("parts/*/part.json")):  # the first part appears ...
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no part appeared"
            time.sleep(0.002)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # ... and the run dies, workers included
        proc.wait()
    assert not (out / "manifest.json").exists(), "the run finished before the kill"
    n_parts = len(list(out.glob("parts/*/part.json")))
    assert 1 <= n_parts < len(shards)
    with pytest.raises(StoreError, match="not a complete store"):
        Store(out)
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{len(shards) - n_parts} part(s) converted now" in done.stderr
    assert not (out / ".tmp").exists()
    assert tree(out) == tree(reference)


def test_rerun_on_complete_store_changes_nothing(shards, reference):
    before = stamps(reference)
    summary = convert(ConvertConfig(sources=tuple(map(str, shards)), out=str(reference),
                                    progress=False))
    assert summary["converted"] == 0
    assert stamps(reference) == before
    assert verify_store(reference) == []


def test_adding_a_shard_converts_only_it(shards, reference, tmp_path):
    out = tmp_path / "store"
    convert(ConvertConfig(sources=tuple(map(str, shards[:4])), out=str(out), progress=False))
    first = stamps(out / "parts")
    summary = convert(ConvertConfig(sources=tuple(map(str, shards)), out=str(out),
                                    progress=False))
    assert summary["converted"] == 2
    assert {k: v for k, v in stamps(out / "parts").items() if k in first} == first
    assert tree(out) == tree(reference)


@pytest.mark.slow
def test_dask_cluster_store_equals_local(shards, reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        addr = cluster.scheduler_address.removeprefix("tcp://")
        out = tmp_path / "store"
        summary = convert(ConvertConfig(sources=tuple(map(str, shards)), out=str(out),
                                        executor=f"dask://{addr}", progress=False))
    assert summary["converted"] == len(shards)
    assert tree(out) == tree(reference)


def test_threads_of_one_process_convert_independently(shards, reference, tmp_path):
    """A Dask worker may run several convert_shard calls at once in threads."""
    from concurrent.futures import ThreadPoolExecutor

    from ingest.store.convert import convert_shard

    out = tmp_path / "store"
    (out / "parts").mkdir(parents=True)
    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(lambda s: convert_shard(str(s), str(out)), shards))
    assert [r["status"] for r in results] == ["converted"] * len(shards)
    convert(ConvertConfig(sources=tuple(map(str, shards)), out=str(out), progress=False))
    assert tree(out) == tree(reference)
