"""`predict segments` through the real commands: scores against the model run directly,
the sidecar against the store, once-per-video contexts against per-segment ones, two
torchrun ranks against one process, read back by topk/validate, errors (issue #14)."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from click.testing import CliRunner

from predict.cli.main import main as predict_main
from predict.segments import load_run
from tests.predict.conftest import CPU, refusal, two_ranks_and_one
from tests.readonly import error_line, run_read_only, script
from trainer.data import context_span
from trainer.data.sampling import select_even_numpy


def _ok(main, args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def _predict(store, run, out, *extra):
    return _ok(predict_main, ["segments", "--store", str(store.path), "--model", str(run),
                              "--out", str(out), "--batch-size", "64", *extra] + CPU)


def _direct(model, kind, store, rows, max_len):
    """Probabilities computed straight from the reader API, one segment at a time for an
    aware model (the reference code's way: the context encoded again per segment)."""
    windows = torch.from_numpy(store.candidate_windows(rows))
    with torch.no_grad():
        if kind != "aware":
            return model(windows, None).probs().numpy()
        cand = store.candidates
        out = []
        for i, r in enumerate(rows):
            video = int(cand["video_row"][int(r)])
            frames = store.frames(video)
            lo, hi = context_span(np.array([len(frames)]))
            n = int(hi[0] - lo[0])
            pick = select_even_numpy(n, min(max_len, n)) + lo[0]
            context = torch.from_numpy(frames[pick])[None]
            mask = torch.ones(1, len(pick), dtype=torch.bool)
            out.append(model(context, mask, windows[i:i + 1]).probs().numpy())
        return np.concatenate(out)


@pytest.mark.parametrize("name", ["pre", "ag", "aw"])
def test_scores_equal_the_model_run_directly(tmp_path, runs, testset_store, name):
    _predict(testset_store, runs / name, tmp_path / name)
    scores = np.load(tmp_path / f"{name}.npy")
    side = pl.read_parquet(tmp_path / f"{name}.segments.parquet")
    cand = testset_store.candidates
    assert scores.dtype == np.uint16 and scores.shape == (cand.height, 1000)
    assert side["video_id"].to_list() == cand["video_id"].to_list()
    assert side["start_time"].to_list() == cand["start_time"].to_list()
    model, kind, max_len = load_run(str(runs / name))
    rows = np.arange(0, cand.height, max(1, cand.height // 40))
    want = _direct(model, kind, testset_store, rows, max_len or 150)
    # within the quantisation step (and float noise at a rounding boundary)
    assert np.abs(scores[rows] / 9999.0 - want).max() <= 0.5 / 9999 + 1e-4


def test_deterministic_and_read_back_by_topk(tmp_path, runs, testset_store):
    _predict(testset_store, runs / "aw", tmp_path / "a")
    _predict(testset_store, runs / "aw", tmp_path / "b")
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    _predict(testset_store, runs / "ag", tmp_path / "c")
    sub = tmp_path / "s.csv"
    _ok(predict_main, ["topk", str(tmp_path / "a.npy"), str(tmp_path / "c.npy"), "--out",
                       str(sub), "--k", "100"])
    _ok(predict_main, ["validate", str(sub), "--k", "100"])
    assert not list(tmp_path.glob(".*"))  # no temporaries left


@pytest.mark.slow
def test_two_torchrun_ranks_write_the_bytes_of_one_process(tmp_path, runs, testset_store):
    two_ranks_and_one(tmp_path, ["segments", "--store", str(testset_store.path), "--model",
                                 str(runs / "aw"), "--batch-size", "64"] + CPU)
    assert (tmp_path / "two.segments.parquet").is_file()


def test_clear_errors(tmp_path, runs, testset_store, validate_store, train_store):
    other = tmp_path / "other"
    other.mkdir()
    _predict(validate_store, runs / "ag", other / "validate_model")
    cases = [
        (testset_store, tmp_path, tmp_path / "x", "not a run directory"),
        (testset_store, runs / "ag", other / "test_model", "differ from those of"),
        (testset_store, runs / "ag", tmp_path / "missing" / "x",
         f"its folder {tmp_path / 'missing'} does not exist"),
    ]
    for store, run, out, message in cases:
        result = CliRunner().invoke(predict_main, ["segments", "--store", str(store.path),
                                                   "--model", str(run), "--out", str(out)] + CPU)
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output


def test_a_store_without_candidates_is_refused(tmp_path, runs):
    from tests.conftest import make_store

    short = make_store(tmp_path, "test", 1, 4, seed=3, min_frames=20, max_frames=40)
    result = CliRunner().invoke(predict_main, ["segments", "--store", str(short.path), "--model",
                                               str(runs / "ag"), "--out", str(tmp_path / "p")]
                                + CPU)
    assert result.exit_code == 1 and "no candidate segments" in result.output, result.output



def _refused(store, run, out, *extra) -> str:
    return refusal(predict_main, ["segments", "--store", store.path, "--model", run, "--out", out,
                                  *extra] + CPU)


def test_an_existing_output_is_refused_unless_overwrite(tmp_path, runs, testset_store):
    _predict(testset_store, runs / "ag", tmp_path / "p")
    npy, side = tmp_path / "p.npy", tmp_path / "p.segments.parquet"
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (npy, side)}
    # refused before any work: the run named here does not even exist
    line = _refused(testset_store, tmp_path / "no-run", tmp_path / "p")
    assert f"{npy}: exists" in line and "--overwrite" in line
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (npy, side)} == before
    npy.unlink()  # a sidecar alone is someone's output too
    assert f"{side}: exists" in _refused(testset_store, runs / "aw", tmp_path / "p.npy")
    _predict(testset_store, runs / "aw", tmp_path / "p", "--overwrite")
    assert npy.read_bytes() != before[npy][0]  # the aware model's scores replaced them
    assert sorted(p.name for p in tmp_path.iterdir()) == [npy.name, side.name]


def test_an_unwritable_output_is_one_line_and_leaves_nothing(tmp_path, runs, testset_store):
    (tmp_path / "file").write_text("not a folder")
    line = _refused(testset_store, runs / "ag", tmp_path / "file" / "p")
    assert f"p.npy: its folder {tmp_path / 'file'} is not a directory" in line
    for name in ("q.npy", "r.segments.parquet"):  # a directory where a file must go
        (tmp_path / name).mkdir()
        out = tmp_path / name.split(".")[0]
        assert f"{tmp_path / name}: is a directory" in _refused(testset_store, runs / "ag", out)
        assert not any((tmp_path / name).iterdir())
    line = _refused(testset_store, runs / "ag", tmp_path / ".npy")  # `--out ''` is `.npy`
    assert line == f"Error: {tmp_path / '.npy'}: no NAME before .npy (give PRED_DIR/NAME)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "q.npy", "r.segments.parquet"]


def test_a_read_only_folder_is_one_line_and_leaves_nothing(tmp_path, runs, testset_store):
    preds = tmp_path / "preds"
    preds.mkdir()
    cmd = [script("predict"), "segments", "--store", testset_store.path, "--model", runs / "ag",
           "--out", preds / "ag"] + CPU
    line = error_line(run_read_only(preds, cmd))
    assert f"{preds / 'ag.npy'}: cannot write (read-only file system: {preds})" in line
    assert list(preds.iterdir()) == []


def test_fp32_by_default_and_bf16_on_request(tmp_path, runs, testset_store):
    """fp32 is the default (the scores of `test_scores_equal_the_model_run_directly`);
    `--precision bf16` runs under bf16 autocast: close to fp32, within bf16's precision."""
    _predict(testset_store, runs / "aw", tmp_path / "fp32", "--torch-threads", "1")
    _predict(testset_store, runs / "aw", tmp_path / "bf16", "--precision", "bf16")
    fp32, bf16 = (np.load(tmp_path / f"{n}.npy").astype(np.int64) for n in ("fp32", "bf16"))
    assert fp32.shape == bf16.shape
    assert 0 < np.abs(fp32 - bf16).max() <= 0.05 * 9999  # bf16 keeps 8 bits of mantissa


def test_cpu_prediction_gives_torch_every_core_of_the_ranks_share():
    """The candidate loader needs little CPU: torch gets every core (RESULTS.md `## predict
    segments`: 1.5x on the idle 2-core VM), shared among local ranks; `--torch-threads`
    overrides it."""
    import os

    import torch

    from predict.segments import prediction_threads
    from trainer.recipes.runtime import Ranks

    before = torch.get_num_threads()
    cores = len(os.sched_getaffinity(0))
    try:
        prediction_threads(Ranks(0, 1, torch.device("cpu")), None)
        assert torch.get_num_threads() == cores
        prediction_threads(Ranks(0, 2, torch.device("cpu")), None)
        assert torch.get_num_threads() == max(1, cores // 2)
        prediction_threads(Ranks(0, 1, torch.device("cpu")), 1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
