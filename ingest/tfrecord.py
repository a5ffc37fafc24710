"""TFRecord framing: `uint64 length, uint32 masked_crc(length), data, uint32 masked_crc(data)`.

All integers little-endian; the CRC is CRC-32C (Castagnoli) masked as
`((crc >> 15) | (crc << 17)) + 0xa282ead8` (mod 2**32).
"""
from __future__ import annotations

import os
import struct
from collections.abc import Iterable

import google_crc32c

HEADER_BYTES = 12  # uint64 length + uint32 crc
FOOTER_BYTES = 4  # uint32 crc of the data
_MASK_DELTA = 0xA282EAD8


def masked_crc(data: bytes | memoryview) -> int:
    """The masked CRC-32C that TFRecord stores."""
    crc = google_crc32c.value(bytes(data) if isinstance(data, memoryview) else data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


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
