"""The run directory's life (issue #20): under two real gloo processes the ranks agree
whatever their timing; a start that fails or is interrupted never blocks its own retry;
`--out` that is not a run, a file, or unwritable is refused before any work."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from click.testing import CliRunner

from tests.readonly import error_line, run_read_only, script
from trainer.cli.main import main
from trainer.errors import TrainerError
from trainer.recipes.runtime import Ranks, RunDir


def _create(rank: int, world: int, init: str, out: str, delay: float, results: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        ranks = Ranks(rank, world, torch.device("cpu"))
        if rank == 1:
            time.sleep(delay)  # rank 0 has written config.json before rank 1 looks
        try:
            run = RunDir(out, ranks)
            run.check(resume=False)
            run.create({"recipe": "pretrain", "model": "dbof-tiny"}, resume=False)
            outcome = "ok"
        except TrainerError as err:
            outcome = str(err)
        with open(f"{results}.{rank}", "w") as f:
            f.write(outcome)
    finally:
        dist.destroy_process_group()


def _run(tmp_path, out, delay: float) -> list[str]:
    init = f"file://{tmp_path / 'rendezvous'}"
    (tmp_path / "rendezvous").unlink(missing_ok=True)
    results = str(tmp_path / "result")
    mp.spawn(_create, args=(2, init, str(out), delay, results), nprocs=2, join=True)
    return [open(f"{results}.{r}").read() for r in range(2)]


@pytest.mark.slow
def test_a_late_rank_does_not_refuse_the_run_rank_0_just_created(tmp_path):
    out = tmp_path / "run"
    assert _run(tmp_path, out, delay=1.0) == ["ok", "ok"]
    assert json.loads((out / "config.json").read_text())["model"] == "dbof-tiny"
    (out / "last").mkdir()  # a run with a checkpoint is there now: every rank refuses it
    again = _run(tmp_path, out, delay=0.0)
    assert all("already holds a run" in r for r in again), again


# ---------------------------------------------------------------- through the real command

FAST = ["--quiet", "--device", "cpu", "--threads", "1"]
SHORT = ["--model", "dbof-tiny", "--steps", "2", "--batch-size", "4", "--max-len", "8"]


def _train(args: list[str]):
    return CliRunner().invoke(main, [str(a) for a in args] + FAST)


def _refused(result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert message in result.output and "Traceback" not in result.output, result.output


def test_a_start_that_fails_leaves_nothing_and_the_corrected_command_runs(
        tmp_path, validate_store, train_store):
    out = tmp_path / "run"
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = next(f for f in range(8) if f not in set(train_store.videos["fold"].to_list()))
    store = ["--store", train_store.path]
    failures = [
        (["pretrain", "--store", empty, *SHORT], "not a complete store"),
        (["pretrain", *store, *SHORT, "--fold", missing], f"no video in folds [{missing}]"),
        (["pretrain", *store, *SHORT, "--accumulate", "3"],
         "--batch-size 4 does not split into 1 rank(s) × --accumulate 3"),
        (["pretrain", *store, *SHORT, "--swa-from", "5"], "--swa-from 5: a step of the run"),
    ]
    for args, message in failures:
        _refused(_train(args + ["--out", out]), message)
        assert not out.exists(), args
    assert _train(["pretrain", *store, *SHORT, "--out", out]).exit_code == 0
    assert (out / "last").is_dir()


def test_finetune_on_a_store_without_ratings_leaves_nothing(tmp_path, train_store):
    pre = tmp_path / "pre"
    assert _train(["pretrain", "--store", train_store.path, *SHORT, "--out", pre]).exit_code == 0
    out = tmp_path / "ft"
    _refused(_train(["finetune", "--kind", "agnostic", "--store", train_store.path, "--init",
                     pre, "--steps", "2", "--batch-size", "4", "--out", out]),
             "no rated segments")
    assert not out.exists()


def test_an_out_that_is_not_a_run_is_refused_untouched(tmp_path, train_store):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.jsonl").write_text("my own numbers\n")
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    cases = [(mine, "a non-empty directory that is not a run"),
             (a_file, "a file, not a directory"),
             (a_file / "run", "is a file, not a directory")]
    for out, message in cases:
        _refused(_train(["pretrain", "--store", train_store.path, *SHORT, "--out", out]),
                 message)
    assert sorted(p.name for p in mine.iterdir()) == ["metrics.jsonl"]
    assert (mine / "metrics.jsonl").read_text() == "my own numbers\n"
    assert a_file.read_text() == "x"
    store_dir = Path(train_store.path)  # a store is not a run either
    before = sorted(p.name for p in store_dir.iterdir())
    _refused(_train(["pretrain", "--store", train_store.path, *SHORT, "--out", store_dir]),
             "not a run")
    assert sorted(p.name for p in store_dir.iterdir()) == before


def _interrupted_before_its_first_checkpoint(tmp_path, store) -> tuple[Path, list[str]]:
    """A real `train pretrain` process stopped by SIGINT once it trains, before any save
    (30 steps, the only save at the end)."""
    out = tmp_path / "run"
    args = ["pretrain", "--store", str(store.path), "--model", "dbof-tiny", "--steps", "30",
            "--batch-size", "4", "--max-len", "8", "--log-every", "1"]
    cmd = [sys.executable, "-m", "trainer", *args, "--out", str(out), *FAST]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err.decode(), err
    assert (out / "config.json").is_file() and not (out / "last").exists()
    return out, args


@pytest.mark.slow
def test_interrupted_before_the_first_checkpoint_resumes_from_step_0_or_is_replaced(
        tmp_path, train_store):
    out, args = _interrupted_before_its_first_checkpoint(tmp_path, train_store)
    again = tmp_path / "again"
    shutil.copytree(out, again)

    result = _train(["pretrain", "--resume", out])  # the saved options, from step 0
    assert result.exit_code == 0, result.output
    assert "no checkpoint saved yet; starting from step 0" in result.output
    assert _steps(out) == list(range(1, 31))  # the first start's lines were dropped
    assert (out / "last").is_dir()

    result = _train([*args, "--steps", "3", "--out", again])  # or new options, same --out
    assert result.exit_code == 0, result.output
    assert "replacing a run that saved no checkpoint" in result.output
    assert json.loads((again / "config.json").read_text())["loop"]["steps"] == 3
    assert _steps(again) == [1, 2, 3]


def _steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_an_out_on_a_read_only_filesystem_is_one_line(tmp_path, train_store):
    folder = tmp_path / "ro"
    folder.mkdir()
    result = run_read_only(folder, [script("train"), "pretrain", "--store", train_store.path,
                                    *SHORT, "--out", folder / "run", *FAST])
    assert "is not writable" in error_line(result)
    assert list(folder.iterdir()) == []
