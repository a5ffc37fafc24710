"""The `ingest` command line run in-process (click's CliRunner), and its one-line errors."""
from __future__ import annotations

from click.testing import CliRunner, Result

from ingest.cli.main import main


def run(*args) -> Result:
    """`ingest ARGS...` (each argument str()-ed)."""
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result: Result) -> str:
    """The single `Error: ...` line of a command that failed with exit status 1."""
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]
