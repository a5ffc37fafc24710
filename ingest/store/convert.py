"""`ingest convert`: source shards → a store, one part per shard, resumable, in parallel.

`convert_shard` is the unit of work: it decodes one shard in bounded chunks,
writes its part under `STORE/.tmp/` and renames it into `STORE/parts/` when
complete. The same function runs in-process (`workers=1`), on a local process pool,
or on a Dask cluster (`executor="dask://HOST:PORT"`, workers writing directly to a
store on a shared filesystem). `convert` writes `manifest.json` last, from the
parts' own `part.json` files, so an interrupted run leaves no manifest and a re-run
converts only the missing parts; its result is byte-identical to an
uninterrupted run, and a re-run on a complete store changes nothing. Each part records
its source's path (relative to the store), size, modification time and CRC-32C; a
re-run refuses a source whose size or modification time changed since its part was made.
"""
from __future__ import annotations

import os
import resource
import shutil
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import closing
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

from ingest.errors import IngestError, ShardError
from ingest.sources import expand_sources
from ingest.store import writer as part_writer
from ingest.store.layout import (
    COUNT_KEYS,
    FORMAT_VERSION,
    MANIFEST,
    PART_JSON,
    PARTS,
    TMP,
    StoreError,
    part_name,
    read_manifest,
    read_part_json,
    write_json_atomic,
)

ON_ERROR = ("fail", "skip-record", "skip-shard")
CHUNK_BYTES = 4 << 20  # source bytes decoded per chunk: bounds a worker's memory; 4 MB
# converts ~13-25 % faster than 16 MB, and 2 or 1 MB are slower again (docs/store.md)
CONNECT_TIMEOUT = 10.0  # seconds to wait for a Dask scheduler (--connect-timeout)


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
    connect_timeout: float = CONNECT_TIMEOUT  # seconds, for executor="dask://..."


def source_shards(patterns) -> list[str]:
    """`ingest.sources.expand_sources` (paths as given), refusing two sources that would
    become the same part."""
    paths = expand_sources(patterns)
    names: dict[str, str] = {}
    for p in paths:
        other = names.setdefault(part_name(p), p)
        if other != p:
            raise IngestError(f"{p} and {other} would both become part {part_name(p)!r}")
    return paths


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
                  chunk_bytes: int = CHUNK_BYTES, shown: str | None = None) -> dict:
    """Convert one shard into `store/parts/<part>` (skipped if already there).

    `shown` is the source's path as the user gave it, for messages (default `source`).
    Returns {"part", "source", "shown", "status": converted|existing|skipped|failed,
    "info" (the part.json dict), "error", "seconds", "peak_rss"}. Never raises
    ShardError (it does not pickle across processes): a corrupt shard is status
    failed/skipped.
    """
    t0 = time.perf_counter()
    shown = shown or source
    name = part_name(source)
    final = Path(store) / PARTS / name
    result = {"part": name, "source": source, "shown": shown, "status": "existing",
              "info": None, "error": None}
    if not (final / PART_JSON).is_file():
        tmp = Path(store) / TMP / f"{name}-{uuid.uuid4().hex[:12]}"
        try:
            result.update(_write_part(source, store, tmp, final, on_error, chunk_bytes))
        except ShardError as err:  # named as the user named the source
            result["status"] = "skipped" if on_error == "skip-shard" else "failed"
            result["error"] = str(ShardError(shown, err.record, err.offset, err.reason))
        except OSError as err:  # unreadable source, full disk, no permission: stop the run
            result["status"] = "failed"
            where = f" ({err.filename}{' -> ' + err.filename2 if err.filename2 else ''})" \
                if err.filename else ""
            result["error"] = f"{shown}: {err.strerror or err}{where}"
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    if result["status"] == "existing":
        result["info"] = read_part_json(final)
    elif result["status"] == "changed":
        result.update(status="failed", error=f"{shown}: changed while it was being converted "
                      "(size or modification time); run the same command again")
    result["seconds"] = time.perf_counter() - t0
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def source_identity(source: str, store) -> dict:
    """What part.json records to recognise its source: `source` (base name),
    `source_path` (relative to the store directory, so that a store moved together with
    its sources still finds them), `source_bytes` and `source_mtime_ns` (os.stat)."""
    st = os.stat(source)
    rel = os.path.relpath(os.path.abspath(source), os.path.abspath(store))
    return {"source": os.path.basename(source), "source_path": Path(rel).as_posix(),
            "source_bytes": st.st_size, "source_mtime_ns": st.st_mtime_ns}


def _write_part(source, store, tmp: Path, final: Path, on_error, chunk_bytes) -> dict:
    decoder = _decoder(on_error)
    name = final.name
    identity = source_identity(source, store)  # before reading: a later write shows
    writer = part_writer.PartWriter(tmp, name, source)
    kinds = set()
    try:
        for chunk in decoder.iter_chunks(source, chunk_bytes=chunk_bytes):
            if chunk.n_videos:
                kinds.add(chunk.kind)
            writer.add(chunk)
    except BaseException:
        writer.abort()
        raise
    counts = writer.close()
    if source_identity(source, store) != identity:
        return {"status": "changed"}
    crc = decoder.source_crc32c  # computed by the decoder on the bytes it read: no second read
    info = {
        "format_version": FORMAT_VERSION, "part": name, **identity, "source_crc32c": crc,
        "fold": part_writer.fold_of(source), "kind": "+".join(sorted(kinds)) or "empty",
        "counts": counts, "skipped_records": writer.skipped, "files": writer.files,
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


# ---------------------------------------------------------------- orchestration

def _stamp(nbytes: int, mtime_ns: int) -> str:
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mtime_ns // 10**9))
    return f"{nbytes} bytes, modified {when}.{mtime_ns % 10**9:09d}"


def _check_existing(sources: list[str], store: Path) -> list[str]:
    """Sources still to convert. IngestError if an existing part's part.json is damaged, or
    its source's size or modification time differ from those recorded (the file was
    rewritten, or is another file of the same name)."""
    todo = []
    for src in sources:
        part = store / PARTS / part_name(src)
        if not (part / PART_JSON).is_file():
            todo.append(src)
            continue
        info = read_part_json(part)
        st = os.stat(src)
        if (info["source_bytes"], info["source_mtime_ns"]) != (st.st_size, st.st_mtime_ns):
            raise IngestError(
                f"{src}: changed since part {info['part']!r} was converted from it (then "
                f"{_stamp(info['source_bytes'], info['source_mtime_ns'])}; now "
                f"{_stamp(st.st_size, st.st_mtime_ns)}); remove {part} to convert it again")
    return todo


def _ignore_sigint() -> None:
    """Process-pool workers ignore Ctrl-C: the parent stops them (no traceback per worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
    with ProcessPoolExecutor(min(cfg.workers, len(todo)), mp_context=ctx,
                             initializer=_ignore_sigint) as pool:
        pending = {pool.submit(convert_shard, src, *args) for src in todo}
        finished = False
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield fut.result()
            finished = True
        finally:
            if not finished:  # Ctrl-C or a failed shard: stop the workers now; the parts
                _stop_workers(pool)  # they were writing are in .tmp, which is removed


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate a pool's worker processes and wait for them (their shards are left
    unconverted; `shutdown` would wait for every running conversion to finish). The pool
    then fails its pending futures itself; they are not cancelled first, as Python 3.11's
    pool then raises InvalidStateError in its own thread (a traceback on stderr)."""
    procs = list((pool._processes or {}).values())  # no public API before Python 3.14
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join()


def dask_address(executor: str) -> str:
    """`dask://HOST:PORT` → the scheduler address `tcp://HOST:PORT`."""
    rest = executor[len("dask://"):]
    if not rest or ":" not in rest:
        raise IngestError(f"--executor {executor}: expected dask://HOST:PORT")
    return rest if "://" in rest else f"tcp://{rest}"


def dask_client(cfg: ConvertConfig):
    """A Dask client connected to the scheduler of `cfg.executor`; says (unless quiet) that
    it is connecting, and fails with one line naming the address if no scheduler answers
    within `cfg.connect_timeout` seconds."""
    try:
        from distributed import Client
    except ImportError:
        raise IngestError("--executor dask://... needs the dask extra "
                          "(pip install 'yt8m-segments[dask]')") from None
    address = dask_address(cfg.executor)
    if cfg.progress:
        print(f"connecting to the Dask scheduler at {address} "
              f"(waiting up to {cfg.connect_timeout:g} s)", file=sys.stderr, flush=True)
    try:
        return Client(address, timeout=cfg.connect_timeout)
    except (OSError, TimeoutError):
        raise IngestError(f"--executor {cfg.executor}: no Dask scheduler answered at {address} "
                          f"within {cfg.connect_timeout:g} s; is it "
                          "running? (--connect-timeout sets the wait)") from None


def _run_dask(cfg: ConvertConfig, todo: list[str], client):
    """Yield convert_shard results computed on a Dask cluster (shared filesystem)."""
    from distributed import as_completed

    store = os.path.abspath(cfg.out)
    with client:
        futures = [client.submit(convert_shard, os.path.abspath(src), store, cfg.on_error,
                                 cfg.chunk_bytes, src, pure=False) for src in todo]
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
    if cfg.executor != "local":
        dask_address(cfg.executor)  # a malformed address fails before anything is written
    sources = source_shards(cfg.sources)
    store = Path(cfg.out)
    if store.exists() and not store.is_dir():
        raise IngestError(f"{store}: exists and is not a directory")
    created = not store.exists()
    if not created:
        check_store_dir(store)
    shutil.rmtree(store / TMP, ignore_errors=True)  # leftovers of an interrupted run
    try:
        (store / PARTS).mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a read-only file system, a parent that is a file
        raise IngestError(f"{store}: cannot create the store ({err.strerror or err}: "
                          f"{err.filename})") from None
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
    old, damaged = _manifest_on_disk(store)
    if old != manifest:
        write_json_atomic(store / MANIFEST, manifest)
    summary = summarise(manifest, converted=sum(r["status"] == "converted" for r in results),
                        results=results)
    summary["empty_sources"] = [r["shown"] for r in results
                                if r["status"] == "converted" and r["info"]["source_bytes"] == 0]
    summary["repaired_manifest"] = damaged
    return summary


def check_store_dir(store: Path) -> None:
    """Refuse an existing directory that `convert` must not write into: one that is not
    empty and is neither a store (it has a manifest) nor one being made (nothing but
    `parts/`, whose entries are all complete parts, and `.tmp/`; the state an interrupted
    run leaves). A user's folder that happens to hold a `parts/` is not mixed into a store."""
    if (store / MANIFEST).is_file():
        return
    foreign = [e for e in sorted(store.iterdir()) if e.name not in (PARTS, TMP)]
    foreign += [e for e in (store / PARTS, store / TMP) if e.exists() and not e.is_dir()]
    if (store / PARTS).is_dir():
        foreign += [e for e in sorted((store / PARTS).iterdir()) if not (e / PART_JSON).is_file()]
    if foreign:
        raise IngestError(f"{store}: a non-empty directory that is not a store (no {MANIFEST}"
                          f"; it holds {foreign[0].relative_to(store)}, not made by `ingest "
                          f"convert`); give a new or empty directory")


def _manifest_on_disk(store: Path) -> tuple[dict | None, str | None]:
    """The manifest now in `store`: (it, None); (None, None) if there is none; or (None,
    what was wrong with it) if `read_manifest` refuses it (convert then rewrites it)."""
    if not (store / MANIFEST).is_file():
        return None, None
    try:
        return read_manifest(store), None
    except StoreError as err:
        return None, err.problem or str(err)


def _execute(cfg: ConvertConfig, sources: list[str], todo: list[str]) -> list[dict]:
    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no monitor thread (the process pool may fork)
    total = sum(os.path.getsize(s) for s in todo)
    if cfg.executor.startswith("dask://") and todo:
        client = dask_client(cfg)  # before the bar: a wait for the scheduler is said as such
        runs = _run_dask(cfg, todo, client)
    else:
        runs = _run_local(cfg, todo)
    bar = tqdm(total=total, unit="B", unit_scale=True, desc="convert", file=sys.stderr,
               disable=not cfg.progress or not todo, dynamic_ncols=True)
    results, videos = [], 0
    # closing: on an error or Ctrl-C here, the generator stops its workers now, before
    # `convert` removes .tmp (else only when the exception's traceback is freed)
    with bar, closing(runs):
        for r in runs:
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
    parts = [read_part_json(p) for p in sorted((store / PARTS).iterdir())
             if (p / PART_JSON).is_file()]
    totals = {k: sum(p["counts"][k] for p in parts) for k in COUNT_KEYS}
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
