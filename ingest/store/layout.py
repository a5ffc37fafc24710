"""The store's layout: names, format version, table schemas, checksums and the manifest.

Both sides of the store import this module and nothing else of each other: the writer
(`ingest.store.writer`, `ingest.store.convert`) and the readers (`ingest.store.reader`,
`ingest.store.verify`, `ingest.store.truth`). It loads no numba, so light readers such as
`ingest.store.truth` on the `predict evaluate` path stay light. docs/store.md describes
the layout.
"""
from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

import google_crc32c
import numpy as np
import pyarrow as pa

try:  # ISA-L's CRC-32 (python-isal): ~4x google_crc32c, benchmarks/bench_checksum.py
    from isal.isal_zlib import crc32
except ImportError:  # no wheel for the platform: zlib's, the same values, ~10x slower
    from zlib import crc32

from ingest.codec.video import AUDIO_BYTES, RGB_BYTES
from ingest.errors import IngestError

# bump when the layout, a table's columns or a JSON file's fields change (docs/store.md);
# 3: part.json records the source's path, size and mtime, and mined negatives follow §3.6
FORMAT_VERSION = 3
MANIFEST = "manifest.json"
PARTS = "parts"
TMP = ".tmp"
PART_JSON = "part.json"


READ_BLOCK = 8 << 20  # block size of checksum passes
TABLES = ("videos", "segments", "candidates", "video_level")
COUNT_KEYS = ("videos", "video_level", "frames", "rated_segments", "positives",
              "outside_video", "unknown_class", "candidates", "skipped_records")  # a part's counts


class StoreError(IngestError):
    """The path is not a complete store, or the store does not match its manifest.

    `problem`: for a damaged manifest.json or part.json, what is wrong with it (the
    message adds the file and what to do)."""

    def __init__(self, message: str, problem: str | None = None):
        super().__init__(message)
        self.problem = problem


# ---------------------------------------------------------------- manifest and part.json
# Every reader of manifest.json and part.json goes through `read_manifest` and
# `read_part_json`: a file that is not JSON, or lacks a field or has one of the wrong
# type, is a one-line StoreError naming the file and saying what to do, never a KeyError
# later on.

_PART_FIELDS = {
    "format_version": int, "part": str, "source": str, "source_path": str,
    "source_bytes": int, "source_mtime_ns": int, "source_crc32c": str, "fold": int,
    "kind": str, "counts": dict, "skipped_records": list, "files": dict,
}
_MANIFEST_FIELDS = {
    "format_version": int, "frames_layout": dict, "windows_layout": dict, "parts": list,
    "skipped_shards": list, "totals": dict, "folds": list,
}
_TYPE_NAMES = {int: "an integer", str: "a string", dict: "an object", list: "a list"}


def _problem(obj, fields: dict) -> str | None:
    """What is wrong with a JSON object against `fields` (name → type), or None."""
    if not isinstance(obj, dict):
        return f"holds {type(obj).__name__ if obj is not None else 'null'}, expected an object"
    for name, kind in fields.items():
        value = obj.get(name)
        if name not in obj:
            return f"no field {name!r}"
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            return f"field {name!r} is not {_TYPE_NAMES[kind]}"
    return None


def _int_fields(obj: dict, keys, where: str) -> str | None:
    bad = [k for k in keys if not isinstance(obj.get(k), int) or isinstance(obj.get(k), bool)]
    return f"{where} lacks the integer {bad[0]!r}" if bad else None


def _version_problem(obj) -> str | None:
    """For a manifest or part.json of another store format: what to say, else None."""
    if not isinstance(obj, dict):
        return None
    version = obj.get("format_version")
    if "format_version" not in obj and "source_crc32c" in obj:  # a part.json before format 3
        version = "2 or older"
    elif not isinstance(version, int) or isinstance(version, bool) or version == FORMAT_VERSION:
        return None
    return f"written by store format {version}, this is format {FORMAT_VERSION}"


def _part_problem(entry) -> str | None:
    """What is wrong with one part.json object (or manifest entry), or None."""
    problem = _version_problem(entry) or _problem(entry, _PART_FIELDS) or _int_fields(
        entry["counts"], COUNT_KEYS, "field 'counts'")
    if problem is None and not all(isinstance(k, str) and isinstance(v, str)
                                   for k, v in entry["files"].items()):
        problem = "field 'files' is not an object of file name -> checksum strings"
    return problem


def _load_json(file: Path):
    """The JSON value of `file`, or (None, what is wrong) if it is not JSON."""
    try:
        return json.loads(file.read_bytes()), None
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as err:
        return None, f"not valid JSON ({err.msg} at line {err.lineno} column {err.colno})"


def read_manifest(path) -> dict:
    """The manifest of the store at `path`, checked field by field.

    StoreError (one line, naming the file) if the store is incomplete (no manifest), of
    another format version, or damaged (not JSON, a field missing or of the wrong type).
    """
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise StoreError(f"{path}: not a complete store (no {MANIFEST}; run `ingest convert`)")
    manifest, problem = _load_json(file)
    if (old := _version_problem(manifest)) is not None:
        raise StoreError(f"{file}: {old} (convert the shards into a new store)")
    if problem is None:
        problem = _problem(manifest, _MANIFEST_FIELDS) or _int_fields(
            manifest["totals"], (*COUNT_KEYS, "parts", "source_bytes"), "field 'totals'")
    for i, entry in enumerate(manifest["parts"] if problem is None else ()):
        if (why := _part_problem(entry)) is not None:
            problem = f"parts[{i}]: {why}"
            break
    if problem is not None:
        raise StoreError(f"{file}: the store is damaged: {problem}; run the same `ingest "
                         f"convert` again to rebuild the manifest from the parts, then "
                         f"`ingest verify {path}`", problem)
    return manifest


def read_part_json(part_dir) -> dict:
    """The `part.json` of the part directory `part_dir`, checked field by field.

    StoreError (one line, naming the file) if it is not JSON, lacks a field, has one of
    the wrong type, or comes from another store format; the remedy it names is to
    remove the part, so that `ingest convert` converts its shard again.
    """
    file = Path(part_dir) / PART_JSON
    info, problem = _load_json(file)
    problem = problem or _part_problem(info)
    if problem is not None:
        what = problem if _version_problem(info) else f"the store is damaged: {problem}"
        raise StoreError(f"{file}: {what}; remove {Path(part_dir)} and run `ingest convert` "
                         f"again to convert its shard again", problem)
    return info


def part_name(source: str) -> str:
    """The part of a source shard: its base name without `.tfrecord`, made path-safe."""
    name = os.path.basename(os.fspath(source))
    for ext in (".tfrecord", ".tfrec"):
        name = name.removesuffix(ext)
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "part"


def crc32c(data, value: int = 0) -> int:
    """CRC-32C (Castagnoli) of `data` continuing `value`, with `crc32`'s argument order."""
    return google_crc32c.extend(value, data)


def file_checksum(path, crc=crc32) -> tuple[int, str]:
    """(size in bytes, CRC of the whole file as 8 hex digits), read in blocks into one
    reused buffer. `crc` is CRC-32 (zlib's polynomial) by default: the store's file
    checksums are all this CRC; CRC-32C (`crc=crc32c`) is the TFRecord's and Zarr's own
    (record framing, shard index) and part.json's `source_crc32c`, docs/store.md."""
    value, size = 0, 0
    buf = _read_buffer()
    with open(path, "rb") as f:
        while n := f.readinto(buf):
            value = crc(buf[:n], value)
            size += n
    return size, f"{value:08x}"


_READ_BUFFERS = threading.local()


def _read_buffer() -> np.ndarray:
    if not hasattr(_READ_BUFFERS, "buf"):
        _READ_BUFFERS.buf = np.empty(READ_BLOCK, np.uint8)
    return _READ_BUFFERS.buf


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON (sorted keys, stable) under a temporary name, then rename; the
    temporary file is removed if anything (Ctrl-C included) stops it half-way."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def shard_file(array: Path, k: int, row_ndim: int) -> Path:
    """Shard file k of a Zarr v3 array sharded along axis 0 only (default "/" chunk keys):
    `c/<k>/0` with one more `/0` per further axis."""
    return Path(array) / "c" / str(k) / "/".join("0" * row_ndim)


def shard_file_bytes(rows: int, chunk_rows: int, shard_rows: int, row_bytes: int) -> int:
    """Size of a shard file of `rows` rows as `ingest.store.writer` writes it: the rows, the
    last inner chunk zero padded to `chunk_rows`, then the index ((offset, nbytes) uint64
    per inner chunk of the shard) and its 4-byte CRC-32C. Readers check it before reading."""
    return (-(-rows // chunk_rows) * chunk_rows * row_bytes
            + shard_rows // chunk_rows * 16 + 4)


def shard_file_problem(path: Path, size: int | None, expected: int, store, part_dir) -> str:
    """The one-line message for a shard file that is missing (`size` None) or whose size is
    not the `expected` one of its rows (truncated, or damaged otherwise)."""
    what = "missing" if size is None else f"{size:,} bytes, expected {expected:,}"
    return (f"{path}: {what}: the store is damaged; run `ingest verify {store}`, then remove "
            f"{part_dir} and run `ingest convert` again to convert its shard again")


# Parquet schemas of a part's tables (docs/store.md)
_COMMON = [
    ("video_index", pa.int32()), ("video_id", pa.string()), ("labels", pa.list_(pa.int32())),
    ("class_indices", pa.list_(pa.int16())), ("has_labels", pa.bool_()), ("part", pa.string()),
    ("source", pa.string()), ("record", pa.int32()), ("record_offset", pa.int64()),
    ("fold", pa.int8()),
]
_WINDOW = [("window_lo", pa.int32()), ("window_hi", pa.int32()), ("pad_left", pa.int8()),
           ("pad_right", pa.int8())]
SCHEMAS = {
    "videos": pa.schema(_COMMON + [("frame_offset", pa.int64()), ("n_frames", pa.int32()),
                                   ("n_rated", pa.int32())]),
    "video_level": pa.schema(_COMMON + [("mean_rgb", pa.list_(pa.float32(), RGB_BYTES)),
                                        ("mean_audio", pa.list_(pa.float32(), AUDIO_BYTES))]),
    "segments": pa.schema([
        ("video_index", pa.int32()), ("video_id", pa.string()), ("start_time", pa.int32()),
        ("end_time", pa.int32()), ("label", pa.int32()), ("class_index", pa.int16()),
        ("score", pa.float32()), ("window_index", pa.int32())] + _WINDOW
        + [("outside_video", pa.bool_())]),
    "candidates": pa.schema([
        ("video_index", pa.int32()), ("video_id", pa.string()), ("segment_index", pa.int16()),
        ("start_time", pa.int32())] + _WINDOW),
}
