"""How much `predict segments --precision bf16` changes a submission against the fp32
default: per model, and for their mixture, the share of each class's top-K entries that
differ, and the MAP@K of both against the truth.

    .venv/bin/python benchmarks/precision_topk.py DEMO_OUT [--k 407] [--device cpu]

DEMO_OUT is a `make demo` output folder (its runs, its test store and the test truth).
Every run predicts the test store twice (fp32, then bf16 autocast, on the device given; on
the CPU bf16 autocast shows the size of the effect), `top_k` (seed 0) picks each class's
K best of each, and the lists are compared as sets. Not a speed benchmark: no timing.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from predict.segments import predict_segments
from predict.topk import top_k


def changed_shares(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`(C,)` share of class c's top-K rows in `a (C, K)` that are not in `b (C, K)`."""
    return np.array([1.0 - len(np.intersect1d(x, y)) / len(x) for x, y in zip(a, b)])


def evaluate(preds: list[Path], out: Path, truth: Path, k: int) -> float:
    """MAP@k of the submission `predict topk` makes of `preds`."""
    cli = Path(sys.executable).with_name("predict")
    subprocess.run([cli, "topk", *preds, "--out", out, "--k", str(k)], check=True,
                   capture_output=True)
    result = subprocess.run([cli, "evaluate", out, "--truth", truth, "--k", str(k), "--json"],
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout)["map"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("demo_out", type=Path)
    parser.add_argument("--k", type=int, default=407)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    store = args.demo_out / "stores" / "test"
    truth = args.demo_out / "shards" / "test" / "truth.parquet"
    runs = sorted(p for p in (args.demo_out / "runs").iterdir() if (p / "config.json").is_file()
                  and not p.name.startswith("pretrain"))
    print(f"{'model':34s} {'entries changed':>16s} {'median':>8s} {'max':>8s} "
          f"{'MAP fp32':>9s} {'MAP bf16':>9s}")
    with tempfile.TemporaryDirectory() as tmp:
        files = {"fp32": [], "bf16": []}
        for run in runs:
            for precision, found in files.items():
                out = Path(tmp) / precision / run.name
                out.parent.mkdir(exist_ok=True)
                predict_segments(str(store), str(run), str(out), device=args.device,
                                 progress=False, precision=precision)
                found.append(out.with_suffix(".npy"))
            report(run.name, [files["fp32"][-1]], [files["bf16"][-1]], Path(tmp), truth, args.k)
        report("mixture of all", files["fp32"], files["bf16"], Path(tmp), truth, args.k)


def report(name: str, fp32: list[Path], bf16: list[Path], tmp: Path, truth: Path,
           k: int) -> None:
    lists = [top_k([np.load(p, mmap_mode="r") for p in ps], k, progress=False).copy()
             for ps in (fp32, bf16)]
    share = changed_shares(*lists)
    maps = [evaluate(ps, tmp / f"{name}-{tag}.csv", truth, k)
            for tag, ps in (("fp32", fp32), ("bf16", bf16))]
    print(f"{name:34s} {share.mean():15.2%} {statistics.median(share):8.2%} "
          f"{share.max():8.2%} {maps[0]:9.4f} {maps[1]:9.4f}", flush=True)


if __name__ == "__main__":
    main()
