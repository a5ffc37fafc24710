"""Bad input: corrupt shards, wrong paths, empty globs, a tampered store (CLI level)."""
from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from ingest.codec.decode import ShardDecoder
from ingest.errors import IngestError
from ingest.store import Store
from ingest.store.convert import ConvertConfig, convert
from tests.ingest.clirun import one_line_error, run
from tests.ingest.test_convert_content import synth_shards
from tests.readonly import error_line, run_read_only, script


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> list[Path]:
    return synth_shards(tmp_path_factory.mktemp("good"), shards=2, videos=12, seed=5)


def corrupt_copy(src: Path, dst: Path, record: int) -> int:
    """Copy `src` to `dst` flipping one byte inside record `record`'s data; its offset."""
    offsets = next(ShardDecoder().iter_chunks(src)).record_offsets.copy()
    data = bytearray(src.read_bytes())
    data[int(offsets[record]) + 12 + 40] ^= 0xFF  # past the 12-byte header: a data byte
    dst.write_bytes(bytes(data))
    return int(offsets[record])




def test_corrupt_shard_stops_with_one_line_and_no_store(good, tmp_path):
    bad = tmp_path / "bad.tfrecord"
    offset = corrupt_copy(good[0], bad, record=3)
    out = tmp_path / "store"
    line = one_line_error(run("convert", bad, "--out", out, "--quiet", "--workers", "1"))
    assert str(bad) in line and "record 3" in line and f"byte {offset}" in line
    assert not out.exists()


def test_a_failed_shard_stops_the_other_workers_before_the_error_is_reported(good, tmp_path):
    """With a process pool, the error of one shard stops the others and removes .tmp at
    once, not when the exception (whose traceback holds the pool's generator) is freed:
    the caller still holds it here."""
    bad = tmp_path / "a-bad.tfrecord"
    corrupt_copy(good[0], bad, record=0)
    slow = synth_shards(tmp_path / "slow", shards=6, videos=40, seed=7)
    out = tmp_path / "store"
    before = set(multiprocessing.active_children())  # other tests' children, if any
    with pytest.raises(IngestError, match="a-bad.tfrecord") as caught:
        convert(ConvertConfig(sources=(str(bad), *map(str, slow)), out=str(out), workers=2,
                              progress=False))
    assert caught.value.__traceback__ is not None  # the generator's frame is still referenced
    assert set(multiprocessing.active_children()) <= before
    assert not (out / ".tmp").exists()


def test_skip_shard_lists_it_in_the_manifest(good, tmp_path):
    bad = tmp_path / "bad.tfrecord"
    corrupt_copy(good[0], bad, record=0)
    out = tmp_path / "store"
    res = run("convert", bad, good[1], "--out", out, "--quiet", "--on-error", "skip-shard")
    assert res.exit_code == 0, res.output
    assert "skipped shard" in res.output and "bad.tfrecord: record 0" in res.output
    m = json.loads((out / "manifest.json").read_text())
    assert [p["source"] for p in m["parts"]] == [good[1].name]
    assert m["skipped_shards"][0]["source"] == "bad.tfrecord"
    assert "record 0" in m["skipped_shards"][0]["reason"]


def test_skip_record_keeps_the_rest(good, tmp_path):
    bad = tmp_path / "bad.tfrecord"
    offset = corrupt_copy(good[0], bad, record=4)
    out = tmp_path / "store"
    res = run("convert", bad, "--out", out, "--quiet", "--on-error", "skip-record")
    assert res.exit_code == 0, res.output
    store = Store(out)
    assert len(store.videos) == 11
    assert 4 not in store.videos["record"].to_list()
    assert store.videos["record"].to_list() == [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11]
    skipped = store.manifest["parts"][0]["skipped_records"]
    assert [(s["record"], s["offset"]) for s in skipped] == [(4, offset)]
    assert store.manifest["totals"]["skipped_records"] == 1


@pytest.mark.parametrize("arg, message", [
    ("missing.tfrecord", "no such file"),
    ("nothing-*.tfrecord", "no file matches"),
])
def test_wrong_path_or_empty_glob(tmp_path, arg, message):
    out = tmp_path / "store"
    line = one_line_error(run("convert", tmp_path / arg, "--out", out, "--quiet"))
    assert message in line
    assert not out.exists()


def test_bad_executor_and_not_a_store(good, tmp_path):
    line = one_line_error(run("convert", good[0], "--out", tmp_path / "s", "--executor", "x"))
    assert "--executor" in line
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "file.txt").write_text("keep me")
    line = one_line_error(run("convert", good[0], "--out", tmp_path / "other", "--quiet"))
    assert "not a store" in line
    assert (tmp_path / "other" / "file.txt").read_text() == "keep me"
    line = one_line_error(run("info", tmp_path / "other"))
    assert "not a complete store" in line


def files(path: Path) -> dict[str, bytes]:
    return {q.relative_to(path).as_posix(): q.read_bytes()
            for q in sorted(path.rglob("*")) if q.is_file()}


@pytest.mark.parametrize("layout", [
    {"parts/notes.txt": "mine"},  # a user's folder that happens to hold a parts/
    {"parts/holiday/photo.jpg": "mine"},
    {"parts/.keep": "", "todo.txt": "mine"},
])
def test_a_users_folder_with_a_parts_folder_is_refused(good, tmp_path, layout):
    out = tmp_path / "mine"
    for name, text in layout.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    before = files(out)
    line = one_line_error(run("convert", good[0], "--out", out, "--quiet"))
    assert f"{out}: a non-empty directory that is not a store (no manifest.json" in line
    assert "give a new or empty directory" in line
    assert files(out) == before and not (out / ".tmp").exists()


def test_an_empty_folder_and_an_interrupted_store_are_converted_into(good, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("convert", good[0], "--out", empty, "--quiet").exit_code == 0
    # an interrupted store: complete parts, no manifest, a part being written in .tmp
    (empty / "manifest.json").unlink()
    (empty / ".tmp" / "x-0123").mkdir(parents=True)
    res = run("convert", *good, "--out", empty, "--quiet")
    assert res.exit_code == 0, res.output
    assert "1 part(s) converted now, 2 in the store" in res.output
    assert run("verify", empty).exit_code == 0
    res = run("convert", *good, "--out", empty, "--quiet")  # a complete store: a no-op re-run
    assert res.exit_code == 0 and "0 part(s) converted now, 2 in the store" in res.output


def test_a_store_that_cannot_be_created_is_one_line(good, tmp_path):
    """(Before: a NotADirectoryError / EROFS traceback from mkdir.)"""
    (tmp_path / "afile").write_text("x")
    line = one_line_error(run("convert", good[0], "--out", tmp_path / "afile" / "s", "--quiet"))
    assert line == (f"Error: {tmp_path / 'afile' / 's'}: cannot create the store (Not a "
                    f"directory: {tmp_path / 'afile' / 's' / 'parts'})")
    ro = tmp_path / "ro"
    ro.mkdir()
    for out in (ro / "s", ro):  # a new store, and an existing empty directory
        res = run_read_only(ro, [script("ingest"), "convert", good[0], "--out", out, "--quiet"])
        assert error_line(res).startswith(f"Error: {out}: cannot create the store (Read-only "
                                          "file system: ")
    assert list(ro.iterdir()) == []


def test_info_and_verify(good, tmp_path):
    out = tmp_path / "store"
    assert run("convert", *good, "--out", out, "--quiet").exit_code == 0
    res = run("info", out, "--json")
    assert res.exit_code == 0
    info = json.loads(res.output)
    store = Store(out)
    assert info["videos"] == len(store.videos) == 24
    assert info["rated_segments"] == len(store.segments)
    assert info["candidate_segments"] == len(store.candidates)
    assert info["frames"] == int(store.videos["n_frames"].sum())
    assert info["parts"] == 2 and info["store_bytes"] > info["frames"] * 1152
    assert "candidate_segments" in run("info", out).output
    assert run("verify", out).exit_code == 0
    # flip one frame byte: verify must notice, naming the file
    shard = out / "parts" / good[1].stem / "frames.zarr" / "c" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[1000] ^= 1
    shard.write_bytes(bytes(data))
    res = run("verify", out)
    assert res.exit_code == 1
    assert "frames.zarr/c/0/0: CRC-32 differs" in res.output
    # a missing table
    (out / "parts" / good[0].stem / "videos.parquet").unlink()
    res = run("verify", out)
    assert res.exit_code == 1 and "videos.parquet: missing" in res.output


def test_os_error_while_writing_is_one_line(good, tmp_path):
    out = tmp_path / "store"
    (out / "parts").mkdir(parents=True)
    (out / "parts" / good[0].stem).write_text("a file where the part directory must go")
    line = one_line_error(run("convert", good[0], "--out", out, "--quiet"))
    assert good[0].stem in line
    assert not (out / "manifest.json").exists()
