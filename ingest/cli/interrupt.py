"""Ctrl-C on the command line: exit status 130 and one line, never a traceback.

Two windows: while the command line's modules import (numba, polars, pyarrow: ~0.5 s),
`quiet_while_importing` makes SIGINT exit at once (nothing has been done yet); once a
command runs, `ingest.cli.util.Group` turns the KeyboardInterrupt into its line and 130.
Standard library modules loaded at start-up only (os, signal), so that it is in place
before anything slow is imported; what is left is Python's own start-up, ~30 ms here,
before any of this package's code runs.
"""
from __future__ import annotations

import os
import signal
from contextlib import contextmanager

EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a process stopped by Ctrl-C


def _exit_while_importing(signum, frame) -> None:
    os.write(2, b"Interrupted while starting; nothing was done.\n")
    os._exit(EXIT_INTERRUPTED)


@contextmanager
def quiet_while_importing():
    """Within the block, SIGINT exits 130 with one line on stderr (no traceback from
    whichever module was importing). Only in the main thread and only over Python's
    default handler; the handler found is restored at the end of the block."""
    ours = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    try:
        if ours:
            signal.signal(signal.SIGINT, _exit_while_importing)
    except ValueError:  # not the main thread: signals are not ours to handle there
        ours = False
    try:
        yield
    finally:
        if ours:
            signal.signal(signal.SIGINT, signal.default_int_handler)
