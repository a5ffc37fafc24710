"""Source shards as `ingest convert` and `ingest decode` take them: identity recorded in
part.json (a rewritten source is refused), `verify --sources`, empty files, files that are
not TFRecord files, globs and paths named alike by both commands, an unreachable Dask
scheduler."""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ingest.codec.tfrecord import HEADER_BYTES, frame_record, iter_records
from ingest.store.layout import FORMAT_VERSION, file_checksum
from tests.ingest.clirun import one_line_error, run
from tests.ingest.test_convert_content import synth_shards


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> list[Path]:
    return synth_shards(tmp_path_factory.mktemp("orig"), shards=2, videos=5, seed=2)


@pytest.fixture
def work(originals, tmp_path, monkeypatch) -> Path:
    """tmp_path as the working directory, with copies of the shards in `src/`."""
    (tmp_path / "src").mkdir()
    for p in originals:
        shutil.copy2(p, tmp_path / "src" / p.name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def names(originals) -> list[str]:
    return [f"src/{p.name}" for p in originals]


# ---------------------------------------------------------------- identity of a source

def test_part_json_records_the_source(work, originals):
    res = run("convert", "src/*.tfrecord", "--out", "out/store", "--quiet")
    assert res.exit_code == 0, res.output
    for p in originals:
        info = json.loads((work / "out/store/parts" / p.stem / "part.json").read_text())
        st = os.stat(work / "src" / p.name)
        assert info["format_version"] == FORMAT_VERSION
        assert info["source"] == p.name
        assert info["source_path"] == f"../../src/{p.name}"  # relative to the store
        assert (info["source_bytes"], info["source_mtime_ns"]) == (st.st_size, st.st_mtime_ns)
    assert run("verify", "out/store", "--sources").output.strip() == "out/store: ok"


def rewrite_same_size(path: Path) -> None:
    """Rewrite the shard, valid, with one audio byte of its first record changed (the last
    bytes of a frame-level record are its last audio frame's): same size, new content,
    its mtime one second later."""
    records = [data for _, _, data in iter_records(path)]
    first = bytearray(records[0])
    first[-1] ^= 0xFF
    st = path.stat()
    path.write_bytes(b"".join(frame_record(r) for r in [bytes(first), *records[1:]]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert path.stat().st_size == st.st_size


def test_rewritten_source_is_refused_and_verify_sources_finds_it(work, originals):
    a, b = names(originals)
    assert run("convert", a, b, "--out", "store", "--quiet").exit_code == 0
    rewrite_same_size(work / a)
    line = one_line_error(run("convert", a, b, "--out", "store", "--quiet"))
    part = Path("store") / "parts" / originals[0].stem
    assert line.startswith(f"Error: {a}: changed since part {originals[0].stem!r} was "
                           "converted from it"), line
    assert line.endswith(f"remove {part} to convert it again")
    res = run("verify", "store", "--sources")
    assert res.exit_code == 1
    assert f"MISMATCH {originals[0].stem}: source {a}: CRC-32C" in res.output
    assert originals[1].stem not in res.output.replace("1 problem", "")
    assert run("verify", "store").exit_code == 0  # the store itself is intact
    shutil.rmtree(part)  # the remedy the message names
    res = run("convert", a, b, "--out", "store", "--quiet")
    assert res.exit_code == 0 and "1 part(s) converted now" in res.output
    assert run("verify", "store", "--sources").exit_code == 0


def test_touched_source_is_refused_too(work, originals):
    """Same bytes, new modification time: convert cannot tell without reading, so it
    refuses; `verify --sources` reads it and finds it unchanged."""
    a = names(originals)[0]
    assert run("convert", a, "--out", "store", "--quiet").exit_code == 0
    st = os.stat(a)
    os.utime(a, ns=(st.st_atime_ns, st.st_mtime_ns + 5))
    assert "changed since part" in one_line_error(run("convert", a, "--out", "store", "--quiet"))
    assert run("verify", "store", "--sources").exit_code == 0


def test_source_changed_while_being_converted(work, originals, monkeypatch):
    """The source's modification time moves between the first and the last chunk read
    (a writer still at work): no part, one line, and the next run converts it."""
    from ingest.store import convert as conv

    a = names(originals)[0]
    real = conv._decoder

    class Touching:
        """The real decoder, but the source is touched once its first chunk is read."""

        def __init__(self, on_error):
            self.dec = real(on_error)

        def __getattr__(self, name):
            return getattr(self.dec, name)

        def iter_chunks(self, path, chunk_bytes):
            for i, chunk in enumerate(self.dec.iter_chunks(path, chunk_bytes=chunk_bytes)):
                if i == 0:
                    st = os.stat(path)
                    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
                yield chunk

    monkeypatch.setattr(conv, "_decoder", Touching)
    line = one_line_error(run("convert", a, "--out", "store", "--quiet"))
    assert line == f"Error: {a}: changed while it was being converted (size or modification " \
                   "time); run the same command again"
    assert not Path("store").exists()
    monkeypatch.setattr(conv, "_decoder", real)
    assert run("convert", a, "--out", "store", "--quiet").exit_code == 0


def test_verify_sources_moved_and_source_dir(work, originals):
    assert run("convert", "src/*.tfrecord", "--out", "store", "--quiet").exit_code == 0
    shutil.move(work / "src", work / "moved")
    res = run("verify", "store", "--sources")
    assert res.exit_code == 1
    for p in originals:
        assert f"MISMATCH {p.stem}: source src/{p.name}: not found" in res.output
    res = run("verify", "store", "--sources", "--source-dir", "moved")
    assert res.exit_code == 0, res.output
    (work / "moved" / originals[1].name).write_bytes(b"")
    res = run("verify", "store", "--sources", "--source-dir", "moved")
    assert f"source moved/{originals[1].name}: 0 bytes, converted from " in res.output
    line = [ln for ln in run("verify", "store", "--source-dir", "moved").output.splitlines()
            if ln.strip()]
    assert line[-1] == "Error: --source-dir is only used with --sources"


# ---------------------------------------------------------------- empty and foreign files

def test_empty_source_warns_and_gives_an_empty_part(work, originals):
    Path("src/empty.tfrecord").write_bytes(b"")
    res = run("convert", "src/*.tfrecord", "--out", "store", "--quiet")
    assert res.exit_code == 0, res.output
    assert "warning: src/empty.tfrecord: empty file (0 bytes); its part holds no records" \
        in res.output
    info = json.loads(Path("store/parts/empty/part.json").read_text())
    assert info["kind"] == "empty" and info["counts"]["videos"] == 0
    again = run("convert", "src/*.tfrecord", "--out", "store", "--quiet")
    assert again.exit_code == 0 and "warning" not in again.output  # reused, said once
    res = run("decode", "--quiet", "src/empty.tfrecord")
    assert res.exit_code == 0
    assert "warning: src/empty.tfrecord: empty file (0 bytes), no records" in res.output


def foreign_files(d: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the message must say besides 'not a TFRecord file')."""
    rng = np.random.default_rng(0)
    corrupt = "or a TFRecord file whose first record header is corrupt"
    files = {"random": (d / "random.tfrecord", corrupt),
             "text": (d / "notes.tfrecord", "it looks like text"),
             "parquet": (d / "table.tfrecord", "it looks like a Parquet file"),
             "short": (d / "short.tfrecord", "5 bytes, less than one 12-byte record header")}
    files["random"][0].write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    files["text"][0].write_text("video_id,start\nabc,5\n" * 50)
    pl.DataFrame({"a": [1, 2, 3]}).write_parquet(files["parquet"][0])
    files["short"][0].write_bytes(b"hello")
    return files


@pytest.mark.parametrize("command", ["decode", "convert"])
def test_not_a_tfrecord_file(work, command):
    for name, (path, says) in foreign_files(Path("src")).items():
        args = [command, str(path)] + (["--out", "store"] if command == "convert" else [])
        line = one_line_error(run(*args, "--quiet"))
        assert line.startswith(f"Error: {path}: record 0 at byte 0: not a TFRecord file"), name
        assert says in line and "length CRC mismatch" not in line, line
        assert not Path("store").exists()


# ---------------------------------------------------------------- decode and convert alike

@pytest.mark.parametrize("command", ["decode", "convert"])
def test_sources_are_expanded_and_named_alike(work, originals, command):
    extra = ["--out", "store"] if command == "convert" else []
    # a quoted glob is expanded by both
    res = run(command, "src/*.tfrecord", *extra, "--quiet")
    assert res.exit_code == 0, res.output
    if command == "decode":
        assert [ln.split(":")[0] for ln in res.output.splitlines()] == names(originals)
    # errors name the path as given (relative stays relative)
    bad = Path("src/bad.tfrecord")
    raw = bytearray(originals[0].read_bytes())
    raw[HEADER_BYTES + 100] ^= 1
    bad.write_bytes(bytes(raw))
    line = one_line_error(run(command, "src/bad.tfrecord", *extra, "--quiet"))
    assert line.startswith("Error: src/bad.tfrecord: record 0 at byte 0: data CRC mismatch")
    # a directory, with or without its trailing slash: the same clear error
    for d in ("src", "src/"):
        line = one_line_error(run(command, d, *extra, "--quiet"))
        assert line == f"Error: {d}: is a directory; give the shard files in it, or a quoted " \
                       "pattern such as 'src/*.tfrecord'"
    assert "no file matches" in one_line_error(run(command, "src/*.nothing", *extra))
    assert "no such file" in one_line_error(run(command, "src/absent.tfrecord", *extra))


# ---------------------------------------------------------------- Dask scheduler not there

def test_dask_scheduler_not_listening(work, originals):
    pytest.importorskip("distributed")
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    res = run("convert", "src/*.tfrecord", "--out", "store", "--executor",
              f"dask://127.0.0.1:{port}", "--connect-timeout", "0.5")
    took = time.monotonic() - t0
    assert res.exit_code == 1
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    error = (f"Error: --executor dask://127.0.0.1:{port}: no Dask scheduler answered at "
             f"tcp://127.0.0.1:{port} within 0.5 s; is it running? (--connect-timeout sets "
             "the wait)")
    assert lines == [
        f"connecting to the Dask scheduler at tcp://127.0.0.1:{port} (waiting up to 0.5 s)",
        error], res.output
    assert took < 15, took  # the default wait was 20 s of a silent bar; this is 0.5 s + import
    assert not Path("store").exists()
    assert file_checksum(Path("src") / originals[0].name) == file_checksum(originals[0])
