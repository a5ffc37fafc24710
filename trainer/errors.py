"""User-facing errors of the trainer: one line naming the file (or run) and the problem."""
from __future__ import annotations

from ingest.errors import IngestError


class TrainerError(IngestError):
    """A store, run directory or configuration the trainer cannot use; the CLI prints it
    on one line and exits non-zero (ingest.cli.util.Group)."""
