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
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_convert import ROOT, make_shards, run_child


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", required=True, help="the git revision to compare with (A)")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--tmpfs-dir", default="/dev/shm")
    a = ap.parse_args()
    shards = make_shards(8, 405)
    store = Path(a.tmpfs_dir) / "yt8m-ab-convert"
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "rev"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree),
                        a.rev], check=True)
        try:
            sides = {"A (" + a.rev + ")": dict(os.environ, PYTHONPATH=str(tree)),
                     "B (this checkout)": dict(os.environ, PYTHONPATH=str(ROOT))}
            times = {name: [] for name in sides}
            for i in range(a.pairs):
                for name, env in sides.items():
                    r = run_child("convert", shards, env=env, workers=1, store_dir=str(store),
                                  cores=1)
                    times[name].append(r["seconds"])
                print(f"pair {i + 1}: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()),
                      flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           check=False)
    (a_t, b_t) = times.values()
    for name, t in times.items():
        print(f"{name}: median {statistics.median(t):.3f} s")
    ratio = statistics.median(b / a for a, b in zip(a_t, b_t))
    print(f"B / A: median of per-pair ratios {ratio:.3f} "
          f"(range {min(b / a for a, b in zip(a_t, b_t)):.2f}-{max(b / a for a, b in zip(a_t, b_t)):.2f})")


if __name__ == "__main__":
    main()
