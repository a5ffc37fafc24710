"""The two steps of `make gpu-check` that are not a toolkit command (scripts/gpu_check.py runs
each in its own process, in the check's Python):

    python scripts/gpu_probe.py env [--device cuda|cpu]
        One JSON object: the GPU (name, memory, compute capability, driver), torch, CUDA,
        cuDNN, NCCL, Python, numpy, numba, CPU cores, memory; on CUDA also a bf16 matrix
        product checked against float32 (the device runs kernels at all).

    python scripts/gpu_probe.py check --run NAME=RUN_DIR ... --pred NAME=FILE.npy ...
            --truth truth.parquet --candidates N [--min-auc 0.55]
        The short train → predict pipeline's outputs: every number a fine-tuning run logged
        is finite and its last held-out AUC is above `--min-auc`; every prediction file has
        N rows of 1000 quantised scores, is not constant, and ranks the test truth's rated
        segments with an AUC above `--min-auc`. One JSON object {"checks": [{"name", "ok",
        "detail"}]}; exit status 1 when a check fails.

Chance is an AUC of 0.5; `--min-auc` leaves a margin for the noise of a held-out fold of a
few hundred rated segments.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import socket
import subprocess
import sys
from pathlib import Path

MIN_AUC = 0.55
GIB = 1 << 30


# ---------------------------------------------------------------- env

def environment(device: str) -> dict:
    import numba
    import numpy as np
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "numpy": np.__version__, "numba": numba.__version__,
           "cpus": os.cpu_count(), "memory_gib": _memory_gib(), "host": socket.gethostname(),
           "cuda_available": torch.cuda.is_available(), "gpu": None,
           "driver": _driver()}
    if device == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(gpu=props.name, gpus=torch.cuda.device_count(),
                   gpu_memory_gib=round(props.total_memory / GIB, 1),
                   capability=f"{props.major}.{props.minor}",
                   multiprocessors=props.multi_processor_count,
                   cudnn=_try(torch.backends.cudnn.version), nccl=_try(_nccl),
                   bf16_matmul_error=_bf16_matmul_error(torch))
    return env


def _try(fn):
    """fn(), or what went wrong (a version query must not stop the report)."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - any failure is reported as text
        return f"unknown ({type(err).__name__}: {err})"


def _nccl() -> str:
    import torch

    v = torch.cuda.nccl.version()  # a tuple (2, 27, 5) in recent torch, an int before
    return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            kib = int(next(line for line in f if line.startswith("MemTotal:")).split()[1])
        return round(kib * 1024 / GIB, 1)
    except (OSError, StopIteration, ValueError):
        return None


def _driver() -> str | None:
    """The NVIDIA driver's version from nvidia-smi (None where there is none)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.splitlines()[0].strip() if out.strip() else None


def _bf16_matmul_error(torch) -> float:
    """Relative error of a 1024³ bf16 matrix product on the GPU against float32 on the CPU."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(1024, 1024, generator=g) for _ in range(2))
    want = a @ b
    got = (a.cuda().bfloat16() @ b.cuda().bfloat16()).float().cpu()
    return float((got - want).norm() / want.norm())


# ---------------------------------------------------------------- check

def check(runs: dict[str, Path], preds: dict[str, Path], truth: Path, candidates: int,
          min_auc: float) -> list[dict]:
    checks = []
    for name, run in runs.items():
        checks += _run_checks(name, run, min_auc)
    for name, npy in preds.items():
        checks += _prediction_checks(name, npy, truth, candidates, min_auc)
    return checks


def _check(name: str, ok: bool, detail: str) -> dict:
    return {"name": name, "ok": bool(ok), "detail": detail}


def _run_checks(name: str, run: Path, min_auc: float) -> list[dict]:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return [_check(f"{name}: metrics", False, f"{path}: no such file")]
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    numbers = [v for r in records for v in r.values()
               if isinstance(v, (int, float)) and not isinstance(v, bool)]
    bad = [v for v in numbers if not math.isfinite(v)]
    evals = [r for r in records if r.get("split") == "eval" and "auc" in r]
    out = [_check(f"{name}: losses and metrics finite", numbers and not bad,
                  f"{len(numbers)} numbers in {len(records)} records, {len(bad)} not finite")]
    if not evals:
        return out + [_check(f"{name}: held-out AUC", False, "no held-out evaluation logged")]
    auc, step = evals[-1]["auc"], evals[-1].get("step")
    return out + [_check(f"{name}: held-out AUC > {min_auc}", _above(auc, min_auc),
                         f"AUC {auc:.4f} at step {step} (chance 0.5)")]


def _above(x, bound: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > bound


def _prediction_checks(name: str, npy: Path, truth: Path, candidates: int,
                       min_auc: float) -> list[dict]:
    import numpy as np

    if not npy.is_file():
        return [_check(f"{name}: predictions", False, f"{npy}: no such file")]
    scores = np.load(npy, mmap_mode="r")
    shape_ok = scores.ndim == 2 and scores.shape == (candidates, 1000)
    lo, hi = int(scores.min()), int(scores.max())
    out = [_check(f"{name}: prediction shape", shape_ok,
                  f"{scores.shape} {scores.dtype}, expected ({candidates}, 1000) uint16"),
           _check(f"{name}: scores in range, not constant", 0 <= lo < hi <= 9999,
                  f"min {lo}, max {hi} (quantised 0..9999)")]
    auc, n = _test_auc(npy, scores, truth)
    return out + [_check(f"{name}: test AUC > {min_auc}", _above(auc, min_auc),
                         f"AUC {auc:.4f} over {n} rated test segments (chance 0.5)")]


def _test_auc(npy: Path, scores, truth: Path) -> tuple[float, int]:
    """AUC of the predicted score of each rated (segment, class) of the test truth."""
    import numpy as np
    import polars as pl

    from predict.predictions import sidecar_path
    from trainer.metrics import roc_auc

    side = pl.read_parquet(sidecar_path(npy)).with_row_index("row")
    rated = pl.read_parquet(truth).join(side, on=["video_id", "start_time"], how="inner")
    if rated.height == 0:
        return float("nan"), 0
    rows = rated["row"].to_numpy()
    cls = rated["class_index"].cast(pl.Int64).to_numpy()
    positive = rated["score"].to_numpy() > 0.5  # the rating; `label` is the vocabulary id
    return roc_auc(np.asarray(scores[rows, cls], np.float64), positive), rated.height


# ---------------------------------------------------------------- command line

def _named(values: list[str]) -> dict[str, Path]:
    out = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep:
            sys.exit(f"gpu_probe: {v!r}: expected NAME=PATH")
        out[name] = Path(path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p_env = sub.add_parser("env", help="the machine, as JSON")
    p_env.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p_check = sub.add_parser("check", help="the pipeline's outputs")
    p_check.add_argument("--run", action="append", default=[], metavar="NAME=RUN_DIR")
    p_check.add_argument("--pred", action="append", default=[], metavar="NAME=FILE.npy")
    p_check.add_argument("--truth", type=Path, required=True)
    p_check.add_argument("--candidates", type=int, required=True)
    p_check.add_argument("--min-auc", type=float, default=MIN_AUC)
    args = parser.parse_args()
    if args.what == "env":
        print(json.dumps(environment(args.device), indent=1))
        return
    checks = check(_named(args.run), _named(args.pred), args.truth, args.candidates,
                   args.min_auc)
    print(json.dumps({"checks": checks}, indent=1))
    sys.exit(0 if all(c["ok"] for c in checks) else 1)


if __name__ == "__main__":
    main()
