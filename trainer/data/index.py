"""The store as flat numpy columns and memory-mapped files: what the loader's kernels read.

`StoreIndex.build(store)` reads a store's tables once (through the reader API of
`ingest.store`) into numpy columns indexed by store-wide rows, and maps every Zarr
shard file of the frames and windows arrays read-only. Nothing is copied into
memory: the kernels gather rows straight from the page cache, so a store larger than
RAM works and the loader's own memory stays bounded by its batch buffers.

A row r of a part's array lives in shard file `r // shard_rows` of that part at row
`r % shard_rows` (docs/store.md: uncompressed shards begin with their rows). Files of
all parts sit in one list (a numba typed list of 2-D uint8 arrays); part p's k-th
file is `files[file_base[p] + k]`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import typed, typeof

from ingest.codec.video import FRAME_BYTES
from ingest.store import Store, StoreError, open_store
from ingest.store.layout import PARTS, shard_file
from ingest.store.segments import WINDOW_FRAMES


@dataclass
class ArrayFiles:
    """The shard files of one Zarr array in every part, memory-mapped.

    files: typed list of `(rows_k, width)` uint8 arrays; `file_base (P,)` int64: index of
    part p's first file; `shard_rows (P,)` int64: rows per shard file of part p.
    """

    files: typed.List
    file_base: np.ndarray
    shard_rows: np.ndarray
    paths: list[Path]  # every file, in list order (for --cold eviction and byte counts)

    @classmethod
    def open(cls, root: Path, parts: list[str], name: str, width: int) -> ArrayFiles:
        maps, paths, base, shard_rows = [], [], [], []
        for part in parts:
            array = root / PARTS / part / name
            meta = json.loads((array / "zarr.json").read_text())
            shape = meta["shape"]
            rows = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
            if int(np.prod(shape[1:])) != width:
                raise StoreError(f"{array}: rows of {shape[1:]}, expected {width} bytes")
            base.append(len(maps))
            shard_rows.append(rows)
            for k in range(-(-shape[0] // rows)):
                n = min(rows, shape[0] - k * rows)
                path = shard_file(array, k, len(shape) - 1)
                m = np.memmap(path, np.uint8, "r", shape=(n, width))
                maps.append(m.view(np.ndarray))  # a plain ndarray over the mapping, for numba
                paths.append(path)
        files = typed.List.empty_list(_ROW_TYPE)
        for m in maps:
            files.append(m)
        return cls(files, np.asarray(base, np.int64), np.asarray(shard_rows, np.int64), paths)


def _readonly_2d() -> np.ndarray:
    a = np.zeros((1, 1), np.uint8)
    a.setflags(write=False)
    return a


_ROW_TYPE = typeof(_readonly_2d())  # numba type of a mapped file: 2-D C-contiguous read-only uint8


def _column(table, name: str, dtype) -> np.ndarray:
    return table[name].to_numpy().astype(dtype)


@dataclass
class StoreIndex:
    """Store-wide numpy columns of a store and its mapped arrays (see the module docstring).

    Videos `(V,)`: `video_part`, `frame_offset` (first frame row within its part),
    `n_frames`, `fold`; `label_offsets (V+1,)` / `label_classes` the segment classes
    (0..999) of each video (CSR); `negatives (V, 125)` uint8 packed mined negatives.
    Segments `(S,)`: `seg_video`, `seg_part`, `seg_window` (row in its part's windows),
    `seg_class`, `seg_score`, `seg_usable` (inside the video and a segment class).
    Candidates `(N,)`: `cand_video`, `cand_lo`, `cand_hi`, `cand_pad_left`.
    """

    store: Store
    frames: ArrayFiles
    windows: ArrayFiles
    video_part: np.ndarray
    frame_offset: np.ndarray
    n_frames: np.ndarray
    fold: np.ndarray
    label_offsets: np.ndarray
    label_classes: np.ndarray
    negatives: np.ndarray
    seg_video: np.ndarray
    seg_part: np.ndarray
    seg_window: np.ndarray
    seg_class: np.ndarray
    seg_score: np.ndarray
    seg_usable: np.ndarray
    cand_video: np.ndarray
    cand_lo: np.ndarray
    cand_hi: np.ndarray
    cand_pad_left: np.ndarray

    @classmethod
    def build(cls, store: Store | str | Path) -> StoreIndex:
        if not isinstance(store, Store):
            store = open_store(store)
        v, s, c = store.videos, store.segments, store.candidates
        classes = v["class_indices"]
        label_offsets = np.zeros(len(v) + 1, np.int64)
        label_offsets[1:] = np.cumsum(classes.list.len().fill_null(0).to_numpy())
        label_classes = classes.explode().drop_nulls().to_numpy().astype(np.int16)
        n = _column
        seg_class = n(s, "class_index", np.int64)
        return cls(
            store=store,
            frames=ArrayFiles.open(store.path, store.parts, "frames.zarr", FRAME_BYTES),
            windows=ArrayFiles.open(store.path, store.parts, "windows.zarr",
                                    WINDOW_FRAMES * FRAME_BYTES),
            video_part=n(v, "part_index", np.int64), frame_offset=n(v, "frame_offset", np.int64),
            n_frames=n(v, "n_frames", np.int64), fold=n(v, "fold", np.int64),
            label_offsets=label_offsets, label_classes=label_classes,
            negatives=store.negatives(packed=True),
            seg_video=n(s, "video_row", np.int64), seg_part=n(s, "part_index", np.int64),
            seg_window=n(s, "window_index", np.int64), seg_class=seg_class,
            seg_score=n(s, "score", np.float32),
            seg_usable=(~n(s, "outside_video", bool)) & (seg_class >= 0),
            cand_video=n(c, "video_row", np.int64), cand_lo=n(c, "window_lo", np.int64),
            cand_hi=n(c, "window_hi", np.int64), cand_pad_left=n(c, "pad_left", np.int64),
        )

    @property
    def n_videos(self) -> int:
        return len(self.n_frames)

    def labelled_videos(self) -> np.ndarray:
        """`(V,)` bool: the video carries at least one of the segment classes."""
        return np.diff(self.label_offsets) > 0

