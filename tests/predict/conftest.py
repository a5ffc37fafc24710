"""Fixtures of the predict tests: small trained runs (shared by predict segments / videos)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from trainer.cli.main import main as train_main

CPU = ["--device", "cpu", "--threads", "1", "--quiet"]


def _train(args):
    result = CliRunner().invoke(train_main, args + CPU)
    assert result.exit_code == 0, result.output + repr(result.exception)


@pytest.fixture(scope="session")
def runs(tmp_path_factory, validate_store):
    """A pre-training run, and a context-agnostic and a context-aware run from it."""
    d = tmp_path_factory.mktemp("runs")
    store = str(validate_store.path)
    _train(["pretrain", "--store", store, "--model", "dbof-tiny", "--out", str(d / "pre"),
            "--steps", "4", "--batch-size", "8", "--max-len", "20"])
    _train(["finetune", "--kind", "agnostic", "--store", store, "--init", str(d / "pre"),
            "--out", str(d / "ag"), "--steps", "3", "--batch-size", "8"])
    _train(["finetune", "--kind", "aware", "--store", store, "--context", str(d / "pre"),
            "--segment", str(d / "pre"), "--out", str(d / "aw"), "--steps", "3",
            "--batch-size", "8", "--max-len", "16"])
    return d


def refusal(main, args) -> str:
    """The one line `Error: ...` (exit 1, no traceback) that a command answers `args` with."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def two_ranks_and_one(tmp_path, args) -> None:
    """`python -m predict ARGS` under `torchrun` with two ranks into tmp_path/two, then as one
    process into tmp_path/one; the two matrices must be the same bytes. One torch thread
    each (`--torch-threads 1`): a CPU matmul over several threads may round a row's sums
    differently in a batch of other rows (docs/predictions.md)."""
    import os
    import sys
    from pathlib import Path

    from tests.processes import run_ok

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [*args, "--torch-threads", "1"]
    torchrun = Path(sys.executable).with_name("torchrun")
    run_ok([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "predict",
           *args, "--out", str(tmp_path / "two")], env=env)
    run_ok([sys.executable, "-m", "predict", *args, "--out", str(tmp_path / "one")], env=env)
    assert (tmp_path / "two.npy").read_bytes() == (tmp_path / "one.npy").read_bytes()
