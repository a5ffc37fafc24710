"""The prediction file format: one quantised score matrix per model, with its segment table.

Per model, two files side by side:

- `NAME.npy`: a plain numpy `.npy`, uint16, shape `(n_segments, 1000)`; entry
  `[i, c]` is `round(p * QUANT_SCALE)` for segment `i` and segment class `c`
  (columns in the order of `ingest.vocab.segment_class_ids()`).
- `NAME.segments.parquet`: one row per segment (same order as the matrix rows),
  columns `video_id` (string) and `start_time` (int32, seconds).

A video-level prediction (`predict videos`: one row per video, the prior of `predict
topk --video-prior`) has the same matrix beside `NAME.videos.parquet` (`video_id`, one
distinct id a row) instead.

`PredictionWriter` streams row blocks into a memory-mapped file under a temporary
name and renames both files into place when the last row is written;
`open_predictions` memory-maps a matrix (nothing is read into anonymous RAM) and
checks it against its sidecar.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import re
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from ingest.errors import IngestError
from ingest.outputs import folder_problem
from ingest.store.truth import read_table
from ingest.vocab import N_SEGMENT_CLASSES

# Probabilities are stored as round(p * 9999): 10,000 levels 0..9999, one per
# top-k bucket (predict/topk.py, N_BUCKETS).
QUANT_SCALE = 9999
PRED_DTYPE = np.dtype(np.uint16)
SIDECAR_SUFFIX = ".segments.parquet"
SEGMENT_SCHEMA = {"video_id": pl.String, "start_time": pl.Int32}
# the row table of each kind of prediction: its file suffix and schema
SIDECARS = {"segments": (SIDECAR_SUFFIX, SEGMENT_SCHEMA),
            "videos": (".videos.parquet", {"video_id": pl.String})}


class PredictionError(IngestError):
    """A prediction file is missing, malformed, or does not match its companions."""


def sidecar_path(npy_path: str | os.PathLike, kind: str = "segments") -> Path:
    """`NAME.npy` → `NAME.segments.parquet` (the segment table beside the matrix), or
    `NAME.videos.parquet` for kind "videos" (a video-level prediction's video table)."""
    p = Path(npy_path)
    stem = p.name.removesuffix(".npy")
    return p.with_name(stem + SIDECARS[kind][0])


def quantise(probs: np.ndarray) -> np.ndarray:
    """(B, 1000) float probabilities → (B, 1000) uint16 `rint(clip(p, 0, 1) * 9999)`.

    `np.rint` rounds half to even; exact halves are measure-zero for float scores.
    """
    p = np.clip(np.asarray(probs, np.float64), 0.0, 1.0)
    return np.rint(p * QUANT_SCALE).astype(PRED_DTYPE)


def _segment_table(video_ids, start_times, source) -> pl.DataFrame:
    table = pl.DataFrame(
        {"video_id": pl.Series(video_ids, dtype=pl.String),
         "start_time": pl.Series(np.asarray(start_times), dtype=pl.Int32)}
    )
    check_segments(table, source)
    return table


def _video_table(video_ids, source) -> pl.DataFrame:
    table = pl.DataFrame({"video_id": pl.Series(video_ids, dtype=pl.String)})
    check_videos(table, source)
    return table


# A video id becomes the `videoid` of a submission entry `videoid:start`, which
# `predict validate` reads as `[^\s,:]+` (Python's \s: Unicode whitespace and \x1c-\x1f).
_ID_FORBIDDEN = r"[\s\x1c-\x1f,:]"


def check_segments(segments: pl.DataFrame, source) -> None:
    """Refuse a segment table whose rows cannot become distinct submission entries.

    segments: (n,) rows of `video_id` (string), `start_time` (int32). Every row must
    give a valid, unique `videoid:start`: a non-empty video id without whitespace,
    ',' or ':', a start >= 0, and no (video_id, start_time) twice. Raises
    `PredictionError` naming `source` and the first bad row (counted from 0, as the
    matrix rows are). Vectorised: ~0.1 s at 1.7M rows (a table grouped by video with
    rising starts is checked without hashing the pairs; any other order is hashed).
    """
    vid, start = pl.col("video_id"), pl.col("start_time")
    bad = (vid.is_null() | (vid.str.len_bytes() == 0) | vid.str.contains(_ID_FORBIDDEN)
           | start.is_null() | (start < 0))
    same_video = (vid == vid.shift(1)).fill_null(False)
    quick = segments.lazy().select(
        bad=bad.any(),
        # grouped by video, starts rising: no pair repeats when each video is one run
        rising=(~same_video | (start > start.shift(1)).fill_null(False)).all(),
        runs=pl.len() - same_video.sum(),
        videos=vid.n_unique(),
    ).collect().row(0, named=True)
    if not quick["bad"] and quick["rising"] and quick["runs"] == quick["videos"]:
        return
    first = (
        segments.with_row_index("row")
        .with_columns(bad=bad, seen=pl.struct(vid, start).is_first_distinct())
        .filter(pl.col("bad") | ~pl.col("seen"))
    )
    if first.height:
        row = first.row(0, named=True)
        raise PredictionError(f"{source}: row {row['row']}: {_row_problem(segments, row)}")


def check_videos(videos: pl.DataFrame, source) -> None:
    """Refuse a video table (`video_id` (n,) strings) whose ids cannot be submission video
    ids (`check_segments`' rule) or repeat: `PredictionError` naming `source` and the first
    bad row."""
    vid = pl.col("video_id")
    bad = vid.is_null() | (vid.str.len_bytes() == 0) | vid.str.contains(_ID_FORBIDDEN)
    first = videos.with_row_index("row").filter(bad | ~vid.is_first_distinct())
    if not first.height:
        return
    row = first.row(0, named=True)
    problem = _id_problem(row["video_id"])
    if problem is None:
        earlier = videos.with_row_index("row").filter(vid == row["video_id"])["row"][0]
        problem = f"video id {row['video_id'][:40]!r} repeats row {earlier}"
    raise PredictionError(f"{source}: row {row['row']}: {problem}")


def _id_problem(vid) -> str | None:
    """Why the video id `vid` cannot be the `videoid` of a submission entry (None: it can)."""
    if vid is None or vid == "":
        return "empty video id"
    bad_char = re.search(_ID_FORBIDDEN, vid)
    if bad_char:
        what = {" ": "a space", ",": "a comma", ":": "a colon"}.get(
            bad_char.group(), f"whitespace {bad_char.group()!r}")
        return f"video id {vid[:40]!r} contains {what} (a submission entry is videoid:start)"
    return None


def _row_problem(segments: pl.DataFrame, row: dict) -> str:
    """Why `row` (from `check_segments`) cannot be a submission entry, in words."""
    vid, start = row["video_id"], row["start_time"]
    if (problem := _id_problem(vid)) is not None:
        return problem
    if start is None:
        return f"video id {vid[:40]!r}: start_time missing"
    if start < 0:
        return f"video id {vid[:40]!r}: start_time {start} is negative"
    earlier = (segments.with_row_index("row")
               .filter((pl.col("video_id") == vid) & (pl.col("start_time") == start))["row"][0])
    return f"segment ({vid[:40]!r}, start_time {start}) repeats row {earlier}"


class PredictionWriter:
    """Stream one model's predictions to `NAME.npy` + `NAME.segments.parquet`.

    >>> with PredictionWriter("m.npy", video_ids, start_times) as w:
    ...     for probs in blocks:          # (b, 1000) float in [0, 1], or uint16
    ...         w.write(probs)

    Rows go to a memory-mapped temporary file; on a clean exit with every row
    written both files are renamed into place, otherwise the temporaries are removed.

    Several processes (the ranks of a torchrun job) can share one output: each builds a
    writer with the same `tag`; the one with `create=True` makes the temporary file
    before the others open it (`create=False`); each writes its rows with `write_at`
    (or `write_rows`), flushes with `flush`, and after all have, the creator alone calls
    `publish`.

    `start_times=None` writes a video-level prediction: one row per video, the table
    `NAME.videos.parquet` of the (distinct) `video_ids`.
    """

    def __init__(self, path: str | os.PathLike, video_ids, start_times=None,
                 tag: str | None = None, create: bool = True):
        self.path = Path(path)
        kind = "segments" if start_times is not None else "videos"
        self.sidecar = sidecar_path(self.path, kind)
        self.segments = (_segment_table(video_ids, start_times, self.sidecar)
                         if start_times is not None else _video_table(video_ids, self.sidecar))
        self.n_rows = self.segments.height
        tag = tag or str(os.getpid())
        self._tmp = self.path.with_name(f".{self.path.name}.{tag}.tmp.npy")
        self._tmp_side = self.sidecar.with_name(f".{self.sidecar.name}.{tag}.tmp")
        try:
            self._mm = np.lib.format.open_memmap(
                self._tmp, mode="w+" if create else "r+", dtype=PRED_DTYPE,
                shape=(self.n_rows, N_SEGMENT_CLASSES) if create else None,
            )
        except OSError as err:  # a read-only folder, a full disk: say so, naming the output
            self.abort()
            raise cannot_write(self.path, err) from None
        self.rows_written = 0

    def write_at(self, row: int, block: np.ndarray) -> None:
        """Write a block at matrix row `row` (a rank's share of a shared output)."""
        self.rows_written = row
        self.write(block)

    def write_rows(self, rows: np.ndarray, block: np.ndarray) -> None:
        """Write the (b, 1000) `block` at matrix rows `rows` (b,) (any order: a rank's share
        of a video-level output, dealt in batches)."""
        rows = np.asarray(rows, np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n_rows):
            raise PredictionError(f"{self.path}: rows outside 0..{self.n_rows - 1}")
        self._mm[rows] = self._checked(np.asarray(block))

    def flush(self) -> None:
        """Flush and unmap this process's view of the temporary matrix."""
        self._mm.flush()
        del self._mm

    def write(self, block: np.ndarray) -> None:
        """Append a (b, 1000) block: floats are quantised, uint16 is stored as is."""
        block = np.asarray(block)
        end = self.rows_written + block.shape[0]
        if end > self.n_rows:
            raise PredictionError(f"{self.path}: more than {self.n_rows} rows written")
        self._mm[self.rows_written:end] = self._checked(block)
        self.rows_written = end

    def _checked(self, block: np.ndarray) -> np.ndarray:
        """A (b, 1000) block as stored: floats quantised, uint16 checked to be <= 9999."""
        if block.ndim != 2 or block.shape[1] != N_SEGMENT_CLASSES:
            raise PredictionError(f"{self.path}: block shape {block.shape}, expected (b, 1000)")
        if block.dtype != PRED_DTYPE:
            if not np.issubdtype(block.dtype, np.floating):
                raise PredictionError(f"{self.path}: block dtype {block.dtype}, expected float or uint16")
            return quantise(block)
        if block.size and block.max() > QUANT_SCALE:
            raise PredictionError(f"{self.path}: uint16 values above {QUANT_SCALE}")
        return block

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
            self.flush()
        except OSError as err:
            self.abort()
            raise cannot_write(self.path, err) from None
        except BaseException:
            self.abort()
            raise
        self.publish()

    def publish(self) -> None:
        """Write the sidecar and rename both files into place (every row written and
        flushed, by this process or by all that share the output). `PredictionError`
        naming the output if a file cannot be written or renamed."""
        try:
            self.segments.write_parquet(self._tmp_side)
            os.replace(self._tmp_side, self.sidecar)
            try:
                os.replace(self._tmp, self.path)
            except BaseException:
                _unlink(self.sidecar)  # the pair goes into place together
                raise
        except OSError as err:
            self.abort()
            raise cannot_write(self.path, err) from None
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the temporaries (nothing is left at the final names). Never raises: it
        runs while another error is on its way (a read-only folder refuses even the
        unlink of a file that is not there)."""
        self.__dict__.pop("_mm", None)
        for p in (self._tmp, self._tmp_side):
            _unlink(p)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _unlink(path: Path) -> None:
    """Remove `path` if it is there; an OSError (a read-only folder) is not raised."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def cannot_write(path, err: OSError) -> PredictionError:
    """The one-line error for an output that cannot be written: the path the user gave
    (not a temporary's) and the system's reason."""
    return PredictionError(f"{path}: cannot write ({err.strerror or err})")


def check_output(npy_path, overwrite: bool = False, kind: str = "segments") -> None:
    """Refuse, before any work, an output `NAME.npy` (+ its sidecar of `kind`) that the
    writer could not write or would replace unasked: `folder_problem`, either file existing
    (unless `overwrite`) or being a directory."""
    path = Path(npy_path)
    if path.name == ".npy":  # `--out ''` or `--out DIR/.npy`: hidden files named .npy
        raise PredictionError(f"{path}: no NAME before .npy (give PRED_DIR/NAME)")
    if (problem := folder_problem(path)) is not None:
        raise PredictionError(f"{path}: {problem}")
    for p in (path, sidecar_path(path, kind)):
        if p.is_dir():
            raise PredictionError(f"{p}: is a directory (the output is written there)")
        if os.path.lexists(p) and not overwrite:
            raise PredictionError(f"{p}: exists (predictions of another model?); "
                                  "--overwrite replaces it")


@contextmanager
def shared_writer(path, video_ids, start_times, ranks, barrier):
    """The `PredictionWriter` of this rank of a torchrun job (or of a lone process) whose
    ranks write one output: rank 0 creates the temporary file (named by torchrun's run id,
    else by the pid), the others open it after `barrier(ranks)`; on a clean exit every
    rank flushes its rows and, after a barrier, rank 0 publishes; on an error rank 0
    removes the temporaries. `ranks`: `trainer.recipes.runtime.Ranks` (`world`, `main`)."""
    tag = os.environ.get("TORCHELASTIC_RUN_ID") if ranks.world > 1 else None
    args = (path, video_ids, start_times, tag)
    writer = PredictionWriter(*args, create=True) if ranks.main else None
    barrier(ranks)  # rank 0 has made the temporary file: the others open it
    writer = writer or PredictionWriter(*args, create=False)
    try:
        yield writer
        writer.flush()
        barrier(ranks)  # every rank's rows are in the file
        if ranks.main:
            writer.publish()
    except BaseException:
        if ranks.main:
            writer.abort()
        raise


def write_predictions(path, scores: np.ndarray, video_ids, start_times, block_rows=65536) -> None:
    """Write a whole (n, 1000) float or uint16 matrix with `PredictionWriter` (a video-level
    prediction with `start_times=None`)."""
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


def read_segments(npy_path, kind: str = "segments") -> pl.DataFrame:
    """The segment table (or, kind "videos", the video table) beside `npy_path`, checked for
    columns and types."""
    side = sidecar_path(npy_path, kind)
    if not side.is_file():
        other = next(k for k in SIDECARS if k != kind)
        hint = {"segments": " (it is a video-level prediction: give it as --video-prior)",
                "videos": " (it is a segment prediction, not a video-level one: "
                          "make the prior with predict videos)"}[kind]
        raise PredictionError(f"{npy_path}: missing {kind[:-1]} table {side}"
                              + (hint if sidecar_path(npy_path, other).is_file() else ""))
    return read_table(side, SIDECARS[kind][1], PredictionError)


NPY_MAGIC = b"\x93NUMPY"  # the first six bytes of every .npy file


def _npy_header(path: Path) -> tuple[tuple, bool, np.dtype, int]:
    """(shape, fortran_order, dtype, data offset) from a .npy file's header, or
    `PredictionError` saying that the file is not one."""
    try:
        with open(path, "rb") as f:
            if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
                raise PredictionError(f"{path}: not a NumPy .npy file (it does not start "
                                      f"with the .npy magic bytes)")
            f.seek(0)
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(f)
            return shape, fortran, dtype, f.tell()
    except PredictionError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged header, whatever numpy says
        raise PredictionError(f"{path}: not a NumPy .npy file (bad header: {err})") from None


def open_predictions(npy_path, check: bool = True) -> Predictions:
    """Memory-map `NAME.npy` read-only and check dtype, shape and its segment table.

    check: also `check_segments` (off only where an identical table was checked).
    """
    path, scores = _open_matrix(npy_path, "n_segments")
    segments = read_segments(path)
    if segments.height != scores.shape[0]:
        raise PredictionError(
            f"{path}: {scores.shape[0]} rows but {segments.height} segments in {sidecar_path(path)}"
        )
    if check:
        check_segments(segments, sidecar_path(path))
    return Predictions(path, scores, segments)


@dataclass(frozen=True)
class VideoPredictions:
    """A video-level prediction: `scores` (n_videos, 1000) uint16 memmap, `videos` its table
    (`video_id`, distinct)."""

    path: Path
    scores: np.ndarray
    videos: pl.DataFrame


def open_video_predictions(npy_path) -> VideoPredictions:
    """Memory-map a video-level `NAME.npy` (`predict videos`) and check it and its
    `NAME.videos.parquet` (`check_videos`), as `open_predictions` does a segment one."""
    path, scores = _open_matrix(npy_path, "n_videos")
    videos = read_segments(path, "videos")
    side = sidecar_path(path, "videos")
    if videos.height != scores.shape[0]:
        raise PredictionError(f"{path}: {scores.shape[0]} rows but {videos.height} videos in "
                              f"{side}")
    check_videos(videos, side)
    return VideoPredictions(path, scores, videos)


def _open_matrix(npy_path, rows: str) -> tuple[Path, np.ndarray]:
    """(path, read-only memory map) of a prediction matrix: uint16, (`rows`, 1000), C order,
    not truncated; `PredictionError` otherwise."""
    path = Path(npy_path)
    if not path.is_file():
        raise PredictionError(f"{path}: no such file")
    shape, fortran, dtype, offset = _npy_header(path)
    if dtype != PRED_DTYPE:
        raise PredictionError(f"{path}: dtype {dtype}, expected uint16")
    if len(shape) != 2 or shape[1] != N_SEGMENT_CLASSES:
        raise PredictionError(f"{path}: shape {shape}, expected ({rows}, 1000)")
    if fortran:
        raise PredictionError(f"{path}: Fortran-ordered array, expected C order")
    size, need = path.stat().st_size, offset + shape[0] * shape[1] * PRED_DTYPE.itemsize
    if size < need:
        raise PredictionError(f"{path}: {size} bytes, its header says {need} (truncated?)")
    return path, np.load(path, mmap_mode="r")


def open_ensemble(paths) -> list[Predictions]:
    """Open several models' predictions and check that their segment tables are identical
    (and, once, that the table is valid: `check_segments`)."""
    if not paths:
        raise PredictionError("no prediction files given")
    models = [open_predictions(p, check=i == 0) for i, p in enumerate(paths)]
    first = models[0]
    for m in models[1:]:
        if not m.segments.equals(first.segments):
            raise PredictionError(
                f"{m.path}: its segment table differs from that of {first.path}"
            )
    return models
