"""Resumable, idempotent, parallel: kill-and-resume, Ctrl-C-and-resume, re-run, and a real
Dask cluster.

Ctrl-C is SIGINT to the process group, as a terminal sends it: exit status 130, one line
saying that the same command resumes, no traceback, also while the command line is still
importing its modules."""
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


def start(cmd: list[str]) -> subprocess.Popen:
    """`cmd` in a new process group (its pool workers join it), output captured as text."""
    return subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_until(proc: subprocess.Popen, ready, what: str) -> None:
    """Poll `ready()` every millisecond or two while `proc` runs (an error if it ends first)."""
    deadline = time.monotonic() + 120
    while not ready():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.001)


def first_part(out: Path):
    """`wait_until`'s condition: a part of the store `out` is complete."""
    return lambda: list(out.glob("parts/*/part.json"))


def assert_resumes(cmd: list[str], out: Path, shards, reference: Path) -> None:
    """After a stopped run of `cmd`: some parts, no manifest; the same command again
    converts only the rest, and the store is the uninterrupted one, byte for byte."""
    assert not (out / "manifest.json").exists(), "the run finished before it was stopped"
    n_parts = len(list(out.glob("parts/*/part.json")))
    assert 1 <= n_parts < len(shards)
    with pytest.raises(StoreError, match="not a complete store"):
        Store(out)
    done = subprocess.run(cmd + ["--quiet"], check=False, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{len(shards) - n_parts} part(s) converted now" in done.stderr
    assert not (out / ".tmp").exists()
    assert tree(out) == tree(reference)


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(shards, reference, tmp_path):
    out = tmp_path / "store"
    cmd = INGEST + ["convert", str(shards[0].parent / "*.tfrecord"), "--out", str(out),
                    "--workers", "2"]
    proc = start(cmd)
    try:
        wait_until(proc, first_part(out), "a complete part")  # the first part appears ...
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # ... and the run dies, workers included
        proc.wait()
    assert_resumes(cmd, out, shards, reference)


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


# ---------------------------------------------------------------- Ctrl-C

RESUME = ("Interrupted; the parts converted so far are kept: run the same command again "
          "to resume.")


def interrupt(proc: subprocess.Popen) -> tuple[int, str]:
    """SIGINT to the whole process group (workers too, as a terminal's Ctrl-C does); the
    exit status and stderr, which must hold no traceback."""
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert "Aborted!" not in err, err
    return proc.returncode, err


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("library", ["/numpy/", "/numba/", "/pyarrow/"])
def test_interrupt_while_importing(shards, tmp_path, library):
    """Ctrl-C once the process has loaded `library` (/proc/PID/maps): a point inside the
    ~0.5 s the command line spends importing, however loaded the machine is (a fixed delay
    may still fall in Python's own start-up, ~30 ms, before any code of ours runs)."""
    out = tmp_path / "store"
    proc = start(INGEST + ["convert", str(shards[0].parent / "*.tfrecord"), "--out", str(out)])
    maps = Path(f"/proc/{proc.pid}/maps")
    wait_until(proc, lambda: library in maps.read_text(), f"loading {library}")
    code, err = interrupt(proc)
    assert code == 130, err
    assert err.strip().splitlines()[-1] in (
        "Interrupted while starting; nothing was done.", RESUME), err
    assert not first_part(out)()


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_interrupt_and_resume_equals_uninterrupted(shards, reference, tmp_path, workers):
    out = tmp_path / "store"
    cmd = INGEST + ["convert", str(shards[0].parent / "*.tfrecord"), "--out", str(out),
                    "--workers", str(workers)]
    proc = start(cmd)
    wait_until(proc, first_part(out), "a complete part")  # the first part is complete ...
    code, err = interrupt(proc)  # ... and Ctrl-C
    assert code == 130, err
    assert err.strip().splitlines()[-1] == RESUME
    assert not (out / ".tmp").exists()  # no half-written part left
    assert_resumes(cmd, out, shards, reference)
