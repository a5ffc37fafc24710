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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from numba import prange  # behaves as `range` when YT8M_NO_JIT=1 turns njit off
from tqdm import tqdm

from ingest.errors import IngestError
from ingest.jit import njit
from ingest.vocab import segment_class_ids
from predict.simd import prefetch_write, store_u64

HEADER = "Class,Segments"
_ENTRY = r"[^\s,:]+:\d+"
_ENTRY_RE = re.compile(_ENTRY)
_ROW_RE = re.compile(rf"(?:{_ENTRY}(?: {_ENTRY})*)?")
MAX_PROBLEMS = 50  # problems collected before validation stops
PROGRESS_MIN_ENTRIES = 10_000_000  # show a progress bar when writing this many entries
PREFETCH_AHEAD = 16  # entries: the slot of the entry this far ahead is fetched early
CHUNK_BYTES = 64 << 20  # lines rendered per write: about this many bytes of buffer


class SubmissionError(IngestError):
    """A submission file is malformed."""


def entry_expr() -> pl.Expr:
    """The `videoid:start` entry string of a table with `video_id` and `start_time` columns."""
    return pl.concat_str([pl.col("video_id"), pl.lit(":"), pl.col("start_time").cast(pl.String)])


def entry_blob(segments: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The `videoid:start` strings of a segment table as (blob uint8, offsets (n+1,) int64)."""
    entries = segments.select(entry_expr()).to_series()
    arr = pa.array(entries.to_arrow()).cast(pa.large_string())
    arr = pa.concat_arrays([arr])  # a fresh array whose buffers start at offset 0
    _, offs, data = arr.buffers()
    offsets = np.frombuffer(offs, np.int64, count=len(arr) + 1)
    blob = np.frombuffer(data, np.uint8) if data is not None else np.zeros(0, np.uint8)
    return blob, offsets


def entry_slots(segments: pl.DataFrame) -> np.ndarray:
    """Each segment's `videoid:start ` (with its trailing space) in a fixed-width slot.

    Returns slots (n, W) uint64: the entry's bytes, zero padding, and in the
    slot's last byte the entry's length with the space (W words: at least one
    byte more than the longest entry). Writing an entry is then W word stores,
    and its length comes with the same cache line.
    """
    blob, offsets = entry_blob(segments)
    longest = int(np.diff(offsets).max(initial=0)) + 1  # with the space
    words = -(-(longest + 1) // 8)
    if 8 * words - 1 > 255:
        raise SubmissionError(f"a segment entry of {longest - 1} bytes: too long to write")
    slots = np.zeros((len(offsets) - 1, words), np.uint64)
    fill_slots(blob, offsets, slots.view(np.uint8))
    return slots


@njit
def fill_slots(blob, offsets, slot_bytes):
    """slot_bytes[i] = blob[offsets[i]:offsets[i + 1]] + b" ", zeros, its length last."""
    for i in range(slot_bytes.shape[0]):
        n = offsets[i + 1] - offsets[i]
        for j in range(n):
            slot_bytes[i, j] = blob[offsets[i] + j]
        slot_bytes[i, n] = 32  # b" "
        slot_bytes[i, slot_bytes.shape[1] - 1] = n + 1


@njit(parallel=True)
def render_lines(slots, rows, out, used):
    """out[i] = the entries of rows[i], space-separated, ending in a newline.

    slots from `entry_slots`; rows (G, k) int row indices; out (G, L) uint8 with
    L >= k * 8 W + 8; writes used (G,) bytes per line. Parallel over lines; each
    entry is W unaligned 8-byte stores (the next entry overwrites the padding and
    the length byte), so no byte loop and one cache miss per entry.
    """
    words = slots.shape[1]
    for i in prange(rows.shape[0]):
        line = out[i]
        pos = 0
        for j in range(rows.shape[1]):
            r = rows[i, j]
            if j + PREFETCH_AHEAD < rows.shape[1]:
                prefetch_write(slots, rows[i, j + PREFETCH_AHEAD], 0)
            for w in range(words):
                store_u64(line, pos + 8 * w, slots[r, w])
            pos += np.int64(slots[r, words - 1] >> np.uint64(56))
        if pos:
            line[pos - 1] = 10  # b"\n" over the last entry's space
        else:
            line[0] = 10
            pos = 1
        used[i] = pos


def write_submission(path, rows: np.ndarray, segments: pl.DataFrame, class_ids=None,
                     progress: bool | None = None) -> None:
    """Write `Class,Segments` rows: class i gets segments `rows[i]` (best first).

    rows: (C, k) int row indices into `segments` (video_id, start_time);
    class_ids: (C,) vocabulary ids, default `segment_class_ids()`.
    Lines are rendered in parallel, a chunk of classes at a time into one reused
    buffer (about CHUNK_BYTES). Written to a temporary name and renamed when
    complete; a progress bar (stderr) from PROGRESS_MIN_ENTRIES entries on unless
    `progress` says otherwise.
    """
    path = Path(path)
    class_ids = segment_class_ids() if class_ids is None else np.asarray(class_ids)
    slots = entry_slots(segments)
    line_cap = rows.shape[1] * slots.shape[1] * 8 + 8
    group = max(1, min(len(rows), CHUNK_BYTES // line_cap))
    out = np.empty((group, line_cap), np.uint8)
    used = np.zeros(group, np.int64)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    show = rows.size >= PROGRESS_MIN_ENTRIES if progress is None else progress
    try:
        with open(tmp, "wb") as f, tqdm(total=len(rows), desc="write csv", unit="class",
                                        file=sys.stderr, disable=not show) as bar:
            f.write((HEADER + "\n").encode())
            for c0 in range(0, len(rows), group):
                chunk = rows[c0:c0 + group]
                render_lines(slots, chunk, out, used)
                for i in range(len(chunk)):
                    f.write(f"{int(class_ids[c0 + i])},".encode())
                    f.write(memoryview(out[i])[: used[i]])
                bar.update(len(chunk))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class Problem:
    """One validation problem: 1-based line number (0 for the file) and reason."""

    line: int
    reason: str

    def format(self, path) -> str:
        return f"{path}: line {self.line}: {self.reason}" if self.line else f"{path}: {self.reason}"


def _check_row(line: str, k: int, known: frozenset, seen: set,
               want_entries: bool = True, exact: bool = False) -> tuple[int, list | None, str]:
    """Parse one data line → (class_id, entries (None unless wanted), problem or '').

    exact: skip the numba row pass, every row through the regex-and-set check.
    """
    cls, comma, segs = line.partition(",")
    if not comma:
        return -1, [], "expected `Class,Segments`, found no comma"
    if not cls.isdigit() or int(cls) not in known:
        return -1, [], f"class {cls[:20]!r} is not one of the 1000 segment class ids"
    cid = int(cls)
    if cid in seen:
        return cid, [], f"class {cid} appears on more than one row"
    seen.add(cid)
    n = None if exact else _fast_entry_count(segs)  # a numba row pass; None: look closer
    if n is None:
        return _check_entries(cid, segs, k)
    if n > k:
        return cid, [], f"class {cid}: {n} entries, more than k = {k}"
    return cid, (segs.split(" ") if segs else []) if want_entries else None, ""


def _check_entries(cid: int, segs: str, k: int) -> tuple[int, list, str]:
    """The exact, slower check of a row's entries (regex, set): names the first problem."""
    if not _ROW_RE.fullmatch(segs):
        bad = next((e for e in segs.split(" ") if not _ENTRY_RE.fullmatch(e)), segs)
        return cid, [], f"class {cid}: bad entry {bad[:40]!r}, expected videoid:start"
    entries = segs.split(" ") if segs else []
    if len(entries) > k:
        return cid, [], f"class {cid}: {len(entries)} entries, more than k = {k}"
    if len(set(entries)) != len(entries):
        dup = _first_duplicate(entries)
        return cid, [], f"class {cid}: entry {dup!r} appears more than once"
    return cid, entries, ""


def _fast_entry_count(segs: str) -> int | None:
    """Entries of a row that is ASCII, well formed and without a repeated entry, or None.

    None (a non-ASCII row, a malformed entry, or two entries with the same 64-bit
    hash) sends the row to `_check_entries`, which decides and names the problem;
    so this pass only has to be right when it says yes.
    """
    if not segs:
        return 0
    if not segs.isascii():
        return None
    row = np.frombuffer(segs.encode("ascii"), np.uint8)
    size = 1 << max(10, (len(row) // 2).bit_length())  # > 2x the entries (each >= 4 bytes)
    table = getattr(_HASH_TABLE, "table", None)
    if table is None or len(table) < size:
        table = _HASH_TABLE.table = np.empty(size, np.uint64)
    n = count_entries(row, table[:size])
    return n if n >= 0 else None


_HASH_TABLE = threading.local()  # per thread: `count_entries`'s table, reused row to row


@njit
def count_entries(row, table):
    """Entries `[^\\s,:]+:[0-9]+` separated by single spaces in the ASCII bytes `row`,
    or -1 if one is malformed or two hash alike (FNV-1a 64 into the open-addressing
    `table`, power-of-two size, more than twice the entries)."""
    table[:] = 0
    mask = table.shape[0] - 1
    n, i, size = 0, 0, row.shape[0]
    while True:
        h, start = np.uint64(0xCBF29CE484222325), i
        while i < size and row[i] != 58 and _id_byte(row[i]):  # 58: ":"
            h = (h ^ np.uint64(row[i])) * np.uint64(0x100000001B3)
            i += 1
        if i == start or i == size or row[i] != 58:
            return -1
        i += 1
        digits = i
        while i < size and 48 <= row[i] <= 57:
            h = (h ^ np.uint64(row[i])) * np.uint64(0x100000001B3)
            i += 1
        if i == digits:
            return -1
        h |= np.uint64(1)  # 0 marks an empty slot
        slot = np.int64(h & np.uint64(mask))
        while table[slot] != 0:
            if table[slot] == h:
                return -1
            slot = (slot + 1) & mask
        table[slot] = h
        n += 1
        if i == size:
            return n
        if row[i] != 32 or i + 1 == size:  # one space, then another entry
            return -1
        i += 1


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


def iter_submission(path, k: int, problems: list, want_entries: bool = True,
                    exact: bool = False) -> Iterator[tuple[int, list | None]]:
    """Yield (class_id, entries) of valid rows; append `Problem`s to `problems`.

    Stops after MAX_PROBLEMS problems. The caller decides what a problem means.
    `want_entries=False` yields None for the entries (validation only: no split).
    `exact=True` checks every row the slow way (see `_check_row`).
    """
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"{path}: no such file")
    known = frozenset(int(c) for c in segment_class_ids())
    seen: set = set()
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        header = f.readline().rstrip("\r\n")
        if header != HEADER:
            problems.append(Problem(1, f"header {header[:40]!r}, expected {HEADER!r}"))
            return
        for n, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line:
                problems.append(Problem(n, "empty line"))
            else:
                cid, entries, reason = _check_row(line, k, known, seen, want_entries, exact)
                if reason:
                    problems.append(Problem(n, reason))
                else:
                    yield cid, entries
            if len(problems) >= MAX_PROBLEMS:
                return


def validate_submission(path, k: int, exact: bool = False) -> list[Problem]:
    """Every problem of the file (up to MAX_PROBLEMS); empty when valid.

    exact: without the numba row pass (its reference, several times slower).
    """
    problems: list[Problem] = []
    for _ in iter_submission(path, k, problems, want_entries=False, exact=exact):
        pass
    return problems


def read_submission(path, k: int) -> dict[int, list[str]]:
    """{class_id: entries} of a valid file; `SubmissionError` naming the first problem otherwise."""
    problems: list[Problem] = []
    rows = dict(iter_submission(path, k, problems))
    if problems:
        raise SubmissionError(problem_summary(path, problems))
    return rows


def problem_summary(path, problems: list) -> str:
    """One line: the first problem, and how many more (at least, when validation stopped)."""
    more = len(problems) - 1
    if not more:
        return problems[0].format(path)
    at_least = "at least " if len(problems) >= MAX_PROBLEMS else ""
    return f"{problems[0].format(path)} (and {at_least}{more} more problems)"
