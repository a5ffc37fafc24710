"""The store's top-level layout and manifest: names, format version, and the manifest reader.

Kept apart from ingest/store.py (which loads numba for its window kernels) so that
light readers, such as `ingest.truth` on the `predict evaluate` path, can find a
store's parts without it. docs/store.md describes the layout.
"""
from __future__ import annotations

import json
from pathlib import Path

from ingest.errors import IngestError

FORMAT_VERSION = 2  # bump when the layout or a table's columns change (docs/store.md)
MANIFEST = "manifest.json"
PARTS = "parts"
TMP = ".tmp"
PART_JSON = "part.json"


class StoreError(IngestError):
    """The path is not a complete store, or the store does not match its manifest."""


def read_manifest(path) -> dict:
    """The manifest of the store at `path`; StoreError if the store is incomplete."""
    file = Path(path) / MANIFEST
    if not file.is_file():
        raise StoreError(f"{path}: not a complete store (no {MANIFEST}; run `ingest convert`)")
    manifest = json.loads(file.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise StoreError(f"{path}: store format {manifest.get('format_version')}, "
                         f"this reader reads format {FORMAT_VERSION}")
    return manifest
