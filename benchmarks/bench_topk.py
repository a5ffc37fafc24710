"""Benchmark `predict topk` against numpy argpartition and a plain sequential read.

    .venv/bin/python benchmarks/bench_topk.py --help
    .venv/bin/python benchmarks/bench_topk.py --rows 1000000 --models 3
    .venv/bin/python benchmarks/bench_topk.py --rows 1704348 --models 1 --repeats 1 --full

Generates quantised prediction files with PredictionWriter under
bench_data/predict/ (2 GB per model at 1,000,000 rows; many ties: scores are
skewed towards 0 like real sigmoid outputs), warms the page cache, then measures,
each in its own subprocess and the median of --repeats runs:

- project: `predict.topk.top_k` over 1 model and over --models models (the two
  counting passes; the CSV writing is timed separately), and the peak anonymous
  memory of that process (RssAnon from /proc/self/status, sampled every 5 ms);
- baseline (a): per class column, gather the column from the memory-mapped
  matrices, rounded ensemble mean, `np.argpartition` for the top K, sort those K;
  timed on --baseline-classes classes and extrapolated to 1000 (said in the output);
Before each timed run the worker touches and frees WARM_GB of memory (the VM
backs guest memory lazily; see benchmarks/vm_memory.py; `--cold` leaves it out).

- baseline (b): one sequential read pass (readinto a reused 16 MB buffer) over
  the same .npy bytes of every model, taken alternately with the project's runs
  (read, run, read, run, ...): the ratio is the median of the per-repeat ratios.

`--validate` also times `predict validate` of one model's full submission, the
project's row pass against the exact regex-and-set check alone, in the same run.
`--process` times the whole `predict topk M.npy --out CSV` command (one model, a
fresh process: interpreter, imports, reading, top-k, the CSV) against the sum of
three floors measured alternately with it in the same run (issue #14's target:
at most 2.5x): one read pass of the .npy, a raw write of as many bytes as the CSV
has (one `write` of a ready buffer into the same folder), and a process that only
imports the command (`python -c "import predict.cli.main"`). The CSV goes to
--out-dir (default bench_data/predict/, on disk; /dev/shm for tmpfs).
`--keep` leaves the generated files; by default they are deleted at the end.

`--targets host,avx2` runs every timed step (top_k, the whole command) once per
target, in turn within each repeat, against the same floors: `host` compiles numba
for this CPU, `avx2` for an AVX2-only one; `ISA:PATH` also forces the top-k's
compress path, e.g. `host:permute` (benchmarks/isa.py). Every target must select
the same rows (checked). Each output line names the
target and the compress path it ran. Worker processes and the command wait at
numba's barriers with OMP_WAIT_POLICY=PASSIVE, as `predict topk` sets it (unless
the variable is set), so that spinning threads do not measure the other jobs of
a shared machine.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # after PYTHONPATH: benchmarks/ab_topk.py runs another checkout
sys.path.insert(0, str(ROOT / "benchmarks"))
import isa
from vm_memory import warm_guest_memory

DATA = ROOT / "bench_data" / "predict"
READ_CHUNK = 16 << 20
WARM_GB = 2.0  # memory touched and freed before each timed run (benchmarks/vm_memory.py)


def run_env(target: str, base: dict | None = None) -> dict:
    """The environment of a worker or command on `target` (benchmarks/isa.py), waiting at
    numba's barriers as `predict topk` does (OMP_WAIT_POLICY=PASSIVE unless set)."""
    env = isa.target_env(target, base)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


def rss_anon_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


class AnonPeak:
    """Sample RssAnon in a thread; `.peak_mb` after the block."""

    def __enter__(self):
        self.peak, self._stop = rss_anon_kb(), threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, rss_anon_kb())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, rss_anon_kb())
        self.peak_mb = self.peak / 1024


def generate(path: Path, rows: int, seed: int) -> None:
    """A skewed random (rows, 1000) prediction file: p = u**6, many small equal scores."""
    from predict.predictions import PredictionWriter

    if path.exists():
        return
    vids = np.char.add("v", (np.arange(rows) // 20).astype(str))
    starts = (np.arange(rows) % 20 * 5 + 30).astype(np.int32)
    rng = np.random.default_rng(seed)
    block = 16384
    with PredictionWriter(path, vids, starts) as w:
        for r0 in range(0, rows, block):
            u = rng.random((min(block, rows - r0), 1000), np.float32)
            w.write(u ** 6)


def read_pass(path: Path) -> float:
    buf = bytearray(READ_CHUNK)
    t = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass
    return time.perf_counter() - t


def worker_topk(paths: list[str], k: int, warm_memory: bool = True) -> dict:
    from predict import simd
    from predict.predictions import open_ensemble
    from predict.submission import write_submission
    from predict.topk import top_k

    warm = np.zeros((100, 1000), np.uint16)
    warm.setflags(write=False)  # the memory maps are read-only: load that specialisation
    top_k([warm] * len(paths), k=10, progress=False)
    models = open_ensemble(paths)
    if warm_memory:
        warm_guest_memory(WARM_GB)
    with AnonPeak() as peak:
        t0, c0 = time.perf_counter(), time.process_time()
        rows = top_k([m.scores for m in models], k=k, progress=False)
        t1, c1 = time.perf_counter(), time.process_time()
    out = DATA / "bench_submission.csv"
    write_submission(out, rows, models[0].segments)
    t2 = time.perf_counter()
    size = out.stat().st_size
    out.unlink()
    return {"topk_s": t1 - t0, "topk_cpu_s": c1 - c0, "csv_s": t2 - t1, "anon_peak_mb": peak.peak_mb,
            "csv_mb": size / 2**20, "rows_sha": hashlib.sha256(rows.copy()).hexdigest()[:16],
            # an older checkout (benchmarks/ab_topk.py) has a single path
            "target": isa.describe() if hasattr(simd, "target_isa") else "one path"}


def worker_validate(paths: list[str], k: int) -> dict:
    """`validate_submission` of a full submission, the project's row pass against the exact
    regex-and-set check alone (its baseline: what every row went through before)."""
    from predict import submission
    from predict.predictions import open_ensemble
    from predict.topk import top_k

    models = open_ensemble(paths)
    out = DATA / "bench_validate.csv"
    submission.write_submission(out, top_k([m.scores for m in models], k=k, progress=False),
                                models[0].segments)
    try:
        t0 = time.perf_counter()
        fast = submission.validate_submission(out, k)
        t1 = time.perf_counter()
        exact = submission.validate_submission(out, k, exact=True)
        t2 = time.perf_counter()
    finally:
        out.unlink()
    assert fast == exact == []
    return {"fast_s": t1 - t0, "exact_s": t2 - t1}


def worker_argpartition(paths: list[str], k: int, n_classes: int) -> dict:
    mats = [np.load(p, mmap_mode="r") for p in paths]
    m = len(mats)
    gather = select = 0.0
    for c in np.linspace(0, 999, n_classes).astype(int):
        t0 = time.perf_counter()
        total = sum(np.asarray(x[:, c], np.int64) for x in mats)
        col = (2 * total + m) // (2 * m)
        t1 = time.perf_counter()
        part = np.argpartition(-col, k - 1)[:k]
        part[np.argsort(-col[part], kind="stable")]
        select += time.perf_counter() - t1
        gather += t1 - t0
    scale = 1000 / n_classes
    return {"gather_s": gather * scale, "select_s": select * scale, "total_s": (gather + select) * scale}


def whole_process(path: Path, out_dir: Path, repeats: int, targets: list[str]) -> None:
    """`predict topk` as a whole process on each target beside its three floors, alternating."""
    out = out_dir / "bench_process.csv"
    predict = [str(Path(sys.executable).with_name("predict")), "topk", str(path), "--out", str(out)]
    for target in targets:  # numba's cache is warm (compiled here on a target's first run)
        subprocess.run(predict, check=True, capture_output=True, cwd=ROOT, env=run_env(target))
    raw = np.ones(out.stat().st_size, np.uint8)
    out.unlink()
    rows = {t: [] for t in targets}
    for _ in range(repeats):
        read = read_pass(path)
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import predict.cli.main"], check=True, cwd=ROOT)
        imports = time.perf_counter() - t
        t = time.perf_counter()
        with open(out, "wb") as f:
            f.write(raw)
        write = time.perf_counter() - t
        out.unlink()
        floor = read + write + imports
        line = []
        for target in targets:
            warm_guest_memory(WARM_GB)
            t = time.perf_counter()
            subprocess.run(predict, check=True, capture_output=True, cwd=ROOT,
                           env=run_env(target))
            whole = time.perf_counter() - t
            out.unlink()
            rows[target].append((whole, read, write, imports))
            line.append(f"{target} {whole:.2f} s, {whole / floor:.2f}x")
        print(f"  floors: read {read:.2f} + raw write {write:.2f} + imports {imports:.2f} = "
              f"{floor:.2f} s; predict topk: {'; '.join(line)}", flush=True)
    for target in targets:
        med = [float(np.median(col)) for col in zip(*rows[target])]
        ratio = float(np.median([r[0] / sum(r[1:]) for r in rows[target]]))
        print(f"whole predict topk, 1 model, {target}: {med[0]:.2f} s; floors (medians): read "
              f"pass {med[1]:.2f} s + raw write of the CSV's {raw.nbytes / 1e9:.2f} GB "
              f"{med[2]:.2f} s + imports {med[3]:.2f} s = {sum(med[1:]):.2f} s; {ratio:.2f}x "
              f"(median of per-repeat ratios; target <= 2.5x)")
    if len(targets) > 1:
        base = rows[targets[0]]
        for target in targets[1:]:
            rel = np.median([r[0] / b[0] for r, b in zip(rows[target], base)])
            print(f"whole predict topk, {target} / {targets[0]}: {rel:.2f} (median of "
                  f"per-repeat ratios)")


def run_worker(args: list[str], env: dict | None = None) -> dict:
    """One measurement in a fresh process (`env`: e.g. a PYTHONPATH of another checkout)."""
    cmd = [sys.executable, __file__, "--worker", *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def interleaved(repeats: int, paths: list[str], k: int, cold: bool,
                targets: list[str]) -> tuple[dict, float, dict]:
    """Per target, the medians of the project's runs; the median read pass over the same
    files; per target, the median of the per-repeat ratios run / read. Taken alternately (a
    read pass, then a run per target, per repeat); every run must select the same rows."""
    runs, reads = {t: [] for t in targets}, []
    for _ in range(repeats):
        reads.append(sum(read_pass(Path(p)) for p in paths))
        for t in targets:
            runs[t].append(run_worker(["topk-cold" if cold else "topk", str(k), *paths],
                                      env=run_env(t)))
    shas = {r["rows_sha"] for rs in runs.values() for r in rs}
    assert len(shas) == 1, f"the targets selected different rows: {shas}"
    proj, ratio = {}, {}
    for t, rs in runs.items():
        proj[t] = {key: float(np.median([r[key] for r in rs])) for key in rs[0]
                   if isinstance(rs[0][key], float)}
        proj[t]["target"] = rs[0]["target"]
        ratio[t] = float(np.median([r["topk_s"] / b for r, b in zip(rs, reads)]))
    return proj, float(np.median(reads)), ratio


def median_of(repeats: int, fn) -> dict:
    runs = [fn() for _ in range(repeats)]
    return {key: float(np.median([r[key] for r in runs])) for key in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--k", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-classes", type=int, default=8)
    ap.add_argument("--full", action="store_true", help="project and read pass only (no argpartition)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    ap.add_argument("--validate", action="store_true",
                    help="also time `predict validate` of one model's submission, fast row "
                         "pass against the exact check alone (about a minute more)")
    ap.add_argument("--process", action="store_true",
                    help="also time the whole `predict topk` command (one model) against "
                         "a read pass + a raw write of its CSV + the imports")
    ap.add_argument("--out-dir", type=Path, default=DATA,
                    help="where --process writes the CSV (default bench_data/predict/)")
    ap.add_argument("--targets", default="host",
                    help="comma-separated: host, avx2 (numba compiled for an AVX2-only CPU), "
                         "each with an optional :PATH forcing the compress path "
                         "(compress, permute, scalar); default host")
    ap.add_argument("--cold", action="store_true",
                    help="no memory warm-up before the timed runs (see warm_guest_memory)")
    ap.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        kind, k, *rest = a.worker
        if kind in ("topk", "topk-cold"):
            print(json.dumps(worker_topk(rest, int(k), warm_memory=kind == "topk")))
        elif kind == "validate":
            print(json.dumps(worker_validate(rest, int(k))))
        else:
            print(json.dumps(worker_argpartition(rest[1:], int(k), int(rest[0]))))
        return
    DATA.mkdir(parents=True, exist_ok=True)
    paths = [DATA / f"m{a.rows}_{i}.npy" for i in range(a.models)]
    for i, p in enumerate(paths):
        print(f"generating {p} ...", file=sys.stderr)
        generate(p, a.rows, seed=i)
    for p in paths:
        read_pass(p)  # warm the page cache
    gb = paths[0].stat().st_size / 1e9
    print(f"# {a.rows} segments x 1000 classes, {gb:.2f} GB per model, K = {a.k}, "
          f"median of {a.repeats}")
    targets = isa.check(a.targets)
    for n in sorted({1, a.models}):
        sel = [str(p) for p in paths[:n]]
        projs, read_s, ratios = interleaved(a.repeats, sel, a.k, a.cold, targets)
        print(f"baseline (b) sequential read, {n} model(s): {read_s:.2f} s "
              f"({n * gb / read_s:.2f} GB/s)")
        for t, proj in projs.items():
            print(f"project top_k, {n} model(s), {t} ({proj['target']}): "
                  f"{proj['topk_s']:.2f} s ({proj['topk_cpu_s']:.1f} s CPU) "
                  f"(+ CSV {proj['csv_s']:.2f} s, {proj['csv_mb']:.0f} MB), "
                  f"anon peak {proj['anon_peak_mb']:.0f} MB; "
                  f"vs read pass: {ratios[t]:.2f}x (median of per-repeat ratios)")
        if a.full:
            continue
        proj = projs[targets[0]]
        base = median_of(1, lambda sel=sel: run_worker(
            ["argpartition", str(a.k), str(a.baseline_classes), *sel]))
        print(f"baseline (a) argpartition per column, {n} model(s): {base['total_s']:.1f} s "
              f"(extrapolated from {a.baseline_classes} classes: gather {base['gather_s']:.1f} s, "
              f"select {base['select_s']:.1f} s); project ({targets[0]}) is "
              f"{base['total_s'] / proj['topk_s']:.1f}x faster")
    if a.process:
        whole_process(paths[0], a.out_dir, a.repeats, targets)
    if a.validate:
        v = run_worker(["validate", str(a.k), str(paths[0])])
        print(f"validate a 1-model submission: project {v['fast_s']:.2f} s, exact check alone "
              f"{v['exact_s']:.2f} s; project is {v['exact_s'] / v['fast_s']:.1f}x faster")
    if not a.keep:
        for p in paths:
            p.unlink()
            p.with_name(p.name.removesuffix(".npy") + ".segments.parquet").unlink()


if __name__ == "__main__":
    main()
