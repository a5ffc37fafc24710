"""`predict topk --video-prior`: the restricted ranking against a brute-force numpy ranking
(issue 23 §1).

The brute force is the documented rule itself: the tiered score (kept (row, class): 10000
+ the ranking score, others: the ensemble score), then the top-k's order (`twin_order`:
the k largest (score, tie key); the boundary bucket by tie key, the buckets above by row).
Every comparison is exact, order included, also within ties: the tie rule is part of the
definition, seeded and reproduced by the twin.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from predict import prior_kernels as PK
from predict import topk as T
from predict.cli.main import main
from predict.predictions import QUANT_SCALE, open_video_predictions, write_predictions
from predict.prior import kept_classes_numpy, restriction
from predict.submission import write_submission
from predict.topk import ensemble_scores, top_k
from tests.predict.test_topk_twin import LOOSE_FLOORS, random_models, twin_order


def twin_restricted(models, prior, video_of, n_top, k, seed, weight=None, weights=None):
    """Plain numpy: the restricted order of (n, C) rows whose videos are prior rows
    `video_of` (n,), each video keeping its n_top best prior classes."""
    vals = ensemble_scores(models, weights=weights)
    kept = np.zeros(prior.shape, bool)
    np.put_along_axis(kept, kept_classes_numpy(prior, n_top), True, axis=1)
    rank = vals
    if weight is not None:
        table = (np.arange(QUANT_SCALE + 1) / QUANT_SCALE) ** weight
        rank = np.floor(vals * table[prior[video_of]] + 0.5).astype(np.int64)
    tiered = np.where(kept[video_of], QUANT_SCALE + 1 + rank, vals)
    return twin_order(tiered, min(k, len(vals)), seed)


def world(rng, n, n_videos, n_cls, high, n_models=1, grouped=True):
    """Models (n, C), a prior (V, C) of few distinct scores (ties), each row's video."""
    models = random_models(rng, n, n_models, high, n_cls)
    prior = rng.integers(0, 30, (n_videos, n_cls)).astype(np.uint16)
    video_of = rng.integers(0, n_videos, n)
    if grouped:
        video_of = np.sort(video_of)
    ids = [f"v{i}" for i in range(n_videos)]
    segments = pl.DataFrame({"video_id": [ids[v] for v in video_of]})
    return models, prior, video_of, segments, ids


class Prior:
    """An in-memory stand-in of `open_video_predictions`' result."""

    def __init__(self, scores, ids):
        self.scores, self.path = scores, "prior.npy"
        self.videos = pl.DataFrame({"video_id": ids})


CASES = [  # n, videos, classes, score range, top classes, k, A, block rows, models, grouped
    (500, 30, 40, 5, 3, 60, None, 64, 1, True),  # most classes' kept rows < k: the fill
    (500, 30, 40, 5, 3, 60, 0.5, 64, 1, True),
    (2000, 10, 64, 300, 8, 500, 1.0, 300, 2, True),
    (300, 5, 1000, 4, 20, 100, None, 128, 1, False),  # rows not grouped by video
    (3000, 200, 40, 9999, 39, 100, 0.3, 1000, 3, True),  # every class kept > k
    (700, 40, 33, 3, 33, 200, 2.0, 100, 1, True),  # every class kept: a re-ranking
    (1, 1, 1000, 5, 20, 7, None, 8, 1, True),
]


@pytest.mark.parametrize("n,n_videos,n_cls,high,n_top,k,weight,block,n_models,grouped", CASES)
def test_restricted_top_k_equals_brute_force(n, n_videos, n_cls, high, n_top, k, weight, block,
                                             n_models, grouped):
    rng = np.random.default_rng(n + n_top)
    models, prior, video_of, segments, ids = world(rng, n, n_videos, n_cls, high, n_models,
                                                   grouped)
    r = restriction(Prior(prior, ids), segments, n_top, weight)
    got = top_k(models, k=k, seed=3, block_rows=block, restriction=r)
    want = twin_restricted(models, prior, video_of, n_top, k, 3, weight)
    assert got.shape == (n_cls, min(k, n))  # never shorter than without the prior
    assert np.array_equal(got, want)


def test_weighted_ensemble_with_a_prior():
    rng = np.random.default_rng(8)
    models, prior, video_of, segments, ids = world(rng, 1500, 60, 50, 40, 3)
    r = restriction(Prior(prior, ids), segments, 5, 0.7)
    got = top_k(models, k=300, seed=2, weights=[3, 0, 1], restriction=r)
    assert np.array_equal(got, twin_restricted(models, prior, video_of, 5, 300, 2, 0.7,
                                               weights=[3, 0, 1]))


def test_every_class_kept_without_a_weight_is_the_plain_top_k():
    rng = np.random.default_rng(9)
    models, prior, _, segments, ids = world(rng, 800, 20, 1000, 6, 2)
    r = restriction(Prior(prior, ids), segments, 1000)
    assert np.array_equal(top_k(models, k=90, seed=5, restriction=r),
                          top_k(models, k=90, seed=5))


def test_epochs_compactions_and_rescans(monkeypatch):
    """Rows past 2**18 (kept entries and the fill keep 18 row bits), full buffers and
    floors set too high (the rescan does not gather the kept scores again)."""
    rng = np.random.default_rng(10)
    n = T.K.EPOCH_ROWS + 30_000
    models, prior, video_of, segments, ids = world(rng, n, 3000, 9, 300)
    want = twin_restricted(models, prior, video_of, 3, 98_000, 4, 0.4)
    r = restriction(Prior(prior, ids), segments, 3, 0.4)
    assert (r.n_kept >= 98_000).any() and (r.n_kept < 98_000).any()
    assert np.array_equal(top_k(models, k=98_000, seed=4, block_rows=50_000, restriction=r), want)
    monkeypatch.setattr(T, "BUFFER_SLACK", 0.0)
    monkeypatch.setattr(T, "FLOOR_SIGMAS", -10.0)  # every sampled floor too high: rescans
    r = restriction(Prior(prior, ids), segments, 3, 0.4)
    assert np.array_equal(top_k(models, k=98_000, seed=4, block_rows=50_000, restriction=r), want)


@pytest.mark.parametrize("env", [{"NUMBA_NUM_THREADS": "1"}, {"NUMBA_NUM_THREADS": "3"},
                                 {"YT8M_NO_JIT": "1"}])
def test_thread_counts_and_plain_python_kernels(tmp_path, env):
    """The gather splits classes among the threads, the finish too: 1 and 3 threads, and
    the kernels run as plain Python (YT8M_NO_JIT=1), select what the twin does, with
    compactions and rescans."""
    rng = np.random.default_rng(23)
    plain = "YT8M_NO_JIT" in env
    n, n_cls = (400, 64) if plain else (3000, 1000)
    models, prior, video_of, segments, ids = world(rng, n, 90, n_cls, 40)
    n_kept = restriction(Prior(prior, ids), segments, 6).n_kept
    assert (n_kept >= 50).any() and (n_kept < 50).any()  # both ways of finishing a class
    np.save(tmp_path / "m.npy", models[0])
    np.save(tmp_path / "p.npy", prior)
    segments.write_parquet(tmp_path / "s.parquet")
    code = (
        "import sys, numpy as np, polars as pl; from predict import topk as T\n"
        "from predict.prior import restriction; from tests.predict.test_topk_prior import Prior\n"
        f"for name, value in {LOOSE_FLOORS!r}.items(): setattr(T, name, value)\n"
        f"prior = Prior(np.load({str(tmp_path / 'p.npy')!r}), {ids!r})\n"
        f"r = restriction(prior, pl.read_parquet({str(tmp_path / 's.parquet')!r}), 6, 0.5)\n"
        f"m = np.load({str(tmp_path / 'm.npy')!r})\n"
        f"np.save({str(tmp_path / 'sel.npy')!r}, T.top_k([m], k=50, seed=6, block_rows=700, "
        "restriction=r))\n"
        "print(type(sys.modules['predict.prior_kernels'].gather_kept).__name__)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env}, check=True,
                         capture_output=True, text=True, cwd=Path(__file__).parents[2])
    assert res.stdout.strip() == ("function" if plain else "CPUDispatcher")
    want = twin_restricted(models, prior, video_of, 6, 50, 6, 0.5)
    assert np.array_equal(np.load(tmp_path / "sel.npy"), want)


def test_kept_classes_matches_numpy_twin():
    rng = np.random.default_rng(12)
    scores = rng.integers(0, 4, (300, 1000)).astype(np.uint16)  # many ties: class order decides
    scores[7] = 0
    scores[8, 990:] = 9999
    for n_top in (1, 20, 999, 1000):
        videos = np.arange(0, 300, 3)
        out = np.empty((len(videos), n_top), np.int16)
        PK.kept_classes(scores, videos, n_top, out)
        assert np.array_equal(out, kept_classes_numpy(scores[videos], n_top))
    out = np.empty((300, 20), np.int16)
    PK.kept_classes(scores, np.arange(300), 20, out)
    assert out[7].tolist() == list(range(20))  # all equal: the first 20 classes
    assert out[8, 10:].tolist() == list(range(990, 1000))


# Through the command.

def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line(res, *needles):
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    for needle in needles:
        assert needle in lines[0], res.output


@pytest.fixture()
def files(tmp_path):
    rng = np.random.default_rng(13)
    n, n_videos = 600, 25
    models, prior, video_of, _, ids = world(rng, n, n_videos + 5, 1000, 50, 2)
    starts = np.zeros(n, np.int64)
    for v in range(n_videos + 5):
        starts[video_of == v] = 30 + 5 * np.arange((video_of == v).sum())
    vids = [ids[v] for v in video_of]
    for i, m in enumerate(models):
        write_predictions(tmp_path / f"m{i}.npy", m, vids, starts)
    write_predictions(tmp_path / "prior.npy", prior, ids, None)
    return tmp_path, models, prior, video_of


def test_command_writes_the_brute_force_ranking(files):
    d, models, prior, video_of = files
    res = run("topk", d / "m0.npy", d / "m1.npy", "--out", d / "sub.csv", "--k", 40,
              "--seed", 2, "--weights", "2,1", "--video-prior", d / "prior.npy",
              "--top-classes", 10, "--prior-weight", 0.25)
    assert res.exit_code == 0, res.output
    assert "of the entries are segments of videos that keep their class" in res.output
    want = twin_restricted(models, prior, video_of, 10, 40, 2, 0.25, weights=[2, 1])
    from predict.predictions import open_predictions

    write_submission(d / "want.csv", want.astype(np.int32), open_predictions(d / "m0.npy").segments)
    assert (d / "sub.csv").read_bytes() == (d / "want.csv").read_bytes()
    plain = run("topk", d / "m0.npy", d / "m1.npy", "--out", d / "plain.csv", "--k", 40,
                "--seed", 2, "--weights", "2,1")
    assert plain.exit_code == 0 and (d / "plain.csv").read_bytes() != (d / "sub.csv").read_bytes()


def test_command_refusals(files):
    d, *_ = files
    out = d / "sub.csv"
    base = ("topk", d / "m0.npy", "--out", out)
    one_line(run(*base, "--top-classes", 5), "--video-prior and --top-classes go together")
    one_line(run(*base, "--video-prior", d / "prior.npy"), "go together")
    one_line(run(*base, "--prior-weight", 1), "go together")
    one_line(run(*base, "--video-prior", d / "m1.npy", "--top-classes", 5),
             "missing video table", "make the prior with predict videos")
    one_line(run(*base, "--video-prior", d / "prior.npy", "--top-classes", 1001),
             "--top-classes 1001: between 1 and 1000")
    one_line(run("topk", d / "prior.npy", "--out", out), "give it as --video-prior")
    one_line(run(*base[:3], d / "prior.npy", "--video-prior", d / "prior.npy",
                 "--top-classes", 5), "is one of the inputs")
    prior = open_video_predictions(d / "prior.npy")
    short = prior.videos["video_id"].to_list()
    write_predictions(d / "short.npy", np.asarray(prior.scores)[3:], short[3:], None)
    first = pl.read_parquet(d / "m0.segments.parquet")["video_id"]
    first_missing = next(v for v in first if v in short[:3])
    one_line(run(*base, "--video-prior", d / "short.npy", "--top-classes", 5),
             f"short.npy: has no row for video {first_missing!r} of the segments")
    assert not out.exists()
