"""A/B of a one-worker conversion: this checkout against another git revision.

Run:  .venv/bin/python benchmarks/ab_convert.py --rev REV [--pairs 8]

Checks REV out into a temporary git worktree and converts the 795 MB benchmark shards
of benchmarks/bench_convert.py (made there if missing) to tmpfs with one worker pinned
to one core, alternately with REV's `ingest` and this checkout's (each a fresh process
of `bench_convert.py --child convert`: numba warm-up, memory warm-up, one timed
conversion). Prints both medians and the median of the per-pair ratios: this VM's
speed drifts by 10-30 % within minutes, so only alternating pairs compare changes of
a few per cent (docs/store.md quotes the runs of this script).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab_rev import alternate, report, sides
from bench_convert import make_shards, run_child


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", required=True, help="the git revision to compare with (A)")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--tmpfs-dir", default="/dev/shm")
    a = ap.parse_args()
    shards = make_shards()
    store = Path(a.tmpfs_dir) / "yt8m-ab-convert"

    def measure(env: dict) -> float:
        return run_child("convert", shards, env=env, workers=1, store_dir=str(store),
                         cores=1)["seconds"]

    with sides(a.rev) as envs:
        report(alternate(envs, a.pairs, measure))


if __name__ == "__main__":
    main()
