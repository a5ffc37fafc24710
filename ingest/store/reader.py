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
themselves followed by the index, and rows are read with positional reads (`os.preadv`)
straight into the output array. Nothing stays open or mapped between calls, however many
shard files a store has (the real train store: ~51,000).
"""
from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path

import numpy as np
import polars as pl

from ingest.codec.video import FRAME_BYTES
from ingest.store.layout import (
    PARTS,
    SCHEMAS,
    StoreError,
    read_manifest,
    shard_file,
    shard_file_problem,
)
from ingest.store.segments import (
    NEGATIVE_BYTES,
    WINDOW_FRAMES,
    unpack_negatives,
)


class RowArray:
    """Read-only rows of one part's Zarr array as written by `ingest.store.writer`.

    Each shard file `c/<k>/0...` begins with rows `[k*S, (k+1)*S)` stored contiguously
    (uncompressed inner chunks in order), so rows are read from it by offset. A file too
    short for the rows asked (truncated) is a one-line StoreError naming it.
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
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64))

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, k: int, rows: list[int], outs: list[np.ndarray]) -> None:
        """outs[i] (whole C-contiguous rows) ← the rows of shard file k from rows[i] on."""
        path = shard_file(self.path, k, len(self.row_shape))
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            self._damaged(path, None, 0)
        try:
            for r, out in zip(rows, outs):
                if out.nbytes and os.preadv(fd, [out.reshape(-1)], r * self.row_bytes) < out.nbytes:
                    self._damaged(path, os.fstat(fd).st_size, (r + len(out)) * self.row_bytes)
        finally:
            os.close(fd)

    def _damaged(self, path, size: int | None, needed: int):
        part = self.path.parent
        raise StoreError(shard_file_problem(path, size, needed, part.parent.parent, part))

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
            piece = out[i - a : j - a]
            into = piece if piece.flags.c_contiguous else np.empty_like(piece)
            self._read(k, [i - k * self.shard_rows], [into])
            if into is not piece:
                piece[:] = into
            i = j
        return out

    def take(self, index: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Rows at `index` (n,) → (n, *row_shape) uint8."""
        index = np.asarray(index, np.int64)
        if len(index) and (index.min() < 0 or index.max() >= self.shape[0]):
            raise IndexError(f"row index outside {self.path} of {self.shape[0]} rows")
        if out is None:
            out = np.empty((len(index), *self.row_shape), np.uint8)
        into = out if out.flags.c_contiguous else np.empty_like(out)
        shard = index // self.shard_rows
        for k in np.unique(shard):  # each shard file opened once
            sel = np.nonzero(shard == k)[0]
            self._read(int(k), (index[sel] - k * self.shard_rows).tolist(),
                       [into[i : i + 1] for i in sel.tolist()])
        if into is not out:
            out[:] = into
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
