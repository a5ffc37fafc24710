"""How the loader should reach the store's shard files (issue #21 §1): the candidates side by
side, through `trainer.data.bench.run_bench` (the code of `train loader-bench`).

Run:  flock /tmp/yt8m-bench.lock .venv/bin/python benchmarks/bench_loader_maps.py
          [--rounds 3] [--base d518df6~1] [--kinds video,segment] [--modes first,steady,cold]

The real train store has ~51,000 frame shard files of 16,384 frames; a process may hold
`vm.max_map_count` = 65,530 maps, and each numpy memmap also keeps a descriptor open (the
open-file limit is 20,000 on the development VM, often 1,024). Candidates, each in fresh
processes with its own checkout first on PYTHONPATH:

- `all maps`: the loader before this change (`--base`, default d518df6~1): every shard file
  mapped when the index is built;
- `one file per part`: the same code on a store converted with one frames file and one
  windows file per part (the writer's shard rows raised to 131,072 frames and 4,096
  windows: a store-format change, measured here without making it);
- `maps on demand`: this checkout: files mapped when a batch first reads them, at most
  `capacity` per array (1,024 by default: every file of these stores, so each is mapped once);
- `positional reads`: this checkout with `bench_loader_pread.patch` applied (the patch's
  base is d518df6): the kernels `pread` each window and `preadv` each video's span (picked
  frames into the batch, the others into a scratch row), descriptors opened on demand at
  most `capacity` at once; no maps at all.

Stores: bench_loader.py's (bench_data/loader/store: 8 parts, 48 frames files, 24 windows
files; made on the first run of either), its one-file-per-part twin, and a `many files`
twin (1,024-frame and 64-window shard files: 692 + 264 files) on which `maps on demand` and
`positional reads` run with capacity 64, so that files are unmapped / closed and reopened
all the time (the real train store's files outnumber the capacity 50 to 1; here 11 to 1,
and the shuffle buffer spans this whole small store). Twins are made under
bench_data/loader_maps on the first run (same sources, `ingest convert` in-process with
the writer's constants patched).

Modes (B = 128, Lm = 150, 2 loader threads, one whole epoch): `first`, the first epoch of
a fresh index and loader after 2 warm-up batches (the process maps and faults the store's
pages meanwhile); `steady`, an epoch after a whole warm-up epoch; `cold`, every store file
evicted from the page cache first (`--cold`; then the ratio to a sequential read of the
same files); the page cache is warmed (every store file read) before each warm run. Rounds
alternate the candidates' order. Printed: medians of feature MB/s per
candidate, kind and mode, each with its ratio to `all maps` on the same kind and mode, and
once per candidate the peak number of /proc/self/maps entries and descriptors on the
store's files during an epoch (a separate, untimed run).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trainer.data.bench import open_files, sequential_read, store_files

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
DATA = ROOT / "bench_data" / "loader_maps"
PATCH = ROOT / "benchmarks" / "bench_loader_pread.patch"
PATCH_BASE = "d518df6"
TWINS = {"onefile": (131072, 64, 4096), "many": (1024, 64, 64)}  # frame shard, window chunk/shard
MANY_CAPACITY = 64

_TWIN = """
import glob, sys
from ingest.store import writer
from ingest.store.convert import ConvertConfig, convert
out, fshard, wchunk, wshard, pattern = sys.argv[1], *map(int, sys.argv[2:5]), sys.argv[5]
writer.FRAME_SHARD_ROWS, writer.WINDOW_CHUNK_ROWS, writer.WINDOW_SHARD_ROWS = fshard, wchunk, wshard
convert(ConvertConfig(sources=tuple(sorted(glob.glob(pattern))), out=out, progress=False, workers=1))
"""

# timed runs in one process: run_bench's results (capacity only where the checkout knows
# it), each with a fresh index and loader, and the checkout the process imported
_RUN = """
import json, sys
import trainer
from trainer.data.bench import BenchConfig, run_bench
store, kind, mode, capacity, repeats = sys.argv[1], sys.argv[2], sys.argv[3], *map(int, sys.argv[4:6])
extra = {"capacity": capacity} if capacity else {}
cfg = BenchConfig(store=store, kind=kind, batch_size=128, max_len=150, threads=2, seconds=1e9,
                  cold=mode == "cold", warmup_batches=(1 << 40) if mode == "steady" else 2, **extra)
print(json.dumps({"code": trainer.__file__, "runs": [run_bench(cfg).to_dict() for _ in range(repeats)]}))
"""

# the census (untimed): the parent reads this child's /proc/PID/maps and fds on the store's
# files after the index is built and every 4 batches of an epoch, when the child says so
_CENSUS = """
import sys
from trainer.data import Loader, LoaderConfig, StoreIndex
store, kind, capacity = sys.argv[1], sys.argv[2], int(sys.argv[3])
ix = StoreIndex.build(store, capacity=capacity) if capacity else StoreIndex.build(store)
print("built", flush=True); sys.stdin.readline()
for b, _ in enumerate(Loader(ix, LoaderConfig(kind=kind, batch_size=128, max_len=150))):
    if b % 4 == 0:
        print("batch", flush=True); sys.stdin.readline()
"""


def census(tree: Path, store: Path, kind: str, capacity: int) -> dict:
    """Maps and descriptors on the store's files of a child running `_CENSUS`."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    child = subprocess.Popen([sys.executable, "-c", _CENSUS, str(store), kind, str(capacity)],
                             env=env, cwd=tree, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    before = open_files(store, child.pid)
    got = []
    for line in child.stdout:
        got.append(open_files(store, child.pid))
        if line.startswith("built"):
            built = got[-1][0] - before[0]
        child.stdin.write("\n")
        child.stdin.flush()
    if child.wait() != 0:
        raise SystemExit(f"census of {tree} on {store} ({kind}) failed")
    return {"build_maps": built, "peak_maps": max(m for m, _ in got),
            "peak_fds": max(f for _, f in got)}


def sh(*cmd: str, env=None, cwd=None) -> str:
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=cwd)
    return out.stdout


def make_stores() -> dict[str, Path]:
    from bench_loader import SHARDS, VIDEOS_PER_SHARD, make_data

    _, store = make_data(SHARDS, VIDEOS_PER_SHARD)
    stores = {"default": store}
    for name, (fshard, wchunk, wshard) in TWINS.items():
        out = DATA / name
        if not (out / "manifest.json").is_file():
            sh(sys.executable, "-c", _TWIN, str(out), str(fshard), str(wchunk), str(wshard),
               str(store.parent / "src" / "*.tfrecord"))
        stores[name] = out
    return stores


def checkouts(tmp: Path, base: str) -> dict[str, Path]:
    """`before` (--base) and `pread` (PATCH_BASE + the patch) as worktrees under tmp."""
    trees = {"before": tmp / "before", "pread": tmp / "pread"}
    for name, rev in (("before", base), ("pread", PATCH_BASE)):
        sh("git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(trees[name]), rev)
    sh("git", "-C", str(trees["pread"]), "apply", str(PATCH))
    return trees


def candidates(stores: dict[str, Path], trees: dict[str, Path]) -> dict[str, tuple]:
    """name → (checkout, store, capacity; 0 = the checkout's default)."""
    return {
        "all maps": (trees["before"], stores["default"], 0),
        "one file per part": (trees["before"], stores["onefile"], 0),
        "maps on demand": (ROOT, stores["default"], 0),
        "positional reads": (trees["pread"], stores["default"], 0),
        "all maps, many files": (trees["before"], stores["many"], 0),
        "maps on demand, many files": (ROOT, stores["many"], MANY_CAPACITY),
        "positional reads, many files": (trees["pread"], stores["many"], MANY_CAPACITY),
    }


def run(tree: Path, *args) -> list[dict]:
    """`_RUN` in a fresh process that imports `tree`'s code (its folder is the working
    directory, which `python -c` puts first on sys.path, then PYTHONPATH); checked."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = json.loads(sh(sys.executable, "-c", _RUN, *map(str, args), env=env,
                        cwd=tree).splitlines()[-1])
    if not Path(out["code"]).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"the child imported {out['code']}, not the checkout {tree}")
    return out["runs"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per process")
    ap.add_argument("--base", default=f"{PATCH_BASE}~1", help="the loader before this change")
    ap.add_argument("--kinds", default="video,segment")
    ap.add_argument("--modes", default="first,steady,cold")
    ap.add_argument("--candidates", default=None,
                    help="comma-separated names of the candidates to run (default: all)")
    args = ap.parse_args()
    kinds, modes = args.kinds.split(","), args.modes.split(",")
    t0 = time.perf_counter()
    stores = make_stores()
    print(f"load average {os.getloadavg()[0]:.2f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        trees = checkouts(Path(tmp), args.base)
        try:
            cands = candidates(stores, trees)
            if args.candidates:
                cands = {n: cands[n] for n in args.candidates.split(",")}
            counts = {(n, k): census(t, s, k, c) for n, (t, s, c) in cands.items()
                      for k in kinds}
            got: dict[tuple, list[dict]] = {}
            order = list(cands)
            for r in range(args.rounds):
                for name in order[:: -1 if r % 2 else 1]:
                    tree, store, cap = cands[name]
                    for kind in kinds:
                        for mode in modes:
                            if mode != "cold":  # a cold run leaves the store evicted
                                sequential_read(store_files(store))
                            runs = run(tree, store, kind, mode, cap, args.repeats)
                            got.setdefault((name, kind, mode), []).append(runs)
                print(f"round {r + 1} done, load average {os.getloadavg()[0]:.2f}", flush=True)
        finally:
            for t in trees.values():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(t)],
                               check=False)
    report(cands, counts, got, kinds, modes, args, time.perf_counter() - t0)


def med(xs) -> float:
    return statistics.median(xs)


def per_round(got, key, field="feature_mb_per_s") -> list[float]:
    """One value per round: the median of that round's process's runs."""
    return [med([r.get(field, float("nan")) for r in runs]) for runs in got[key]]


def report(cands, counts, got, kinds, modes, args, wall) -> None:
    print(f"\nB = 128, Lm = 150, 2 threads; {args.rounds} rounds, each candidate a fresh "
          f"process of {args.repeats} runs per kind and mode (its median is the round's "
          f"value); MB/s: the median of rounds; (ratio): the median of the rounds' ratios to "
          f"`all maps` on the same store layout [their range]; load average "
          f"{os.getloadavg()[0]:.2f}; {wall:.0f} s in all")
    for k in kinds:
        print(f"\n{k} batches")
        print("| candidate | " + " | ".join(f"{m} MB/s (ratio)" for m in modes)
              + " | maps at build / peak maps / peak fds | maps made per first epoch |")
        print("| --- |" + " ---: |" * (len(modes) + 2))
        for name in cands:
            base = "all maps, many files" if "many files" in name else "all maps"
            cells = []
            for m in modes:
                mine, ref = per_round(got, (name, k, m)), per_round(got, (base, k, m))
                ratios = [x / y for x, y in zip(mine, ref)]
                cell = f"{med(mine):,.0f} ({med(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}])"
                if m == "cold":
                    cell += f", {med(per_round(got, (name, k, m), 'of_seq_read')):.0%} of seq."
                cells.append(cell)
            c = counts[(name, k)]
            cells.append(f"{c['build_maps']} / {c['peak_maps']} / {c['peak_fds']}")
            made = per_round(got, (name, k, modes[0]), "maps_made")
            cells.append("-" if made[0] != made[0] else f"{med(made):,.0f}")  # NaN: old code
            print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nJSON " + json.dumps({f"{n} | {k} | {m}": v for (n, k, m), v in got.items()}))


if __name__ == "__main__":
    main()
