"""Errors for bad input: one line naming the file, the record and the byte offset."""
from __future__ import annotations


class IngestError(Exception):
    """A user-facing error: the CLI prints `str(err)` on one line and exits non-zero."""


class ShardError(IngestError):
    """A shard is corrupt or not a YouTube-8M shard."""

    def __init__(self, path: str, record: int, offset: int, message: str):
        self.path, self.record, self.offset, self.reason = str(path), record, offset, message
        super().__init__(f"{self.path}: record {record} at byte {offset}: {message}")
