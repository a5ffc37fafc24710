"""Rated segments (the truth for `predict evaluate`) from a truth Parquet file or a store.

Either the file that `ingest synth --split test` writes beside its test shards
(`OUT_DIR/truth.parquet`) or a complete store, whose rated segments are the
`segments.parquet` tables of the parts its manifest lists (a store without a
manifest, one whose conversion has not finished, is refused). Columns (docs/formats.md):
video_id string, start_time int32, label int32, class_index int16, score float32.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl

from ingest.errors import IngestError
from ingest.store.layout import PARTS, StoreError, read_manifest

TRUTH_SCHEMA = {
    "video_id": pl.String,
    "start_time": pl.Int32,
    "label": pl.Int32,
    "class_index": pl.Int16,
    "score": pl.Float32,
}
SEGMENTS_TABLE = "segments.parquet"  # a part's rated segments


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
    (segment, class), parts concatenated in the manifest's order.
    """
    path = Path(path)
    if path.is_dir():
        try:
            manifest = read_manifest(path)
        except StoreError as err:
            raise TruthError(str(err)) from None
        files = [path / PARTS / p["part"] / SEGMENTS_TABLE for p in manifest["parts"]]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise TruthError(f"{missing[0]}: missing (the store's manifest lists this part)")
    elif path.is_file():
        files = [path]
    else:
        raise TruthError(f"{path}: no such file or directory")
    if not files:
        return pl.DataFrame(schema=TRUTH_SCHEMA)
    return pl.concat([read_table(f, TRUTH_SCHEMA) for f in files], how="vertical")
