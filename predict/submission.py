"""The submission file: `Class,Segments` CSV, its writer, and its validating reader.

One row per class: `Class` is the class id in the 3862-class vocabulary,
`Segments` a space-separated list of `videoid:start` entries (start in seconds),
best first. The writer renders each segment's entry once into a fixed-width slot
and then writes lines, in parallel, as a few 8-byte stores per entry; the reader validates every line (header, class id,
entry syntax, duplicates within a row, count per row, repeated class rows) and
reports problems as `PATH: line N: reason`.
"""
from __future__ import annotations

import os
import re
import sys
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import polars as pl
import pyarrow as pa
from tqdm import tqdm

from ingest.errors import IngestError
from ingest.jit import njit
from ingest.vocab import segment_class_ids
from predict.simd import prefetch_write, store_u64

HEADER = "Class,Segments"
_ENTRY = r"[^\s,:]+:\d+"
_ENTRY_RE = re.compile(_ENTRY)
_ROW_RE = re.compile(rf"(?:{_ENTRY}(?: {_ENTRY})*)?")
MAX_PROBLEMS = 50  # problems kept (and shown by `predict validate`); all are counted
PROGRESS_MIN_ENTRIES = 10_000_000  # show a progress bar when writing this many entries
PREFETCH_AHEAD = 64  # entries: the code of the entry this far ahead is fetched early
TASK_BYTES = 1 << 20  # lines rendered per thread task: whole lines of about this many bytes


class SubmissionError(IngestError):
    """A submission file is malformed."""


def entry_expr() -> pl.Expr:
    """The `videoid:start` entry string of a table with `video_id` and `start_time` columns."""
    return pl.concat_str([pl.col("video_id"), pl.lit(":"), pl.col("start_time").cast(pl.String)])


def entry_blob(segments: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The `videoid:start` strings of a segment table as (blob uint8, offsets (n+1,) int64)."""
    return string_blob(segments.select(entry_expr()).to_series())


def string_blob(strings: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """A string column's UTF-8 bytes back to back (blob uint8, offsets (n+1,) int64)."""
    arr = pa.array(strings.to_arrow()).cast(pa.large_string())
    arr = pa.concat_arrays([arr])  # a fresh array whose buffers start at offset 0
    _, offs, data = arr.buffers()
    offsets = np.frombuffer(offs, np.int64, count=len(arr) + 1)
    blob = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    return blob, offsets


NARROW_CODE_BITS = 32  # entry codes are uint32 when video and start indices fit, else uint64


@dataclass(frozen=True)
class EntryTable:
    """The `videoid:start ` text of every segment, compact enough to stay in cache.

    codes (n,) uint32 (uint64 when the indices do not fit 32 bits): per segment row,
    `video << start_bits | start`; video_slots (V, WV) uint64: a video id and its
    ':' (`text_slot` layout); start_slots (S, WS) uint64: a start's digits and the
    separating space. At the real test set's size the codes take 6.8 MB and the
    slots under 1 MB (16-byte slots per row would take 27 MB): the renderer's one
    random read per entry mostly hits the cache.
    """

    codes: np.ndarray
    start_bits: int
    video_slots: np.ndarray
    start_slots: np.ndarray

    def line_capacity(self, k: int) -> int:
        """Bytes a line of k entries may touch (stores are whole words) plus a newline."""
        return k * 8 * (self.video_slots.shape[1] + self.start_slots.shape[1]) + 8


def entry_table(segments: pl.DataFrame) -> EntryTable:
    """`EntryTable` of a segment table (video_id string, start_time int >= 0).

    Videos are indexed by run (consecutive rows with the same id share a slot; a
    video met again later gets another, equal slot), starts by distinct value.
    """
    vid = segments["video_id"]
    first = (vid != vid.shift(1)).fill_null(True).to_numpy()
    video = np.cumsum(first, dtype=np.int64) - 1
    starts = segments["start_time"].cast(pl.Int64).to_numpy()
    if len(starts) and starts.min() < 0:
        raise SubmissionError(f"a negative start time ({starts.min()}): not a submission entry")
    values, start = _distinct(starts)
    start_bits = max(1, (len(values) - 1).bit_length())
    bits = start_bits + max(1, int(video[-1] if len(video) else 0).bit_length())
    dtype = np.uint32 if bits <= NARROW_CODE_BITS else np.uint64
    codes = (video.astype(dtype) << dtype(start_bits)) | start.astype(dtype)
    return EntryTable(codes, start_bits, text_slots(vid.filter(pl.Series(first)), ord(":")),
                      text_slots(pl.Series(values).cast(pl.String), ord(" ")))


def _distinct(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted distinct values, each value's index among them) of non-negative ints:
    `np.unique(..., return_inverse=True)`, by a presence table when the values are
    small (start times: 10x faster than sorting 1.7M of them)."""
    top = int(values.max(initial=0))
    if top > 4 * len(values) + 4096:
        return np.unique(values, return_inverse=True)
    present = np.zeros(top + 1, bool)
    present[values] = True
    rank = np.cumsum(present) - 1
    return np.flatnonzero(present), rank[values]


def text_slots(strings: pl.Series, suffix: int) -> np.ndarray:
    """Each string + the byte `suffix` in a slot of W uint64 words (W: at least one byte
    more than the longest), zero padded, its length (with the suffix) in the last byte."""
    blob, offsets = string_blob(strings)
    longest = int(np.diff(offsets).max(initial=0)) + 1
    words = -(-(longest + 1) // 8)
    if 8 * words - 1 > 255:
        raise SubmissionError(f"a video id of {longest - 1} bytes: too long to write")
    slots = np.zeros((len(offsets) - 1, words), np.uint64)
    fill_slots(blob, offsets, suffix, slots.view(np.uint8))
    return slots


@njit
def fill_slots(blob, offsets, suffix, slot_bytes):
    """slot_bytes[i] = blob[offsets[i]:offsets[i + 1]] + suffix, zeros, its length last."""
    for i in range(slot_bytes.shape[0]):
        n = offsets[i + 1] - offsets[i]
        for j in range(n):
            slot_bytes[i, j] = blob[offsets[i] + j]
        slot_bytes[i, n] = suffix
        slot_bytes[i, slot_bytes.shape[1] - 1] = n + 1


@njit
def render_lines(codes, start_bits, video_slots, start_slots, rows, prefixes, prefix_offsets,
                 out):
    """Lines `prefix entries\n` back to back into `out`; returns the bytes used.

    codes, start_bits, video_slots, start_slots: an `EntryTable`; rows (G, k) int row
    indices, best first; line i starts with prefixes[prefix_offsets[i]:prefix_offsets[i
    + 1]] (its `Class,`); out: uint8 with room for G lines of `line_capacity(k)` plus
    their prefixes. An entry is its row's code (fetched PREFETCH_AHEAD entries early,
    its video slot a quarter of that), then the video slot's words and the start
    slot's words as unaligned 8-byte stores, each next store overwriting the padding
    and the length byte: no byte loop. One thread; `write_submission` runs it in several.
    """
    vw, sw = video_slots.shape[1], start_slots.shape[1]
    shift = codes.dtype.type(start_bits)
    mask = (codes.dtype.type(1) << shift) - codes.dtype.type(1)
    near = PREFETCH_AHEAD // 4
    k = rows.shape[1]
    pos = 0
    for i in range(rows.shape[0]):
        for b in range(prefix_offsets[i], prefix_offsets[i + 1]):
            out[pos] = prefixes[b]
            pos += 1
        start = pos
        for j in range(k):
            if j + PREFETCH_AHEAD < k:
                prefetch_write(codes, rows[i, j + PREFETCH_AHEAD], 0)
            if j + near < k:
                prefetch_write(video_slots, codes[rows[i, j + near]] >> shift, 0)
            c = codes[rows[i, j]]
            v, s = c >> shift, c & mask
            for w in range(vw):
                store_u64(out, pos + 8 * w, video_slots[v, w])
            pos += np.int64(video_slots[v, vw - 1] >> np.uint64(56))
            for w in range(sw):
                store_u64(out, pos + 8 * w, start_slots[s, w])
            pos += np.int64(start_slots[s, sw - 1] >> np.uint64(56))
        if pos > start:
            out[pos - 1] = 10  # b"\n" over the last entry's space
        else:
            out[pos] = 10
            pos += 1
    return pos


def write_submission(path, rows: np.ndarray, segments: pl.DataFrame, class_ids=None,
                     progress: bool | None = None, threads: int | None = None) -> None:
    """Write `Class,Segments` rows: class i gets segments `rows[i]` (best first).

    rows: (C, k) int row indices into `segments` (video_id, start_time);
    class_ids: (C,) vocabulary ids, default `segment_class_ids()`.
    `threads` (default: numba's thread count) render groups of whole lines (about
    TASK_BYTES each) into reused buffers with the single-threaded `render_lines`
    (it releases the GIL) while this thread writes the finished groups in order.
    Written to a temporary name and renamed when complete (a `path` that exists and
    is not a regular file, a device or a pipe, is written in place); `SubmissionError`
    naming `path` if it cannot be written. A progress bar (stderr) from
    PROGRESS_MIN_ENTRIES entries on unless `progress` says otherwise.
    """
    path = Path(path)
    class_ids = segment_class_ids() if class_ids is None else np.asarray(class_ids)
    table = entry_table(segments)
    prefixes, prefix_offsets = _class_prefixes(class_ids)
    line_cap = table.line_capacity(rows.shape[1]) + int(np.diff(prefix_offsets).max(initial=0))
    group = max(1, min(len(rows), TASK_BYTES // line_cap))
    workers = max(1, threads or numba.get_num_threads())
    free = [np.empty(group * line_cap, np.uint8) for _ in range(2 * workers)]
    # a device or a pipe (/dev/null, /dev/stdout, a FIFO) is written in place: a rename
    # onto it would replace the device node with the file
    direct = path.exists() and not path.is_file()
    tmp = path if direct else path.with_name(f".{path.name}.{os.getpid()}.tmp")
    show = rows.size >= PROGRESS_MIN_ENTRIES if progress is None else progress

    def render(c0: int, out: np.ndarray) -> int:  # in a worker thread
        c1 = min(c0 + group, len(rows))
        return render_lines(table.codes, table.start_bits, table.video_slots, table.start_slots,
                            rows[c0:c1], prefixes, prefix_offsets[c0:c1 + 1], out)

    try:
        with open(tmp, "wb") as f, ThreadPoolExecutor(workers) as pool, \
                tqdm(total=len(rows), desc="write csv", unit="class", file=sys.stderr,
                     disable=not show) as bar:
            f.write((HEADER + "\n").encode())
            ahead: deque = deque()  # (first class, buffer, future), in class order
            starts = iter(range(0, len(rows), group))
            while True:
                while free:
                    c0 = next(starts, None)
                    if c0 is None:
                        break
                    out = free.pop()
                    ahead.append((c0, out, pool.submit(render, c0, out)))
                if not ahead:
                    break
                c0, out, done = ahead.popleft()
                f.write(memoryview(out)[: done.result()])
                free.append(out)
                bar.update(min(group, len(rows) - c0))
        if not direct:
            os.replace(tmp, path)
    except OSError as err:
        raise SubmissionError(f"{path}: cannot write ({err.strerror or err})") from None
    finally:
        if not direct:  # a read-only folder refuses even this unlink: not raised over the
            with suppress(OSError):  # real error
                tmp.unlink(missing_ok=True)


def _class_prefixes(class_ids) -> tuple[np.ndarray, np.ndarray]:
    """The `Class,` prefix of every line: (bytes uint8, offsets (C+1,) int64)."""
    parts = [f"{int(c)},".encode() for c in class_ids]
    offsets = np.zeros(len(parts) + 1, np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    return np.frombuffer(b"".join(parts), np.uint8), offsets


@dataclass(frozen=True)
class Problem:
    """One validation problem: 1-based line number (0 for the file) and reason."""

    line: int
    reason: str

    def format(self, path) -> str:
        return f"{path}: line {self.line}: {self.reason}" if self.line else f"{path}: {self.reason}"


class Problems(list):
    """A submission's problems in file order: the first MAX_PROBLEMS kept, all counted.

    `count` is exact unless `stopped` (reading stopped on purpose: at a bad header,
    or at `stop_after` problems).
    """

    def __init__(self, stop_after: int | None = None):
        super().__init__()
        self.count = 0
        self.stopped = False
        self.stop_after = stop_after

    def add(self, problem: Problem) -> bool:
        """Record `problem`; True when reading should stop."""
        self.count += 1
        if len(self) < MAX_PROBLEMS:
            self.append(problem)
        if self.stop_after is not None and self.count >= self.stop_after:
            self.stopped = True
        return self.stopped

    def summary(self, path) -> str:
        """One line: the only problem, or the count and the first."""
        first = self[0].format(path)
        if self.stopped and self.stop_after is not None:
            return f"{first} (checking stopped there; `predict validate` lists every problem)"
        if self.stopped:
            return f"{first} (checking stopped there)"
        if self.count == 1:
            return first
        return f"{path}: {self.count} problems, the first on line {self[0].line}"


def _check_class(line: bytes, known: frozenset, seen: set) -> tuple[int, bytes, str]:
    """The class of one data line (bytes, without its line end) →
    (class_id, segments bytes, problem or ''). A valid class joins `seen`."""
    cls, comma, segs = line.partition(b",")
    if not comma:
        return -1, b"", "expected `Class,Segments`, found no comma"
    if not cls.isdigit() or int(cls) not in known:  # bytes.isdigit: ASCII digits only
        return -1, b"", f"class {_text(cls)[:20]!r} is not one of the 1000 segment class ids"
    cid = int(cls)
    if cid in seen:
        return cid, b"", f"class {cid} appears on more than one row"
    seen.add(cid)
    return cid, segs, ""


def _check_segments(cid: int, segs: bytes, k: int, exact: bool = False
                    ) -> tuple[str, tuple | None]:
    """The first problem of a row's `Segments` (bytes), or '', and the entries'
    (hashes, ends) from the numba row pass (None where the row went the slow way).

    exact: skip the numba row pass, every row through the regex-and-set check.
    """
    hashed = None if exact else _fast_entry_count(segs)  # a numba row pass; None: look closer
    if hashed is None:
        return _check_entries(cid, _text(segs), k)[1], None
    n = len(hashed[0])
    if n > k:
        return f"class {cid}: {n} entries, more than k = {k}", None
    return "", hashed


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _check_entries(cid: int, segs: str, k: int) -> tuple[list, str]:
    """The exact, slower check of a row's entries (regex, set) → (entries, first problem)."""
    if not _ROW_RE.fullmatch(segs):
        entries = segs.split(" ")
        i, bad = next((i, e) for i, e in enumerate(entries) if not _ENTRY_RE.fullmatch(e))
        if bad == "":
            return [], f"class {cid}: {_stray_space(entries, i)}; entries are separated by one space"
        return [], f"class {cid}: bad entry {bad[:40]!r}, expected videoid:start"
    entries = segs.split(" ") if segs else []
    if len(entries) > k:
        return [], f"class {cid}: {len(entries)} entries, more than k = {k}"
    if len(set(entries)) != len(entries):
        dup = _first_duplicate(entries)
        return [], f"class {cid}: entry {dup!r} appears more than once"
    return entries, ""


def _stray_space(entries: list, i: int) -> str:
    """Where the empty entry `entries[i]` of a space-split row comes from, in words."""
    if i == 0:
        return "a space before the first entry"
    after = f"entry {i} ({entries[i - 1][:40]!r})"
    if i == len(entries) - 1:
        return f"a space after the last entry, {after}"
    return f"two spaces in a row after {after}"


def _fast_entry_count(segs: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """(hashes, ends) of the entries of a row that is ASCII, well formed and without a
    repeated entry, or None.

    hashes (n,) uint64: each entry's FNV-1a 64 hash; ends (n,) int64: where each entry
    ends in `segs` (the next starts one byte later); both views of this thread's
    scratch arrays, overwritten by its next row. None (a non-ASCII row, a malformed
    entry, or two entries that look alike to the hash table) sends the row to
    `_check_entries`, which decides and names the problem; so this pass only has to
    be right when it says yes.
    """
    if not segs:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    if not segs.isascii():
        return None
    row = np.frombuffer(segs, np.uint8)
    entries = segs.count(b" ") + 1
    size = 1 << max(10, (2 * entries).bit_length())  # > 2x the entries
    scratch = getattr(_SCRATCH, "arrays", None)
    if scratch is None or len(scratch[0]) < size:
        scratch = _SCRATCH.arrays = (np.empty(size, np.uint32), np.empty(size, np.uint64),
                                     np.empty(size, np.int64))
    table, hashes, ends = scratch
    n = count_entries(row, table[:size], hashes, ends)
    return (hashes[:n], ends[:n]) if n >= 0 else None


_SCRATCH = threading.local()  # per thread: `count_entries`'s table and outputs, reused


INSERT_LAG = 8  # entries: an entry's slot is fetched when hashed and filled this much later


@njit
def count_entries(row, table, hashes, ends):
    """Entries `[^\\s,:]+:[0-9]+` separated by single spaces in the ASCII bytes `row`,
    or -1 if one is malformed or two look alike: the FNV-1a 64 hash of each entry
    picks a slot of the open-addressing uint32 `table` (power-of-two size, more than
    twice the entries; 1 MB for 100,000 entries: in L2) by its low bits and is stored
    there as its high 32 bits; an equal value on the probe path means "alike". The
    slot is prefetched when the entry is hashed and filled INSERT_LAG entries later
    (in order, so every pair is still compared; 0.82 of the time, 2026-12-02).
    Entry j's hash goes to hashes[j] and its end offset to ends[j] (arrays with room
    for every entry)."""
    table[:] = 0
    mask = table.shape[0] - 1
    n, i, size = 0, 0, row.shape[0]
    while True:
        h, start = FNV_OFFSET, i
        while i < size and row[i] != 58 and _id_byte(row[i]):  # 58: ":"
            h = fnv_step(h, row[i])
            i += 1
        if i == start or i == size or row[i] != 58:
            return -1
        h = fnv_step(h, 58)
        i += 1
        digits = i
        while i < size and 48 <= row[i] <= 57:
            h = fnv_step(h, row[i])
            i += 1
        if i == digits:
            return -1
        prefetch_write(table, np.int64(h & np.uint64(mask)), 0)
        hashes[n] = h
        ends[n] = i
        if n >= INSERT_LAG and not _insert_tag(table, mask, hashes[n - INSERT_LAG]):
            return -1
        n += 1
        if i == size:
            for j in range(max(0, n - INSERT_LAG), n):
                if not _insert_tag(table, mask, hashes[j]):
                    return -1
            return n
        if row[i] != 32 or i + 1 == size:  # one space, then another entry
            return -1
        i += 1


@njit(inline="always")
def _insert_tag(table, mask, h):
    """Put hash h's tag into `table` (see `count_entries`); False if it looks present."""
    tag = np.uint32(h >> np.uint64(32)) | np.uint32(1)  # 0 marks an empty slot
    slot = np.int64(h & np.uint64(mask))
    while table[slot] != 0:
        if table[slot] == tag:
            return False
        slot = (slot + 1) & mask
    table[slot] = tag
    return True


FNV_OFFSET = np.uint64(0xCBF29CE484222325)  # FNV-1a 64: every entry hash of predict/
FNV_PRIME = np.uint64(0x100000001B3)


@njit(inline="always")
def fnv_step(h, byte):
    """One byte into an FNV-1a 64 hash."""
    return (h ^ np.uint64(byte)) * FNV_PRIME


@njit(inline="always")
def _id_byte(b):
    """A byte allowed in a video id: not whitespace (str.isspace in ASCII), ',' or ':'."""
    return not (b == 32 or 9 <= b <= 13 or 28 <= b <= 31 or b == 44 or b == 58)


def _first_duplicate(entries: list) -> str:
    seen = set()
    for e in entries:
        if e in seen:
            return e
        seen.add(e)
    return ""


PROGRESS_MIN_BYTES = 64 << 20  # show a progress bar when reading a file this large
READ_BUFFER = 1 << 20  # lines of ~1 MB: read in 1 MB pieces, not 8 KB (1.0 against 1.6 s CPU per GB)


def iter_submission(path, k: int, problems: Problems, exact: bool = False, work=None,
                    progress: bool | None = None, desc: str = "check") -> Iterator[tuple]:
    """Yield (class_id, work result) for the valid rows, in file order.

    Problems go to `problems` (reading stops when it says so); the caller decides what
    they mean. Lines are read as bytes (split at b"\n"; a "\r" before it is dropped).
    Rows are checked, and `work(class_id, segments, hashed)` run on the valid ones
    (hashed: the row pass's (hashes, ends) of the entries, or None), by a pool
    of threads (the numba kernels release the GIL), a few lines ahead of the reader;
    results come back in file order. `exact=True` checks every row the slow way
    (see `_check_segments`). A progress bar (stderr) from PROGRESS_MIN_BYTES on, unless
    `progress` says otherwise.
    """
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path}: no such file")
    known = frozenset(int(c) for c in segment_class_ids())
    seen: set = set()

    def check(cid: int, segs: bytes) -> tuple[int, str, object]:  # in a worker thread
        reason, hashed = _check_segments(cid, segs, k, exact)
        return cid, reason, None if reason or work is None else work(cid, segs, hashed)

    def dispatch(line: bytes):  # in file order: the class checks and `seen`
        if not line:
            return -1, "empty line", None
        cid, segs, reason = _check_class(line, known, seen)
        return (cid, reason, None) if reason else pool.submit(check, cid, segs)

    show = path.stat().st_size >= PROGRESS_MIN_BYTES if progress is None else progress
    workers = max(1, numba.get_num_threads())
    with open(path, "rb", buffering=READ_BUFFER) as f, ThreadPoolExecutor(workers) as pool, \
            tqdm(total=path.stat().st_size, desc=desc, unit="B", unit_scale=True,
                 file=sys.stderr, disable=not show) as bar:
        header = f.readline()
        bar.update(len(header))
        if header.rstrip(b"\r\n") != HEADER.encode():
            shown = _text(header.rstrip(b"\r\n"))[:40]
            problems.add(Problem(1, f"header {shown!r}, expected {HEADER!r}"))
            problems.stopped = True
            return
        ahead: deque = deque()  # (line number, bytes, result or future), in file order
        lines = enumerate(f, start=2)
        while True:
            while len(ahead) < 2 * workers:  # keep the workers busy, a few lines ahead
                n, raw = next(lines, (0, b""))
                if not raw:
                    break
                ahead.append((n, len(raw), dispatch(raw.rstrip(b"\r\n"))))
            if not ahead:
                return
            n, size, task = ahead.popleft()
            bar.update(size)
            cid, reason, result = task if isinstance(task, tuple) else task.result()
            if not reason:
                yield cid, result
            elif problems.add(Problem(n, reason)):
                for *_, task in ahead:
                    if not isinstance(task, tuple):
                        task.cancel()
                return


def validate_submission(path, k: int, exact: bool = False, progress: bool | None = False
                        ) -> Problems:
    """Every problem of the file, in file order (the first MAX_PROBLEMS kept, all
    counted); empty when valid.

    exact: without the numba row pass (its reference, several times slower).
    """
    problems = Problems()
    for _ in iter_submission(path, k, problems, exact=exact, progress=progress,
                             desc="validate"):
        pass
    return problems


def read_submission(path, k: int) -> dict[int, list[str]]:
    """{class_id: entries} of a valid file; `SubmissionError` naming the first problem otherwise.

    Holds every entry as a Python string (about 70 bytes each): for small files and
    tests; `predict evaluate` streams the file instead (predict/metric.py).
    """
    problems = Problems(stop_after=1)
    rows = {cid: segs.decode("utf-8").split(" ") if segs else []
            for cid, segs in iter_submission(path, k, problems, work=_segments_of)}
    if problems:
        raise SubmissionError(problems.summary(path))
    return rows


def _segments_of(cid: int, segs: bytes, hashed) -> bytes:
    return segs
