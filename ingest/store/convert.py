"""`ingest convert`: source shards → a store, one part per shard, resumable, in parallel.

`convert_shard` is the unit of work: it decodes one shard in bounded chunks,
writes its part under `STORE/.tmp/` and renames it into `STORE/parts/` when
complete. The same function runs in-process (`workers=1`), on a local process pool,
or on a Dask cluster (`executor="dask://HOST:PORT"`, workers writing directly to a
store on a shared filesystem). `convert` writes `manifest.json` last, from the
parts' own `part.json` files, so an interrupted run leaves no manifest and a re-run
converts only the missing parts; its result is byte-identical to an
uninterrupted run, and a re-run on a complete store changes nothing.
"""
from __future__ import annotations

import glob
import json
import os
import resource
import shutil
import sys
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

from ingest.errors import IngestError, ShardError
from ingest.store import writer as part_writer
from ingest.store.layout import (
    FORMAT_VERSION,
    MANIFEST,
    PART_JSON,
    PARTS,
    TMP,
    part_name,
    write_json_atomic,
)

ON_ERROR = ("fail", "skip-record", "skip-shard")
CHUNK_BYTES = 4 << 20  # source bytes decoded per chunk: bounds a worker's memory; 4 MB
# converts ~13-25 % faster than 16 MB, and 2 or 1 MB are slower again (docs/store.md)


@dataclass(frozen=True)
class ConvertConfig:
    """What `ingest convert` was asked to do."""

    sources: tuple[str, ...]  # shard paths or glob patterns
    out: str  # store directory
    workers: int = 1
    executor: str = "local"  # "local" or "dask://HOST:PORT"
    on_error: str = "fail"  # one of ON_ERROR
    chunk_bytes: int = CHUNK_BYTES
    progress: bool = True


def expand_sources(patterns) -> list[str]:
    """Shard paths from paths and glob patterns, sorted; IngestError on a miss or a clash."""
    out: set[str] = set()
    for pat in patterns:
        if glob.has_magic(pat):
            hits = [p for p in glob.glob(pat) if os.path.isfile(p)]
            if not hits:
                raise IngestError(f"{pat}: no file matches this pattern")
            out.update(os.path.abspath(p) for p in hits)
        elif os.path.isfile(pat):
            out.add(os.path.abspath(pat))
        elif os.path.isdir(pat):
            raise IngestError(f"{pat}: is a directory; give shard files or a glob like {pat}/*")
        else:
            raise IngestError(f"{pat}: no such file")
    if not out:
        raise IngestError("no source shards given")
    names: dict[str, str] = {}
    for p in sorted(out):
        other = names.setdefault(part_name(p), p)
        if other != p:
            raise IngestError(f"{p} and {other} would both become part {part_name(p)!r}")
    return sorted(out)


_DECODERS = threading.local()  # a decoder per mode and thread: its buffers are reused


def _decoder(on_error: str):
    """This thread's decoder for the error mode (its buffers are reused across shards)."""
    from ingest.codec.decode import ShardDecoder

    mode = "skip-record" if on_error == "skip-record" else "fail"
    decoders = _DECODERS.__dict__
    if mode not in decoders:
        decoders[mode] = ShardDecoder(on_error=mode)
    return decoders[mode]


def convert_shard(source: str, store: str, on_error: str = "fail",
                  chunk_bytes: int = CHUNK_BYTES) -> dict:
    """Convert one shard into `store/parts/<part>` (skipped if already there).

    Returns {"part", "source", "status": converted|existing|skipped|failed, "info"
    (the part.json dict), "error", "seconds", "peak_rss"}. Never raises ShardError
    (it does not pickle across processes): a corrupt shard is status failed/skipped.
    """
    t0 = time.perf_counter()
    name = part_name(source)
    final = Path(store) / PARTS / name
    result = {"part": name, "source": source, "status": "existing", "info": None,
              "error": None}
    if not (final / PART_JSON).is_file():
        tmp = Path(store) / TMP / f"{name}-{uuid.uuid4().hex[:12]}"
        try:
            result.update(_write_part(source, tmp, final, name, on_error, chunk_bytes))
        except ShardError as err:
            result["status"] = "skipped" if on_error == "skip-shard" else "failed"
            result["error"] = str(err)
        except OSError as err:  # unreadable source, full disk, no permission: stop the run
            result["status"] = "failed"
            where = f" ({err.filename}{' -> ' + err.filename2 if err.filename2 else ''})" \
                if err.filename else ""
            result["error"] = f"{source}: {err.strerror or err}{where}"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if result["status"] == "existing":
        result["info"] = _read_json(final / PART_JSON)
    result["seconds"] = time.perf_counter() - t0
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def _write_part(source, tmp: Path, final: Path, name, on_error, chunk_bytes) -> dict:
    decoder = _decoder(on_error)
    writer = part_writer.PartWriter(tmp, name, source)
    kinds = set()
    try:
        size = os.path.getsize(source)
        for chunk in decoder.iter_chunks(source, chunk_bytes=chunk_bytes):
            if chunk.n_videos:
                kinds.add(chunk.kind)
            writer.add(chunk)
    except BaseException:
        writer.abort()
        raise
    counts = writer.close()
    crc = decoder.source_crc32c  # computed by the decoder on the bytes it read: no second read
    info = {
        "part": name, "source": os.path.basename(source), "source_bytes": size,
        "source_crc32c": crc, "fold": part_writer.fold_of(source),
        "kind": "+".join(sorted(kinds)) or "empty", "counts": counts,
        "skipped_records": writer.skipped, "files": writer.files,
    }
    write_json_atomic(tmp / PART_JSON, info)
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(tmp, final)
    except OSError:  # another run finished the same part first: keep theirs
        if not (final / PART_JSON).is_file():
            raise
        return {"status": "existing"}
    return {"status": "converted", "info": info}


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# ---------------------------------------------------------------- orchestration

def _check_existing(sources: list[str], store: Path) -> list[str]:
    """Sources still to convert; IngestError if an existing part came from another file."""
    todo = []
    for src in sources:
        pj = store / PARTS / part_name(src) / PART_JSON
        if not pj.is_file():
            todo.append(src)
            continue
        info = _read_json(pj)
        if info["source_bytes"] != os.path.getsize(src):
            raise IngestError(f"{src}: part {info['part']!r} in {store} was converted from a "
                              f"different file ({info['source_bytes']} bytes); remove "
                              f"{pj.parent} to convert it again")
    return todo


def _run_local(cfg: ConvertConfig, todo: list[str]):
    """Yield convert_shard results as they complete (in-process for one worker)."""
    args = (cfg.out, cfg.on_error, cfg.chunk_bytes)
    if cfg.workers <= 1 or len(todo) <= 1:
        for src in todo:
            yield convert_shard(src, *args)
        return
    # fork starts workers without re-importing (saves ~1 s per worker here); tqdm runs no
    # monitor thread, and the parent itself has no other threads
    ctx = get_context("fork" if "fork" in get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(min(cfg.workers, len(todo)), mp_context=ctx) as pool:
        pending = {pool.submit(convert_shard, src, *args) for src in todo}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
        finally:
            for fut in pending:
                fut.cancel()


def dask_address(executor: str) -> str:
    """`dask://HOST:PORT` → the scheduler address `tcp://HOST:PORT`."""
    rest = executor[len("dask://"):]
    if not rest or ":" not in rest:
        raise IngestError(f"--executor {executor}: expected dask://HOST:PORT")
    return rest if "://" in rest else f"tcp://{rest}"


def _run_dask(cfg: ConvertConfig, todo: list[str]):
    """Yield convert_shard results computed on a Dask cluster (shared filesystem)."""
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise IngestError("--executor dask://... needs the dask extra "
                          "(pip install 'yt8m-segments[dask]')") from None
    try:
        client = Client(dask_address(cfg.executor), timeout=20)
    except OSError as err:
        raise IngestError(f"--executor {cfg.executor}: cannot reach the scheduler ({err})") \
            from None
    store = os.path.abspath(cfg.out)
    with client:
        futures = [client.submit(convert_shard, src, store, cfg.on_error, cfg.chunk_bytes,
                                 pure=False) for src in todo]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            client.cancel(futures)


def convert(cfg: ConvertConfig) -> dict:
    """Convert `cfg.sources` into the store `cfg.out`; returns a summary (see `summarise`)."""
    if cfg.on_error not in ON_ERROR:
        raise IngestError(f"--on-error {cfg.on_error}: expected one of {', '.join(ON_ERROR)}")
    if cfg.executor != "local" and not cfg.executor.startswith("dask://"):
        raise IngestError(f"--executor {cfg.executor}: expected local or dask://HOST:PORT")
    sources = expand_sources(cfg.sources)
    store = Path(cfg.out)
    if store.exists() and not store.is_dir():
        raise IngestError(f"{store}: exists and is not a directory")
    created = not store.exists()
    if not created and any(store.iterdir()) and not (store / PARTS).is_dir():
        raise IngestError(f"{store}: a non-empty directory that is not a store")
    shutil.rmtree(store / TMP, ignore_errors=True)  # leftovers of an interrupted run
    (store / PARTS).mkdir(parents=True, exist_ok=True)
    todo = _check_existing(sources, store)
    results, ok = [], False
    try:
        results = _execute(cfg, sources, todo)
        ok = True
    finally:
        shutil.rmtree(store / TMP, ignore_errors=True)
        if not ok and created and not any((store / PARTS).iterdir()):
            shutil.rmtree(store, ignore_errors=True)  # nothing converted: leave nothing
    skipped = sorted(({"source": os.path.basename(r["source"]), "reason": r["error"]}
                      for r in results if r["status"] == "skipped"), key=lambda s: s["source"])
    manifest = build_manifest(store, skipped)
    path = store / MANIFEST
    if not path.is_file() or _read_json(path) != manifest:
        write_json_atomic(path, manifest)
    return summarise(manifest, converted=sum(r["status"] == "converted" for r in results),
                     results=results)


def _execute(cfg: ConvertConfig, sources: list[str], todo: list[str]) -> list[dict]:
    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no monitor thread (the process pool may fork)
    total = sum(os.path.getsize(s) for s in todo)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="convert", file=sys.stderr,
               disable=not cfg.progress or not todo, dynamic_ncols=True)
    run = _run_dask if cfg.executor.startswith("dask://") else _run_local
    results, videos = [], 0
    with bar:
        for r in run(cfg, todo):
            if r["status"] == "failed":
                raise IngestError(r["error"])
            results.append(r)
            if r["info"]:
                videos += r["info"]["counts"]["videos"] + r["info"]["counts"]["video_level"]
            bar.update(os.path.getsize(r["source"]))
            bar.set_postfix(shards=f"{len(results)}/{len(todo)}", videos=videos, refresh=False)
    return results


def build_manifest(store: Path, skipped_shards: list[dict]) -> dict:
    """The manifest of every complete part under `store/parts`, in part-name order."""
    parts = [_read_json(p / PART_JSON) for p in sorted((store / PARTS).iterdir())
             if (p / PART_JSON).is_file()]
    totals = {k: sum(p["counts"][k] for p in parts) for k in part_writer.COUNT_KEYS}
    totals["parts"] = len(parts)
    totals["source_bytes"] = sum(p["source_bytes"] for p in parts)
    return {
        "format_version": FORMAT_VERSION,
        "frames_layout": {"chunk_rows": part_writer.FRAME_CHUNK_ROWS,
                          "shard_rows": part_writer.FRAME_SHARD_ROWS, "compression": "none"},
        "windows_layout": {"chunk_rows": part_writer.WINDOW_CHUNK_ROWS,
                           "shard_rows": part_writer.WINDOW_SHARD_ROWS, "compression": "none"},
        "parts": parts,
        "skipped_shards": skipped_shards,
        "totals": totals,
        "folds": sorted({p["fold"] for p in parts}),
    }


def summarise(manifest: dict, converted: int, results: list[dict]) -> dict:
    """What the CLI reports: parts converted now, totals, skipped shards, peak RSS."""
    return {
        "converted": converted,
        "totals": manifest["totals"],
        "skipped_shards": manifest["skipped_shards"],
        "peak_rss": max((r.get("peak_rss", 0) for r in results), default=0),
        "seconds": sum(r.get("seconds", 0.0) for r in results),
    }
