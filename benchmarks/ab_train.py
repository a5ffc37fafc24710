"""A/B of the training loop through the real `train pretrain` command: this checkout
against another git revision, same store, same options (each side's defaults).

Run:  .venv/bin/python benchmarks/ab_train.py --rev REV [--pairs 5] [--model nxvlad-tiny]
                                              [--steps 60] [--batch-size 32] [--max-len 60]

Each side is a fresh `python -m trainer pretrain` process (PYTHONPATH to one checkout,
ab_rev.py), on the CPU with the recipes' thread settings; its rate is the median of the
run's own logged `samples_per_s` windows (every 10 steps) after the first window (warm-up),
so imports and the store's index are not timed. Prints both medians and the median of the
per-pair ratios B / A of the seconds per sample (below 1: this checkout is faster).
Data: one synthetic validate store (2 shards × 100 videos) in a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab_rev import alternate, report, sides

from ingest.store.convert import ConvertConfig, convert
from ingest.synth import SynthConfig, write_synth


def make_store(root: Path) -> Path:
    cfg = SynthConfig(out_dir=str(root / "shards"), split="validate", shards=2,
                      videos_per_shard=100, seed=3)
    sources = [str(p) for p in write_synth(cfg, progress=False) if p.suffix == ".tfrecord"]
    convert(ConvertConfig(sources=tuple(sources), out=str(root / "store"), progress=False))
    return root / "store"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", required=True, help="the git revision to compare with (A)")
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--model", default="nxvlad-tiny")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=60)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = make_store(Path(tmp))
        runs = iter(range(10**6))

        def measure(env: dict) -> float:
            out = Path(tmp) / f"run{next(runs)}"
            subprocess.run([sys.executable, "-m", "trainer", "pretrain", "--store", str(store),
                            "--model", a.model, "--out", str(out), "--steps", str(a.steps),
                            "--batch-size", str(a.batch_size), "--max-len", str(a.max_len),
                            "--log-every", "10", "--device", "cpu", "--quiet"],
                           env=env, check=True, capture_output=True)
            rates = [json.loads(line)["samples_per_s"] for line in
                     (out / "metrics.jsonl").read_text().splitlines() if '"train"' in line]
            return 1.0 / statistics.median(rates[1:])  # seconds per sample

        with sides(a.rev) as envs:
            report(alternate(envs, a.pairs, measure))


if __name__ == "__main__":
    main()
