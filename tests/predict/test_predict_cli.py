"""`predict topk / validate / evaluate` end to end, their one-line errors, and no torch."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from ingest.vocab import segment_class_ids
from predict.cli.main import main
from predict.predictions import write_predictions
from tests.ingest.test_convert_resume import interrupt, start, wait_until
from tests.readonly import error_line, run_read_only, script

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


def test_topk_weights(world):
    """`--weights 1,1` writes the bytes of no weights; 1,6 leans towards the noise (the
    plain mean scores 1.0 here); a weight of 0 leaves a model out (the other alone)."""
    pair = (world / "perfect.npy", world / "noise.npy")
    files = {}
    for name, extra in [("plain", []), ("ones", ["--weights", "1,1"]),
                        ("lean", ["--weights", "1,6"]), ("zero", ["--weights", "0,5"]),
                        ("alone", None)]:
        files[name] = world / f"{name}.csv"
        args = (pair[1:] if extra is None else pair) + ("--out", files[name], "--k", 30)
        res = run("topk", *args, *(extra or []))
        assert res.exit_code == 0, res.output
    read = {name: f.read_bytes() for name, f in files.items()}
    assert read["ones"] == read["plain"] and read["zero"] == read["alone"]
    assert evaluate_json(world, files["lean"], 30)["map"] < evaluate_json(
        world, files["plain"], 30)["map"] == 1.0
    for weights, words in [("1", "1 weights for 2 prediction files"),
                           ("1,x", "integers separated by commas"),
                           ("0,0", "at least one above 0")]:
        one_line_error(run("topk", *pair, "--out", world / "w.csv", "--weights", weights),
                       words)
    assert not (world / "w.csv").exists()


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
    one_line_error(run("topk", world / "big.npy", "--out", out),
                   f"{world / 'big.npy'}: 10000 scores above 9999 (first in class index 0)")
    np.save(world / "big.npy", np.full((10, 1000), 30_000, np.uint16))  # mean 15,000
    one_line_error(run("topk", world / "other.npy", world / "big.npy", "--out", out),
                   f"{world / 'big.npy'}: 10000 scores above 9999 in the ensemble mean")
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


def write_sidecar(path, vids, starts):
    np.save(path, np.zeros((len(vids), 1000), np.uint16))
    pl.DataFrame({"video_id": vids, "start_time": pl.Series(starts, dtype=pl.Int32)}).write_parquet(
        path.with_name(path.name.removesuffix(".npy") + ".segments.parquet"))


@pytest.mark.parametrize("vids,starts,row,words", [
    (["a", "b", "a"], [5, 5, 5], 2, "repeats row 0"),
    (["a", "b:1", "c"], [5, 5, 5], 1, "colon"),
    (["a", "b", "c d"], [5, 5, 5], 2, "space"),
    (["a,b", "b"], [5, 5], 0, "comma"),
    (["a", ""], [5, 5], 1, "empty video id"),
    (["a", "b"], [5, -10], 1, "negative"),
])
def test_topk_refuses_a_bad_segment_table_up_front(tmp_path, vids, starts, row, words):
    """(Before: exit 0 and a submission that `predict validate` rejects.)"""
    write_sidecar(tmp_path / "m.npy", vids, starts)
    out = tmp_path / "sub.csv"
    one_line_error(run("topk", tmp_path / "m.npy", "--out", out, "--k", 1),
                   f"m.segments.parquet: row {row}: ", words)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_topk_names_a_file_that_is_not_npy(world):
    (world / "text.npy").write_text("video,score\n")
    (world / "text.segments.parquet").write_bytes((world / "perfect.segments.parquet").read_bytes())
    one_line_error(run("topk", world / "text.npy", "--out", world / "o.csv"),
                   "text.npy: not a NumPy .npy file")


def test_topk_into_a_missing_folder_names_the_given_path(world):
    out = world / "missing_dir" / "o.csv"
    res = run("topk", world / "perfect.npy", "--out", out, "--k", 5)
    one_line_error(res, f"{out}: its folder {world / 'missing_dir'} does not exist")
    assert ".tmp" not in res.output and not (world / "missing_dir").exists()


def test_writer_failure_names_the_given_path(world, monkeypatch):
    """A failure after the up-front check (the folder removed meanwhile) still names --out."""
    from predict.submission import SubmissionError, write_submission

    out = world / "gone" / "o.csv"
    with pytest.raises(SubmissionError, match=f"^{out}: cannot write") as err:
        write_submission(out, np.zeros((1000, 2), np.int32),
                         pl.DataFrame({"video_id": ["a"], "start_time": pl.Series([5], dtype=pl.Int32)}))
    assert ".tmp" not in str(err.value)


@pytest.mark.parametrize("command", ["topk", "validate", "evaluate"])
def test_k_below_one_refused_by_every_command(world, command):
    target = world / "perfect.npy" if command == "topk" else world / "sub.csv"
    (world / "sub.csv").write_text("Class,Segments\n")
    extra = {"topk": ["--out", world / "o.csv"], "validate": [],
             "evaluate": ["--truth", world / "truth.parquet"]}[command]
    for k in (0, -3):
        one_line_error(run(command, target, *extra, "--k", k), f"--k must be at least 1, got {k}")


def rewrite_truth(world, **changes):
    truth = pl.read_parquet(world / "truth.parquet").with_columns(**changes)
    path = world / "other_truth.parquet"
    truth.write_parquet(path)
    return path


def test_evaluate_refuses_truth_without_positives(world):
    out = world / "sub.csv"
    assert run("topk", world / "perfect.npy", "--out", out, "--k", 20).exit_code == 0
    no_positive = rewrite_truth(world, score=pl.lit(0.0, pl.Float32))
    one_line_error(run("evaluate", out, "--truth", no_positive), "no positive ratings")
    empty = world / "empty.parquet"
    pl.read_parquet(world / "truth.parquet").head(0).write_parquet(empty)
    one_line_error(run("evaluate", out, "--truth", empty), "no positive ratings (score > 0.5) among its 0")


def test_evaluate_refuses_another_splits_truth(world):
    """Test predictions scored against the validate store: no video in common."""
    out = world / "sub.csv"
    assert run("topk", world / "perfect.npy", "--out", out, "--k", 20).exit_code == 0
    other = rewrite_truth(world, video_id=pl.lit("val_") + pl.col("video_id"))
    one_line_error(run("evaluate", out, "--truth", other), "none of its video ids appears in",
                   "another split")


@pytest.mark.parametrize("text", ["Class,Segments\n", "Class,Segments",
                                  f"Class,Segments\n{IDS[0]},\n{IDS[5]},\n"])
def test_evaluate_says_a_submission_without_entries_has_none(world, text):
    """(Before: "none of its video ids appears in ...: predictions for another split?")"""
    (world / "empty.csv").write_text(text)
    one_line_error(run("evaluate", world / "empty.csv", "--truth", world / "truth.parquet"),
                   f"{world / 'empty.csv'}: the submission has no entries (no class row lists "
                   "a segment): nothing to score")


def test_evaluate_warns_when_nothing_submitted_is_rated(world):
    """Videos in common but no submitted (segment, class) rated: a warning, MAP 0."""
    out = world / "sub.csv"
    assert run("topk", world / "perfect.npy", "--out", out, "--k", 20).exit_code == 0
    shifted = rewrite_truth(world, start_time=pl.col("start_time") + 1)  # never submitted
    res = CliRunner().invoke(main, ["evaluate", str(out), "--truth", str(shifted)])
    assert res.exit_code == 0, res.output
    assert "Warning: none of the first 100000 entries" in res.stderr
    assert res.stdout.startswith("MAP@100000 = 0.000000 over ")


def test_evaluate_shows_progress_on_a_large_file(world, monkeypatch):
    from predict import submission

    out = world / "sub.csv"
    assert run("topk", world / "perfect.npy", "--out", out, "--k", 20).exit_code == 0
    monkeypatch.setattr(submission, "PROGRESS_MIN_BYTES", 1)
    res = CliRunner().invoke(main, ["evaluate", str(out), "--truth", str(world / "truth.parquet")])
    assert res.exit_code == 0, res.output
    assert "evaluate: 100%" in res.stderr and res.stdout.startswith("MAP@100000 = ")


def test_validate_prints_problems_in_file_order_and_counts_them(world):
    bad = world / "bad.csv"
    lines = ["Class,Segments"] + [f"{IDS[i]},a:5  b:5" for i in range(120)]
    bad.write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(main, ["validate", str(bad)])
    assert res.exit_code == 1
    err = res.stderr.strip().splitlines()
    assert [int(e.split("line ")[1].split(":")[0]) for e in err[:50]] == list(range(2, 52))
    assert "two spaces in a row after entry 1 ('a:5')" in err[0]
    assert err[50] == f"{bad}: 70 more problems not shown"
    assert err[51] == f"Error: {bad}: 120 problems, the first on line 2"
    assert len(err) == 52 and "at least" not in res.stderr


def test_validate_says_at_least_only_when_it_stopped(world):
    bad = world / "bad.csv"
    bad.write_text("Class;Segments\nx\n")
    one_line_error(run("validate", bad), "line 1: header", "checking stopped there")
    one = world / "one.csv"
    one.write_text(f"Class,Segments\n{IDS[0]},a:5 \n")
    one_line_error(run("validate", one), "line 2: class", "a space after the last entry")


def test_topk_lets_waiting_threads_sleep_unless_told_otherwise(world, monkeypatch):
    """OMP_WAIT_POLICY=PASSIVE for numba's OpenMP threads (spinning made the top-k 5-8x
    slower beside another busy process), a user's own setting kept."""
    import os

    from predict.cli.topk import OMP_WAIT_POLICY

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert run("topk", world / "perfect.npy", "--out", world / "a.csv", "--k", 3).exit_code == 0
    assert os.environ["OMP_WAIT_POLICY"] == OMP_WAIT_POLICY == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert run("topk", world / "perfect.npy", "--out", world / "b.csv", "--k", 3).exit_code == 0
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


@pytest.mark.parametrize("target", ["perfect.npy", "perfect.segments.parquet", "noise.npy",
                                    "noise.segments.parquet", "link.csv", "sub/../noise.npy"])
def test_topk_refuses_an_output_that_is_an_input(world, target):
    """(Before: the input was replaced by the CSV, exit 0.)"""
    (world / "link.csv").symlink_to(world / "noise.npy")
    (world / "sub").mkdir()
    before = {p.name: p.read_bytes() for p in world.iterdir() if p.is_file()}
    res = run("topk", world / "perfect.npy", world / "noise.npy", "--out", world / target)
    one_line_error(res, f"{world / target}: is one of the inputs (", "give another --out")
    assert {p.name: p.read_bytes() for p in world.iterdir() if p.is_file()} == before


def test_topk_replaces_a_submission_but_no_other_file(world, monkeypatch):
    """(Before: `--out STORE/manifest.json` replaced a store's manifest by the CSV.)"""
    out = world / "sub.csv"
    assert run("topk", world / "perfect.npy", "--out", out, "--k", 5).exit_code == 0
    res = run("topk", world / "noise.npy", "--out", out, "--k", 5)  # an earlier submission
    assert res.exit_code == 0, res.output
    (world / "manifest.json").write_text('{"format_version": 3}')
    one_line_error(run("topk", world / "perfect.npy", "--out", world / "manifest.json"),
                   f"{world / 'manifest.json'}: exists and is not a submission (it does not "
                   "start with 'Class,Segments'); remove it or give another --out")
    assert (world / "manifest.json").read_text() == '{"format_version": 3}'
    monkeypatch.chdir(world)
    for name in ("", "missing/"):
        one_line_error(run("topk", "perfect.npy", "--out", name),
                       f"--out {name!r}: give the submission's file name")
    assert not (world / "missing").exists()


def test_topk_warns_of_a_file_given_twice(world, monkeypatch):
    monkeypatch.chdir(world)
    res = run("topk", "perfect.npy", world / "perfect.npy", "noise.npy", "--out", "o.csv",
              "--k", 5)
    assert res.exit_code == 0, res.output
    assert res.stderr.splitlines()[0] == (f"warning: {world / 'perfect.npy'} is given twice (also "
                                          "as perfect.npy): its scores count twice in the mean")
    assert (world / "o.csv").is_file()


def test_topk_into_a_read_only_folder_is_the_real_error(world):
    ro = world / "ro"
    ro.mkdir()
    res = run_read_only(ro, [script("predict"), "topk", world / "perfect.npy", "--out",
                             ro / "o.csv", "--k", 5])
    assert error_line(res) == f"Error: {ro / 'o.csv'}: cannot write (read-only file system: {ro})"
    # past the up-front check, the writer's own error (not the clean-up's unlink) is raised
    code = ("import sys, numpy as np, polars as pl\n"
            "from predict.submission import SubmissionError, write_submission\n"
            "seg = pl.DataFrame({'video_id': ['a'], 'start_time': pl.Series([5], dtype=pl.Int32)})\n"
            "try:\n"
            "    write_submission(sys.argv[1], np.zeros((1000, 1), np.int32), seg)\n"
            "except SubmissionError as err:\n"
            "    print(err)\n")
    res = run_read_only(ro, [sys.executable, "-c", code, ro / "o.csv"])
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
    assert res.stdout.strip() == f"{ro / 'o.csv'}: cannot write (Read-only file system)"
    assert list(ro.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
def test_interrupt_while_importing(world):
    """Ctrl-C once numba is loaded, while the command line still imports: 130, one line.
    (Before: a KeyboardInterrupt traceback.)"""
    proc = start([script("predict"), "topk", str(world / "perfect.npy"), "--out",
                  str(world / "o.csv")])
    maps = Path(f"/proc/{proc.pid}/maps")
    wait_until(proc, lambda: "/numba/" in maps.read_text(), "loading numba")
    code, err = interrupt(proc)
    assert code == 130 and err == "Interrupted while starting; nothing was done.\n", err
    assert not (world / "o.csv").exists()
