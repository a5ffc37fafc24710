"""Run a command a test needs to succeed; on failure the test report shows its output."""
from __future__ import annotations

import subprocess

import pytest

TAIL = 4000  # characters of stdout and stderr kept in a failure message


def run_ok(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd)` that fails the test with the command's stderr and stdout
    tails when it exits non-zero (a CalledProcessError hides them when output is captured)."""
    result = subprocess.run([str(c) for c in cmd], check=False, capture_output=True,
                            text=True, **kw)
    if result.returncode != 0:
        pytest.fail(f"exit {result.returncode}: {' '.join(map(str, cmd))}\n"
                    f"--- stderr (tail)\n{result.stderr[-TAIL:]}\n"
                    f"--- stdout (tail)\n{result.stdout[-TAIL:]}", pytrace=False)
    return result
