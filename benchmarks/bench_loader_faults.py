"""What a fresh loader's first epoch of segment batches pays to map the windows' pages, and
whether advising the kernel first helps (issue #13, RESULTS.md `## loader`, eighth session).

Run:  .venv/bin/python benchmarks/bench_loader_faults.py [--repeats 3]

Data: bench_loader.py's store (bench_data/loader/store, made on the first run of either).
First the windows files' pages are put in the page cache in one of two ways
(`--page-cache`): `read-back`, evicted and read back sequentially (the state after
bench_loader's `--cold` runs: small folios, so one fault maps few pages), or `written`,
each file rewritten whole, same bytes, to a new file renamed over it (the state
`ingest convert` leaves: large folios). Then, `--repeats` times in turn, a fresh process per mode builds a segment loader (B = 128,
2 threads), takes 2 warm-up batches (numba's kernels load) and times:

- `faults`: the rest of the epoch, the process faulting the windows' pages as it reads;
- `populate`: `madvise(MADV_POPULATE_READ)` on every windows mapping, then the rest of the
  epoch (the call's time is printed apart and counted in the total);
- `hugepage`: `madvise(MADV_HUGEPAGE)` on every mapping, then the rest of the epoch;
- `later`: a whole epoch first (not timed), then the next epoch: the pages are mapped.

Printed per mode: medians of the total milliseconds, of the madvise call, of the minor page
faults in the timed part, and the total against `faults`. Linux only (madvise advice
values of Linux 5.14+).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = ("faults", "populate", "hugepage", "later")
MADVISE = {"populate": 22, "hugepage": 14}  # MADV_POPULATE_READ, MADV_HUGEPAGE (Linux)


def child(store: str, mode: str) -> dict:
    """One fresh process's measurement (see the module docstring)."""
    from trainer.data.index import StoreIndex
    from trainer.data.loader import Loader, LoaderConfig

    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    index = StoreIndex.build(store)
    loader = Loader(index, LoaderConfig(kind="segment", batch_size=128, threads=2))
    if mode == "later":
        for _ in loader:
            pass
    batches = iter(loader)
    next(batches), next(batches)  # the windows files are mapped by now (all fit the capacity)
    w = index.windows
    spans = [(int(w.addr[f]), int(w.rows[f]) * w.width) for f in w.mapped()]
    f0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for ptr, nbytes in spans if mode in MADVISE else ():
        if libc.madvise(ptr, nbytes, MADVISE[mode]) != 0:
            raise OSError(ctypes.get_errno(), f"madvise {mode}")
    advise = time.perf_counter() - t0
    for _ in batches:
        pass
    total = time.perf_counter() - t0
    return {"ms": total * 1e3, "advise_ms": advise * 1e3,
            "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0}


def rewrite(path: Path) -> int:
    """Write `path`'s bytes to a new file in one write and rename it over `path` (the old
    pages go with the old file); the byte count."""
    data = path.read_bytes()
    tmp = path.with_name(f".{path.name}.rewrite")
    tmp.write_bytes(data)
    tmp.replace(path)
    return len(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--page-cache", choices=("read-back", "written"), default="read-back",
                    help="how the windows' pages come into the page cache (see above)")
    ap.add_argument("--child", nargs=2, metavar=("STORE", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_loader import SHARDS, VIDEOS_PER_SHARD, make_data

    from trainer.data.bench import evict, sequential_read
    from trainer.data.index import StoreIndex

    _, store = make_data(SHARDS, VIDEOS_PER_SHARD)
    paths = StoreIndex.build(store).windows.paths
    if args.page_cache == "written":
        nbytes = sum(rewrite(p) for p in paths)
    else:
        evict(paths)
        nbytes, _ = sequential_read(paths)
    runs = {m: [] for m in MODES}
    for _ in range(args.repeats):
        for mode in MODES:
            out = subprocess.run([sys.executable, __file__, "--child", str(store), mode],
                                 check=True, capture_output=True, text=True).stdout
            runs[mode].append(json.loads(out.splitlines()[-1]))
    base = statistics.median(r["ms"] for r in runs["faults"])
    print(f"windows: {len(paths)} files, {nbytes / 1e6:.0f} MB, page cache {args.page_cache}; "
          f"medians of {args.repeats}")
    print("| mode | ms (range) | madvise ms | minor faults | vs faults |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for mode, rs in runs.items():
        ms = [r["ms"] for r in rs]
        med = statistics.median(ms)
        print(f"| {mode} | {med:.1f} ({min(ms):.1f}-{max(ms):.1f}) | "
              f"{statistics.median(r['advise_ms'] for r in rs):.1f} | "
              f"{statistics.median(r['faults'] for r in rs):.0f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
