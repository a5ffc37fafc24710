"""The store: layout, manifest and the reader API used by `trainer` and `predict`.

    STORE/manifest.json            written last; a directory without it is no store
    STORE/parts/<part>/            one immutable part per source shard (docs/store.md)
        frames.zarr                (n_frames, 1152) uint8, Zarr v3, sharded, uncompressed
        windows.zarr               (n_rated, 11, 1152) uint8, expanded rated-segment windows
        videos.parquet  segments.parquet  candidates.parquet  video_level.parquet
        negatives.npy              (n_videos, 125) uint8, packed mined negatives
        part.json                  the part's source size, checksum, counts, skipped records
    STORE/.tmp/                    parts being written (renamed into parts/ when complete)

`Store(path)` opens a complete store. Tables are polars DataFrames with store-wide
row numbers added: `videos.video_row`, `segments.video_row` / `segments.window_row`
/ `segments.segment_row`, `candidates.video_row` / `candidates.candidate_row`. Arrays are
read without zarr: the parts are uncompressed, so each Zarr shard file is the rows
themselves followed by the index, and rows are copied out of a numpy memmap of it.
"""
from __future__ import annotations

import json
import os
import re
import sys
import threading
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

try:  # ISA-L's CRC-32 (python-isal): ~4x google_crc32c, benchmarks/bench_checksum.py
    from isal.isal_zlib import crc32
except ImportError:  # no wheel for the platform: zlib's, the same values, ~10x slower
    from zlib import crc32

from ingest.manifest import (  # noqa: F401 - part of this module's API
    FORMAT_VERSION,
    MANIFEST,
    PART_JSON,
    PARTS,
    TMP,
    StoreError,
    read_manifest,
)
from ingest.segments import (
    NEGATIVE_BYTES,
    WINDOW_FRAMES,
    candidate_count,
    gather_windows,
    outside_video,
    unpack_negatives,
    window_spans,
)
from ingest.video import FRAME_BYTES

READ_BLOCK = 8 << 20  # block size of checksum passes
TABLES = ("videos", "segments", "candidates", "video_level")


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


class RowArray:
    """Read-only rows of one part's Zarr array as written by `ingest.store_write`.

    Each shard file `c/<k>/0...` begins with rows `[k*S, (k+1)*S)` stored contiguously
    (uncompressed inner chunks in order), so rows are served from memmaps.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        meta = json.loads((self.path / "zarr.json").read_text())
        self.shape = tuple(meta["shape"])
        self.shard_rows = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
        inner = meta["codecs"][0]["configuration"]
        if [c["name"] for c in inner["codecs"]] != ["bytes"]:
            raise StoreError(f"{path}: compressed arrays are not supported by this reader")
        self.row_shape = self.shape[1:]
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.shape[0]

    def _shard(self, k: int) -> np.ndarray:
        if k not in self._maps:
            rows = min(self.shard_rows, self.shape[0] - k * self.shard_rows)
            key = shard_file(self.path, k, len(self.row_shape))
            self._maps[k] = np.memmap(key, np.uint8, "r", shape=(rows, *self.row_shape))
        return self._maps[k]

    def rows(self, a: int, b: int, out: np.ndarray | None = None) -> np.ndarray:
        """Rows [a, b) as a new (or the given) array (b - a, *row_shape) uint8."""
        if not 0 <= a <= b <= self.shape[0]:
            raise IndexError(f"rows [{a}, {b}) outside {self.path} of {self.shape[0]} rows")
        if out is None:
            out = np.empty((b - a, *self.row_shape), np.uint8)
        i = a
        while i < b:
            k = i // self.shard_rows
            j = min(b, (k + 1) * self.shard_rows)
            out[i - a : j - a] = self._shard(k)[i - k * self.shard_rows : j - k * self.shard_rows]
            i = j
        return out

    def take(self, index: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows at `index` (n,) → (n, *row_shape) uint8."""
        index = np.asarray(index, np.int64)
        if len(index) and (index.min() < 0 or index.max() >= self.shape[0]):
            raise IndexError(f"row index outside {self.path} of {self.shape[0]} rows")
        if out is None:
            out = np.empty((len(index), *self.row_shape), np.uint8)
        shard = index // self.shard_rows
        for k in np.unique(shard):  # one fancy-indexed gather per shard file
            sel = np.nonzero(shard == k)[0]
            out[sel] = self._shard(int(k))[index[sel] - k * self.shard_rows]
        return out


class Store:
    """A complete store, opened read-only. See the module docstring and docs/store.md."""

    def __init__(self, path):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.parts: list[str] = [p["part"] for p in self.manifest["parts"]]
        counts = [p["counts"] for p in self.manifest["parts"]]
        self._video_base = np.concatenate([[0], np.cumsum([c["videos"] for c in counts])])
        self._window_base = np.concatenate(
            [[0], np.cumsum([c["rated_segments"] for c in counts])])
        self._arrays: dict[tuple[int, str], RowArray] = {}

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, parts={len(self.parts)}, videos={self.n_videos})"

    @property
    def n_videos(self) -> int:
        return int(self._video_base[-1])

    # ------------------------------------------------------------ tables
    def _table(self, name: str) -> pl.DataFrame:
        frames = []
        for i, part in enumerate(self.parts):
            t = pl.read_parquet(self.path / PARTS / part / f"{name}.parquet")
            frames.append(t.with_columns(pl.lit(i, pl.Int32).alias("part_index")))
        if not frames:  # a store without parts: empty tables with the right columns
            from ingest.store_write import SCHEMAS

            empty = pl.from_arrow(SCHEMAS[name].empty_table())
            return empty.with_columns(pl.lit(0, pl.Int32).alias("part_index"))
        return pl.concat(frames, how="vertical")

    def _with_rows(self, t: pl.DataFrame) -> pl.DataFrame:
        base = pl.Series(self._video_base[:-1].astype(np.int64))
        return t.with_columns(
            (pl.col("video_index").cast(pl.Int64) + base.gather(t["part_index"])).alias(
                "video_row"))

    @cached_property
    def videos(self) -> pl.DataFrame:
        """One row per frame-level video, store-wide `video_row` = row number."""
        return self._with_rows(self._table("videos"))

    @cached_property
    def segments(self) -> pl.DataFrame:
        """One row per rated (segment, class); `video_row`, `window_row`, `segment_row` added.

        Rows whose start lies outside the video (`outside_video`) are kept (they
        are rated) but their window is all padding; filter them out for training.
        """
        t = self._with_rows(self._table("segments"))
        base = pl.Series(self._window_base[:-1].astype(np.int64))
        return t.with_columns(
            (pl.col("window_index").cast(pl.Int64) + base.gather(t["part_index"])).alias(
                "window_row"),
            pl.int_range(0, pl.len(), dtype=pl.Int64).alias("segment_row"))

    @cached_property
    def candidates(self) -> pl.DataFrame:
        """Candidate segments for prediction (first 6 and last 2 of each video dropped);
        `video_row` and `candidate_row` (row number) added."""
        t = self._with_rows(self._table("candidates"))
        return t.with_columns(pl.int_range(0, pl.len(), dtype=pl.Int64).alias("candidate_row"))

    @cached_property
    def video_level(self) -> pl.DataFrame:
        """Video-level records (`mean_rgb`, `mean_audio` as fixed-size float32 lists)."""
        return self._table("video_level")

    # ------------------------------------------------------------ arrays
    def _array(self, part_index: int, name: str) -> RowArray:
        key = (part_index, name)
        if key not in self._arrays:
            self._arrays[key] = RowArray(self.path / PARTS / self.parts[part_index] / name)
        return self._arrays[key]

    @cached_property
    def _video_cols(self):
        v = self.videos
        if not len(v):
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
        return (v["part_index"].to_numpy(), v["frame_offset"].to_numpy(),
                v["n_frames"].to_numpy().astype(np.int64))

    def frames(self, video_row: int) -> np.ndarray:
        """Frames of one video: (n_frames, 1152) uint8 (rgb ‖ audio), a new array."""
        part, offset, n = (c[video_row] for c in self._video_cols)
        return self._array(int(part), "frames.zarr").rows(int(offset), int(offset + n))

    def windows(self, segment_rows, out: np.ndarray | None = None) -> np.ndarray:
        """Expanded windows of rated segments (rows of `segments`): (n, 11, 1152) uint8."""
        rows = np.asarray(segment_rows, np.int64)
        win = self.segments["window_row"].to_numpy()[rows]
        part = np.searchsorted(self._window_base, win, side="right") - 1
        if out is None:
            out = np.empty((len(rows), WINDOW_FRAMES, FRAME_BYTES), np.uint8)
        out = out[: len(rows)]
        for p in np.unique(part):  # one gather per part
            sel = np.nonzero(part == p)[0]
            out[sel] = self._array(int(p), "windows.zarr").take(win[sel] - self._window_base[p])
        return out

    def candidate_windows(self, candidate_rows, out: np.ndarray | None = None) -> np.ndarray:
        """Expanded windows of candidate segments, gathered from frames: (n, 11, 1152) uint8."""
        c = self.candidates
        rows = np.asarray(candidate_rows, np.int64)
        video = c["video_row"].to_numpy()[rows]
        lo, hi, pl_ = (c[k].to_numpy()[rows].astype(np.int64)
                       for k in ("window_lo", "window_hi", "pad_left"))
        if out is None:
            out = np.empty((len(rows), WINDOW_FRAMES, FRAME_BYTES), np.uint8)
        out = out[: len(rows)]  # like windows(): never hand back stale rows of a larger buffer
        part, offset, _ = self._video_cols
        for i in range(len(rows)):
            out[i] = 0
            v = video[i]
            a = int(offset[v] + lo[i])
            self._array(int(part[v]), "frames.zarr").rows(
                a, a + int(hi[i] - lo[i]), out[i, pl_[i] : pl_[i] + hi[i] - lo[i]])
        return out

    def negatives(self, packed: bool = False) -> np.ndarray:
        """Mined negatives per video (paper §3.6): (V, 1000) bool, or (V, 125) uint8 packed."""
        arrs = [np.load(self.path / PARTS / p / "negatives.npy") for p in self.parts]
        out = np.concatenate(arrs) if arrs else np.zeros((0, NEGATIVE_BYTES), np.uint8)
        return out if packed else unpack_negatives(out)


def open_store(path) -> Store:
    """Open a complete store (StoreError if `path` is not one)."""
    return Store(path)


# ---------------------------------------------------------------- info and verify

def store_info(path) -> dict:
    """Counts of a complete store (from its manifest) and its size on disk."""
    m = read_manifest(path)
    t = m["totals"]
    size = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    return {
        "format_version": m["format_version"], "parts": t["parts"], "videos": t["videos"],
        "frames": t["frames"], "rated_segments": t["rated_segments"],
        "positives": t["positives"], "outside_video": t["outside_video"],
        "candidate_segments": t["candidates"], "video_level_records": t["video_level"],
        "folds": m["folds"], "skipped_shards": len(m["skipped_shards"]),
        "skipped_records": t["skipped_records"], "source_bytes": t["source_bytes"],
        "store_bytes": size,
    }


def verify_store(path, progress: bool = False) -> list[str]:
    """Re-read every part and compare it with the manifest: every file's CRC-32C, the
    tables' row counts (pyarrow), the arrays' shapes and contents (read through zarr,
    windows recomputed from frames); returns the problems found (empty = ok)."""
    from tqdm import tqdm

    path = Path(path)
    m = read_manifest(path)
    problems = []
    listed = {p["part"] for p in m["parts"]}
    on_disk = {p.name for p in (path / PARTS).iterdir()} if (path / PARTS).is_dir() else set()
    problems += [f"{p}: part on disk but not in the manifest" for p in sorted(on_disk - listed)]
    for entry in tqdm(m["parts"], desc="verify", disable=not progress, file=sys.stderr):
        try:
            problems += [f"{entry['part']}: {p}" for p in _verify_part(path, entry)]
        except Exception as err:  # noqa: BLE001 - any unreadable file is a finding
            problems.append(f"{entry['part']}: unreadable ({type(err).__name__}: {err})")
    totals = {k: sum(p["counts"][k] for p in m["parts"]) for k in m["parts"][0]["counts"]} \
        if m["parts"] else {}
    for key, value in totals.items():
        if m["totals"].get(key) != value:
            problems.append(f"manifest totals: {key} = {m['totals'].get(key)}, parts sum {value}")
    return problems


def _verify_part(store: Path, entry: dict) -> list[str]:
    import pyarrow.parquet as pq
    import zarr

    d = store / PARTS / entry["part"]
    out = []
    on_disk = json.loads((d / PART_JSON).read_text())
    if on_disk != entry:
        out.append("part.json differs from the manifest entry")
    files = {f.relative_to(d).as_posix() for f in d.rglob("*") if f.is_file()} - {PART_JSON}
    listed = set(entry["files"])
    out += [f"{f}: missing" for f in sorted(listed - files)]
    out += [f"{f}: not listed in the manifest" for f in sorted(files - listed)]
    for f in sorted(files & listed):
        if file_checksum(d / f)[1] != entry["files"][f]:
            out.append(f"{f}: CRC-32 differs from the manifest")
    if out:  # the files are not those converted: the checks below would only repeat that
        return out
    c = entry["counts"]
    t = {name: pq.read_table(d / f"{name}.parquet") for name in TABLES}
    for name, key in (("videos", "videos"), ("segments", "rated_segments"),
                      ("candidates", "candidates"), ("video_level", "video_level")):
        if t[name].num_rows != c[key]:
            out.append(f"{name}.parquet has {t[name].num_rows} rows, manifest {c[key]}")
    v, s = t["videos"], t["segments"]
    nf = np.asarray(v["n_frames"], np.int64)
    fo = np.asarray(v["frame_offset"], np.int64)
    if not np.array_equal(fo, np.concatenate([[0], np.cumsum(nf)[:-1]]).astype(np.int64)[:len(fo)]):
        out.append("videos.frame_offset is not the running sum of n_frames")
    if int(nf.sum()) != c["frames"]:
        out.append(f"videos hold {int(nf.sum())} frames, manifest {c['frames']}")
    if candidate_count(nf) != c["candidates"]:
        out.append("candidate count does not match the videos' lengths")
    neg = np.load(d / "negatives.npy")
    if neg.shape != (c["videos"], NEGATIVE_BYTES):
        out.append(f"negatives.npy has shape {neg.shape}")
    frames = zarr.open_array(str(d / "frames.zarr"), mode="r")
    windows = zarr.open_array(str(d / "windows.zarr"), mode="r")
    if frames.shape != (c["frames"], FRAME_BYTES):
        out.append(f"frames.zarr has shape {frames.shape}")
    if windows.shape != (c["rated_segments"], WINDOW_FRAMES, FRAME_BYTES):
        out.append(f"windows.zarr has shape {windows.shape}")
    if out:
        return out
    video = np.asarray(s["video_index"], np.int64)
    starts = np.asarray(s["start_time"], np.int64)
    if int(np.sum(np.asarray(s["score"]) > 0)) != c["positives"]:
        out.append("positives differ from the manifest")
    if int(outside_video(starts, nf[video]).sum()) != c["outside_video"]:
        out.append("outside_video count differs from the manifest")
    lo, hi, pl_, _ = window_spans(starts, nf[video])
    empty = np.nonzero(hi <= lo)[0]  # windows with no frame at all: every byte padding
    if len(empty) and windows.get_orthogonal_selection((empty, slice(None), slice(None))).any():
        out.append("windows.zarr has non-zero bytes in a window outside its video")
    step = frames.shards[0] if frames.shards else frames.chunks[0]
    for a in range(0, c["frames"], step):  # bounded memory: one Zarr shard at a time
        end = min(a + step, c["frames"])
        rows = np.nonzero((fo[video] + hi > a) & (fo[video] + lo < end))[0]
        if len(rows) == 0:
            continue
        # windows touching this block: recompute them from the frames they need
        first = int((fo[video[rows]] + lo[rows]).min())
        last = int((fo[video[rows]] + hi[rows]).max())
        src = frames[first:last]
        want = gather_windows(src, fo[video[rows]] - first, lo[rows], hi[rows], pl_[rows])
        got = windows.get_orthogonal_selection((rows, slice(None), slice(None)))
        if not np.array_equal(want, got):
            out.append(f"windows.zarr differs from the frames near frame {a}")
            break
    return out
