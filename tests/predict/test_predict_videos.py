"""`predict videos` through the real command: scores against the video model run directly
on the loader's evaluation frames, the video table against the store, rows of zeros for
videos without frames, an aware run refused, output refusals, two torchrun ranks against
one process (issue 23 §1)."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from click.testing import CliRunner

from predict.cli.main import main as predict_main
from predict.predictions import open_video_predictions
from predict.videos import video_run
from tests.predict.conftest import CPU, refusal, two_ranks_and_one
from trainer.data.sampling import select_even_numpy


def _videos(store, run, out, *extra):
    result = CliRunner().invoke(predict_main, ["videos", "--store", str(store.path), "--model",
                                               str(run), "--out", str(out), "--batch-size",
                                               "5", *extra] + CPU)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def _refused(store, run, out, *extra) -> str:
    return refusal(predict_main, ["videos", "--store", store.path, "--model", run, "--out", out,
                                  *extra] + CPU)


def _direct(model, store, video_rows, max_len):
    """Probabilities from the reader API, one video at a time: Lm evenly spaced frames."""
    out = []
    with torch.no_grad():
        for v in video_rows:
            frames = store.frames(int(v))
            n = len(frames)
            pick = select_even_numpy(n, min(max_len or n, n))
            mask = torch.ones(1, len(pick), dtype=torch.bool)
            out.append(model(torch.from_numpy(frames[pick])[None], mask).probs().numpy())
    return np.concatenate(out)


@pytest.mark.parametrize("name", ["pre", "ag"])
def test_scores_equal_the_video_model_run_directly(tmp_path, runs, validate_store, name):
    _videos(validate_store, runs / name, tmp_path / name)
    pred = open_video_predictions(tmp_path / f"{name}.npy")
    videos = validate_store.videos
    assert pred.scores.shape == (videos.height, 1000)
    assert pred.videos["video_id"].to_list() == videos["video_id"].to_list()
    model, max_len = video_run(str(runs / name))
    assert max_len == (20 if name == "pre" else 60)  # the run's Lm (tiny: Table 4's 60)
    n_frames = videos["n_frames"].to_numpy()
    assert (n_frames > max_len).any() and (n_frames < max_len).any()  # sampled and whole
    want = _direct(model, validate_store, np.arange(videos.height), max_len)
    assert np.abs(pred.scores / 9999.0 - want).max() <= 0.5 / 9999 + 1e-4


def test_a_video_without_frames_gets_zeros(tmp_path, runs, testset_store, monkeypatch):
    """The loader leaves out videos without frames; their rows are zeros, the others are
    predicted as usual (here a video's frame count is set to 0 in the loader's index). One
    torch thread: the batches hold other videos in the two runs."""
    from trainer.data import index as index_module

    build = index_module.StoreIndex.build.__func__

    def no_frames_for_video_3(cls, store, *args, **kwargs):
        ix = build(cls, store, *args, **kwargs)
        ix.n_frames = ix.n_frames.copy()
        ix.n_frames[3] = 0
        return ix

    monkeypatch.setattr(index_module.StoreIndex, "build", classmethod(no_frames_for_video_3))
    _videos(testset_store, runs / "pre", tmp_path / "gap", "--torch-threads", "1")
    monkeypatch.undo()
    _videos(testset_store, runs / "pre", tmp_path / "all", "--torch-threads", "1")
    gap, full = np.load(tmp_path / "gap.npy"), np.load(tmp_path / "all.npy")
    assert not gap[3].any() and full[3].any()
    assert np.array_equal(np.delete(gap, 3, axis=0), np.delete(full, 3, axis=0))


def test_an_aware_run_is_refused_in_one_line(tmp_path, runs, testset_store):
    line = _refused(testset_store, runs / "aw", tmp_path / "v")
    assert "context-aware fine-tuning run has no video-level output" in line
    assert list(tmp_path.iterdir()) == []


def test_output_refusals_as_predict_segments(tmp_path, runs, testset_store):
    _videos(testset_store, runs / "pre", tmp_path / "v")
    npy, side = tmp_path / "v.npy", tmp_path / "v.videos.parquet"
    before = npy.read_bytes()
    line = _refused(testset_store, tmp_path / "no-run", tmp_path / "v")  # before any work
    assert f"{npy}: exists" in line and "--overwrite" in line
    npy.unlink()
    assert f"{side}: exists" in _refused(testset_store, runs / "ag", tmp_path / "v.npy")
    _videos(testset_store, runs / "ag", tmp_path / "v", "--overwrite")
    assert npy.read_bytes() != before
    (tmp_path / "d.videos.parquet").mkdir()
    assert "is a directory" in _refused(testset_store, runs / "ag", tmp_path / "d")
    line = _refused(testset_store, runs / "ag", tmp_path / "missing" / "v")
    assert f"its folder {tmp_path / 'missing'} does not exist" in line
    assert _refused(testset_store, runs / "ag", tmp_path / ".npy").endswith(
        "no NAME before .npy (give PRED_DIR/NAME)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.videos.parquet", npy.name,
                                                          side.name]
    assert pl.read_parquet(side).columns == ["video_id"]


@pytest.mark.slow
def test_two_torchrun_ranks_write_the_bytes_of_one_process(tmp_path, runs, validate_store):
    two_ranks_and_one(tmp_path, ["videos", "--store", str(validate_store.path), "--model",
                                 str(runs / "pre"), "--batch-size", "5"] + CPU)
    assert (tmp_path / "two.videos.parquet").is_file()
    assert not list(tmp_path.glob(".*"))


def test_read_back_as_the_prior_of_predict_topk(tmp_path, runs, testset_store):
    """The store's video table covers its candidates' videos: predict segments + predict
    videos + topk --video-prior gives a valid submission, different from the plain one."""
    _videos(testset_store, runs / "pre", tmp_path / "prior")
    res = CliRunner().invoke(predict_main, ["segments", "--store", str(testset_store.path),
                                            "--model", str(runs / "ag"), "--out",
                                            str(tmp_path / "ag")] + CPU)
    assert res.exit_code == 0, res.output
    for name, extra in [("plain", []), ("prior", ["--video-prior", tmp_path / "prior.npy",
                                                  "--top-classes", "20"])]:
        res = CliRunner().invoke(predict_main, ["topk", str(tmp_path / "ag.npy"), "--out",
                                                str(tmp_path / f"{name}.csv"), "--k", "100",
                                                *map(str, extra)])
        assert res.exit_code == 0, res.output
        res = CliRunner().invoke(predict_main, ["validate", str(tmp_path / f"{name}.csv"),
                                                "--k", "100"])
        assert res.exit_code == 0, res.output
    assert (tmp_path / "plain.csv").read_bytes() != (tmp_path / "prior.csv").read_bytes()
