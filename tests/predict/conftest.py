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
