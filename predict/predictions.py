"""The prediction file format: one quantised score matrix per model, with its segment table.

Per model, two files side by side:

- `NAME.npy`: a plain numpy `.npy`, uint16, shape `(n_segments, 1000)`; entry
  `[i, c]` is `round(p * QUANT_SCALE)` for segment `i` and segment class `c`
  (columns in the order of `ingest.vocab.segment_class_ids()`).
- `NAME.segments.parquet`: one row per segment (same order as the matrix rows),
  columns `video_id` (string) and `start_time` (int32, seconds).

`PredictionWriter` streams row blocks into a memory-mapped file under a temporary
name and renames both files into place when the last row is written;
`open_predictions` memory-maps a matrix (nothing is read into anonymous RAM) and
checks it against its sidecar.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ingest.errors import IngestError
from ingest.store.truth import read_table
from ingest.vocab import N_SEGMENT_CLASSES

# Probabilities are stored as round(p * 9999): 10,000 levels 0..9999, one per
# top-k bucket (predict/topk.py, N_BUCKETS).
QUANT_SCALE = 9999
PRED_DTYPE = np.dtype(np.uint16)
SIDECAR_SUFFIX = ".segments.parquet"
SEGMENT_SCHEMA = {"video_id": pl.String, "start_time": pl.Int32}


class PredictionError(IngestError):
    """A prediction file is missing, malformed, or does not match its companions."""


def sidecar_path(npy_path: str | os.PathLike) -> Path:
    """`NAME.npy` → `NAME.segments.parquet` (the segment table beside the matrix)."""
    p = Path(npy_path)
    stem = p.name.removesuffix(".npy")
    return p.with_name(stem + SIDECAR_SUFFIX)


def quantise(probs: np.ndarray) -> np.ndarray:
    """(B, 1000) float probabilities → (B, 1000) uint16 `rint(clip(p, 0, 1) * 9999)`.

    `np.rint` rounds half to even; exact halves are measure-zero for float scores.
    """
    p = np.clip(np.asarray(probs, np.float64), 0.0, 1.0)
    return np.rint(p * QUANT_SCALE).astype(PRED_DTYPE)


def _segment_table(video_ids, start_times) -> pl.DataFrame:
    table = pl.DataFrame(
        {"video_id": pl.Series(video_ids, dtype=pl.String),
         "start_time": pl.Series(np.asarray(start_times), dtype=pl.Int32)}
    )
    if table["video_id"].null_count():
        raise PredictionError("segment table: video_id must not be null")
    return table


class PredictionWriter:
    """Stream one model's predictions to `NAME.npy` + `NAME.segments.parquet`.

    >>> with PredictionWriter("m.npy", video_ids, start_times) as w:
    ...     for probs in blocks:          # (b, 1000) float in [0, 1], or uint16
    ...         w.write(probs)

    Rows go to a memory-mapped temporary file; on a clean exit with every row
    written both files are renamed into place, otherwise the temporaries are removed.
    """

    def __init__(self, path: str | os.PathLike, video_ids, start_times):
        self.path = Path(path)
        self.sidecar = sidecar_path(self.path)
        self.segments = _segment_table(video_ids, start_times)
        self.n_rows = self.segments.height
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp.npy")
        self._tmp_side = self.sidecar.with_name(f".{self.sidecar.name}.{os.getpid()}.tmp")
        self._mm = np.lib.format.open_memmap(
            self._tmp, mode="w+", dtype=PRED_DTYPE, shape=(self.n_rows, N_SEGMENT_CLASSES)
        )
        self.rows_written = 0

    def write(self, block: np.ndarray) -> None:
        """Append a (b, 1000) block: floats are quantised, uint16 is stored as is."""
        block = np.asarray(block)
        if block.ndim != 2 or block.shape[1] != N_SEGMENT_CLASSES:
            raise PredictionError(f"{self.path}: block shape {block.shape}, expected (b, 1000)")
        end = self.rows_written + block.shape[0]
        if end > self.n_rows:
            raise PredictionError(f"{self.path}: more than {self.n_rows} rows written")
        if block.dtype != PRED_DTYPE:
            if not np.issubdtype(block.dtype, np.floating):
                raise PredictionError(f"{self.path}: block dtype {block.dtype}, expected float or uint16")
            block = quantise(block)
        elif block.size and block.max() > QUANT_SCALE:
            raise PredictionError(f"{self.path}: uint16 values above {QUANT_SCALE}")
        self._mm[self.rows_written:end] = block
        self.rows_written = end

    def close(self) -> None:
        """Flush, check the row count, rename both files into place.

        On any failure (a full disk, a failed rename) the temporaries are removed
        and no sidecar is left without its matrix.
        """
        if self.rows_written != self.n_rows:
            self.abort()
            raise PredictionError(
                f"{self.path}: {self.rows_written} rows written, {self.n_rows} expected"
            )
        try:
            self._mm.flush()
            del self._mm
            self.segments.write_parquet(self._tmp_side)
            os.replace(self._tmp_side, self.sidecar)
            try:
                os.replace(self._tmp, self.path)
            except BaseException:
                self.sidecar.unlink(missing_ok=True)  # the pair goes into place together
                raise
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the temporaries (nothing is left at the final names)."""
        self.__dict__.pop("_mm", None)
        for p in (self._tmp, self._tmp_side):
            p.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_predictions(path, scores: np.ndarray, video_ids, start_times, block_rows=65536) -> None:
    """Write a whole (n, 1000) float or uint16 matrix with `PredictionWriter`."""
    with PredictionWriter(path, video_ids, start_times) as w:
        for r in range(0, scores.shape[0], block_rows):
            w.write(scores[r:r + block_rows])


@dataclass(frozen=True)
class Predictions:
    """One model's predictions: `scores` (n, 1000) uint16 memmap, `segments` its table."""

    path: Path
    scores: np.ndarray
    segments: pl.DataFrame


MADV_POPULATE_READ = 22  # Linux >= 5.14: map a file's pages in one call instead of a fault each


def prefault(scores: np.ndarray) -> bool:
    """Map every page of a memory-mapped matrix now (madvise MADV_POPULATE_READ).

    One system call instead of tens of thousands of page faults spread over the
    first pass (2 GB: 6 ms against 30-120 ms of faults, measured). Only a hint:
    False where the platform or kernel does not support it, or `scores` is not
    file-backed.
    """
    if not isinstance(scores, np.memmap) or scores.nbytes == 0 or sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        page = mmap.PAGESIZE
        start = scores.ctypes.data // page * page
        length = scores.ctypes.data + scores.nbytes - start
        return libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length),
                            MADV_POPULATE_READ) == 0
    except (OSError, AttributeError):
        return False


def read_segments(npy_path) -> pl.DataFrame:
    """The segment table beside `npy_path`, checked for columns and types."""
    side = sidecar_path(npy_path)
    if not side.is_file():
        raise PredictionError(f"{npy_path}: missing segment table {side}")
    return read_table(side, SEGMENT_SCHEMA, PredictionError)


def open_predictions(npy_path) -> Predictions:
    """Memory-map `NAME.npy` read-only and check dtype, shape and its segment table."""
    path = Path(npy_path)
    if not path.is_file():
        raise PredictionError(f"{path}: no such file")
    try:
        scores = np.load(path, mmap_mode="r")
    except Exception as err:  # noqa: BLE001 - not a .npy file
        raise PredictionError(f"{path}: not a numpy .npy file ({err})") from None
    if scores.dtype != PRED_DTYPE:
        raise PredictionError(f"{path}: dtype {scores.dtype}, expected uint16")
    if scores.ndim != 2 or scores.shape[1] != N_SEGMENT_CLASSES:
        raise PredictionError(f"{path}: shape {scores.shape}, expected (n_segments, 1000)")
    if not scores.flags.c_contiguous:
        raise PredictionError(f"{path}: Fortran-ordered array, expected C order")
    segments = read_segments(path)
    if segments.height != scores.shape[0]:
        raise PredictionError(
            f"{path}: {scores.shape[0]} rows but {segments.height} segments in {sidecar_path(path)}"
        )
    return Predictions(path, scores, segments)


def open_ensemble(paths) -> list[Predictions]:
    """Open several models' predictions and check that their segment tables are identical."""
    if not paths:
        raise PredictionError("no prediction files given")
    models = [open_predictions(p) for p in paths]
    first = models[0]
    for m in models[1:]:
        if not m.segments.equals(first.segments):
            raise PredictionError(
                f"{m.path}: its segment table differs from that of {first.path}"
            )
    return models
