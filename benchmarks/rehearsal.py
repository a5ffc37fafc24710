"""A full-size rehearsal: the 3rd challenge's sizes on synthetic data, every stage through
the real commands, one table of time, CPU time, peak anonymous memory and disk per stage.

    .venv/bin/python benchmarks/rehearsal.py [--out bench_data/rehearsal] [--train-shards 39]
                                             [--steps 200] [--keep] [--only STAGE,...]
    make rehearsal                           (the same, defaults; not part of make test)

Sizes (docs/real-dataset.md, ../shared/data): a test set of 64 shards × 768 videos = 49,152
videos, 1,688,001 candidates with the seed used (the real 1,704,348); a validate set of
64 × 734 = 46,976 videos with ≈ 235,000 rated segments (the real 47,059 and 237,788); a
train slice of `--train-shards` shards of 1,000 videos (39 ≈ 1/100 of the real 3.9 M videos: the disk of
the development VM holds ~65 GB, and three stores of this size take ~36 GB plus one
split's shards while it converts). Video ids of 4 characters (`ingest synth --short-ids`),
as the real dataset's, so that the submission has the real size. Each split's shards are
deleted once converted (the test truth is kept).

Stages, each a fresh process of the installed commands: synth, convert (2 workers) and
`ingest verify` per split; a short pre-training (nxvlad-tiny, `--steps`, fold 0 held out,
bounded evaluation) and both fine-tunings (tiny variants, `--steps`, fold 0) for plumbing
and per-step rates at this size, not accuracy; `predict segments` for an agnostic and an
aware model over the whole test store; `predict topk` over both (K = 100,000), `predict
validate`, `predict evaluate` against the test truth.

Per stage: wall time; CPU time (user + system of the stage's processes,
`getrusage(RUSAGE_CHILDREN)`); peak anonymous memory (the largest sum over the stage's
process tree of `RssAnon` in /proc, sampled every 0.2 s: what a machine must have free,
page cache excluded); disk (bytes of the stage's outputs). Results in OUT/rehearsal.json
and OUT/rehearsal.md; RESULTS.md `## rehearsal` records a run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TEST = (64, 768)  # shards × videos: 49,152 videos, 1,688,001 candidates (seed 1)
VALIDATE = (64, 734)  # 46,976 videos, ≈ 235,000 rated segments
TRAIN_VIDEOS_PER_SHARD = 1000  # the real train shards hold ~1,015 videos each
K = 100_000  # the challenge's MAP@K and entries per class
SAMPLE_S = 0.2


@dataclass
class Stage:
    name: str
    command: str
    wall_s: float
    cpu_s: float
    peak_anon_mib: float
    disk_mib: float | None
    note: str = ""


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (from /proc/PID/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def _anon_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(name: str, cmd: list, disk: list[Path] = (), note: str = "") -> Stage:
    """Run `cmd` to completion; its wall time, CPU time, peak anonymous memory, disk."""
    cmd = [str(c) for c in cmd]
    print(f"\n== {name}: {' '.join(cmd)}", flush=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    peak = [0]

    def sample() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], sum(_anon_kib(p) for p in _tree(proc.pid)))
            time.sleep(SAMPLE_S)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    wall = time.perf_counter() - t0
    sampler.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        sys.exit(f"rehearsal: stage {name} failed (exit {code})")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    size = sum(_du(p) for p in disk) / 2**20 if disk else None
    stage = Stage(name, " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd)),
                  wall, cpu, peak[0] / 1024, size, note)
    print(f"   {wall:8.1f} s wall, {cpu:8.1f} s CPU, {stage.peak_anon_mib:8.0f} MiB anon"
          + (f", {size:,.0f} MiB on disk" if size is not None else ""), flush=True)
    return stage


def _du(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def data_stages(out: Path, split: str, shards: int, videos: int) -> list[Stage]:
    src, store = out / "shards" / split, out / "stores" / split
    stages = [
        measure(f"synth {split}", [BIN / "ingest", "synth", src, "--split", split, "--shards",
                                   shards, "--videos-per-shard", videos, "--short-ids",
                                   "--seed", "1", "--quiet"], [src],
                note=f"{shards} × {videos} videos"),
        measure(f"convert {split}", [BIN / "ingest", "convert", src / "*.tfrecord", "--out", store,
                                     "--workers", "2", "--quiet"], [store], note="2 workers"),
        measure(f"verify {split}", [BIN / "ingest", "verify", store]),
    ]
    for shard in src.glob("*.tfrecord"):  # the store holds what is needed from here on
        shard.unlink()
    return stages


def training_stages(out: Path, steps: int) -> list[Stage]:
    stores, runs = out / "stores", out / "runs"
    common = ["--steps", steps, "--quiet", "--fold", "0", "--eval-every", steps,
              "--log-every", 10]
    pre = runs / "pre-nxvlad-tiny"
    stages = [measure("pretrain nxvlad-tiny", [
        BIN / "train", "pretrain", "--store", stores / "train", "--model", "nxvlad-tiny",
        "--out", pre, *common], [pre], note=f"{steps} steps, B 32, Lm 60, fold 0 evaluated")]
    stages.append(measure("finetune agnostic", [
        BIN / "train", "finetune", "--kind", "agnostic", "--store", stores / "validate",
        "--init", pre, "--out", runs / "ag", "--batch-size", 32, *common], [runs / "ag"],
        note=f"{steps} steps, B 32, fold 0 evaluated"))
    stages.append(measure("finetune aware", [
        BIN / "train", "finetune", "--kind", "aware", "--store", stores / "validate",
        "--context", pre, "--segment", pre, "--out", runs / "aw", "--batch-size", 32,
        *common], [runs / "aw"], note=f"{steps} steps, B 32, context Lm 60, fold 0 evaluated"))
    for run in ("pre-nxvlad-tiny", "ag", "aw"):
        rate = _train_rate(runs / run)
        stages.append(Stage(f"  {run}: samples/s (median of log windows)", "", 0, 0, 0, None,
                            f"{rate:.1f}"))
    return stages


def _train_rate(run: Path) -> float:
    rates = sorted(json.loads(line)["samples_per_s"] for line in
                   (run / "metrics.jsonl").read_text().splitlines() if '"train"' in line)
    return rates[len(rates) // 2] if rates else float("nan")


def predict_stages(out: Path) -> list[Stage]:
    store, preds, runs = out / "stores" / "test", out / "predictions", out / "runs"
    preds.mkdir(parents=True, exist_ok=True)
    info = json.loads(subprocess.run([BIN / "ingest", "info", store, "--json"], check=True,
                                     capture_output=True, text=True).stdout)
    stages = []
    for run in ("ag", "aw"):
        stages.append(measure(f"predict segments {run}", [
            BIN / "predict", "segments", "--store", store, "--model", runs / run, "--out",
            preds / run, "--quiet", "--overwrite"], [preds / f"{run}.npy"],
            note=f"{info['candidate_segments']:,} candidates"))
    sub = out / "submission.csv"
    npys = [preds / "ag.npy", preds / "aw.npy"]
    stages.append(measure("predict topk", [BIN / "predict", "topk", *npys, "--out", sub,
                                           "--k", K], [sub], note="2 models, K 100,000"))
    stages.append(measure("predict validate", [BIN / "predict", "validate", sub]))
    stages.append(measure("predict evaluate", [
        BIN / "predict", "evaluate", sub, "--truth", out / "shards" / "test" / "truth.parquet"]))
    return stages


def machine() -> dict:
    flags = ""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "other"
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "isa": isa, "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d"),
            "python": platform.python_version(), "load_before": os.getloadavg()}


def table(stages: list[Stage]) -> str:
    rows = ["| stage | wall | CPU | peak anon | disk | note |",
            "| --- | ---: | ---: | ---: | ---: | --- |"]
    for s in stages:
        if not s.command:  # a derived figure
            rows.append(f"| {s.name} | | | | | {s.note} |")
            continue
        disk = f"{s.disk_mib / 1024:,.2f} GiB" if s.disk_mib else ""
        rows.append(f"| {s.name} | {s.wall_s:,.1f} s | {s.cpu_s:,.1f} s | "
                    f"{s.peak_anon_mib:,.0f} MiB | {disk} | {s.note} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench_data" / "rehearsal")
    parser.add_argument("--train-shards", type=int, default=39)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--only", default="data,train,predict",
                        help="stages to run: data, train, predict (comma-separated)")
    parser.add_argument("--keep", action="store_true", help="keep the stores and predictions")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="videos per shard × SCALE (a quick check of the script: 0.01)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    args.out.mkdir(parents=True, exist_ok=True)
    info = machine()
    print(f"rehearsal in {args.out}: {info}", flush=True)
    stages: list[Stage] = []
    if "data" in only:
        for split, (shards, videos) in (("test", TEST), ("validate", VALIDATE),
                                        ("train", (args.train_shards, TRAIN_VIDEOS_PER_SHARD))):
            if (args.out / "stores" / split).exists():
                shutil.rmtree(args.out / "stores" / split)
            stages += data_stages(args.out, split, shards, max(1, round(videos * args.scale)))
    if "train" in only:
        shutil.rmtree(args.out / "runs", ignore_errors=True)
        stages += training_stages(args.out, args.steps)
    if "predict" in only:
        stages += predict_stages(args.out)
    report = {"machine": info, "args": {k: str(v) for k, v in vars(args).items()},
              "stages": [asdict(s) for s in stages]}
    (args.out / "rehearsal.json").write_text(json.dumps(report, indent=1) + "\n")
    md = (f"Rehearsal {info['date']}: {info['cpu']} ({info['isa']}), {info['cores']} cores, "
          f"load before {info['load_before'][0]:.2f}\n\n{table(stages)}\n")
    (args.out / "rehearsal.md").write_text(md)
    print("\n" + md)
    if not args.keep:
        for sub in ("stores", "shards", "predictions", "runs"):
            shutil.rmtree(args.out / sub, ignore_errors=True)


if __name__ == "__main__":
    main()
