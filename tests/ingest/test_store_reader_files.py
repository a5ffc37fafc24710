"""The reader API's shard files: nothing stays open or mapped however many files a store has,
and a truncated or missing file is a one-line StoreError naming it (issues #20, #21)."""
from __future__ import annotations

import gc
import os
import shutil

import numpy as np
import pytest
import zarr

from ingest.store import StoreError, open_store
from trainer.data.bench import open_files


def test_reading_every_row_keeps_nothing_open(validate_store):
    """The reader API opens and maps nothing that stays: the store's files open in this
    process are the same after every row was read (a loader of another test in the same
    process may hold maps of this session-wide store)."""
    gc.collect()
    before = open_files(validate_store.path)
    s = open_store(validate_store.path)
    for part in s.parts:
        want = zarr.open_array(str(s.path / "parts" / part / "frames.zarr"), mode="r")[:]
        rows = s.videos.filter(s.videos["part"] == part)
        got = [s.frames(int(r)) for r in rows["video_row"]]
        np.testing.assert_array_equal(np.concatenate(got), want[: sum(map(len, got))])
    every = np.arange(len(s.segments))
    assert s.windows(every).shape == (len(every), 11, 1152)
    assert s.candidate_windows(np.arange(len(s.candidates))).shape[0] == len(s.candidates)
    assert open_files(s.path) == before


@pytest.mark.parametrize("array", ["frames.zarr", "windows.zarr"])
def test_a_truncated_shard_file_is_one_line_naming_it(tmp_path, validate_store, array):
    store = tmp_path / "store"
    shutil.copytree(validate_store.path, store)
    s = open_store(store)
    victim = store / "parts" / s.parts[0] / array / "c" / "0" / ("0/0" if array[0] == "w" else "0")
    os.truncate(victim, 100)
    read = (lambda: s.frames(0)) if array[0] == "f" else (lambda: s.windows([0]))
    with pytest.raises(StoreError) as err:
        read()
    line = str(err.value)
    assert str(victim) in line and f"ingest verify {store}" in line and "\n" not in line
    os.unlink(victim)
    with pytest.raises(StoreError, match="missing"):
        read()
    assert open_files(store) == (0, 0)
