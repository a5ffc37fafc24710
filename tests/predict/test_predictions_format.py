"""The prediction file format: writer, memory-mapped reader, and their refusals."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from predict.predictions import (
    QUANT_SCALE,
    PredictionError,
    PredictionWriter,
    open_ensemble,
    open_predictions,
    quantise,
    sidecar_path,
    write_predictions,
)


def segments(n):
    return [f"vid{i // 4}" for i in range(n)], [30 + 5 * (i % 4) for i in range(n)]


def test_round_trip_streams_blocks(tmp_path):
    rng = np.random.default_rng(0)
    probs = rng.random((130, 1000))
    vids, starts = segments(130)
    path = tmp_path / "m.npy"
    write_predictions(path, probs, vids, starts, block_rows=17)
    p = open_predictions(path)
    assert isinstance(p.scores, np.memmap) and p.scores.dtype == np.uint16
    assert np.array_equal(p.scores, np.rint(probs * QUANT_SCALE).astype(np.uint16))
    assert p.segments["video_id"].to_list() == vids
    assert p.segments["start_time"].dtype == pl.Int32
    assert p.segments["start_time"].to_list() == starts
    assert np.load(path).shape == (130, 1000)  # a plain .npy
    assert sidecar_path(path).name == "m.segments.parquet"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["m.npy", "m.segments.parquet"]


def test_quantise_clips_and_rounds():
    q = quantise(np.array([[-0.1, 0.0, 0.5, 1.0, 2.0, 0.00005, 0.00015]]))
    assert q.tolist() == [[0, 0, 5000, 9999, 9999, 0, 1]]  # 0.49995 and 1.49985 round to 0 and 1


def test_failed_write_leaves_nothing(tmp_path):
    vids, starts = segments(10)
    with pytest.raises(RuntimeError), PredictionWriter(tmp_path / "m.npy", vids, starts) as w:
        w.write(np.zeros((4, 1000), np.float32))
        raise RuntimeError("model crashed")
    with pytest.raises(PredictionError, match="4 rows written, 10 expected"), \
            PredictionWriter(tmp_path / "m.npy", vids, starts) as w:
        w.write(np.zeros((4, 1000), np.float32))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fail_at", ["sidecar write", "sidecar rename", "matrix rename"])
def test_failed_close_leaves_nothing(tmp_path, monkeypatch, fail_at):
    import os

    vids, starts = segments(6)
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if (fail_at, len(calls)) in (("sidecar rename", 1), ("matrix rename", 2)):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    def no_parquet(self, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("predict.predictions.os.replace", replace)
    if fail_at == "sidecar write":
        monkeypatch.setattr(pl.DataFrame, "write_parquet", no_parquet)
    out = tmp_path / "m.npy"
    with pytest.raises(PredictionError, match=f"^{out}: cannot write \\(No space left"), \
            PredictionWriter(out, vids, starts) as w:
        w.write(np.zeros((6, 1000), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_a_matrix_that_cannot_be_created_names_the_output(tmp_path, monkeypatch):
    """open_memmap's OSError (a read-only folder: even the clean-up's unlink fails there)
    becomes one line naming the output, not its temporary."""
    import os

    def read_only(*args, **kw):
        raise OSError(30, "Read-only file system")

    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        if ".tmp" in self.name:
            raise OSError(30, "Read-only file system")
        real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(np.lib.format, "open_memmap", read_only)
    monkeypatch.setattr(Path, "unlink", unlink)
    vids, starts = segments(6)
    with pytest.raises(PredictionError) as err:
        PredictionWriter(tmp_path / "m.npy", vids, starts)
    assert str(err.value) == f"{tmp_path / 'm.npy'}: cannot write (Read-only file system)"
    assert os.listdir(tmp_path) == []


def test_writer_refuses_bad_blocks(tmp_path):
    vids, starts = segments(4)
    w = PredictionWriter(tmp_path / "m.npy", vids, starts)
    with pytest.raises(PredictionError, match="shape"):
        w.write(np.zeros((2, 999)))
    with pytest.raises(PredictionError, match="above 9999"):
        w.write(np.full((2, 1000), 10000, np.uint16))
    with pytest.raises(PredictionError, match="more than 4 rows"):
        w.write(np.zeros((5, 1000)))
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_reader_refusals(tmp_path):
    vids, starts = segments(6)
    write_predictions(tmp_path / "a.npy", np.zeros((6, 1000)), vids, starts)
    np.save(tmp_path / "f32.npy", np.zeros((6, 1000), np.float32))
    np.save(tmp_path / "narrow.npy", np.zeros((6, 999), np.uint16))
    np.save(tmp_path / "nosidecar.npy", np.zeros((6, 1000), np.uint16))
    (tmp_path / "text.npy").write_text("not numpy")
    for name in ("f32", "narrow"):
        (tmp_path / f"{name}.segments.parquet").write_bytes((tmp_path / "a.segments.parquet").read_bytes())
    np.save(tmp_path / "short.npy", np.zeros((5, 1000), np.uint16))
    (tmp_path / "short.segments.parquet").write_bytes((tmp_path / "a.segments.parquet").read_bytes())
    cases = {"f32": "dtype float32", "narrow": r"shape \(6, 999\)", "nosidecar": "missing segment table",
             "text": "not a NumPy .npy file", "short": "5 rows but 6 segments", "absent": "no such file"}
    for name, message in cases.items():
        with pytest.raises(PredictionError, match=message):
            open_predictions(tmp_path / f"{name}.npy")


def test_ensemble_refuses_different_segment_tables(tmp_path):
    vids, starts = segments(6)
    write_predictions(tmp_path / "a.npy", np.zeros((6, 1000)), vids, starts)
    write_predictions(tmp_path / "b.npy", np.zeros((6, 1000)), vids, starts)
    starts[3] += 5
    write_predictions(tmp_path / "c.npy", np.zeros((6, 1000)), vids, starts)
    assert len(open_ensemble([tmp_path / "a.npy", tmp_path / "b.npy"])) == 2
    with pytest.raises(PredictionError, match="differs"):
        open_ensemble([tmp_path / "a.npy", tmp_path / "c.npy"])


def test_prefault_maps_a_memmap_and_ignores_the_rest(tmp_path):
    import sys

    from predict.predictions import prefault

    vids, starts = segments(300)
    write_predictions(tmp_path / "m.npy", np.full((300, 1000), 0.5), vids, starts)
    scores = open_predictions(tmp_path / "m.npy").scores
    assert prefault(scores) == sys.platform.startswith("linux")
    assert not prefault(np.zeros((3, 1000), np.uint16))  # not file-backed: nothing to do
    assert int(scores[299, 999]) == 5000  # the data is untouched


BAD_TABLES = {  # name: (video ids, starts, first bad row, words in the message)
    "duplicate": (["a", "a", "b", "a"], [5, 10, 5, 5], 3, "repeats row 0"),
    "colon": (["a", "b:c", "d"], [5, 5, 5], 1, "contains a colon"),
    "space": (["a", "b", "c d"], [5, 5, 5], 2, "contains a space"),
    "comma": (["a,b", "b"], [5, 5], 0, "contains a comma"),
    "tab": (["a", "b\tc"], [5, 5], 1, "whitespace '\\t'"),
    "empty": (["a", "", "c"], [5, 5, 5], 1, "empty video id"),
    "negative": (["a", "b", "c"], [5, -5, 5], 1, "start_time -5 is negative"),
    "two problems": (["a", "a", "b c"], [5, 5, 5], 1, "repeats row 0"),
}


@pytest.mark.parametrize("name", BAD_TABLES)
def test_bad_segment_tables_refused_by_writer_and_reader(tmp_path, name):
    """Rows that cannot become distinct `videoid:start` entries: the writer refuses to
    write them, the reader to read them (one line: the sidecar and the first bad row)."""
    vids, starts, row, words = BAD_TABLES[name]
    with pytest.raises(PredictionError, match=f"m.segments.parquet: row {row}: ") as err:
        PredictionWriter(tmp_path / "m.npy", vids, starts)
    assert words in str(err.value) and "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []
    np.save(tmp_path / "m.npy", np.zeros((len(vids), 1000), np.uint16))
    pl.DataFrame({"video_id": vids, "start_time": pl.Series(starts, dtype=pl.Int32)}).write_parquet(
        sidecar_path(tmp_path / "m.npy"))
    with pytest.raises(PredictionError, match=f"m.segments.parquet: row {row}: ") as err:
        open_predictions(tmp_path / "m.npy")
    assert words in str(err.value)
    with pytest.raises(PredictionError, match=f"row {row}: "):
        open_ensemble([tmp_path / "m.npy"])


def first_bad_row_twin(vids, starts):
    """Plain Python: the first row that is not a distinct `[^\\s,:]+:start` entry."""
    import re

    seen = set()
    for i, (v, s) in enumerate(zip(vids, starts)):
        if v is None or not re.fullmatch(r"[^\s,:]+", v) or s < 0 or (v, s) in seen:
            return i
        seen.add((v, s))
    return None


@pytest.mark.parametrize("seed", range(6))
def test_segment_check_matches_a_plain_python_twin(seed):
    """Random tables (grouped by video or shuffled, with rare bad rows): the vectorised
    check names the same first bad row as a row-by-row loop, and passes good tables."""
    import re

    from predict.predictions import check_segments

    rng = np.random.default_rng(seed)
    n = 3000
    vids = [f"v{i // 7}" for i in range(n)]
    starts = [5 * (i % 7) for i in range(n)]
    if seed % 2:
        order = rng.permutation(n)
        vids, starts = [vids[i] for i in order], [starts[i] for i in order]
    for _ in range(int(rng.integers(0, 3))):  # 0-2 bad rows
        i = int(rng.integers(0, n))
        kind = int(rng.integers(0, 4))
        if kind == 0:
            vids[i] = vids[i][:1] + " \u00a0,:\x1c"[int(rng.integers(0, 5))] + vids[i][1:]
        elif kind == 1:
            starts[i] = -5
        else:  # a repeat of another row
            j = int(rng.integers(0, n))
            vids[i], starts[i] = vids[j], starts[j]
    table = pl.DataFrame({"video_id": vids, "start_time": pl.Series(starts, dtype=pl.Int32)})
    want = first_bad_row_twin(vids, starts)
    if want is None:
        check_segments(table, "t")
    else:
        with pytest.raises(PredictionError, match=f"^t: row {want}: "):
            check_segments(table, "t")
    assert re.fullmatch(r"[^\s,:]+", "\u00a0") is None  # the twin's \s covers what polars' does


def test_not_npy_files_are_named(tmp_path):
    """A file that is not a .npy (text, a pickle) or a damaged one: said so, in one line."""
    import pickle

    vids, starts = segments(3)
    write_predictions(tmp_path / "a.npy", np.zeros((3, 1000)), vids, starts)
    (tmp_path / "pickled.npy").write_bytes(pickle.dumps(np.zeros((3, 1000), np.uint16)))
    np.save(tmp_path / "objects.npy", np.array([None, 1], dtype=object), allow_pickle=True)
    whole = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(whole[:-10])
    (tmp_path / "header.npy").write_bytes(whole[:20])
    cases = {"pickled": "not a NumPy .npy file", "objects": "dtype object",
             "cut": "truncated", "header": "not a NumPy .npy file"}
    for name, message in cases.items():
        side = sidecar_path(tmp_path / f"{name}.npy")
        side.write_bytes(sidecar_path(tmp_path / "a.npy").read_bytes())
        with pytest.raises(PredictionError, match=message) as err:
            open_predictions(tmp_path / f"{name}.npy")
        assert str(err.value).startswith(f"{tmp_path / name}.npy: ") and "\n" not in str(err.value)


def test_video_level_round_trip_and_refusals(tmp_path):
    """A video-level prediction (`start_times=None`): NAME.videos.parquet of distinct ids;
    rows written in any order (`write_rows`); each kind's reader refuses the other kind."""
    from predict.predictions import open_video_predictions

    rng = np.random.default_rng(1)
    probs = rng.random((7, 1000))
    path = tmp_path / "v.npy"
    w = PredictionWriter(path, [f"v{i}" for i in range(7)])
    w.write_rows(np.array([5, 0, 6]), probs[[5, 0, 6]])
    w.write_rows(np.array([1, 2, 3, 4]), probs[1:5])
    w.flush()
    w.publish()
    p = open_video_predictions(path)
    assert np.array_equal(p.scores, quantise(probs))
    assert p.videos["video_id"].to_list() == [f"v{i}" for i in range(7)]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["v.npy", "v.videos.parquet"]
    with pytest.raises(PredictionError, match="missing segment table .* give it as --video-prior"):
        open_predictions(path)
    vids, starts = segments(8)
    write_predictions(tmp_path / "s.npy", rng.random((8, 1000)), vids, starts)
    with pytest.raises(PredictionError, match="missing video table .* make the prior with "
                                              "predict videos"):
        open_video_predictions(tmp_path / "s.npy")
    for ids, words in [(["a", "b", "a"], "row 2: video id 'a' repeats row 0"),
                       (["a", "b c"], "row 1: video id 'b c' contains a space"),
                       (["", "b"], "row 0: empty video id")]:
        with pytest.raises(PredictionError, match=words):
            PredictionWriter(tmp_path / "bad.npy", ids)
    with pytest.raises(PredictionError, match="rows outside 0..6"):
        PredictionWriter(tmp_path / "w.npy", [f"v{i}" for i in range(7)]).write_rows(
            np.array([7]), probs[:1])
