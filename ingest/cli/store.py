"""`ingest convert`, `ingest info`, `ingest verify`: build, describe and check a store."""
from __future__ import annotations

import json
import os
import sys

import click

from ingest.store.convert import CONNECT_TIMEOUT, ON_ERROR, ConvertConfig, convert
from ingest.store.layout import MANIFEST
from ingest.store.verify import store_info, verify_store


@click.command("convert")
@click.argument("sources", nargs=-1, required=True)
@click.option("--out", "out", required=True, type=click.Path(file_okay=False),
              help="Store directory (created; a re-run completes an interrupted store; an "
                   "existing directory must be empty or a store).")
@click.option("--workers", type=click.IntRange(min=1), default=os.cpu_count() or 1,
              show_default="all cores", help="Shards converted in parallel (local executor).")
@click.option("--executor", default="local", show_default=True,
              help="local, or dask://HOST:PORT to run on a Dask cluster (shared filesystem).")
@click.option("--connect-timeout", type=click.FloatRange(min=0, min_open=True),
              default=CONNECT_TIMEOUT, show_default=True,
              help="Seconds to wait for the Dask scheduler of --executor dask://...")
@click.option("--on-error", type=click.Choice(ON_ERROR), default="fail", show_default=True,
              help="A corrupt shard stops the run, or its bad records / the whole shard are "
                   "skipped and listed in the manifest.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def convert_cmd(sources, out, workers, executor, connect_timeout, on_error, quiet) -> None:
    """Convert TFRecord shards (paths or quoted globs: SHARD_OR_GLOB...) into a store at
    --out. Interrupted (Ctrl-C, a kill), the same command run again resumes."""
    cfg = ConvertConfig(sources=tuple(sources), out=out, workers=workers, executor=executor,
                        on_error=on_error, progress=not quiet, connect_timeout=connect_timeout)
    s = convert(cfg)
    if s["repaired_manifest"]:
        click.echo(f"warning: {os.path.join(out, MANIFEST)} was damaged ({s['repaired_manifest']}"
                   "); rewritten from the parts", err=True)
    for path in s["empty_sources"]:
        click.echo(f"warning: {path}: empty file (0 bytes); its part holds no records", err=True)
    t = s["totals"]
    click.echo(f"{out}: {s['converted']} part(s) converted now, {t['parts']} in the store; "
               f"{t['videos']} frame-level videos, {t['frames']} frames, "
               f"{t['rated_segments']} rated segments, {t['video_level']} video-level records",
               err=True)
    if t["outside_video"]:
        click.echo(f"warning: {t['outside_video']} rated segment(s) start outside their video "
                   "(kept, flagged outside_video, counted in manifest.json)", err=True)
    for sk in s["skipped_shards"]:
        click.echo(f"skipped shard: {sk['reason']}", err=True)
    if t["skipped_records"]:
        click.echo(f"skipped {t['skipped_records']} corrupt record(s) (listed in manifest.json)",
                   err=True)


@click.command("info")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the counts as one JSON object.")
def info_cmd(store, as_json) -> None:
    """Counts of a store: parts, videos, frames, segments, positives, candidates, folds, bytes."""
    info = store_info(store)
    if as_json:
        click.echo(json.dumps(info, indent=1, sort_keys=True))
        return
    for key, value in info.items():
        click.echo(f"{key:>22}: {value}")


@click.command("verify")
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@click.option("--sources", "sources", is_flag=True,
              help="Also re-read each part's source shard and check its size and CRC-32C "
                   "(found at the path recorded relative to STORE, or in --source-dir).")
@click.option("--source-dir", type=click.Path(exists=True, file_okay=False),
              help="With --sources: look for the shards by name in this directory instead.")
def verify_cmd(store, sources, source_dir) -> None:
    """Re-read every table and array of STORE and check them against its manifest."""
    if source_dir and not sources:
        raise click.UsageError("--source-dir is only used with --sources")
    problems = verify_store(store, progress=sys.stderr.isatty(), sources=sources,
                            source_dir=source_dir)
    if problems:
        for p in problems:
            click.echo(f"MISMATCH {p}", err=True)
        raise click.ClickException(f"{store}: {len(problems)} problem(s) found")
    click.echo(f"{store}: ok")
