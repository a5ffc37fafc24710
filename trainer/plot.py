"""Training curves of one or more runs as a PNG (`train plot RUN...`, and at the end of
every run), from each run's `metrics.jsonl`.

`RUN/metrics.jsonl` holds one JSON object per line, appended as the run goes:

    {"step": int,                      optimiser steps done (≥ 1)
     "split": "train" | "eval",
     "loss": float,                    train: the mean training loss since the last
                                       record; eval: the held-out Eq. 1 / Eq. 2 loss
     optional:
     "lr": float,                      train: the learning rate of the first group
     "samples_per_s": float,           train: throughput since the last record
     "data_wait": float,               train: share of the time spent waiting for data
     "auc": float,                     eval, segment runs: ROC AUC over rated labels
     "recall", "precision": float,     eval, pre-training: of positive labels at p > 0.5
     ...}                              any other keys are kept and ignored here

Floats may be NaN (Python's json writes and reads `NaN`). A resumed run logs again the
steps after its checkpoint: the last record of a (split, step) wins. A last line cut
short by a killed run is skipped; any other line that is not such an object is an error.

The figure has four panels against step, one colour per run (labelled with the run
directory's name): training loss, evaluation loss, the evaluation metric (AUC solid for
segment runs; recall dashed and precision dotted for pre-training), learning rate.
Drawn with matplotlib's Agg canvas (no display, no pyplot state).
"""
from __future__ import annotations

import json
import math
import os
from contextlib import suppress
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ingest.outputs import folder_problem
from trainer.errors import TrainerError

METRICS_FILE = "metrics.jsonl"
SPLITS = ("train", "eval")
# Evaluation metrics drawn in the third panel, with their line styles.
METRIC_STYLES = {"auc": "-", "recall": "--", "precision": ":"}


def _check(record, where: str) -> dict:
    ok = (
        isinstance(record, dict)
        and isinstance(record.get("step"), int)
        and record.get("split") in SPLITS
        and isinstance(record.get("loss"), (int, float))
    )
    if not ok:
        raise TrainerError(
            f"{where}: not a metrics record (needs step: int, split: train|eval, loss: float)"
        )
    return record


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of `run_dir/metrics.jsonl`, sorted by (split, step), one per pair."""
    path = Path(run_dir) / METRICS_FILE
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise TrainerError(f"{path}: cannot read the metrics log ({err.strerror})") from None
    records: dict[tuple[str, int], dict] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):  # cut short by a killed run
                break
            raise TrainerError(f"{path}, line {number}: not JSON") from None
        record = _check(record, f"{path}, line {number}")
        records[(record["split"], record["step"])] = record
    return [records[k] for k in sorted(records)]


def _series(records: list[dict], split: str, key: str) -> tuple[list[int], list[float]]:
    points = [
        (r["step"], float(r[key]))
        for r in records
        if r["split"] == split and isinstance(r.get(key), (int, float))
    ]
    return [s for s, _ in points], [v for _, v in points]


def _labels(run_dirs: list[Path]) -> list[str]:
    """The directory names, with the parent's where two runs share a name."""
    names = [p.name or str(p) for p in run_dirs]
    return [
        f"{p.parent.name}/{n}" if names.count(n) > 1 else n for p, n in zip(run_dirs, names)
    ]


def draw_runs(runs: dict[str, list[dict]]) -> Figure:
    """The four-panel figure of `runs` ({label: records}); see the module docstring."""
    fig = Figure(figsize=(12, 8), layout="constrained")
    train, evaluation, metric, rate = fig.subplots(2, 2).ravel()
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for (label, records), colour in zip(runs.items(), colours):
        train.plot(*_series(records, "train", "loss"), color=colour, label=label)
        evaluation.plot(*_series(records, "eval", "loss"), color=colour, marker=".", label=label)
        for key, style in METRIC_STYLES.items():
            steps, values = _series(records, "eval", key)
            if steps:
                metric.plot(steps, values, style, color=colour, marker=".", label=f"{label} {key}")
        rate.plot(*_series(records, "train", "lr"), color=colour, label=label)
    panels = (
        (train, "training loss"),
        (evaluation, "evaluation loss"),
        (metric, "evaluation: AUC (segments), recall / precision at 0.5"),
        (rate, "learning rate"),
    )
    for ax, title in panels:
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(True, alpha=0.3)
        values = [y for line in ax.get_lines() for y in line.get_ydata()]
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
        elif ax is not metric and min(finite) > 0:
            ax.set_yscale("log")
        if ax.get_lines():
            ax.legend(fontsize="small")
    return fig


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"  # the first eight bytes of every PNG file


def _not_a_png(path: Path) -> bool:
    """An existing, non-empty regular file that is not a PNG (an earlier plot is replaced;
    one that cannot be read is left to the write's own error)."""
    if not path.is_file():  # absent, or a device or a pipe (not opened here)
        return False
    try:
        with open(path, "rb") as f:
            head = f.read(len(PNG_MAGIC))
    except OSError:
        return False
    return bool(head) and head != PNG_MAGIC


def plot_runs(run_dirs: list[str | Path], out_png: str | Path) -> Path:
    """Draw the runs' curves into `out_png` (written whole under a hidden temporary name
    beside it, then renamed into place). TrainerError naming `out_png`, checked before
    anything is read or drawn: a directory, a folder that is missing, not a folder or not
    writable, an existing file that is not a PNG; and a write that fails later (the
    temporary is removed)."""
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise TrainerError("no run directory to plot")
    out = Path(out_png)
    if out.is_dir():
        raise TrainerError(f"{out}: is a directory; give the PNG's file name "
                           f"(such as {out / 'curves.png'})")
    if (problem := folder_problem(out)) is not None:
        raise TrainerError(f"{out}: {problem}")
    if _not_a_png(out):  # a run's metrics.jsonl or config.json, a user's file
        raise TrainerError(f"{out}: exists and is not a PNG image; remove it or give another "
                           "--out")
    runs = {label: read_metrics(p) for label, p in zip(_labels(paths), paths)}
    fig = draw_runs(runs)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        FigureCanvasAgg(fig).print_png(str(tmp))
        os.replace(tmp, out)
    except OSError as err:
        raise TrainerError(f"{out}: cannot write ({err.strerror or err})") from None
    finally:  # after a failure or Ctrl-C (gone once renamed); a read-only folder refuses
        with suppress(OSError):  # even this unlink: never raised over the real error
            tmp.unlink(missing_ok=True)
    return out
