"""TFRecord framing: `uint64 length, uint32 masked_crc(length), data, uint32 masked_crc(data)`.

Writer (`write_tfrecord`) and reader (`scan_records`, `iter_records`), both CRCs checked.

All integers little-endian; the CRC is CRC-32C (Castagnoli) masked as
`((crc >> 15) | (crc << 17)) + 0xa282ead8` (mod 2**32).
"""
from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import google_crc32c
import numpy as np

from ingest.errors import ShardError

HEADER_BYTES = 12  # uint64 length + uint32 crc
FOOTER_BYTES = 4  # uint32 crc of the data
_MASK_DELTA = 0xA282EAD8


def masked_crc(data: bytes | memoryview) -> int:
    """The masked CRC-32C that TFRecord stores."""
    crc = google_crc32c.value(bytes(data) if isinstance(data, memoryview) else data)
    return _mask(crc)


def frame_record(data: bytes) -> bytes:
    """One record with its TFRecord framing."""
    header = struct.pack("<Q", len(data))
    return (header + struct.pack("<I", masked_crc(header)) + data
            + struct.pack("<I", masked_crc(data)))


def write_tfrecord(path: str | os.PathLike, records: Iterable[bytes]) -> int:
    """Write records to `path` atomically (temporary name, then rename); returns the count."""
    tmp = f"{os.fspath(path)}.tmp-{os.getpid()}"
    n = 0
    try:
        with open(tmp, "wb") as f:
            for rec in records:
                f.write(frame_record(rec))
                n += 1
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return n


# ---------------------------------------------------------------- reader

_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


@dataclass
class RecordSpans:
    """The whole records found in a buffer by `scan_records`. R = records kept."""

    starts: np.ndarray  # (R,) int64: start of each record's data in the buffer
    lengths: np.ndarray  # (R,) int64: data length
    offsets: np.ndarray  # (R,) int64: byte offset of each record's header in the file
    numbers: np.ndarray  # (R,) int64: 0-based record number in the file
    bad_crc: list[tuple[int, int]]  # (record number, offset) whose data CRC failed (skipped)
    # every record covered, kept or skipped, in file order (the file CRC folds them in):
    heads: np.ndarray  # (n_records,) int64: buffer position of the record's header
    all_lengths: np.ndarray  # (n_records,) int64: its data length
    data_crcs: np.ndarray  # (n_records,) uint32: CRC-32C of its data as read
    consumed: int  # bytes of the buffer covered by whole records (kept or skipped)
    n_records: int  # records covered (kept + skipped)
    need: int  # bytes the next, incomplete record needs from its header on (0 if none)


def scan_records(buf: np.ndarray, nbytes: int, *, path: str, file_offset: int,
                 first_record: int, file_size: int, skip_bad_crc: bool = False) -> RecordSpans:
    """Find the whole records in `buf[:nbytes]`, which holds the file from `file_offset`.

    Both CRCs are checked with google_crc32c on numpy views (no copy). A bad
    length CRC or a record running past `file_size` raises `ShardError` (the
    stream cannot be resynchronised); a bad data CRC raises too unless
    `skip_bad_crc`, which lists the record in `bad_crc` instead. An incomplete
    record at the end of the buffer is left for the next call (`need` says how
    many bytes it takes); at the end of the file it is reported as truncated.
    """
    heads, all_lengths, data_crcs, ok = [], [], [], []  # one entry per record covered
    pos, rec, need = 0, first_record, 0
    value = google_crc32c.value
    while True:
        where = file_offset + pos
        left = nbytes - pos
        if left < HEADER_BYTES:
            if left and where + HEADER_BYTES > file_size:
                if where == 0:  # the whole file is shorter than one header
                    raise ShardError(path, rec, where, not_tfrecord(
                        bytes(buf[:left]), f"{file_size} bytes, less than one 12-byte record "
                        "header", maybe_corrupt=False))
                raise ShardError(path, rec, where, f"truncated record header ({file_size - where} "
                                 f"of {HEADER_BYTES} bytes)")
            need = HEADER_BYTES if left else 0
            break
        length, length_crc = _HEADER.unpack_from(buf, pos)
        if _mask(value(buf[pos : pos + 8])) != length_crc:
            if where == 0:  # the first record: most likely another kind of file
                raise ShardError(path, rec, where, not_tfrecord(
                    bytes(buf[pos : pos + HEADER_BYTES]), "its first 12 bytes are not a record "
                    "header: the CRC-32C of the length does not match", maybe_corrupt=True))
            raise ShardError(path, rec, where, "length CRC mismatch (corrupt record length)")
        total = HEADER_BYTES + length + FOOTER_BYTES
        if where + total > file_size:
            raise ShardError(path, rec, where, f"truncated record: {length} data bytes announced, "
                             f"the file ends {file_size - where - HEADER_BYTES} bytes later")
        if total > left:
            need = total
            break
        data = pos + HEADER_BYTES
        (data_crc,) = _FOOTER.unpack_from(buf, data + length)
        crc = value(buf[data : data + length])
        good = _mask(crc) == data_crc
        if not good and not skip_bad_crc:
            raise ShardError(path, rec, where, "data CRC mismatch (corrupt record)")
        heads.append(pos)
        all_lengths.append(length)
        data_crcs.append(crc)
        ok.append(good)
        pos += total
        rec += 1

    return _spans(np.array(heads, np.int64), np.array(all_lengths, np.int64),
                  np.array(data_crcs, np.uint32), np.array(ok, bool), file_offset,
                  first_record, pos, need)


# What a file that is not a TFRecord file is, from its first bytes (for the message).
_MAGIC = ((b"PAR1", "a Parquet file"), (b"\x93NUMPY", "a NumPy .npy file"),
          (b"PK\x03\x04", "a zip archive"),
          (b"\x1f\x8b", "a gzip-compressed file (decompress it first)"),
          (b"\x28\xb5\x2f\xfd", "a zstd-compressed file (decompress it first)"))


def not_tfrecord(head: bytes, why: str, maybe_corrupt: bool) -> str:
    """The reason given for a file whose first record header is not one: `why`, what the
    file looks like when its first bytes say so, else (`maybe_corrupt`) that the header
    may also be a TFRecord file's, corrupted."""
    kind = next((name for magic, name in _MAGIC if head.startswith(magic)), None)
    if kind is None and head and all(32 <= c < 127 or c in b"\t\r\n" for c in head):
        kind = "text"
    if kind:
        return f"not a TFRecord file ({why}); it looks like {kind}"
    return f"not a TFRecord file ({why})" + (
        ", or a TFRecord file whose first record header is corrupt" if maybe_corrupt else "")


def _spans(heads, all_lengths, data_crcs, kept, file_offset, first_record, consumed,
           need) -> RecordSpans:
    """RecordSpans of the records covered; the kept ones' fields derived from them."""
    numbers = first_record + np.arange(len(heads), dtype=np.int64)
    bad = [(int(numbers[i]), int(file_offset + heads[i])) for i in np.flatnonzero(~kept)]
    return RecordSpans(heads[kept] + HEADER_BYTES, all_lengths[kept], heads[kept] + file_offset,
                       numbers[kept], bad, heads, all_lengths, data_crcs, consumed,
                       len(heads), need)


def iter_records(path: str | os.PathLike) -> Iterator[tuple[int, int, bytes]]:
    """(record number, header offset, data bytes) of every record, both CRCs checked.

    Reads the whole file at once: a simple reader for tools and tests; the
    decoder (ingest/codec/decode.py) streams with bounded memory instead.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    buf = np.frombuffer(raw, np.uint8)
    spans = scan_records(buf, len(raw), path=path, file_offset=0, first_record=0,
                         file_size=len(raw))
    for s, n, off, rec in zip(spans.starts, spans.lengths, spans.offsets, spans.numbers):
        yield int(rec), int(off), raw[s : s + n]
