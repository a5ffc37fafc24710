"""`predict blend` through the real commands: every candidate's MAP equals `predict
evaluate` of the submission `predict topk --weights` writes (float for float), the search
finds the good model, a fold of a store scores that fold only, refusals (issue 23 §3)."""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from ingest.store.truth import read_truth
from predict.blend import held_out, search
from predict.cli.main import main
from predict.metric import evaluate_submission, truth_index
from predict.predictions import open_ensemble, write_predictions
from predict.submission import write_submission
from tests.predict.conftest import CPU
from tests.predict.test_predict_cli import one_line_error, world  # noqa: F401 - fixture


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def evaluate_json(truth, csv, k):
    res = run("evaluate", csv, "--truth", truth, "--k", k, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_every_candidate_scores_as_predict_evaluate(world):  # noqa: F811
    rng = np.random.default_rng(3)
    side = pl.read_parquet(world / "perfect.segments.parquet")
    vids, starts = side["video_id"].to_list(), side["start_time"].to_list()
    perfect = np.load(world / "perfect.npy").astype(np.float64) / 9999
    write_predictions(world / "blurred.npy", np.clip(perfect + rng.normal(0, 0.45, perfect.shape),
                                                     0, 1), vids, starts)
    files = [world / "noise.npy", world / "blurred.npy"]
    res = run("blend", *files, "--truth", world / "truth.parquet", "--k", 20, "--json",
              "--max-weight", 2)
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["tried"][0]["weights"] == [1, 1] and out["map_equal"] == out["tried"][0]["map"]
    maps = [c["map"] for c in out["tried"]]
    assert out["map"] == max(maps) and out["weights"][1] > 0 and "fold" not in out
    assert len({tuple(c["weights"]) for c in out["tried"]}) == len(maps) >= 3
    for cand in out["tried"]:
        w = ",".join(map(str, cand["weights"]))
        sub = world / f"w{w.replace(',', '_')}.csv"
        res = run("topk", *files, "--out", sub, "--k", 20, "--weights", w)
        assert res.exit_code == 0, res.output
        assert evaluate_json(world / "truth.parquet", sub, 20)["map"] == cand["map"]
    text = run("blend", *files, "--truth", world / "truth.parquet", "--k", 20, "--max-weight", 2)
    assert text.exit_code == 0, text.output
    lines = text.output.strip().splitlines()
    assert lines[0] == f"weights 1,1: MAP@20 = {maps[0]:.6f}"
    best = ",".join(map(str, out["weights"]))
    assert lines[-1].startswith(f"best weights {best}: MAP@20 = {out['map']:.6f}")
    assert f"--weights {best}" in lines[-1]


def test_with_a_video_prior_as_predict_topk(world):  # noqa: F811
    """Weights fit under the restriction score what topk --video-prior + evaluate does."""
    side = pl.read_parquet(world / "perfect.segments.parquet")
    ids = side["video_id"].unique(maintain_order=True).to_list()
    rng = np.random.default_rng(4)
    write_predictions(world / "prior.npy", rng.random((len(ids), 1000)), ids, None)
    files = [world / "noise.npy", world / "perfect.npy"]
    prior = ["--video-prior", world / "prior.npy", "--top-classes", 30, "--prior-weight", 0.5]
    res = run("blend", *files, "--truth", world / "truth.parquet", "--k", 25, "--json", *prior)
    assert res.exit_code == 0, res.output
    best = json.loads(res.output)
    w = ",".join(map(str, best["weights"]))
    assert run("topk", *files, "--out", world / "b.csv", "--k", 25, "--weights", w,
               *prior).exit_code == 0
    assert evaluate_json(world / "truth.parquet", world / "b.csv", 25)["map"] == best["map"]


def test_a_fold_of_a_store_scores_that_fold_only(tmp_path, runs, validate_store):
    """--fold F: the rows and ratings of fold F's videos: the same MAP as writing those rows'
    submission and evaluating it against fold F's truth."""
    for name in ("pre", "ag"):
        res = run("segments", "--store", validate_store.path, "--model", runs / name, "--out",
                  tmp_path / name, "--batch-size", 64, *CPU)
        assert res.exit_code == 0, res.output
    folds = validate_store.videos["fold"].unique().sort().to_list()
    fold = folds[0]
    files = [tmp_path / "pre.npy", tmp_path / "ag.npy"]
    res = run("blend", *files, "--truth", validate_store.path, "--k", 50, "--fold", fold,
              "--json")
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["fold"] == fold
    data = held_out(open_ensemble(files), validate_store.path, fold)
    videos = validate_store.videos.filter(pl.col("fold") == fold)["video_id"]
    assert set(data.segments["video_id"]) <= set(videos) and len(data.segments) < len(
        open_ensemble(files)[0].segments)
    truth = read_truth(validate_store.path).filter(pl.col("video_id").is_in(videos.implode()))
    from predict.topk import top_k

    for cand in out["tried"]:
        rows = top_k(data.scores, k=50, weights=cand["weights"], progress=False)
        write_submission(tmp_path / "f.csv", rows, data.segments)
        ev = evaluate_submission(tmp_path / "f.csv", truth_index(truth), 50)
        assert ev.result.map == cand["map"]
    whole = search(held_out(open_ensemble(files), validate_store.path), 50, 1)
    assert whole.candidates[0][1] != out["tried"][0]["map"]  # not the whole store's


def test_refusals(world, tmp_path):  # noqa: F811
    truth = world / "truth.parquet"
    pair = (world / "perfect.npy", world / "noise.npy")
    one_line_error(run("blend", pair[0], "--truth", truth), "two or more prediction files")
    one_line_error(run("blend", *pair, "--truth", truth, "--fold", 1), "must be a store")
    one_line_error(run("blend", *pair, "--truth", truth, "--top-classes", 3), "go together")
    no_pos = world / "no_pos.parquet"
    pl.read_parquet(truth).with_columns(score=pl.lit(0.0, pl.Float32)).write_parquet(no_pos)
    one_line_error(run("blend", *pair, "--truth", no_pos), "no positive ratings")
    other = world / "other.parquet"
    pl.read_parquet(truth).with_columns(video_id=pl.lit("elsewhere")).write_parquet(other)
    one_line_error(run("blend", *pair, "--truth", other), "another split?")


@pytest.mark.parametrize("weights,key", [((2, 2, 4), (1, 1, 2)), ((0, 3, 0), (0, 1, 0)),
                                         ((1, 2, 3), (1, 2, 3))])
def test_multiples_are_one_ensemble(weights, key):
    from predict.blend import _direction

    assert _direction(weights) == key


def test_ap_sums_matches_the_plain_metric():
    """`ap_sums` against `metric.average_precision` (the plain twin) on random lists."""
    from predict.blend import ap_sums
    from predict.metric import average_precision

    rng = np.random.default_rng(5)
    n_rows, n_cls, k = 300, 40, 60
    rows = np.stack([rng.permutation(n_rows)[:k] for _ in range(n_cls)]).astype(np.int32)
    rated = [np.sort(rng.choice(n_rows, rng.integers(0, 50), replace=False)) for _ in range(n_cls)]
    rel = [rng.integers(0, 2, len(r)).astype(np.int8) for r in rated]
    ptr = np.concatenate([[0], np.cumsum([len(r) for r in rated])]).astype(np.int64)
    got = ap_sums(rows, ptr, np.concatenate(rated).astype(np.int64), np.concatenate(rel), n_rows, 3)
    for c in range(n_cls):
        label = dict(zip(rated[c].tolist(), rel[c].tolist()))
        seq = np.array([label[r] for r in rows[c].tolist() if r in label], np.int64)
        positives = int(seq.sum())
        want = average_precision(seq, positives) * positives if positives else 0.0
        assert got[c] == pytest.approx(want, rel=1e-12, abs=1e-12)
