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
from functools import cached_property
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


class StoreIndex:
    """Store-wide numpy columns of a store and its mapped arrays (see the module docstring).

    Videos `(V,)`: `video_part`, `frame_offset` (first frame row within its part),
    `n_frames`, `fold`; `label_offsets (V+1,)` / `label_classes` the segment classes
    (0..999) of each video (CSR). Read on first use only, since a kind needs some of them
    (the real train store has ~10^8 candidate rows that pre-training never reads):
    `negatives (V, 125)` uint8 packed mined negatives; segments `(S,)`: `seg_video`,
    `seg_part`, `seg_window` (row in its part's windows), `seg_class`, `seg_score`,
    `seg_usable` (inside the video and a segment class); candidates `(N,)`:
    `cand_video`, `cand_lo`, `cand_hi`, `cand_pad_left`.
    """

    def __init__(self, store: Store):
        self.store = store
        v = store.videos
        self.frames = ArrayFiles.open(store.path, store.parts, "frames.zarr", FRAME_BYTES)
        self.video_part = _column(v, "part_index", np.int64)
        self.frame_offset = _column(v, "frame_offset", np.int64)
        self.n_frames = _column(v, "n_frames", np.int64)
        self.fold = _column(v, "fold", np.int64)
        classes = v["class_indices"]
        self.label_offsets = np.zeros(len(v) + 1, np.int64)
        self.label_offsets[1:] = np.cumsum(classes.list.len().fill_null(0).to_numpy())
        self.label_classes = classes.explode().drop_nulls().to_numpy().astype(np.int16)

    @classmethod
    def build(cls, store: Store | str | Path) -> StoreIndex:
        return cls(store if isinstance(store, Store) else open_store(store))

    @cached_property
    def windows(self) -> ArrayFiles:
        s = self.store
        return ArrayFiles.open(s.path, s.parts, "windows.zarr", WINDOW_FRAMES * FRAME_BYTES)

    @cached_property
    def negatives(self) -> np.ndarray:
        return self.store.negatives(packed=True)

    @cached_property
    def _segments(self) -> dict[str, np.ndarray]:
        s = self.store.segments
        cls = _column(s, "class_index", np.int64)
        return {"video": _column(s, "video_row", np.int64), "part": _column(s, "part_index", np.int64),
                "window": _column(s, "window_index", np.int64), "class": cls,
                "score": _column(s, "score", np.float32),
                "usable": (~_column(s, "outside_video", bool)) & (cls >= 0)}

    @cached_property
    def _candidates(self) -> dict[str, np.ndarray]:
        c = self.store.candidates
        return {k: _column(c, col, np.int64) for k, col in (
            ("video", "video_row"), ("lo", "window_lo"), ("hi", "window_hi"),
            ("pad_left", "pad_left"))}

    seg_video = property(lambda self: self._segments["video"])
    seg_part = property(lambda self: self._segments["part"])
    seg_window = property(lambda self: self._segments["window"])
    seg_class = property(lambda self: self._segments["class"])
    seg_score = property(lambda self: self._segments["score"])
    seg_usable = property(lambda self: self._segments["usable"])
    cand_video = property(lambda self: self._candidates["video"])
    cand_lo = property(lambda self: self._candidates["lo"])
    cand_hi = property(lambda self: self._candidates["hi"])
    cand_pad_left = property(lambda self: self._candidates["pad_left"])

    @property
    def n_videos(self) -> int:
        return len(self.n_frames)

    def labelled_videos(self) -> np.ndarray:
        """`(V,)` bool: the video carries at least one of the segment classes."""
        return np.diff(self.label_offsets) > 0

