"""Benchmark `predict topk --video-prior` against the same command without the prior.

    .venv/bin/python benchmarks/bench_topk_prior.py --help
    flock /tmp/yt8m-bench.lock .venv/bin/python benchmarks/bench_topk_prior.py \\
        --rows 1704348 --repeats 5 --targets host,avx2

Issue 23 §1's target: the whole command with the prior at most 1.3x the time without it,
at the real test set's size (1,704,348 segments, K = 100,000, one model).

Data: the segment predictions of `bench_topk.py` (`generate`: skewed scores u**6, videos
of 20 segments, 85,218 videos), in --data (default bench_data/predict/, the file
`bench_topk.py --keep` leaves there is reused as it is), and a video-level prior of the
same skew over those videos and 2 % more (a store's videos without candidates), written
beside it (`prior<rows>.npy` + `.videos.parquet`). Files this run generates are deleted
at the end unless --keep.

Measured, each in a fresh process, alternating within each repeat (the order of the pair
swapped every other repeat), per target: `predict topk M.npy --out CSV` ("plain") and the
same with `--video-prior P.npy --top-classes N [--prior-weight A]` ("prior"); the ratio is
the median of the per-repeat ratios prior / plain. Before each run the guest memory is
warmed (benchmarks/vm_memory.py). `--inproc` also times, in one worker process per
repeat, `top_k` alone with and without the restriction and the restriction's setup
(`predict.prior.restriction`: the join, the kept classes), and the anonymous memory peak
of each. `--targets host,avx2` as in bench_topk.py (benchmarks/isa.py): every target's
prior run must write the same CSV (checked by hash). The CSV goes to --out-dir.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import isa
from bench_topk import DATA, WARM_GB, AnonPeak, generate, read_pass, run_env
from vm_memory import warm_guest_memory

EXTRA_VIDEOS = 0.02  # prior videos without segments, as a share of those with


def generate_prior(path: Path, segments_npy: Path, seed: int = 99) -> None:
    """A skewed (p = u**6) video-level prediction of the videos of `segments_npy` (in the
    order of their first segment) and EXTRA_VIDEOS more, at `path`."""
    import polars as pl

    from predict.predictions import PredictionWriter, sidecar_path

    if path.exists():
        return
    vids = pl.read_parquet(sidecar_path(segments_npy))["video_id"].unique(maintain_order=True)
    ids = vids.to_list() + [f"extra{i}" for i in range(int(len(vids) * EXTRA_VIDEOS))]
    rng = np.random.default_rng(seed)
    with PredictionWriter(path, ids) as w:
        for r0 in range(0, len(ids), 16384):
            w.write(rng.random((min(16384, len(ids) - r0), 1000), np.float32) ** 6)


def prior_args(a, prior: Path) -> list[str]:
    extra = ["--video-prior", str(prior), "--top-classes", str(a.top_classes)]
    return extra + (["--prior-weight", str(a.prior_weight)] if a.prior_weight is not None else [])


def whole_commands(a, npy: Path, prior: Path, targets: list[str]) -> None:
    """The whole command without and with the prior, alternating, per target."""
    out = a.out_dir / "bench_prior.csv"
    plain = [str(Path(sys.executable).with_name("predict")), "topk", str(npy), "--out", str(out),
             "--k", str(a.k)]
    runs = {"plain": plain, "prior": plain + prior_args(a, prior)}
    for target in targets:  # numba's cache warm for both, on each target
        for cmd in runs.values():
            subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env=run_env(target))
    times = {(t, name): [] for t in targets for name in runs}
    hashes = {}
    for rep in range(a.repeats):
        line = []
        for target in targets:
            order = list(runs) if rep % 2 == 0 else list(runs)[::-1]
            for name in order:
                warm_guest_memory(WARM_GB)
                t = time.perf_counter()
                subprocess.run(runs[name], check=True, capture_output=True, cwd=ROOT,
                               env=run_env(target))
                times[target, name].append(time.perf_counter() - t)
                if name == "prior":
                    hashes.setdefault(target, _sha(out))
                out.unlink()
            p, q = times[target, "plain"][-1], times[target, "prior"][-1]
            line.append(f"{target}: plain {p:.2f} s, prior {q:.2f} s, {q / p:.2f}x")
        print(f"  repeat {rep + 1}: " + "; ".join(line), flush=True)
    assert len(set(hashes.values())) == 1, f"the targets wrote different CSVs: {hashes}"
    for target in targets:
        p, q = times[target, "plain"], times[target, "prior"]
        ratio = float(np.median([y / x for x, y in zip(p, q)]))
        print(f"whole predict topk, {target} ({_describe(target)}): plain {np.median(p):.2f} s, "
              f"with the prior {np.median(q):.2f} s (medians of {a.repeats}); prior / plain "
              f"{ratio:.2f}x (median of per-repeat ratios, range "
              f"{min(y / x for x, y in zip(p, q)):.2f}-{max(y / x for x, y in zip(p, q)):.2f}; "
              f"target <= 1.3x)")


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()[:16]


def _describe(target: str) -> str:
    out = subprocess.run([sys.executable, "-c", "import isa; print(isa.describe())"],
                         check=True, capture_output=True, text=True, cwd=ROOT / "benchmarks",
                         env=run_env(target))
    return out.stdout.strip()


def worker(npy: str, prior: str, k: int, top_classes: int, weight: float | None) -> dict:
    """top_k without and with the restriction in one process (kernels compiled first)."""
    from predict.predictions import open_ensemble, open_video_predictions
    from predict.prior import restriction
    from predict.topk import top_k

    models = open_ensemble([npy])
    seg, scores = models[0].segments, models[0].scores
    pri = open_video_predictions(prior)
    small = restriction(pri, seg[:3000], top_classes, weight)  # compile on a small slice
    top_k([scores[:3000]], k=10, progress=False, restriction=small)
    warm_guest_memory(WARM_GB)
    with AnonPeak() as plain_peak:
        t0 = time.perf_counter()
        top_k([scores], k=k, progress=False)
        t1 = time.perf_counter()
    warm_guest_memory(WARM_GB)
    with AnonPeak() as prior_peak:
        t2 = time.perf_counter()
        r = restriction(pri, seg, top_classes, weight)
        t3 = time.perf_counter()
        top_k([scores], k=k, progress=False, restriction=r)
        t4 = time.perf_counter()
    return {"plain_s": t1 - t0, "setup_s": t3 - t2, "prior_topk_s": t4 - t3,
            "plain_peak_mb": plain_peak.peak_mb, "prior_peak_mb": prior_peak.peak_mb,
            "kept_entries": int(r.n_kept.sum())}


def in_process(a, npy: Path, prior: Path, targets: list[str]) -> None:
    for target in targets:
        rows = []
        for _ in range(a.repeats):
            cmd = [sys.executable, __file__, "--worker", str(npy), str(prior), str(a.k),
                   str(a.top_classes), str(a.prior_weight)]
            res = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT,
                                 env=run_env(target))
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        med = {key: float(np.median([r[key] for r in rows])) for key in rows[0]}
        ratio = float(np.median([(r["setup_s"] + r["prior_topk_s"]) / r["plain_s"] for r in rows]))
        print(f"top_k in one process, {target}: plain {med['plain_s']:.2f} s (anon peak "
              f"{med['plain_peak_mb']:.0f} MB); with the prior: setup {med['setup_s']:.2f} s + "
              f"top_k {med['prior_topk_s']:.2f} s (anon peak {med['prior_peak_mb']:.0f} MB, "
              f"{med['kept_entries'] / 1e6:.1f}M kept entries); {ratio:.2f}x (median of "
              f"{a.repeats} per-repeat ratios)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_704_348)
    ap.add_argument("--k", type=int, default=100_000)
    ap.add_argument("--top-classes", type=int, default=20)
    ap.add_argument("--prior-weight", type=float, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--targets", default="host", help="as bench_topk.py's --targets")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--out-dir", type=Path, default=DATA)
    ap.add_argument("--inproc", action="store_true", help="also time top_k in one process")
    ap.add_argument("--keep", action="store_true", help="keep the files this run generates")
    ap.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        npy, prior, k, top, weight = a.worker
        print(json.dumps(worker(npy, prior, int(k), int(top),
                                None if weight == "None" else float(weight))))
        return
    a.data.mkdir(parents=True, exist_ok=True)
    npy, prior = a.data / f"m{a.rows}_0.npy", a.data / f"prior{a.rows}.npy"
    made = [p for p in (npy, prior) if not p.exists()]
    generate(npy, a.rows, seed=0)
    generate_prior(prior, npy)
    for p in (npy, prior):
        read_pass(p)  # the page cache
    targets = isa.check(a.targets)
    print(f"# {a.rows} segments x 1000 classes, K = {a.k}, --top-classes {a.top_classes}"
          f"{'' if a.prior_weight is None else f', --prior-weight {a.prior_weight}'}, "
          f"{a.repeats} repeats; prior {prior.stat().st_size / 1e6:.0f} MB")
    whole_commands(a, npy, prior, targets)
    if a.inproc:
        in_process(a, npy, prior, targets)
    if not a.keep:
        for p in made:
            p.unlink()
            for side in (".segments.parquet", ".videos.parquet"):
                p.with_name(p.name.removesuffix(".npy") + side).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
