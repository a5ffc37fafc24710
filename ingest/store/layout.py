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

import numpy as np
import pyarrow as pa

try:  # ISA-L's CRC-32 (python-isal): ~4x google_crc32c, benchmarks/bench_checksum.py
    from isal.isal_zlib import crc32
except ImportError:  # no wheel for the platform: zlib's, the same values, ~10x slower
    from zlib import crc32

from ingest.codec.video import AUDIO_BYTES, RGB_BYTES
from ingest.errors import IngestError

FORMAT_VERSION = 2  # bump when the layout or a table's columns change (docs/store.md)
MANIFEST = "manifest.json"
PARTS = "parts"
TMP = ".tmp"
PART_JSON = "part.json"


READ_BLOCK = 8 << 20  # block size of checksum passes
TABLES = ("videos", "segments", "candidates", "video_level")


class StoreError(IngestError):
    """The path is not a complete store, or the store does not match its manifest."""


def read_manifest(path) -> dict:
    """The manifest of the store at `path`; StoreError if the store is incomplete."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise StoreError(f"{path}: not a complete store (no {MANIFEST}; run `ingest convert`)")
    manifest = json.loads(file.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{path}: store format {manifest.get('format_version')}, "
                         f"this reader reads format {FORMAT_VERSION}")
    return manifest


def part_name(source: str) -> str:
    """The part of a source shard: its base name without `.tfrecord`, made path-safe."""
    name = os.path.basename(os.fspath(source))
    for ext in (".tfrecord", ".tfrec"):
        name = name.removesuffix(ext)
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "part"


def file_checksum(path) -> tuple[int, str]:
    """(size in bytes, CRC-32 (zlib's polynomial) of the whole file as 8 hex digits), read
    in blocks into one reused buffer. The store's file checksums are all this CRC; CRC-32C
    is the TFRecord's and Zarr's own (record framing, shard index), docs/store.md."""
    crc, size = 0, 0
    buf = _read_buffer()
    with open(path, "rb") as f:
        while n := f.readinto(buf):
            crc = crc32(buf[:n], crc)
            size += n
    return size, f"{crc:08x}"


_READ_BUFFERS = threading.local()


def _read_buffer() -> np.ndarray:
    if not hasattr(_READ_BUFFERS, "buf"):
        _READ_BUFFERS.buf = np.empty(READ_BLOCK, np.uint8)
    return _READ_BUFFERS.buf


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON (sorted keys, stable) under a temporary name, then rename."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def shard_file(array: Path, k: int, row_ndim: int) -> Path:
    """Shard file k of a Zarr v3 array sharded along axis 0 only (default "/" chunk keys):
    `c/<k>/0` with one more `/0` per further axis."""
    return Path(array) / "c" / str(k) / "/".join("0" * row_ndim)


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
