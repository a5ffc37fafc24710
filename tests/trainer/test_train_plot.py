"""Training curves (trainer/plot.py): a valid PNG for two fake runs, one line per run and
metric, and the metrics log's rules (resumed steps, a cut last line, bad records)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.image import imread

from tests.readonly import error_line, run_read_only, script
from trainer.cli.main import main as train_main
from trainer.errors import TrainerError
from trainer.plot import draw_runs, plot_runs, read_metrics


def _write(run, records, tail=""):
    run.mkdir(parents=True)
    text = "".join(json.dumps(r) + "\n" for r in records) + tail
    (run / "metrics.jsonl").write_text(text)


def _fake_run(run, segment: bool):
    records = []
    for step in range(10, 101, 10):
        records.append({"step": step, "split": "train", "loss": 1.0 / step, "lr": 1e-4 * step,
                        "samples_per_s": 100.0})
        if step % 50 == 0:
            ev = {"step": step, "split": "eval", "loss": 2.0 / step}
            ev.update({"auc": 0.5 + step / 400} if segment else
                      {"recall": step / 200, "precision": 1 - step / 400})
            records.append(ev)
    _write(run, records)
    return records


def test_two_runs_make_a_png(tmp_path):
    _fake_run(tmp_path / "finetune", segment=True)
    _fake_run(tmp_path / "pretrain", segment=False)
    out = plot_runs([tmp_path / "finetune", tmp_path / "pretrain"], tmp_path / "curves.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(out)
    assert image.ndim == 3 and image.shape[0] > 400 and image.shape[1] > 600
    assert np.unique(image.reshape(-1, image.shape[2]), axis=0).shape[0] > 10  # not blank
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_one_line_per_run_and_metric(tmp_path):
    seg = _fake_run(tmp_path / "a" / "run", segment=True)
    _fake_run(tmp_path / "b" / "run", segment=False)
    runs = {"seg": read_metrics(tmp_path / "a" / "run"),
            "pre": read_metrics(tmp_path / "b" / "run")}
    train, evaluation, metric, rate = draw_runs(runs).axes
    assert [line.get_label() for line in train.get_lines()] == ["seg", "pre"]
    assert [line.get_label() for line in metric.get_lines()] == ["seg auc", "pre recall",
                                                                  "pre precision"]
    steps = [r["step"] for r in seg if r["split"] == "eval"]
    np.testing.assert_array_equal(evaluation.get_lines()[0].get_xdata(), steps)
    np.testing.assert_allclose(metric.get_lines()[0].get_ydata(), [0.625, 0.75])
    assert train.get_yscale() == "log" and metric.get_yscale() == "linear"
    assert len(rate.get_lines()) == 2
    # Two runs of the same directory name are told apart by their parents.
    plot_runs([tmp_path / "a" / "run", tmp_path / "b" / "run"], tmp_path / "c.png")


def test_resumed_steps_cut_line_and_nan(tmp_path):
    records = [
        {"step": 1, "split": "train", "loss": 0.9},
        {"step": 2, "split": "train", "loss": 0.8},
        {"step": 2, "split": "eval", "loss": float("nan"), "auc": float("nan")},
        {"step": 2, "split": "train", "loss": 0.7},  # logged again after a resume
        {"step": 3, "split": "train", "loss": 0.6},
    ]
    _write(tmp_path / "run", records, tail='{"step": 4, "spl')
    got = read_metrics(tmp_path / "run")
    assert [(r["split"], r["step"], r["loss"]) for r in got if r["split"] == "train"] == [
        ("train", 1, 0.9), ("train", 2, 0.7), ("train", 3, 0.6)]
    assert math.isnan(got[0]["auc"])
    plot_runs([tmp_path / "run"], tmp_path / "x.png")  # NaN only: "no data yet" panels


@pytest.mark.parametrize("text, match", [
    ('{"step": 1, "split": "train", "loss": 1}\nnot json\n{"step": 2}\n', "line 2: not JSON"),
    ('{"step": 1, "split": "test", "loss": 1}\n', "line 1: not a metrics record"),
    ('[1, 2]\n', "line 1: not a metrics record"),
])
def test_bad_logs_are_one_line_errors(tmp_path, text, match):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text(text)
    with pytest.raises(TrainerError, match=match):
        plot_runs([tmp_path / "run"], tmp_path / "x.png")
    with pytest.raises(TrainerError, match="cannot read the metrics log"):
        plot_runs([tmp_path / "absent"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------- `train plot --out` refusals

def _plot(*args):
    return CliRunner().invoke(train_main, ["plot", *map(str, args)])


def _no_temporaries(root):
    return list(root.rglob(".*tmp-*")) == []


def _plot_run(tmp_path):
    run = tmp_path / "run"
    _fake_run(run, segment=True)
    (run / "config.json").write_text('{"recipe": "pretrain"}')
    return run


@pytest.mark.parametrize("out, message", [
    ("somedir", "somedir: is a directory; give the PNG's file name (such as somedir/curves.png)"),
    ("nodir/x/p.png", "nodir/x/p.png: its folder nodir/x does not exist"),
    ("afile/p.png", "afile/p.png: its folder afile is not a directory"),
])
def test_plot_refuses_an_output_it_cannot_write(tmp_path, monkeypatch, out, message):
    """(Before: a traceback, or the hidden temporary named, and `.NAME.tmp-PID` left.)"""
    monkeypatch.chdir(tmp_path)
    _plot_run(tmp_path)
    (tmp_path / "somedir").mkdir()
    (tmp_path / "afile").write_text("x")
    result = _plot("run", "--out", out)
    assert result.exit_code == 1 and result.output == f"Error: {message}\n", result.output
    assert _no_temporaries(tmp_path) and list((tmp_path / "somedir").iterdir()) == []


def test_plot_replaces_a_png_but_no_other_file(tmp_path):
    """(Before: `--out RUN/metrics.jsonl` replaced the run's log by the PNG, exit 0.)"""
    run = _plot_run(tmp_path)
    log = (run / "metrics.jsonl").read_bytes()
    result = _plot(run, "--out", run / "metrics.jsonl")
    assert result.exit_code == 1 and result.output == (
        f"Error: {run / 'metrics.jsonl'}: exists and is not a PNG image; remove it or give "
        "another --out\n")
    assert (run / "metrics.jsonl").read_bytes() == log and _no_temporaries(tmp_path)
    for _ in range(2):  # an earlier plot is replaced
        assert _plot(run, "--out", tmp_path / "c.png").exit_code == 0
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_into_a_read_only_folder(tmp_path):
    run = _plot_run(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    line = error_line(run_read_only(ro, [script("train"), "plot", run, "--out", ro / "p.png"],
                                    cwd=ro))
    assert line == f"Error: {ro / 'p.png'}: cannot write (read-only file system: {ro})"
    assert list(ro.iterdir()) == [] and _no_temporaries(tmp_path)


def test_plot_write_failing_late_names_the_output(tmp_path, monkeypatch):
    run = _plot_run(tmp_path)

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("trainer.plot.os.replace", full_disk)
    result = _plot(run, "--out", tmp_path / "p.png")
    assert result.output == f"Error: {tmp_path / 'p.png'}: cannot write (No space left on device)\n"
    assert _no_temporaries(tmp_path) and not (tmp_path / "p.png").exists()


def test_plot_interrupted_while_writing_leaves_no_temporary(tmp_path, monkeypatch):
    run = _plot_run(tmp_path)

    def interrupted(self, filename, **kw):
        Path(filename).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(FigureCanvasAgg, "print_png", interrupted)
    result = _plot(run, "--out", tmp_path / "p.png")
    assert result.exit_code == 130 and result.output == "Interrupted.\n", result.output
    assert _no_temporaries(tmp_path) and not (tmp_path / "p.png").exists()
