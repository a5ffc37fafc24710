"""A/B against another git revision: its checkout, alternating pairs, the ratio.

Used by benchmarks/ab_convert.py and benchmarks/ab_topk.py. Each side is a
fresh process whose PYTHONPATH puts one checkout first; A is the revision, B
this checkout. This VM's speed drifts by 10-30 % within minutes, so only
alternating pairs and the median of per-pair ratios compare changes of a few
per cent.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def sides(rev: str):
    """{"A (REV)": env, "B (this checkout)": env}, REV checked out in a temporary worktree."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "rev"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree),
                        rev], check=True)
        try:
            yield {f"A ({rev})": dict(os.environ, PYTHONPATH=str(tree)),
                   "B (this checkout)": dict(os.environ, PYTHONPATH=str(ROOT))}
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                           check=False)


def alternate(envs: dict, pairs: int, measure) -> dict[str, list[float]]:
    """`measure(env)` → seconds, for each side in turn, `pairs` times; prints each pair.

    Every other pair runs B first (A B, B A, ...): the first run of a pair may find
    the machine in another state than the second.
    """
    times = {name: [] for name in envs}
    for i in range(pairs):
        for name, env in list(envs.items())[:: -1 if i % 2 else 1]:
            times[name].append(measure(env))
        print(f"pair {i + 1}: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()),
              flush=True)
    return times


def report(times: dict[str, list[float]]) -> None:
    """Both medians and the median (and range) of the per-pair ratios B / A."""
    for name, t in times.items():
        print(f"{name}: median {statistics.median(t):.3f} s")
    a_t, b_t = times.values()
    ratios = [b / a for a, b in zip(a_t, b_t)]
    print(f"B / A: median of per-pair ratios {statistics.median(ratios):.3f} "
          f"(range {min(ratios):.2f}-{max(ratios):.2f})")
