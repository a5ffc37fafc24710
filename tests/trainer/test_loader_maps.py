"""The loader's memory maps stay bounded (issue #21 §1) and a damaged shard file is one line
(issue #20): a real store cut into many small shard files, /proc/self/maps and /proc/self/fd
read around real loaders, truncated files through the real `train` and `predict` commands."""
from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ingest.store import StoreError, open_store
from ingest.store import writer as part_writer
from ingest.store.convert import ConvertConfig, convert
from ingest.synth import SynthConfig, write_synth
from tests.readonly import error_line, script
from trainer.cli.main import main as train_main
from trainer.data import Loader, LoaderConfig, StoreIndex
from trainer.data.bench import open_files
from trainer.data.index import ArrayFiles

KINDS = [("video", {}), ("segment", {}), ("aware", {"max_len": 12}),
         ("candidates", {"train": False, "with_context": True, "batch_size": 64})]


@pytest.fixture(scope="module")
def many_files(tmp_path_factory):
    """3 validate shards of 24 videos converted with 64-frame and 16-window shard files (the
    writer's constants patched in this process, one worker): ~240 shard files for 3 parts,
    as the real train store has ~13 frame files per part."""
    tmp = tmp_path_factory.mktemp("many")
    cfg = SynthConfig(out_dir=str(tmp / "shards"), split="validate", shards=3,
                      videos_per_shard=24, seed=4)
    sources = [str(p) for p in write_synth(cfg, progress=False) if p.suffix == ".tfrecord"]
    keep = (part_writer.FRAME_CHUNK_ROWS, part_writer.FRAME_SHARD_ROWS,
            part_writer.WINDOW_CHUNK_ROWS, part_writer.WINDOW_SHARD_ROWS)
    try:
        (part_writer.FRAME_CHUNK_ROWS, part_writer.FRAME_SHARD_ROWS,
         part_writer.WINDOW_CHUNK_ROWS, part_writer.WINDOW_SHARD_ROWS) = (16, 64, 4, 16)
        convert(ConvertConfig(sources=tuple(sources), out=str(tmp / "store"), workers=1,
                              progress=False))
    finally:
        (part_writer.FRAME_CHUNK_ROWS, part_writer.FRAME_SHARD_ROWS,
         part_writer.WINDOW_CHUNK_ROWS, part_writer.WINDOW_SHARD_ROWS) = keep
    return open_store(tmp / "store")


def _store_maps(store) -> int:
    return open_files(store.path)[0]


def _store_fds(store) -> int:
    return open_files(store.path)[1]


def _epoch(loader, each=None) -> list[dict]:
    out = []
    for b in loader:
        out.append({k: v.clone() for k, v in vars(b).items() if isinstance(v, torch.Tensor)})
        if each is not None:
            each()
    return out


def test_the_store_has_many_shard_files_per_part(many_files):
    ix = StoreIndex.build(many_files)
    assert len(ix.frames.paths) >= 20 * len(many_files.parts)
    assert len(ix.windows.paths) >= 5 * len(many_files.parts)


def test_building_the_index_maps_nothing(many_files):
    before = _store_maps(many_files)
    ix = StoreIndex.build(many_files)
    ix.windows  # noqa: B018 - the windows' files are looked up (sizes checked) too
    assert _store_maps(many_files) - before == 0
    assert _store_fds(many_files) == 0


@pytest.mark.parametrize(("kind", "extra"), KINDS)
def test_an_epoch_maps_at_most_the_capacity_and_gives_the_same_batches(many_files, kind, extra):
    """Capacity 4 files per array, far under the store's ~240: files are mapped and unmapped
    as batches need them (more maps made than files), /proc/self/maps and /proc/self/fd never
    hold more than the capacity plus the files of the batches in flight, and the batches are
    those of an index that maps every file at once."""
    cfg = LoaderConfig(kind=kind, **{"batch_size": 4, "threads": 2, "seed": 5, **extra})
    every = StoreIndex.build(many_files, capacity=10_000)
    whole = _epoch(Loader(every, cfg))
    every.close()
    ix = StoreIndex.build(many_files, capacity=4)
    loader = Loader(ix, cfg)
    arrays = [ix.frames, ix.windows] if kind in ("segment", "aware") else [ix.frames]
    # a file is pinned only while a loader thread fills a batch from it
    bound = sum(a.capacity for a in arrays) + cfg.threads * _most_files_per_batch(ix, loader)
    peak = {"maps": 0, "fds": 0}

    def look():
        peak["maps"] = max(peak["maps"], _store_maps(many_files))
        peak["fds"] = max(peak["fds"], _store_fds(many_files))

    got = _epoch(loader, look)
    assert len(got) == len(whole)
    for a, b in zip(got, whole):
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert 0 < peak["maps"] <= bound and peak["fds"] <= bound
    assert sum(a.maps_made for a in arrays) > sum(len(a.paths) for a in arrays) // 2
    ix.close()
    assert _store_maps(many_files) == 0


def _most_files_per_batch(ix: StoreIndex, loader: Loader) -> int:
    """Files of frames or windows that one batch of `loader`'s epoch reads, at most."""
    most, plan, kind = 0, loader.plan(0), loader.config.kind
    for b in range(len(plan)):
        rows, _ = plan.batch(b)
        if kind in ("segment", "aware"):
            w = ix.seg_window[rows]
            most = max(most, len(ix.windows.ids(ix.seg_part[rows], w, w)))
            rows = ix.seg_video[rows]
        elif kind == "candidates":
            rows = ix.cand_video[rows]
        first = ix.frame_offset[rows]
        most = max(most, len(ix.frames.ids(ix.video_part[rows], first,
                                           first + ix.n_frames[rows] - 1)))
    return most


def test_the_mapping_cache_never_unmaps_a_pinned_file(tmp_path):
    """Random overlapping reads from 3 threads' worth of pins: a file being read is mapped,
    at most `capacity` files stay mapped once no read is in flight."""
    rows = np.full(40, 5, np.int64)
    paths = []
    for k in range(40):
        paths.append(tmp_path / f"f{k}")
        np.full((5, 3), k, np.uint8).tofile(paths[-1])
    files = ArrayFiles(paths, rows, np.array([0], np.int64), np.array([5], np.int64), 3, 6,
                       tmp_path, ["p"])
    rng = np.random.default_rng(0)
    open_blocks = []
    for _ in range(300):
        if open_blocks and (len(open_blocks) == 3 or rng.random() < 0.5):
            cm, _ = open_blocks.pop(int(rng.integers(len(open_blocks))))
            cm.__exit__(None, None, None)
        part, first = np.zeros(3, np.int64), rng.integers(0, 193, 3)
        last = first + rng.integers(0, 8, 3)
        cm = files.reading(lambda part=part, first=first, last=last: (part, first, last))
        cm.__enter__()
        open_blocks.append((cm, files.ids(part, first, last)))
        for _, held in open_blocks:
            for f in held:  # mapped, and the mapped bytes are the file's own
                assert ctypes.c_uint8.from_address(int(files.addr[f])).value == f
    for cm, _ in open_blocks:
        cm.__exit__(None, None, None)
    assert len(files.mapped()) <= files.capacity
    assert not files.complete  # 40 files never all fit in 6


# ---------------------------------------------------------------- a damaged shard file (#20)

@pytest.fixture
def truncated(tmp_path, train_store):
    """A copy of the train store whose first frames shard file lost its last 1,000 bytes."""
    store = tmp_path / "store"
    shutil.copytree(train_store.path, store)
    victim = store / "parts" / train_store.parts[0] / "frames.zarr" / "c" / "0" / "0"
    os.truncate(victim, victim.stat().st_size - 1000)
    return store, victim


def _says_verify(line: str, store: Path, victim: Path) -> None:
    assert str(victim) in line and "expected" in line
    assert f"ingest verify {store}" in line


def test_a_truncated_shard_file_is_a_store_error_naming_it(truncated):
    store, victim = truncated
    with pytest.raises(StoreError) as err:
        StoreIndex.build(store)
    _says_verify(str(err.value), store, victim)
    os.unlink(victim)
    with pytest.raises(StoreError, match="missing"):
        StoreIndex.build(store)


def test_a_shard_file_truncated_after_the_index_was_built(truncated, train_store):
    """The size is checked again when the file is mapped (reading past a mapped file's end
    would kill the process with SIGBUS)."""
    store, victim = truncated
    shutil.copyfile(train_store.path / victim.relative_to(store), victim)  # whole again
    ix = StoreIndex.build(store)
    os.truncate(victim, 1000)
    with pytest.raises(StoreError) as err:
        list(Loader(ix, LoaderConfig(kind="video", batch_size=4, max_len=8)))
    _says_verify(str(err.value), store, victim)


def test_train_pretrain_on_a_truncated_store_is_one_line(tmp_path, truncated):
    store, victim = truncated
    out = tmp_path / "run"
    result = subprocess.run(
        [script("train"), "pretrain", "--store", str(store), "--model", "dbof-tiny", "--out",
         str(out), "--steps", "2", "--batch-size", "4", "--max-len", "8", "--device", "cpu",
         "--quiet"], capture_output=True, text=True, check=False)
    _says_verify(error_line(result), store, victim)
    assert not out.exists()


def test_predict_segments_on_a_truncated_store_is_one_line(tmp_path, truncated, train_store):
    store, victim = truncated
    run = tmp_path / "pre"
    ok = CliRunner().invoke(train_main, [
        "pretrain", "--store", str(train_store.path), "--model", "dbof-tiny", "--out", str(run),
        "--steps", "2", "--batch-size", "4", "--max-len", "8", "--device", "cpu", "--quiet"])
    assert ok.exit_code == 0, ok.output
    out = tmp_path / "pred"
    result = subprocess.run(
        [script("predict"), "segments", "--store", str(store), "--model", str(run), "--out",
         str(out), "--device", "cpu", "--quiet"], capture_output=True, text=True, check=False)
    _says_verify(error_line(result), store, victim)
    assert not list(tmp_path.glob("pred*"))
