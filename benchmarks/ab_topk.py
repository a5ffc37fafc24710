"""A/B of `top_k` on one model: this checkout against another git revision.

Run:  .venv/bin/python benchmarks/ab_topk.py --rev REV [--pairs 8] [--rows 1000000]
                                                [--target host|avx2[:PATH]] [--cpu]

Checks REV out into a temporary git worktree and runs top-k (k = 100,000) over
benchmarks/bench_topk.py's one-model prediction file (made there if missing),
alternately with REV's `predict` and this checkout's, each a fresh process of
`bench_topk.py --worker topk` (numba warm-up, memory warm-up, one timed top_k).
Prints both medians and the median of the per-pair ratios (docs/predictions.md
quotes the runs of this script). `--target` compiles both sides for that target
(bench_topk.py's --targets: `avx2` is numba compiled for an AVX2-only CPU); `--cpu`
compares top_k's CPU seconds (all threads) instead of its wall time, steadier when
other jobs share the cores.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab_rev import alternate, report, sides
from bench_topk import DATA, generate, read_pass, run_env, run_worker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", required=True, help="the git revision to compare with (A)")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--k", type=int, default=100_000)
    ap.add_argument("--target", default="host", help="host or avx2 (bench_topk.py --targets)")
    ap.add_argument("--cpu", action="store_true", help="compare CPU seconds, not wall seconds")
    a = ap.parse_args()
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"m{a.rows}_0.npy"
    generate(path, a.rows, seed=0)
    read_pass(path)  # warm the page cache

    def measure(env: dict) -> float:
        run = run_worker(["topk", str(a.k), str(path)], env=run_env(a.target, env))
        return run["topk_cpu_s" if a.cpu else "topk_s"]

    with sides(a.rev) as envs:
        report(alternate(envs, a.pairs, measure))


if __name__ == "__main__":
    main()
