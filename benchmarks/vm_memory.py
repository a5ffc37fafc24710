"""Make a benchmark measure its code, not this VM's lazily backed memory.

The development VM backs guest memory lazily and takes back pages that stay free
for a few seconds: the first touch of such a page costs 10-20x a later one
(0.25 vs 6 GB/s measured; the same 456 MB buffer took 1.07, 0.10 and 0.22 s to
fill in three fresh processes). A run that allocates buffers, or writes a store
into tmpfs or the page cache, pays that at random. `warm_guest_memory` touches
and frees memory just before the timed part, so that the run's allocations land
on pages the host backs already. Benchmarks that use it have a `--cold` flag to
leave it out.
"""
from __future__ import annotations

import os

import numpy as np


def warm_guest_memory(gb: float) -> None:
    """Touch `gb` GiB of fresh memory in a forked child, which exits (freeing it).

    In a child, so that the caller's peak RSS (ru_maxrss) stays its own.
    """
    pid = os.fork()
    if pid == 0:
        try:
            np.ones(int(gb * 2**30), np.uint8)
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
