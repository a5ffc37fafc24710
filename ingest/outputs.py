"""Checks of an output path before any work: can its folder receive the file?

Shared by every command that writes a file (`predict segments`, `predict topk`, `train
plot`), so that an unwritable output is one line before the work, not an OSError after it.
`os.access` answers for root too where it matters: a read-only file system refuses root
(EROFS), while `chmod` does not stop root.
"""
from __future__ import annotations

import os
from pathlib import Path


def folder_problem(path) -> str | None:
    """Why the folder of the output `path` cannot receive it (missing, not a directory,
    read-only or not ours to write), in words to follow `PATH: `; None if it can."""
    folder = Path(path).parent
    if not folder.is_dir():
        return f"its folder {folder} {'is not a directory' if folder.exists() else 'does not exist'}"
    if not os.access(folder, os.W_OK | os.X_OK):
        why = ("read-only file system" if os.statvfs(folder).f_flag & os.ST_RDONLY
               else "permission denied")
        return f"cannot write ({why}: {folder})"
    return None
