"""Benchmark `predict evaluate` on a full-size submission beside `predict validate` and
the official loop.

    .venv/bin/python benchmarks/bench_evaluate.py --help
    .venv/bin/python benchmarks/bench_evaluate.py                 # full size, 3 repeats
    .venv/bin/python benchmarks/bench_evaluate.py --twin          # + the former in-memory path

Builds, under --dir (default: a fresh folder in /dev/shm, deleted at the end unless
--keep), a submission of 1000 classes x --k entries drawn from --segments segments
(ids `v<n>` as in bench_topk.py, 20 segments per video; written with the project's
writer, 1.02 GB at full size) and a truth table with the real dataset's rated and
positive segment counts per class (/work/shared/data/segment_vocabulary.csv: 237,788
rated segments, 132,442 positive; the rated segments are random rows, about half of
them in the submission's lists). Then, each as a whole process and the median of
--repeats runs, taken in turn (validate, evaluate, validate, evaluate, ...):

- project: `predict evaluate SUB --truth TRUTH` (wall seconds, peak RSS from wait4);
- baseline: `predict validate SUB` on the same file (the target: evaluate within 3x);
- the official loop (--official-repeats runs): the semantics of the challenge's
  `segment_eval_inference.py` (/work/shared/data/README.md) as plain Python: a dict
  of rated entries per class, each line split, cut to K, unrated entries dropped,
  AP / N_c, the mean over classes with a positive. Its MAP must equal the project's
  (checked, 1e-9);
- with --twin, the former `predict evaluate` path (`read_submission` into a dict of
  Python strings, then `mean_average_precision`), as a subprocess.

`--targets host,avx2` runs validate and evaluate once per target in each repeat,
in turn: numba compiled for this CPU and for an AVX2-only one (benchmarks/isa.py);
both must give the same MAP, and the last lines give the median of the per-repeat
ratios avx2 / host.

Peak RSS is each child's ru_maxrss (wait4); the files are built in a child of their
own so that this process stays small (a child's maxrss starts from its parent's).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
import isa

VOCAB = Path("/work/shared/data/segment_vocabulary.csv")
SEGMENTS = 1_704_348  # the real test set's candidate segments
PER_VIDEO = 20


def build(folder: Path, n: int, k: int, seed: int) -> tuple[Path, Path]:
    """A full-size submission (random distinct rows per class) and a truth table."""
    import polars as pl

    from ingest.vocab import segment_class_ids
    from predict.submission import write_submission

    rng = np.random.default_rng(seed)
    segments = pl.DataFrame({
        "video_id": np.char.add("v", (np.arange(n) // PER_VIDEO).astype(str)),
        "start_time": pl.Series(np.arange(n) % PER_VIDEO * 5 + 30, dtype=pl.Int32)})
    perm = rng.permutation(n).astype(np.int32)
    k = min(k, n)
    offsets = rng.integers(0, n, 1000)
    rows = perm[(offsets[:, None] + np.arange(k)[None, :]) % n]  # distinct within a class
    sub = folder / "submission.csv"
    write_submission(sub, rows, segments, progress=False)

    ids = segment_class_ids()
    vocab = pl.read_csv(VOCAB)
    index_of = {int(c): i for i, c in enumerate(ids)}
    parts = []
    for cid, pos, total in vocab.select("Index", "PositiveSegmentCount",
                                        "TotalSegmentCount").iter_rows():
        ci = index_of[int(cid)]
        # half the rated segments of a class are in its submitted list, half anywhere
        inside = rng.choice(rows[ci], total // 2, replace=False)
        anywhere = rng.choice(n, total - total // 2, replace=False)
        chosen = np.unique(np.concatenate([inside, anywhere]))
        score = np.zeros(len(chosen), np.float32)
        score[rng.choice(len(chosen), min(pos, len(chosen)), replace=False)] = 1.0
        parts.append(pl.DataFrame({
            "video_id": segments["video_id"].gather(chosen),
            "start_time": segments["start_time"].gather(chosen),
            "label": pl.Series(np.full(len(chosen), cid), dtype=pl.Int32),
            "class_index": pl.Series(np.full(len(chosen), ci), dtype=pl.Int16),
            "score": score}))
    truth = folder / "truth.parquet"
    pl.concat(parts).write_parquet(truth)
    return sub, truth


def official_loop(sub: str, truth: str, k: int) -> dict:
    """The challenge's segment_eval_inference.py semantics, as a plain Python loop."""
    import polars as pl

    rated: dict = {}
    table = pl.read_parquet(truth)
    for vid, start, label, score in table.select(
            "video_id", "start_time", "label", "score").iter_rows():
        rated.setdefault(label, {})[f"{vid}:{start}"] = score  # the last rating counts
    n_pos = {c: sum(1 for s in d.values() if s > 0.5) for c, d in rated.items()}
    aps = {c: 0.0 for c, p in n_pos.items() if p}  # a class with positives and no row: 0
    with open(sub, encoding="utf-8") as f:
        next(f)
        for line in f:
            cls, _, segs = line.rstrip("\n").partition(",")
            c = int(cls)
            if c not in aps:
                continue
            d, hits, seen, ap = rated[c], 0, 0, 0.0
            for entry in segs.split(" ")[:k]:
                score = d.get(entry)
                if score is None:
                    continue
                seen += 1
                if score > 0.5:
                    hits += 1
                    ap += hits / seen
            aps[c] = ap / n_pos[c]
    return {"map": statistics.fmean(aps.values()), "classes": len(aps)}


def former_twin(sub: str, truth: str, k: int) -> dict:
    """`predict evaluate` before the streaming pass: every entry as a Python string."""
    from ingest.store.truth import read_truth
    from predict.metric import mean_average_precision, truth_by_class
    from predict.submission import read_submission

    result = mean_average_precision(read_submission(sub, max(k, 100_000)),
                                    truth_by_class(read_truth(truth)), k)
    return {"map": result.map, "classes": result.classes}


def timed(cmd: list[str], target: str = "host") -> tuple[float, float, str]:
    """(wall seconds, peak RSS MB, stdout) of a whole process (its rusage from wait4), its
    numba kernels compiled for `target` (benchmarks/isa.py)."""
    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, cwd=ROOT,
                                env=isa.target_env(target))
        out = proc.stdout.read().decode()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            err.seek(0)
            last = err.read().decode(errors="replace").strip().splitlines()[-1:]
            raise RuntimeError(f"{cmd[:3]} exited {proc.returncode}: {last}")
    return wall, usage.ru_maxrss / 1024, out


def cli(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("predict")), *args]


def worker(kind: str) -> list[str]:
    return [sys.executable, __file__, "--worker", kind]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=SEGMENTS)
    ap.add_argument("--k", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--official-repeats", type=int, default=1)
    ap.add_argument("--twin", action="store_true",
                    help="also the former in-memory path (about 7 GB of memory)")
    ap.add_argument("--dir", type=Path, default=None, help="where to build the files "
                    "(default: a new folder in /dev/shm, or the temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the built files")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targets", default="host",
                    help="comma-separated numba targets of validate and evaluate: host, avx2 "
                         "(benchmarks/isa.py)")
    ap.add_argument("--worker", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        kind, *args = a.worker
        if kind == "build":
            sub, truth = build(Path(args[0]), *map(int, args[1:]))
            print(json.dumps([str(sub), str(truth)]))
            return
        fn = official_loop if kind == "official" else former_twin
        print(json.dumps(fn(args[0], args[1], int(args[2]))))
        return
    targets = isa.check(a.targets)
    base = a.dir or Path("/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir())
    folder = Path(tempfile.mkdtemp(prefix="bench_evaluate_", dir=base))
    try:
        t = time.perf_counter()  # built in a child: this process stays small, and the
        # children's peak RSS (which on Linux starts from the parent's) is their own
        sub, truth = map(Path, json.loads(subprocess.run(
            [*worker("build"), str(folder), str(a.segments), str(a.k), str(a.seed)],
            check=True, capture_output=True, text=True, cwd=ROOT).stdout))
        print(f"# {sub.stat().st_size / 1e9:.2f} GB submission, 1000 classes x "
              f"{min(a.k, a.segments)} entries of {a.segments} segments, built in "
              f"{time.perf_counter() - t:.1f} s in {folder}; K = 100,000; "
              f"median of {a.repeats}", flush=True)
        for t in targets:  # numba's cache is warm (compiled here on a target's first run)
            timed(cli("evaluate", str(sub), "--truth", str(truth)), t)  # validates too
        runs: dict = {(kind, t): [] for t in targets for kind in ("validate", "evaluate")}
        for _ in range(a.repeats):
            for t in targets:
                runs["validate", t].append(timed(cli("validate", str(sub)), t))
                runs["evaluate", t].append(timed(cli("evaluate", str(sub), "--truth",
                                                     str(truth), "--json"), t))
        results = {t: json.loads(runs["evaluate", t][0][2]) for t in targets}
        project = results[targets[0]]
        assert all(r == project for r in results.values()), results
        med = {key: (statistics.median(r[0] for r in rs), max(r[1] for r in rs))
               for key, rs in runs.items()}
        for t in targets:
            ratio = statistics.median(e[0] / v[0] for e, v in zip(runs["evaluate", t],
                                                                   runs["validate", t]))
            print(f"baseline predict validate ({t}): {med['validate', t][0]:.2f} s, "
                  f"peak RSS {med['validate', t][1]:.0f} MB")
            print(f"project predict evaluate ({t}): {med['evaluate', t][0]:.2f} s, peak RSS "
                  f"{med['evaluate', t][1]:.0f} MB; MAP {project['map']:.6f} over "
                  f"{project['classes']} classes; vs validate {ratio:.2f}x (median of "
                  f"per-repeat ratios)")
        for t in targets[1:]:
            for kind in ("validate", "evaluate"):
                rel = statistics.median(x[0] / h[0] for x, h in zip(runs[kind, t],
                                                                   runs[kind, targets[0]]))
                print(f"predict {kind}, {t} / {targets[0]}: {rel:.2f} (median of per-repeat "
                      f"ratios)")
        med["evaluate"] = med["evaluate", targets[0]]
        others = [("official", a.official_repeats)] + ([("twin", 1)] if a.twin else [])
        for kind, repeats in others:
            rs = [timed([*worker(kind), str(sub), str(truth), "100000"])
                  for _ in range(repeats)]
            got = json.loads(rs[0][2])
            assert abs(got["map"] - project["map"]) < 1e-9 and got["classes"] == project["classes"], got
            wall = statistics.median(r[0] for r in rs)
            name = {"official": "official loop (plain Python)",
                    "twin": "former predict evaluate (dict of strings)"}[kind]
            print(f"baseline {name}: {wall:.2f} s, peak RSS {max(r[1] for r in rs):.0f} MB, "
                  f"same MAP; project is {wall / med['evaluate'][0]:.1f}x faster")
    finally:
        if a.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder)


if __name__ == "__main__":
    main()
