"""Commands run against a read-only folder, and the one-line error of a refused command.

`chmod` does not stop root (the tests run as root here), so a folder is made read-only the
way a read-only disk is: `run_read_only` runs the command in a private mount namespace
(`unshare -rm`: a user namespace mapping the caller to root, so no privilege is needed
where user namespaces are allowed) in which FOLDER is bind-mounted onto itself and
remounted read-only. Writes under FOLDER then fail with EROFS, for root too; the mount
dies with the command, nothing is left mounted. Where that cannot be done (no `unshare`,
user namespaces disabled), the test is skipped with the reason.
"""
from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

# $0 = the folder, "$@" = the command
_MOUNT = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"'


def script(name: str) -> str:
    """The installed console script `name` (ingest, train, predict) of this environment."""
    return str(Path(sys.executable).with_name(name))


@functools.cache
def _unavailable() -> str | None:
    """Why a read-only folder cannot be made here, or None if it can."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return "no `unshare` command (util-linux)"
    with tempfile.TemporaryDirectory() as d:
        probe = [unshare, "-rm", "sh", "-c", _MOUNT, d, "sh", "-c", f"! touch {d}/x"]
        r = subprocess.run(probe, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return f"cannot mount a read-only folder here: {r.stderr.strip() or r.returncode}"
    return None


def run_read_only(folder, cmd, **kw) -> subprocess.CompletedProcess:
    """`cmd` run to completion with `folder` read-only (see the module docstring);
    captured text output. Skips the test where that cannot be done."""
    why = _unavailable()
    if why is not None:
        pytest.skip(why)
    full = [shutil.which("unshare"), "-rm", "sh", "-c", _MOUNT, str(folder), *map(str, cmd)]
    return subprocess.run(full, capture_output=True, text=True, check=False, **kw)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The single `Error: ...` line (stderr) of a command that failed with exit status 1,
    without a traceback."""
    assert result.returncode == 1, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr[-3000:]
    return lines[0]
