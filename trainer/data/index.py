"""The store as flat numpy columns and shard files mapped on demand: what the loader's kernels read.

`StoreIndex.build(store)` reads a store's tables once (through the reader API of
`ingest.store`) into numpy columns indexed by store-wide rows. The Zarr shard files of the
frames and windows arrays are mapped read-only when a batch first needs them, at most
`ArrayFiles.capacity` of each array at once (docs/loader.md `## Memory maps`): a process
may hold only `vm.max_map_count` maps (65,530 by default on Linux) and every map keeps a
file descriptor open, while the real train store has ~51,000 frame shard files. Nothing is
copied into memory: the kernels gather rows straight from the page cache, so a store
larger than RAM works and the loader's own memory stays bounded by its batch buffers.

A row r of a part's array lives in shard file `r // shard_rows` of that part at row
`r % shard_rows` (docs/store.md: uncompressed shards begin with their rows). Files of
all parts are numbered in one sequence; part p's k-th file is file `file_base[p] + k`, and
`addr[f]` is the address of file f's first row while it is mapped (0 otherwise).
"""
from __future__ import annotations

import json
import mmap
import os
import resource
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from ingest.codec.video import FRAME_BYTES
from ingest.store import Store, StoreError, open_store
from ingest.store.layout import PARTS, shard_file, shard_file_bytes, shard_file_problem
from ingest.store.segments import WINDOW_FRAMES

MAPPED_FILES_MAX = 1024  # shard files of one array mapped at once, at most (each holds an fd)


def default_capacity() -> int:
    """Files of one array mapped at once: MAPPED_FILES_MAX, or a quarter of the process's
    open-file limit if that is lower (each map holds a descriptor; frames and windows each
    take their capacity)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAPPED_FILES_MAX
    return max(16, min(MAPPED_FILES_MAX, soft // 4))


@dataclass
class ArrayFiles:
    """The shard files of one Zarr array in every part, mapped on demand.

    `paths` and `rows (F,)` int64: every file and its row count, in file order;
    `file_base (P,)` int64: part p's first file; `shard_rows (P,)` int64: rows per shard
    file of part p; `width`: bytes per row; `addr (F,)` int64: where file f's rows are
    mapped, 0 while unmapped. Readers bracket a kernel with `with files.reading(rows):`,
    which maps the files holding those rows and keeps them mapped until it exits (pinned);
    at most `capacity` files stay mapped
    (the least recently read unpinned one is unmapped first), more only while the batches
    in flight pin more. An array of at most `capacity` files is mapped whole on first read
    and stays so (`complete`: readers skip the bookkeeping).
    """

    paths: list[Path]
    rows: np.ndarray
    file_base: np.ndarray
    shard_rows: np.ndarray
    width: int
    capacity: int
    store: Path  # for messages
    parts: list[str]
    addr: np.ndarray = field(init=False)
    complete: bool = field(init=False)
    maps_made: int = field(init=False, default=0)  # mappings made so far (tests, benchmarks)

    def __post_init__(self):
        self.addr = np.zeros(len(self.paths), np.int64)
        self.complete = len(self.paths) == 0
        self._pins = np.zeros(len(self.paths), np.int64)
        self._maps: OrderedDict[int, mmap.mmap] = OrderedDict()  # mapped files, LRU first
        self._lock = threading.Lock()

    @classmethod
    def open(cls, store: Store, name: str, width: int, capacity: int | None = None
             ) -> ArrayFiles:
        """The array `name` (frames.zarr, windows.zarr) of every part of `store`; each file's
        size is checked here (a missing or truncated one is a one-line StoreError), nothing
        is mapped yet."""
        paths, rows, base, shard_rows = [], [], [], []
        for part in store.parts:
            array = store.path / PARTS / part / name
            meta = json.loads((array / "zarr.json").read_text())
            shape = meta["shape"]
            per_file = meta["chunk_grid"]["configuration"]["chunk_shape"][0]
            chunk = meta["codecs"][0]["configuration"]["chunk_shape"][0]
            if int(np.prod(shape[1:])) != width:
                raise StoreError(f"{array}: rows of {shape[1:]}, expected {width} bytes")
            base.append(len(paths))
            shard_rows.append(per_file)
            for k in range(-(-shape[0] // per_file)):
                n = min(per_file, shape[0] - k * per_file)
                path = shard_file(array, k, len(shape) - 1)
                size = _size(path)
                if size != (want := shard_file_bytes(n, chunk, per_file, width)):
                    raise StoreError(shard_file_problem(path, size, want, store.path,
                                                        store.path / PARTS / part))
                paths.append(path)
                rows.append(n)
        return cls(paths, np.asarray(rows, np.int64), np.asarray(base, np.int64),
                   np.asarray(shard_rows, np.int64), width,
                   default_capacity() if capacity is None else max(1, capacity),
                   store.path, list(store.parts))

    # ------------------------------------------------------------ which files a batch reads
    def ids(self, part: np.ndarray, first: np.ndarray, last: np.ndarray) -> np.ndarray:
        """Sorted file ids holding rows `[first[i], last[i]]` of part `part[i]` (entries with
        last < first read nothing)."""
        keep = last >= first
        part, first, last = part[keep], first[keep], last[keep]
        s = self.shard_rows[part]
        a = self.file_base[part] + first // s
        b = self.file_base[part] + last // s
        span = b - a
        if len(span) and span.max() > 1:  # rows over more than two files: every file between
            a = np.repeat(a, span + 1) + _ramps(span + 1)
        return np.unique(np.concatenate([a, b]))

    def reading(self, rows: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]):
        """A context in which the files holding rows `[first[i], last[i]]` of parts `part[i]`
        are mapped (their `addr` set) and stay so (pinned: no other thread unmaps them),
        `(part, first, last) = rows()`; `rows` is called only while some file may be
        unmapped (not once the array is `complete`), so a batch pays nothing then."""
        if self.complete:  # every file mapped for good: nothing to look up
            return _NO_LOOKUP
        return _Pinned(self, self.ids(*rows()))

    def _release(self, ids: np.ndarray) -> None:
        with self._lock:
            self._pins[ids] -= 1
            while len(self._maps) > self.capacity and self._evict_one():
                pass  # back to the capacity (more were mapped while pins held them)

    def _acquire(self, ids: np.ndarray) -> None:
        with self._lock:
            self._pins[ids] += 1
            try:
                for f in (range(len(self.paths)) if len(self.paths) <= self.capacity
                          else ids.tolist()):  # all fit: map them all, once
                    if f in self._maps:
                        self._maps.move_to_end(f)
                        continue
                    if len(self._maps) >= self.capacity:
                        self._evict_one()
                    self._map(f)
            except BaseException:
                self._pins[ids] -= 1
                raise
            self.complete = len(self._maps) == len(self.paths) <= self.capacity

    def _evict_one(self) -> bool:
        """Unmap the least recently read file that no batch in flight reads; False if every
        mapped file is being read."""
        for f in self._maps:
            if self._pins[f] == 0:
                self.addr[f] = 0
                self._maps.pop(f).close()
                return True
        return False

    def _map(self, f: int) -> None:
        path, nbytes = self.paths[f], int(self.rows[f]) * self.width
        fd = os.open(path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size < nbytes:  # changed since the index checked it
                part = self.parts[int(np.searchsorted(self.file_base, f, "right")) - 1]
                raise StoreError(shard_file_problem(path, size, nbytes, self.store,
                                                    self.store / PARTS / part))
            m = mmap.mmap(fd, nbytes, prot=mmap.PROT_READ)  # keeps its own descriptor
        finally:
            os.close(fd)
        view = np.frombuffer(m, np.uint8)
        self.addr[f] = view.ctypes.data
        del view  # no export left: close() can unmap
        self._maps[f] = m
        self.maps_made += 1

    def mapped(self) -> list[int]:
        """Ids of the files mapped now, least recently read first."""
        with self._lock:
            return list(self._maps)

    def close(self) -> None:
        """Unmap every file (a later read maps them again)."""
        with self._lock:
            for f, m in self._maps.items():
                self.addr[f] = 0
                m.close()
            self._maps.clear()
            self.complete = len(self.paths) == 0


_NO_LOOKUP = nullcontext()


class _Pinned:
    """The files `ids` of `files` mapped and pinned from `__enter__` to `__exit__`."""

    def __init__(self, files: ArrayFiles, ids: np.ndarray):
        self.files, self.ids = files, ids

    def __enter__(self) -> None:
        self.files._acquire(self.ids)

    def __exit__(self, *exc) -> None:
        self.files._release(self.ids)


def _ramps(counts: np.ndarray) -> np.ndarray:
    """0, 1, .., counts[0] - 1, 0, 1, .., counts[1] - 1, ... (int64)."""
    ends = np.cumsum(counts)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - counts, counts)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None


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
    `cand_video`, `cand_lo`, `cand_hi`, `cand_pad_left`. Shard files: `frames` and
    (on first use) `windows`, each an `ArrayFiles`.
    """

    def __init__(self, store: Store, capacity: int | None = None):
        self.store = store
        self.capacity = capacity
        v = store.videos
        self.frames = ArrayFiles.open(store, "frames.zarr", FRAME_BYTES, capacity)
        self.video_part = _column(v, "part_index", np.int64)
        self.frame_offset = _column(v, "frame_offset", np.int64)
        self.n_frames = _column(v, "n_frames", np.int64)
        self.fold = _column(v, "fold", np.int64)
        classes = v["class_indices"]
        self.label_offsets = np.zeros(len(v) + 1, np.int64)
        self.label_offsets[1:] = np.cumsum(classes.list.len().fill_null(0).to_numpy())
        self.label_classes = classes.explode().drop_nulls().to_numpy().astype(np.int16)

    @classmethod
    def build(cls, store: Store | str | Path, capacity: int | None = None) -> StoreIndex:
        """The index of a store (a path or an open Store); `capacity`: shard files of each
        array mapped at once, at most (default `default_capacity()`)."""
        return cls(store if isinstance(store, Store) else open_store(store), capacity)

    @cached_property
    def windows(self) -> ArrayFiles:
        return ArrayFiles.open(self.store, "windows.zarr", WINDOW_FRAMES * FRAME_BYTES,
                               self.capacity)

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

    def _arrays(self) -> list[ArrayFiles]:
        return [self.frames] + ([self.windows] if "windows" in self.__dict__ else [])

    def close(self) -> None:
        """Unmap every shard file now (they are mapped again if the index is read again)."""
        for a in self._arrays():
            a.close()

    def mapping_counts(self) -> tuple[int, int]:
        """(shard files mapped now, mappings made so far), frames and windows together."""
        return (sum(len(a.mapped()) for a in self._arrays()),
                sum(a.maps_made for a in self._arrays()))

    @property
    def n_videos(self) -> int:
        return len(self.n_frames)

    def labelled_videos(self) -> np.ndarray:
        """`(V,)` bool: the video carries at least one of the segment classes."""
        return np.diff(self.label_offsets) > 0

