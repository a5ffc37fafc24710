"""`ingest decode SHARD...`: decode shards with the numba decoder and report what they hold."""
from __future__ import annotations

import json
import os
import time

import click
from tqdm import tqdm

from ingest.codec.decode import DEFAULT_CHUNK_BYTES, ON_ERROR, ShardDecoder
from ingest.sources import expand_sources


def shard_summary(dec: ShardDecoder, path: str, chunk_bytes: int) -> dict:
    """Decode one shard chunk by chunk (bounded memory); counts and throughput."""
    size = os.path.getsize(path)
    kind, videos, frames, segments, skipped = None, 0, 0, 0, 0
    start = time.perf_counter()
    for chunk in dec.iter_chunks(path, chunk_bytes=chunk_bytes):
        kind = chunk.kind if chunk.n_videos else kind
        videos += chunk.n_videos
        frames += int(chunk.frames.shape[0])
        segments += int(chunk.segment_labels.shape[0])
        skipped += len(chunk.skipped)
    seconds = time.perf_counter() - start
    return {"path": path, "kind": kind or "frame", "videos": videos, "frames": frames,
            "rated_segments": segments, "skipped": skipped, "bytes": size,
            "seconds": round(seconds, 6), "mb_per_s": round(size / 1e6 / max(seconds, 1e-9), 1)}


@click.command("decode")
@click.argument("shards", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per shard.")
@click.option("--on-error", type=click.Choice(ON_ERROR), default="fail", show_default=True,
              help="skip-record: leave out records with a bad data CRC or malformed protobuf.")
@click.option("--chunk-mb", type=click.IntRange(min=1), default=DEFAULT_CHUNK_BYTES >> 20,
              show_default=True, help="Bytes of shard decoded at a time.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def decode_cmd(shards: tuple[str, ...], as_json: bool, on_error: str, chunk_mb: int,
               quiet: bool) -> None:
    """Decode TFRecord shards (paths or quoted globs: SHARD_OR_GLOB...), CRC-checked, and
    print, per shard: kind, videos, frames, rated segments, bytes and MB/s."""
    paths = expand_sources(shards)
    dec = ShardDecoder(on_error=on_error)
    dec.warm_up()  # so that the first shard's MB/s is not the kernel's loading time
    for path in tqdm(paths, desc="decode", unit="shard", disable=quiet or len(paths) < 2):
        s = shard_summary(dec, path, chunk_mb << 20)
        if s["bytes"] == 0:
            click.echo(f"warning: {path}: empty file (0 bytes), no records", err=True)
        if as_json:
            click.echo(json.dumps(s))
        else:
            click.echo(f"{path}: {s['kind']}-level, {s['videos']} videos, {s['frames']} frames, "
                       f"{s['rated_segments']} rated segments, {s['bytes']} bytes, "
                       f"{s['mb_per_s']} MB/s" + (f", {s['skipped']} records skipped"
                                                  if s["skipped"] else ""))
