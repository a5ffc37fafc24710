"""The submission file: `Class,Segments` CSV, its writer, and its validating reader.

One row per class: `Class` is the class id in the 3862-class vocabulary,
`Segments` a space-separated list of `videoid:start` entries (start in seconds),
best first. The writer gathers each row's bytes with a numba kernel from one
blob of all entry strings; the reader validates every line (header, class id,
entry syntax, duplicates within a row, count per row, repeated class rows) and
reports problems as `PATH: line N: reason`.
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from tqdm import tqdm

from ingest.errors import IngestError
from ingest.jit import njit
from ingest.vocab import segment_class_ids

HEADER = "Class,Segments"
_ENTRY = r"[^\s,:]+:\d+"
_ENTRY_RE = re.compile(_ENTRY)
_ROW_RE = re.compile(rf"(?:{_ENTRY}(?: {_ENTRY})*)?")
MAX_PROBLEMS = 50  # problems collected before validation stops
PROGRESS_MIN_ENTRIES = 10_000_000  # show a progress bar when writing this many entries


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


@njit
def join_entries(blob, starts, ends, out):
    """Write the entries `blob[starts[i]:ends[i]]` into out, space-separated; return bytes used.

    starts, ends: (k,) int64 byte ranges (gathered beforehand with numpy, so that the
    cache misses of the random gather overlap instead of chaining through `pos`).
    """
    pos = 0
    for i in range(starts.shape[0]):
        if i > 0:
            out[pos] = 32  # b" "
            pos += 1
        for j in range(starts[i], ends[i]):  # a byte loop: no slice objects
            out[pos] = blob[j]
            pos += 1
    return pos


def write_submission(path, rows: np.ndarray, segments: pl.DataFrame, class_ids=None,
                     progress: bool | None = None) -> None:
    """Write `Class,Segments` rows: class i gets segments `rows[i]` (best first).

    rows: (C, k) int row indices into `segments` (video_id, start_time);
    class_ids: (C,) vocabulary ids, default `segment_class_ids()`.
    Written to a temporary name and renamed when complete; a progress bar (stderr)
    from PROGRESS_MIN_ENTRIES entries on unless `progress` says otherwise.
    """
    path = Path(path)
    class_ids = segment_class_ids() if class_ids is None else np.asarray(class_ids)
    blob, offsets = entry_blob(segments)
    widest = int(np.diff(offsets).max()) + 1 if len(offsets) > 1 else 1
    out = np.empty(max(1, widest * rows.shape[1]), np.uint8)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write((HEADER + "\n").encode())
            show = rows.size >= PROGRESS_MIN_ENTRIES if progress is None else progress
            for cid, r in tqdm(zip(class_ids, rows), total=len(rows), desc="write csv",
                               unit="class", file=sys.stderr, disable=not show):
                n = join_entries(blob, offsets[r], offsets[r + 1], out)
                f.write(f"{int(cid)},".encode())
                f.write(memoryview(out)[:n])
                f.write(b"\n")
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


def _check_row(line: str, k: int, known: frozenset, seen: set) -> tuple[int, list, str]:
    """Parse one data line → (class_id, entries, problem or '')."""
    cls, comma, segs = line.partition(",")
    if not comma:
        return -1, [], "expected `Class,Segments`, found no comma"
    if not cls.isdigit() or int(cls) not in known:
        return -1, [], f"class {cls[:20]!r} is not one of the 1000 segment class ids"
    cid = int(cls)
    if cid in seen:
        return cid, [], f"class {cid} appears on more than one row"
    seen.add(cid)
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


def _first_duplicate(entries: list) -> str:
    seen = set()
    for e in entries:
        if e in seen:
            return e
        seen.add(e)
    return ""


def iter_submission(path, k: int, problems: list) -> Iterator[tuple[int, list]]:
    """Yield (class_id, entries) of valid rows; append `Problem`s to `problems`.

    Stops after MAX_PROBLEMS problems. The caller decides what a problem means.
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
                cid, entries, reason = _check_row(line, k, known, seen)
                if reason:
                    problems.append(Problem(n, reason))
                else:
                    yield cid, entries
            if len(problems) >= MAX_PROBLEMS:
                return


def validate_submission(path, k: int) -> list[Problem]:
    """Every problem of the file (up to MAX_PROBLEMS); empty when valid."""
    problems: list[Problem] = []
    for _ in iter_submission(path, k, problems):
        pass
    return problems


def read_submission(path, k: int) -> dict[int, list[str]]:
    """{class_id: entries} of a valid file; `SubmissionError` naming the first problem otherwise."""
    problems: list[Problem] = []
    rows = dict(iter_submission(path, k, problems))
    if problems:
        raise SubmissionError(_summary(path, problems))
    return rows


def _summary(path, problems: list) -> str:
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return problems[0].format(path) + more
