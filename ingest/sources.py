"""Source shards named on the command line: paths and quoted glob patterns, expanded the
same way by `ingest decode` and `ingest convert` (docs/codec.md, docs/store.md)."""
from __future__ import annotations

import glob
import os

from ingest.errors import IngestError


def expand_sources(patterns) -> list[str]:
    """Shard paths from paths and glob patterns, in the order given (each pattern's
    matches sorted), each file once; paths stay as the user wrote them (a relative
    pattern gives relative paths), so that messages name them the same way.

    IngestError (one line) for a missing file, a pattern matching no file, a directory,
    something that is not a regular file, or no pattern at all.
    """
    out: dict[str, str] = {}  # real path -> the path as given (the first one given)
    for pat in patterns:
        if glob.has_magic(pat):
            hits = sorted(p for p in glob.glob(pat) if os.path.isfile(p))
            if not hits:
                raise IngestError(f"{pat}: no file matches this pattern")
        elif os.path.isdir(pat):
            raise IngestError(f"{pat}: is a directory; give the shard files in it, or a "
                              f"quoted pattern such as '{os.path.join(pat, '*.tfrecord')}'")
        elif not os.path.exists(pat):
            raise IngestError(f"{pat}: no such file")
        elif not os.path.isfile(pat):
            raise IngestError(f"{pat}: not a regular file")
        else:
            hits = [pat]
        for p in hits:
            out.setdefault(os.path.realpath(p), p)
    if not out:
        raise IngestError("no source shards given")
    return list(out.values())
