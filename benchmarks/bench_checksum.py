"""The store's file checksum (ISA-L CRC-32) against google_crc32c and zlib, same buffers.

Run:  .venv/bin/python benchmarks/bench_checksum.py [--repeats 40]

The converter checksums every written shard file as it writes it, from the decoder's
multi-MB frame buffer and the windows buffer (ingest/store/writer.py), and `ingest
verify` reads whole files back through an 8 MB buffer. This times, on one thread
and on the same random bytes: `ingest.store.crc32` (the project's: ISA-L's CRC-32,
or zlib's where isal is missing), google_crc32c's CRC-32C (what the store used up to
format version 1) and zlib's CRC-32 (the fallback), over a 5 MB buffer (bigger than
L2: the write path's case) and a 256 KB one (fits L2). Prints each one's GB/s
(median of `--repeats` calls, after one untimed call) and its ratio to the project's.
"""
from __future__ import annotations

import argparse
import sys
import zlib
from functools import partial
from pathlib import Path

import google_crc32c
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import median_time

from ingest.store.layout import crc32

SIZES = {"5 MB (past L2)": 5 << 20, "256 KB (in L2)": 256 << 10}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=40)
    a = ap.parse_args()
    print(f"project crc32: {crc32.__module__}.{crc32.__name__}")
    rng = np.random.default_rng(0)
    for label, size in SIZES.items():
        buf = rng.integers(0, 256, size, dtype=np.uint8)
        view = buf.view()
        view.flags.writeable = False  # google_crc32c reads read-only buffers only
        fns = {"project (ingest.store.crc32)": partial(crc32, buf),
               "google_crc32c.extend": partial(google_crc32c.extend, 0, view),
               "zlib.crc32": partial(zlib.crc32, buf)}
        times = {}
        for name, fn in fns.items():
            fn()
            times[name] = median_time(fn, a.repeats)
        ours = times["project (ingest.store.crc32)"]
        for name, t in times.items():
            print(f"{label:15s} {name:28s} {size / t / 1e9:6.1f} GB/s  "
                  f"project x faster: {t / ours:5.2f}")


if __name__ == "__main__":
    main()
