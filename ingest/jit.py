"""The one switch for numba: every kernel of the project is decorated here.

Set `YT8M_NO_JIT=1` to run every kernel as plain Python (for debugging and for
checking a kernel against its twin without compilation). Compiled kernels are
cached on disk (`cache=True`) so that a second process starts fast.

Bounds checking: numba's `NUMBA_BOUNDSCHECK=1` compiles every kernel with array bounds
checks (an out-of-bounds index raises IndexError), but the on-disk cache does not key on
it: a process that finds the kernels cached loads them unchecked. Give such a process a
cache of its own, `NUMBA_CACHE_DIR=<empty directory>` (benchmarks/fuzz_decoder.py does).
"""
from __future__ import annotations

import os

import numba

JIT_ENABLED = os.environ.get("YT8M_NO_JIT", "") not in ("1", "true", "yes")


def njit(*args, **kwargs):
    """`numba.njit(cache=True, nogil=True, ...)`, or the identity when JIT is off."""
    kwargs.setdefault("cache", True)
    kwargs.setdefault("nogil", True)
    if not JIT_ENABLED:
        if args and callable(args[0]):
            return args[0]
        return lambda f: f
    return numba.njit(*args, **kwargs)

