"""A mixture of NeXtVLADs through the real commands: `train pretrain --model mix-nxvlad-tiny`,
`train finetune --kind agnostic` from it, an aware run with the mixture as its context, the
refusal of a mixture as an aware segment encoder, and `predict segments` on the mixture runs
(their scores are the mixture's probabilities)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from predict.cli.main import main as predict_main
from predict.segments import load_run
from trainer.cli.main import main as train_main
from trainer.layers.branch_mixing import MixtureOutput
from trainer.models.mixture import MixtureEncoder, MixtureModel

CPU = ["--device", "cpu", "--threads", "1", "--quiet"]
pytestmark = pytest.mark.slow


def _invoke(main, args):
    return CliRunner().invoke(main, args + CPU)


def _ok(main, args):
    result = _invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _finetune_args(validate_store) -> list[str]:
    return ["--store", str(validate_store.path), "--fold", str(int(validate_store.videos["fold"][0])),
            "--steps", "3", "--batch-size", "8", "--eval-every", "3"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, validate_store) -> Path:
    """Pre-trained mix-nxvlad-tiny ("pre", fold held out) and nxvlad-tiny ("single"); an
    agnostic run of the mixture ("ag"); an aware run, mixture context + nxvlad segment ("aw")."""
    d = tmp_path_factory.mktemp("mixture")
    fold = str(int(validate_store.videos["fold"][0]))
    for name, model in (("pre", "mix-nxvlad-tiny"), ("single", "nxvlad-tiny")):
        _ok(train_main, ["pretrain", "--store", str(validate_store.path), "--model", model,
                         "--out", str(d / name), "--steps", "4", "--batch-size", "8",
                         "--max-len", "20", "--eval-every", "4", "--fold", fold])
    ft = _finetune_args(validate_store)
    _ok(train_main, ["finetune", "--kind", "agnostic", "--init", str(d / "pre"),
                     "--out", str(d / "ag")] + ft)
    _ok(train_main, ["finetune", "--kind", "aware", "--context", str(d / "pre"), "--segment",
                     str(d / "single"), "--out", str(d / "aw"), "--max-len", "16"] + ft)
    return d


def test_runs_are_mixtures_and_train_finitely(runs):
    config = json.loads((runs / "pre" / "config.json").read_text())
    assert config["model_name"] == "mix-nxvlad-tiny" and config["model"]["class"] == "MixtureConfig"
    for name, metric in (("pre", "recall"), ("ag", "auc"), ("aw", "auc")):
        log = _log(runs / name)
        assert all(np.isfinite(r["loss"]) for r in log), name
        evals = [r for r in log if r["split"] == "eval"]
        assert evals and metric in evals[-1], name
    model, kind, _ = load_run(str(runs / "ag"))
    assert isinstance(model, MixtureModel) and kind == "video"
    aware, kind, _ = load_run(str(runs / "aw"))
    assert isinstance(aware.context, MixtureEncoder) and kind == "aware"


def test_a_mixture_as_aware_segment_encoder_is_one_line(tmp_path, runs, validate_store):
    result = _invoke(train_main, ["finetune", "--kind", "aware", "--context", str(runs / "single"),
                                  "--segment", str(runs / "pre"), "--out", str(tmp_path / "no")]
                     + _finetune_args(validate_store))
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "segment encoder of a context-aware model" in lines[0]
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize("name", ["ag", "aw"])
def test_predict_segments_scores_are_the_mixture_probabilities(tmp_path, runs, testset_store,
                                                               name):
    _ok(predict_main, ["segments", "--store", str(testset_store.path), "--model",
                       str(runs / name), "--out", str(tmp_path / name), "--batch-size", "64"])
    scores = np.load(tmp_path / f"{name}.npy")
    cand = testset_store.candidates
    assert scores.dtype == np.uint16 and scores.shape == (cand.height, 1000)
    if name == "aw":  # the aware path is tested against direct scores in tests/predict
        assert scores.std() > 0
        return
    model, _, _ = load_run(str(runs / name))
    rows = np.arange(0, cand.height, max(1, cand.height // 40))
    with torch.no_grad():
        out = model(torch.from_numpy(testset_store.candidate_windows(rows)), None)
    assert isinstance(out, MixtureOutput)
    assert np.abs(scores[rows] / 9999.0 - out.probs().numpy()).max() <= 0.5 / 9999 + 1e-4
