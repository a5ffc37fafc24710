"""Write one store part from a stream of decoded chunks (docs/store.md).

`PartWriter` consumes `DecodedShard` chunks of consecutive whole records and writes,
into a (temporary) part directory:

- `frames.zarr`   Zarr v3 `(n_frames, 1152)` uint8, sharding codec, no compression;
- `windows.zarr`  Zarr v3 `(n_rated, 11, 1152)` uint8, the expanded rated-segment windows;
- `videos.parquet`, `segments.parquet`, `candidates.parquet`, `video_level.parquet`;
- `negatives.npy` `(V, 125)` uint8, packed mined negatives (paper §3.6).

Memory is bounded whatever the shard size: the decoded frames of a chunk are written
straight into the open Zarr shard file, and a chunk's windows go through one reused
buffer. The shard files are written here directly (uncompressed inner chunks back to
back, then the index: (offset, nbytes) uint64 pairs and their CRC-32C, as the Zarr v3
sharding codec specifies), so nothing is staged or copied on the way; `zarr.json` is
written last with the final shape.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

import google_crc32c
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ingest.codec.video import AUDIO_BYTES, FRAME_BYTES, RGB_BYTES, DecodedShard
from ingest.store import segments as seg
from ingest.store.layout import COUNT_KEYS, SCHEMAS, crc32, file_checksum, shard_file
from ingest.vocab import to_class_index

N_FOLDS = 8  # folds 0..7 for cross-validation, a stable function of the shard's name
FRAME_CHUNK_ROWS = 512  # frames per inner Zarr chunk (590 KB); chosen by measurement, docs/store.md
FRAME_SHARD_ROWS = 16384  # frames per Zarr shard file (18.9 MB)
WINDOW_CHUNK_ROWS = 64  # windows per inner chunk (811 KB)
WINDOW_SHARD_ROWS = 1024  # windows per shard file (13 MB)
_NO_CHUNK = np.uint64(2**64 - 1)  # index entry of an absent inner chunk (sharding codec)
_LOCAL = threading.local()  # reused buffers, one set per thread (a Dask worker may run
# several conversions at once in threads); first touch of new memory is slow, so reuse


def fold_of(source_name: str) -> int:
    """Fold 0..7 of a shard: BLAKE2b of its base name mod 8 (stable across runs and machines).

    Not CRC-32: CRC is linear, so names that differ in a digit or two (train0001,
    train0002, ...) share their low bits and all landed in fold 0.
    """
    digest = hashlib.blake2b(os.path.basename(source_name).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % N_FOLDS


def zarr_metadata(shape: tuple, chunk_rows: int, shard_rows: int) -> dict:
    """`zarr.json` of a uint8 array sharded along axis 0, uncompressed inner chunks."""
    rest = list(shape[1:])
    return {
        "zarr_format": 3, "node_type": "array", "shape": list(shape), "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [shard_rows, *rest]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "sharding_indexed", "configuration": {
            "chunk_shape": [chunk_rows, *rest],
            "codecs": [{"name": "bytes"}],
            "index_codecs": [{"name": "bytes", "configuration": {"endian": "little"}},
                             {"name": "crc32c"}],
            "index_location": "end"}}],
        "attributes": {}, "storage_transformers": [],
    }


class ShardedArrayWriter:
    """Append rows of shape `row_shape` (uint8) to a Zarr v3 sharded array, streaming.

    Rows go straight from the caller's array into the open shard file `c/<k>/0[/0]`
    (no staging copy; the file's CRC-32 is updated on the way). When a shard holds
    `shard_rows` rows, or at `close()`, its last inner chunk is zero padded, the index
    ((offset, nbytes) uint64 per inner chunk, absent ones all ones) and the index's
    CRC-32C are appended and the file is closed; `close()` writes `zarr.json`.
    """

    def __init__(self, path: Path, row_shape: tuple, chunk_rows: int, shard_rows: int):
        assert shard_rows % chunk_rows == 0
        self.path, self.row_shape = Path(path), tuple(row_shape)
        self.chunk_rows, self.shard_rows = chunk_rows, shard_rows
        self.row_bytes = int(np.prod(self.row_shape))
        self.file = None  # the open shard file
        self.fill = 0  # rows in the open shard file
        self.crc = 0  # CRC-32 of the open shard file so far (store.file_checksum's)
        self.n_rows = 0  # rows in closed shard files
        self.n_shards = 0
        self.crcs: dict[str, int] = {}  # CRC-32 of each file written, by path below `path`
        self.path.mkdir(parents=True)

    @property
    def rows_written(self) -> int:
        return self.n_rows + self.fill

    def append(self, rows: np.ndarray) -> None:
        """rows: (n, *row_shape) uint8, C-contiguous."""
        rows = np.ascontiguousarray(rows).reshape(len(rows), self.row_bytes)
        i = 0
        while i < len(rows):
            if self.file is None:
                self._open()
            take = min(len(rows) - i, self.shard_rows - self.fill)
            self._write(rows[i : i + take])
            self.fill += take
            i += take
            if self.fill == self.shard_rows:
                self._finish()

    def _open(self) -> None:
        key = shard_file(self.path, self.n_shards, len(self.row_shape))
        key.parent.mkdir(parents=True, exist_ok=True)
        # the file stays open across append() calls; _finish() or abort() closes it
        self.key, self.file, self.fill, self.crc = key, open(key, "wb"), 0, 0  # noqa: SIM115

    def _write(self, data: np.ndarray) -> None:
        self.file.write(data)
        self.crc = crc32(data, self.crc)

    def _finish(self) -> None:
        """Pad the last inner chunk, append the index and its CRC, close the shard file."""
        used = -(-self.fill // self.chunk_rows)  # inner chunks holding data
        pad = used * self.chunk_rows - self.fill
        if pad:
            self._write(np.zeros((pad, self.row_bytes), np.uint8))
        chunk_bytes = self.chunk_rows * self.row_bytes
        index = np.full((self.shard_rows // self.chunk_rows, 2), _NO_CHUNK, np.uint64)
        index[:used, 0] = np.arange(used, dtype=np.uint64) * np.uint64(chunk_bytes)
        index[:used, 1] = chunk_bytes
        raw = index.astype("<u8").tobytes()
        raw += google_crc32c.value(raw).to_bytes(4, "little")
        self.file.write(raw)
        self.file.close()
        self.crcs[self.key.relative_to(self.path).as_posix()] = crc32(raw, self.crc)
        self.n_rows += self.fill
        self.n_shards += 1
        self.file, self.fill = None, 0

    def close(self) -> int:
        """Finish the last shard and write the metadata; returns the number of rows."""
        if self.file is not None:
            self._finish()
        meta = zarr_metadata((self.n_rows, *self.row_shape), self.chunk_rows, self.shard_rows)
        (self.path / "zarr.json").write_text(json.dumps(meta, indent=2))
        return self.n_rows

    def abort(self) -> None:
        """Close the open shard file (after an error, before the directory is removed)."""
        if self.file is not None:
            self.file.close()
            self.file = None


class _Columns:
    """Columns of one table gathered chunk by chunk as numpy pieces (copies: a chunk's
    arrays are views into the decoder's reused buffers) and joined once, at close."""

    def __init__(self) -> None:
        self.pieces: dict[str, list[np.ndarray]] = {}
        self.ids: list[str] = []  # video ids (tables with one row per video)

    def add(self, **cols: np.ndarray) -> None:
        for name, col in cols.items():
            self.pieces.setdefault(name, []).append(np.array(col))

    def get(self, name: str, dtype, width: int | None = None) -> np.ndarray:
        """The joined column: (n,), or (n, width) for a fixed-width one; empty if none."""
        parts = self.pieces.get(name)
        if not parts:
            return np.zeros((0,) if width is None else (0, width), dtype)
        return np.concatenate(parts).astype(dtype, copy=False)


class PartWriter:
    """Write one part (one source shard) into directory `path` from decoded chunks.

    Per chunk only the bulk work happens: frames and windows go to their Zarr shard
    files, negatives are mined; the per-row columns are kept as numpy pieces and the
    Parquet tables are built once, at `close()` (building Arrow tables chunk by chunk
    cost about a tenth of a conversion, docs/store.md).
    """

    def __init__(self, path: Path, part: str, source: str):
        self.path, self.part, self.source = Path(path), part, os.path.basename(source)
        self.fold = fold_of(source)
        self.frames = ShardedArrayWriter(self.path / "frames.zarr", (FRAME_BYTES,),
                                         FRAME_CHUNK_ROWS, FRAME_SHARD_ROWS)
        self.windows = ShardedArrayWriter(self.path / "windows.zarr",
                                          (seg.WINDOW_FRAMES, FRAME_BYTES),
                                          WINDOW_CHUNK_ROWS, WINDOW_SHARD_ROWS)
        self.videos, self.video_level, self.segments = _Columns(), _Columns(), _Columns()
        self.negatives: list[np.ndarray] = []
        self.skipped: list[dict] = []
        self.n_records = 0

    # ------------------------------------------------------------ per chunk
    def add(self, chunk: DecodedShard) -> None:
        """Append one decoded chunk (consecutive whole records of the shard)."""
        for rec, off, reason in chunk.skipped:
            self.skipped.append({"record": int(rec), "offset": int(off), "reason": str(reason)})
        v = chunk.n_videos
        if v == 0:
            return
        records = self._record_numbers(v)
        if chunk.kind == "video":
            self._add_common(self.video_level, chunk, records)
            self.video_level.add(mean_rgb=chunk.mean_rgb, mean_audio=chunk.mean_audio)
        else:
            self._add_frame_level(chunk, records)

    def _record_numbers(self, v: int) -> np.ndarray:
        """Record numbers of the next v videos: consecutive, jumping over skipped records."""
        skipped = {s["record"] for s in self.skipped}
        out = np.empty(v, np.int32)
        r, i = self.n_records, 0
        while i < v:
            if r not in skipped:
                out[i] = r
                i += 1
            r += 1
        self.n_records = r
        return out

    @staticmethod
    def _add_common(cols: _Columns, chunk: DecodedShard, records: np.ndarray) -> None:
        cols.ids.extend(chunk.ids)
        cols.add(label_count=np.diff(chunk.label_offsets), labels=chunk.labels,
                 has_labels=chunk.has_labels, record=records,
                 record_offset=chunk.record_offsets)

    def _add_frame_level(self, chunk: DecodedShard, records: np.ndarray) -> None:
        first = len(self.videos.ids)
        fo = np.asarray(chunk.frame_offsets, np.int64)
        so = np.asarray(chunk.segment_offsets, np.int64)
        n_frames = np.diff(fo)
        self._add_common(self.videos, chunk, records)
        self.videos.add(frame_offset=fo[:-1] + self.frames.rows_written, n_frames=n_frames,
                        n_rated=np.diff(so))
        self.negatives.append(seg.negatives(chunk.label_offsets, chunk.labels, so,
                                            chunk.segment_labels, chunk.segment_scores,
                                            chunk.has_labels).copy())
        self._add_segments(chunk, first, fo, n_frames, so)
        self.frames.append(chunk.frames[: fo[-1]])

    def _add_segments(self, chunk, first, fo, n_frames, so) -> None:
        """Gather and append the chunk's rated windows; keep their columns."""
        s = int(so[-1])
        if s == 0:
            return
        video, starts, (lo, hi, pl, pr), windows = rated_windows(chunk, fo, n_frames, so)
        self.windows.append(windows)
        self.segments.add(video=video + first, start=starts, end=chunk.segment_end_times[:s],
                          label=chunk.segment_labels[:s], score=chunk.segment_scores[:s],
                          lo=lo, hi=hi, pad_left=pl, pad_right=pr,
                          outside=seg.outside_video(starts, n_frames[video]))

    # ------------------------------------------------------------ finish
    def abort(self) -> None:
        """Close the open shard files (after an error, before the directory is removed)."""
        self.frames.abort()
        self.windows.abort()

    def close(self) -> dict:
        """Write the tables and array metadata; returns the part's counts."""
        n_frames = self.frames.close()
        n_windows = self.windows.close()
        video_ids = pa.array(self.videos.ids, pa.string())
        tables = {"videos": self._videos_table(video_ids),
                  "video_level": self._video_level_table(),
                  "segments": self._segments_table(video_ids),
                  "candidates": self._candidates_table(video_ids)}
        for name, table in tables.items():
            _write_table(table.cast(SCHEMAS[name]), self.path / f"{name}.parquet")
        neg = (np.concatenate(self.negatives) if self.negatives
               else np.zeros((0, seg.NEGATIVE_BYTES), np.uint8))
        np.save(self.path / "negatives.npy", neg)
        segs = tables["segments"]
        self.files = _file_crcs(self.path, [self.frames, self.windows])
        return dict(zip(COUNT_KEYS, (
            tables["videos"].num_rows,
            tables["video_level"].num_rows,
            n_frames,
            n_windows,
            int(np.sum(np.asarray(segs["score"]) > 0)),
            int(np.sum(np.asarray(segs["outside_video"]))),
            int(np.sum(np.asarray(segs["class_index"]) < 0)),
            tables["candidates"].num_rows,
            len(self.skipped),
        ), strict=True))

    def _common(self, cols: _Columns, ids: pa.Array) -> dict:
        """Columns shared by videos.parquet and video_level.parquet."""
        v = len(ids)
        label_off = _offsets(cols.get("label_count", np.int64))
        labels = cols.get("labels", np.int64)
        cls = to_class_index(labels)
        keep = cls >= 0
        cls_off = _offsets(keep)[label_off]  # kept labels before each video's first
        return {
            "video_index": pa.array(np.arange(v, dtype=np.int32)),
            "video_id": ids,
            "labels": pa.ListArray.from_arrays(pa.array(label_off.astype(np.int32)),
                                               pa.array(labels.astype(np.int32))),
            "class_indices": pa.ListArray.from_arrays(pa.array(cls_off.astype(np.int32)),
                                                      pa.array(cls[keep])),
            "has_labels": pa.array(cols.get("has_labels", bool)),
            "part": pa.array([self.part] * v, pa.string()),
            "source": pa.array([self.source] * v, pa.string()),
            "record": pa.array(cols.get("record", np.int32)),
            "record_offset": pa.array(cols.get("record_offset", np.int64)),
            "fold": pa.array(np.full(v, self.fold, np.int8)),
        }

    def _videos_table(self, ids: pa.Array) -> pa.Table:
        cols = self._common(self.videos, ids)
        cols["frame_offset"] = pa.array(self.videos.get("frame_offset", np.int64))
        cols["n_frames"] = pa.array(self.videos.get("n_frames", np.int32))
        cols["n_rated"] = pa.array(self.videos.get("n_rated", np.int32))
        return pa.table(cols)

    def _video_level_table(self) -> pa.Table:
        vl = self.video_level
        cols = self._common(vl, pa.array(vl.ids, pa.string()))
        for name, width in (("mean_rgb", RGB_BYTES), ("mean_audio", AUDIO_BYTES)):
            flat = np.ravel(vl.get(name, np.float32, width))
            cols[name] = pa.FixedSizeListArray.from_arrays(pa.array(flat), width)
        return pa.table(cols)

    def _segments_table(self, ids: pa.Array) -> pa.Table:
        s = self.segments
        video = s.get("video", np.int32)
        labels = s.get("label", np.int64)
        return pa.table({
            "video_index": pa.array(video),
            "video_id": ids.take(pa.array(video)),
            "start_time": pa.array(s.get("start", np.int32)),
            "end_time": pa.array(s.get("end", np.int32)),
            "label": pa.array(labels.astype(np.int32)),
            "class_index": pa.array(to_class_index(labels)),
            "score": pa.array(s.get("score", np.float32)),
            "window_index": pa.array(np.arange(len(video), dtype=np.int32)),
            "window_lo": pa.array(s.get("lo", np.int32)),
            "window_hi": pa.array(s.get("hi", np.int32)),
            "pad_left": pa.array(s.get("pad_left", np.int8)),
            "pad_right": pa.array(s.get("pad_right", np.int8)),
            "outside_video": pa.array(s.get("outside", bool)),
        })

    def _candidates_table(self, ids: pa.Array) -> pa.Table:
        n_frames = self.videos.get("n_frames", np.int64)
        video, index = seg.candidates(n_frames)
        starts = index.astype(np.int64) * seg.SEGMENT_FRAMES
        lo, hi, pl, pr = seg.window_spans(starts, n_frames[video])
        return pa.table({
            "video_index": pa.array(video),
            "video_id": ids.take(pa.array(video)),
            "segment_index": pa.array(index.astype(np.int16)),
            "start_time": pa.array(starts.astype(np.int32)),
            "window_lo": pa.array(lo), "window_hi": pa.array(hi),
            "pad_left": pa.array(pl.astype(np.int8)), "pad_right": pa.array(pr.astype(np.int8)),
        })


def _file_crcs(path: Path, arrays: list[ShardedArrayWriter]) -> dict[str, str]:
    """CRC-32 (8 hex digits, `store.file_checksum`'s) of every file of the part: array
    shards as written, the rest (tables, metadata: small) read back."""
    out = {}
    for arr in arrays:
        prefix = arr.path.relative_to(path).as_posix()
        out.update({f"{prefix}/{k}": f"{v:08x}" for k, v in arr.crcs.items()})
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path).as_posix()
        if f.is_file() and rel not in out:
            out[rel] = file_checksum(f)[1]
    return dict(sorted(out.items()))


def _offsets(counts: np.ndarray) -> np.ndarray:
    """(n+1,) int64 offsets of ragged rows with these (n,) lengths."""
    return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)


def _write_table(table: pa.Table, path: Path) -> None:
    """Parquet, dictionary encoding for the string columns only (ids repeat over segment
    and candidate rows; on the integer columns it cost a third of the write time)."""
    strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
    pq.write_table(table, path, use_dictionary=strings)


def rated_windows(chunk: DecodedShard, fo: np.ndarray, n_frames: np.ndarray, so: np.ndarray):
    """The expanded windows of a frame-level chunk's S rated segments.

    fo, so: (V+1,) int64 frame and segment offsets of the chunk; n_frames (V,) int64.
    Returns `video` (S,) int64 (the segment's video in the chunk), `starts` (S,) int64,
    the spans `(lo, hi, pad_left, pad_right)` of `segments.window_spans`, and the
    windows (S, 11, 1152) uint8, a view into this thread's reused buffer.
    """
    s = int(so[-1])
    video = np.repeat(np.arange(chunk.n_videos, dtype=np.int64), np.diff(so))
    starts = np.asarray(chunk.segment_start_times[:s], np.int64)
    spans = seg.window_spans(starts, n_frames[video])
    windows = seg.gather_windows(chunk.frames, fo[video], spans[0], spans[1], spans[2],
                                 out=_buffer_windows(s))
    return video, starts, spans, windows


def _buffer_windows(n: int) -> np.ndarray:
    """A reused (≥n, 11, 1152) buffer for one chunk's windows (grows by doubling)."""
    cur = getattr(_LOCAL, "windows", None)
    if cur is None or len(cur) < n:
        cur = _LOCAL.windows = np.empty((max(n, 2 * (0 if cur is None else len(cur)), 256),
                                         seg.WINDOW_FRAMES, FRAME_BYTES), np.uint8)
    return cur
