"""The report of `make gpu-check` (scripts/gpu_check.py): report.json and report.md from one
results dict. Standard library only: it runs in whatever Python launched the check.

The results dict (what `gpu_check.py` builds; report.json holds it unchanged):

    {"title": str, "mode": "cuda" | "cpu (dry run)", "started": ISO time, "seconds": float,
     "budget_s": float, "command": str, "commit": str | None,
     "environment": {"gpu": str | None, "gpu_memory_gib": float, "capability": str,
                     "driver": str | None, "torch": str, "cuda": str | None,
                     "cudnn": int | None, "python": str, ...},
     "stages": [{"name": str, "group": str, "status": one of STATUSES, "seconds": float,
                 "limit_s": float, "commands": [str], "log": str (relative to the folder),
                 "message": str, "result": dict}, ...]}

A stage's `result` depends on its group: "tests" ({"passed", "failed", "skipped",
"errors", "failures": [str]}), "loader" (the JSON of `train loader-bench`), "bench"
({"rows": bench_train.py's rows}), "pipeline" ({"checks": [{"name", "ok", "detail"}]});
other groups' results are listed as key: value.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

STATUSES = ("pass", "fail", "timeout", "skipped")
ENV_ROWS = (  # (label, key of results["environment"]) of the report's header table
    ("GPU", "gpu"), ("GPU memory, GiB", "gpu_memory_gib"), ("compute capability", "capability"),
    ("driver", "driver"), ("torch", "torch"), ("CUDA (torch's)", "cuda"),
    ("cuDNN", "cudnn"), ("NCCL", "nccl"), ("Python", "python"), ("numpy", "numpy"),
    ("numba", "numba"), ("CPU cores", "cpus"), ("memory, GiB", "memory_gib"),
    ("host", "host"),
)


def failed(results: dict) -> list[dict]:
    """The stages that did not pass."""
    return [s for s in results["stages"] if s["status"] != "pass"]


def write_report(results: dict, folder: str | os.PathLike) -> tuple[Path, Path]:
    """Write `folder`/report.json and `folder`/report.md (each replaced atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "report.json", folder / "report.md"
    _write(paths[0], json.dumps(results, indent=1, default=str) + "\n")
    _write(paths[1], markdown(results))
    return paths


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------- Markdown

def markdown(results: dict) -> str:
    """The whole report as Markdown."""
    parts = [_header(results), _summary(results)]
    for stage in results["stages"]:  # skipped ones: their reason is in the table
        if stage["status"] in ("fail", "timeout") or (
                stage["status"] == "pass" and stage.get("result")):
            parts.append(_stage(stage))
    return "\n".join(parts)


def _header(r: dict) -> str:
    env = r.get("environment") or {}
    bad = failed(r)
    verdict = ("every stage passed" if not bad else
               f"{len(bad)} of {len(r['stages'])} stages did not pass: "
               + ", ".join(f"{s['name']} ({s['status']})" for s in bad))
    took = (f"{_mode(r)}. Started {r.get('started', '?')}, took {_num(r.get('seconds'), 0)} s "
            f"of a {_num(r.get('budget_s'), 0)} s budget. **{verdict}.**")
    lines = [f"# {r.get('title', 'gpu-check')}", "", took, ""]
    if r.get("command"):
        lines += [f"Command: `{r['command']}`" + (f" at commit `{r['commit']}`"
                                                  if r.get("commit") else ""), ""]
    lines += ["| | |", "| --- | --- |"]
    lines += [f"| {label} | {_cell(env.get(key))} |" for label, key in ENV_ROWS
              if key in env or key in ("gpu", "driver", "torch", "cuda")]
    return "\n".join(lines) + "\n"


def _mode(r: dict) -> str:
    if r.get("mode") == "cuda":
        return "On the GPU"
    return f"Mode: {r.get('mode', '?')} (not a GPU result)"


def _summary(r: dict) -> str:
    lines = ["## Stages", "", "| stage | status | seconds (limit) | result |",
             "| --- | --- | ---: | --- |"]
    for s in r["stages"]:
        lines.append(f"| {s['name']} | {_status(s['status'])} | {_num(s.get('seconds'), 1)} "
                     f"({_num(s.get('limit_s'), 0)}) | {_cell(_headline(s))} |")
    return "\n".join(lines) + "\n"


def _status(status: str) -> str:
    return status.upper() if status != "pass" else "pass"


def _headline(s: dict) -> str:
    """One line per stage for the summary table."""
    res = s.get("result") or {}
    group = s.get("group")
    if s["status"] != "pass" and s.get("message"):
        return s["message"]
    if group == "env" and res:
        return (f"{res.get('gpu') or 'no GPU'}, driver {res.get('driver') or '-'}, "
                f"torch {res.get('torch')}, CUDA {res.get('cuda') or '-'}")
    if group == "data" and res:
        return ", ".join(f"{split} {res[f'{split} videos']:,} videos" for split in
                         ("train", "validate", "test") if f"{split} videos" in res)
    if group == "tests" and res:
        return _counts(res)
    if "held-out auc" in res:
        return f"held-out AUC {_num(res['held-out auc'], 4)} at step {res.get('held-out step')}"
    if group == "loader" and res:
        return (f"{_num(res.get('samples_per_s'), 0)} samples/s, "
                f"{_num(res.get('feature_mb_per_s'), 0)} MB/s to {res.get('device', '?')}")
    if group in ("bench", "compiled") and res.get("rows"):
        return "; ".join(f"{row['row']} {row['way']}: {_num(row['steps_per_s'], 2)} steps/s"
                         for row in res["rows"])
    if res.get("checks"):
        ok = sum(bool(c["ok"]) for c in res["checks"])
        return f"{ok} of {len(res['checks'])} checks passed"
    return s.get("message", "")


def _stage(s: dict) -> str:
    lines = [f"## {s['name']}: {_status(s['status'])}", ""]
    if s.get("message"):
        lines += [s["message"], ""]
    for cmd in s.get("commands", []):
        lines.append(f"    {cmd}")
    if s.get("commands"):
        lines.append("")
    if s.get("log"):
        lines += [f"Log: `{s['log']}`", ""]
    res = s.get("result") or {}
    render = {"tests": _tests, "loader": _loader, "bench": _bench, "compiled": _bench}
    if "checks" in res:
        body = _pipeline(res)
    else:
        body = render.get(s.get("group"), _generic)(res) if res else ""
    return "\n".join(lines) + body


def _tests(res: dict) -> str:
    lines = [_counts(res) + ".", ""]
    for f in res.get("failures", []):
        lines.append(f"- {_one_line(f)}")
    return "\n".join(lines) + ("\n" if res.get("failures") else "")


LOADER_ROWS = (("batch kind", "kind", "{}"), ("batch size", "batch_size", "{}"),
               ("Lm", "max_len", "{}"), ("loader threads", "threads", "{}"),
               ("device", "device", "{}"), ("batches", "batches", "{:,}"),
               ("seconds", "seconds", "{:.2f}"), ("whole epoch", "epoch_done", "{}"),
               ("samples/s", "samples_per_s", "{:,.0f}"),
               ("feature MB/s to the device", "feature_mb_per_s", "{:,.0f}"),
               ("memcpy MB/s (host, same bytes)", "memcpy_mb_per_s", "{:,.0f}"),
               ("CPU seconds (all threads)", "cpu_seconds", "{:.2f}"),
               ("anonymous memory, peak MB", "anon_peak_mb", "{:,.0f}"))


def _counts(res: dict) -> str:
    return (f"{res.get('passed', 0)} passed, {res.get('failed', 0)} failed, "
            f"{res.get('skipped', 0)} skipped, {res.get('errors', 0)} errors")


def _loader(res: dict) -> str:
    lines = ["| | |", "| --- | --- |"]
    for label, key, fmt in LOADER_ROWS:
        if res.get(key) is not None:
            lines.append(f"| {label} | {fmt.format(res[key])} |")
    return "\n".join(lines) + "\n"


BENCH_HEAD = ("| row | model | B | Lm | loader | precision | compile | steps/s | samples/s "
              "| waiting for data | peak GPU memory, MiB |")


def _bench(res: dict) -> str:
    rows = res.get("rows") or []
    lines = []
    if res.get("reference_skipped"):
        lines += [f"Reference rows not run: {res['reference_skipped']}.", ""]
    if not rows:
        return "\n".join(lines + ["No row was measured.", ""])
    lines += [BENCH_HEAD, "| --- | --- | ---: | ---: | --- | --- | --- |" + " ---: |" * 4]
    for r in rows:
        lines.append(f"| {r['row']} | {r['model']} | {r['batch']} | {r['max_len']} | {r['way']} "
                     f"| {r['precision']} | {'yes' if r['compile'] else 'no'} "
                     f"| {_num(r['steps_per_s'], 2)} | {_num(r['samples_per_s'], 0)} "
                     f"| {_num(100 * r['wait_share'], 1)}% | {_num(r.get('peak_gpu_mib'), 0)} |")
    return "\n".join(lines) + "\n"


def _pipeline(res: dict) -> str:
    lines = ["| check | ok | detail |", "| --- | --- | --- |"]
    for c in res.get("checks", []):
        lines.append(f"| {c['name']} | {'yes' if c['ok'] else '**NO**'} | {_cell(c['detail'])} |")
    return "\n".join(lines) + "\n"


def _generic(res: dict) -> str:
    return "\n".join(f"- {k}: {_cell(v)}" for k, v in res.items()) + "\n"


# ---------------------------------------------------------------- formatting

def _num(x, digits: int) -> str:
    if x is None or isinstance(x, bool) or not isinstance(x, (int, float)):
        return "-"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:,.{digits}f}"


def _one_line(text) -> str:
    return " ".join(str(text).split())


def _cell(x) -> str:
    """A table cell: one line, pipes escaped, floats shortened."""
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.4g}"
    return _one_line(x).replace("|", "\\|")
