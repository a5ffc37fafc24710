"""Rated segments (the truth for `predict evaluate`) from a truth Parquet file or a store.

Either the file that `ingest synth --split test` writes beside its test shards
(`OUT_DIR/truth.parquet`) or a store directory, whose rated segments are the
`STORE/parts/*/segments.parquet` tables. Columns (docs/formats.md):
video_id string, start_time int32, label int32, class_index int16, score float32.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from ingest.errors import IngestError

TRUTH_SCHEMA = {
    "video_id": pl.String,
    "start_time": pl.Int32,
    "label": pl.Int32,
    "class_index": pl.Int16,
    "score": pl.Float32,
}
STORE_SEGMENT_GLOB = "parts/*/segments.parquet"


class TruthError(IngestError):
    """The truth path is missing or its tables do not have the truth columns."""


def read_table(path: Path, schema: dict, error=TruthError) -> pl.DataFrame:
    """Read a Parquet file and return exactly `schema`'s columns, cast to their types.

    Raises `error` naming the file for an unreadable file, a missing column, or a
    column of the wrong kind (a number where a string is expected, a float where
    an integer is); integer widths and int → float are cast.
    """
    try:
        table = pl.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - any parquet failure means a bad file
        raise error(f"{path}: not a readable Parquet file ({err})") from None
    for name, dtype in schema.items():
        if name not in table.columns:
            raise error(f"{path}: missing column {name!r} (has {', '.join(table.columns)})")
        have = table[name].dtype
        numeric_ok = dtype != pl.String and have.is_numeric() and (
            dtype.is_float() or have.is_integer()
        )
        if have != dtype and not numeric_ok:
            raise error(f"{path}: column {name!r} is {have}, expected {dtype}")
    return table.select([pl.col(n).cast(t) for n, t in schema.items()])


def read_truth(path) -> pl.DataFrame:
    """The rated segments under `path` (a truth Parquet file or a store directory).

    Returns a DataFrame with exactly the TRUTH_SCHEMA columns, one row per rated
    (segment, class), parts concatenated in sorted path order.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob(STORE_SEGMENT_GLOB))
        if not files:
            raise TruthError(f"{path}: a directory without {STORE_SEGMENT_GLOB}: not a store")
    elif path.is_file():
        files = [path]
    else:
        raise TruthError(f"{path}: no such file or directory")
    return pl.concat([read_table(f, TRUTH_SCHEMA) for f in files], how="vertical")
