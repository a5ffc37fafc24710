"""`train loader-bench`: the loader's throughput, memory and ceilings on this machine."""
from __future__ import annotations

import json

import click

from trainer.data.batches import KINDS


def _max_len(ctx, param, value: str) -> int | None:
    """`--max-len`: frames per video, at least 1; 'all' (or 'inf') → None, whole videos.
    A bad value is click's usage error naming the option, as for the other options."""
    if value.lower() in ("all", "inf"):
        return None
    try:
        frames = int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a whole number or 'all'") from None
    if frames < 1:
        raise click.BadParameter(f"{frames} is not at least 1 (frames per video; 'all' for "
                                 "whole videos)")
    return frames


# (label, key, format) of the table; a row whose value is None is left out
_ROWS = (
    ("store", "store", "{}"),
    ("batch kind", "kind", "{}"),
    ("batch size / Lm", None, None),
    ("threads / device", None, None),
    ("batches (of the epoch)", None, None),
    ("samples", "samples", "{:,}"),
    ("seconds", "seconds", "{:.2f}"),
    ("samples/s", "samples_per_s", "{:,.0f}"),
    ("batches/s", "batches_per_s", "{:,.1f}"),
    ("feature MB/s", "feature_mb_per_s", "{:,.0f}"),
    ("CPU seconds (all threads)", "cpu_seconds", "{:.2f}"),
    ("feature MB per CPU second", "feature_mb_per_cpu_s", "{:,.0f}"),
    ("memcpy MB/s (same bytes)", "memcpy_mb_per_s", "{:,.0f}"),
    ("of memcpy", "of_memcpy", "{:.1%}"),
    ("anonymous memory, peak MB", "anon_peak_mb", "{:,.0f}"),
    ("  of it the loader's MB", "loader_anon_mb", "{:,.0f}"),
    ("file-backed memory, peak MB", "file_peak_mb", "{:,.0f}"),
    ("read from disk, MB/s", "disk_read_mb_per_s", "{:,.0f}"),
    ("store files evicted", "store_files", "{:,}"),
    ("sequential read MB/s", "seq_read_mb_per_s", "{:,.0f}"),
    ("disk reads of sequential", "of_seq_read", "{:.1%}"),
)


def format_table(r: dict) -> str:
    """The result as a two-column text table."""
    derived = {
        "batch size / Lm": f"{r['batch_size']} / {r['max_len'] or 'all'}",
        "threads / device": f"{r['threads']} / {r['device']}",
        "batches (of the epoch)": f"{r['batches']} ({r['epoch_batches']}"
                                  f"{', whole epoch' if r['epoch_done'] else ''})",
    }
    lines = []
    for label, key, fmt in _ROWS:
        if key is None:
            lines.append(f"{label:<28}{derived[label]}")
        elif r[key] is not None:
            lines.append(f"{label:<28}{fmt.format(r[key])}")
    return "\n".join(lines)


@click.command("loader-bench")
@click.argument("store")
@click.option("--kind", type=click.Choice(KINDS), required=True, help="Batch kind.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--max-len", default="150", show_default=True, metavar="LM|all",
              callback=_max_len, help="Frames per video (Lm); 'all' for whole videos.")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="Loader threads.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Run this long, or until the epoch ends.")
@click.option("--cold", is_flag=True,
              help="Evict the store from the page cache first; measure a sequential read "
                   "of its files as the disk's ceiling.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of a table.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def loader_bench_command(store: str, kind: str, batch_size: int, max_len: int | None, threads: int,
                         device: str, seconds: float, cold: bool, as_json: bool,
                         quiet: bool) -> None:
    """Run the loader on STORE for a while: samples/s, feature MB/s, batches/s, resident
    memory, and a memcpy ceiling on the same bytes (docs/loader.md)."""
    from tqdm import tqdm

    from trainer.data.bench import BenchConfig, run_bench

    config = BenchConfig(store=store, kind=kind, batch_size=batch_size,
                         max_len=max_len, threads=threads, device=device,
                         seconds=seconds, cold=cold)
    bar = None

    def start(total: int) -> None:
        nonlocal bar
        bar = tqdm(total=total, desc=f"loader-bench {kind}", unit="batch", disable=quiet,
                   leave=False)

    def step(_samples: int, _nbytes: int) -> None:
        bar.update(1)

    try:
        result = run_bench(config, on_batch=step, on_start=start).to_dict()
    finally:
        if bar is not None:
            bar.close()
    click.echo(json.dumps(result, indent=1) if as_json else format_table(result))
