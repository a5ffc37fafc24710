"""Ctrl-C while `train` is still importing torch (its first seconds): exit status 130 and
one line, no traceback, as `ingest` and `predict` do (ingest/cli/interrupt.py). Through the
installed console script and `python -m trainer` (what torchrun starts on every rank)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.ingest.test_convert_resume import interrupt, start, wait_until
from tests.readonly import script

STARTING = "Interrupted while starting; nothing was done."


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize("command", [[script("train")], [sys.executable, "-m", "trainer"]])
def test_interrupt_while_importing_torch(tmp_path, command):
    """SIGINT once the process has mapped torch's library (/proc/PID/maps): a point inside
    the seconds the command line spends importing torch. (Before: a KeyboardInterrupt
    traceback from whichever module was importing.)"""
    proc = start(command + ["pretrain", "--store", str(tmp_path / "store"), "--model",
                            "dbof-tiny", "--out", str(tmp_path / "run")])
    maps = Path(f"/proc/{proc.pid}/maps")
    wait_until(proc, lambda: "/torch/lib/" in maps.read_text(), "loading torch")
    code, err = interrupt(proc)
    assert code == 130, err
    assert err.strip().splitlines() in ([STARTING], ["Interrupted."]), err
    assert not (tmp_path / "run").exists()
