"""`predict topk / validate / evaluate` end to end, their one-line errors, and no torch."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from ingest.vocab import segment_class_ids
from predict.cli.main import main
from predict.predictions import write_predictions

IDS = segment_class_ids()
N_VIDEOS, PER_VIDEO = 40, 6


@pytest.fixture()
def world(tmp_path):
    """Predictions of two models (one perfect), and the truth of every third segment."""
    rng = np.random.default_rng(0)
    n = N_VIDEOS * PER_VIDEO
    vids = [f"vid{i // PER_VIDEO:03d}" for i in range(n)]
    starts = [30 + 5 * (i % PER_VIDEO) for i in range(n)]
    positive = rng.random((n, 1000)) < 0.02
    write_predictions(tmp_path / "perfect.npy", positive.astype(np.float32), vids, starts)
    write_predictions(tmp_path / "noise.npy", rng.random((n, 1000)), vids, starts)
    rated = [(i, c) for i in range(0, n, 3) for c in rng.choice(1000, 4, replace=False)]
    rated += [(int(i), int(c)) for i, c in zip(*np.nonzero(positive)) if i % 3 == 0]
    rated = sorted(set(rated))
    pl.DataFrame({
        "video_id": [vids[i] for i, _ in rated],
        "start_time": pl.Series([starts[i] for i, _ in rated], dtype=pl.Int32),
        "label": pl.Series([int(IDS[c]) for _, c in rated], dtype=pl.Int32),
        "class_index": pl.Series([c for _, c in rated], dtype=pl.Int16),
        "score": pl.Series([float(positive[i, c]) for i, c in rated], dtype=pl.Float32),
    }).write_parquet(tmp_path / "truth.parquet")
    return tmp_path


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def evaluate_json(world, csv, k):
    res = run("evaluate", csv, "--truth", world / "truth.parquet", "--k", k, "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_end_to_end_perfect_predictions_score_one(world):
    out = world / "sub.csv"
    res = run("topk", world / "perfect.npy", "--out", out, "--k", 50)
    assert res.exit_code == 0, res.output
    assert run("validate", out, "--k", 50).exit_code == 0
    result = evaluate_json(world, out, 50)
    assert result["map"] == 1.0 and result["k"] == 50
    assert result["classes"] == len(result["per_class"]) > 100
    cut = evaluate_json(world, out, 1)  # a file longer than k is cut to k, not refused
    assert cut["k"] == 1 and cut["map"] < 1.0
    lines = out.read_text().splitlines()
    assert lines[0] == "Class,Segments" and len(lines) == 1001
    assert all(len(line.split(",")[1].split(" ")) == 50 for line in lines[1:])


def test_ensemble_and_noise(world):
    noise, both = world / "noise.csv", world / "both.csv"
    assert run("topk", world / "noise.npy", "--out", noise, "--k", 30).exit_code == 0
    res = run("topk", world / "perfect.npy", world / "noise.npy", "--out", both, "--k", 30,
              "--seed", 3)
    assert res.exit_code == 0, res.output
    noise_map = evaluate_json(world, noise, 30)["map"]
    both_map = evaluate_json(world, both, 30)["map"]
    assert noise_map < 0.5 < both_map  # averaging with a perfect model helps a lot


def one_line_error(res, *needles):
    assert res.exit_code == 1
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.output
    assert "Traceback" not in res.output
    for needle in needles:
        assert needle in lines[0]


def test_topk_refusals_leave_no_output(world):
    out = world / "sub.csv"
    vids = [f"x{i}" for i in range(10)]
    write_predictions(world / "other.npy", np.zeros((10, 1000)), vids, [0] * 10)
    np.save(world / "f32.npy", np.zeros((3, 1000), np.float32))
    np.save(world / "lonely.npy", np.zeros((3, 1000), np.uint16))
    one_line_error(run("topk", world / "perfect.npy", world / "other.npy", "--out", out), "differs")
    one_line_error(run("topk", world / "f32.npy", "--out", out), "dtype")
    one_line_error(run("topk", world / "lonely.npy", "--out", out), "missing segment table")
    one_line_error(run("topk", world / "perfect.npy", "--out", out, "--k", 0), "at least 1")
    big = np.full((10, 1000), 10_000, np.uint16)
    np.save(world / "big.npy", big)
    (world / "big.segments.parquet").write_bytes((world / "other.segments.parquet").read_bytes())
    one_line_error(run("topk", world / "big.npy", "--out", out), "above 9999")
    one_line_error(run("topk", world / "absent.npy", "--out", out), "absent.npy")
    assert not out.exists()
    assert not [p for p in world.iterdir() if p.name.startswith(".")]


def test_validate_and_evaluate_refuse_bad_submissions(world):
    bad = world / "bad.csv"
    bad.write_text(f"Class,Segments\n{IDS[0]},a:5 a:5\n{IDS[1]},b:x\n")
    res = run("validate", bad)
    assert res.exit_code == 1
    assert "line 2" in res.output and "line 3" in res.output
    one_line_error(run("evaluate", bad, "--truth", world / "truth.parquet"), "line 2")
    one_line_error(run("evaluate", bad, "--truth", world / "absent"), "absent")


def test_cli_does_not_import_torch(world):
    out = world / "sub.csv"
    code = (
        "import sys; from predict.cli.main import main\n"
        "try:\n"
        f"    main(['topk', {str(world / 'perfect.npy')!r}, '--out', {str(out)!r}, '--k', '5'])\n"
        "except SystemExit: pass\n"
        "try:\n"
        f"    main(['evaluate', {str(out)!r}, '--truth', {str(world / 'truth.parquet')!r}])\n"
        "except SystemExit: pass\n"
        "print('torch' in sys.modules)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip().splitlines()[-1] == "False"
    assert out.exists()
