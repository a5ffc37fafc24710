"""Stochastic weight averaging (`--swa-from`, issue #23): the average is the hand average
of the saved checkpoints, its batch-norm statistics are recomputed, its state round-trips,
and best/ takes it when it evaluates better. Exact resume: test_train_recipes.py."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from torch import nn

from trainer.cli.main import main
from trainer.recipes import loop as loop_module
from trainer.registry import build
from trainer.swa import WeightAverage, recompute_batchnorm

FAST = ["--quiet", "--device", "cpu", "--threads", "1"]


def test_the_average_is_the_hand_average_of_the_saved_checkpoints(tmp_path, train_store,
                                                                     monkeypatch):
    saved = {}
    real = loop_module.save_checkpoint

    def recording(path, model, optimizer, scheduler, state, config, tensors=None):
        saved[state["step"]] = {k: v.detach().clone() for k, v in model.named_parameters()}
        return real(path, model, optimizer, scheduler, state, config, tensors=tensors)

    monkeypatch.setattr(loop_module, "save_checkpoint", recording)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "pretrain", "--store", str(train_store.path), "--model", "dbof-tiny", "--steps", "12",
        "--batch-size", "4", "--max-len", "8", "--checkpoint-every", "3", "--swa-from", "5",
        "--out", str(out)] + FAST)
    assert result.exit_code == 0, result.output
    assert sorted(saved) == [3, 6, 9, 12]
    extra = load_file(out / "last" / "extra.safetensors")
    assert int(extra["swa.count"]) == 3  # steps 6, 9, 12: the scheduled saves from step 5
    for name in saved[12]:
        hand = torch.stack([saved[s][name].double() for s in (6, 9, 12)]).sum(0)
        assert torch.equal(extra[f"swa.{name}"], hand), name


def test_weight_average_state_round_trips_and_averages():
    torch.manual_seed(0)
    model = build("nxvlad-tiny")
    avg = WeightAverage(model)
    snapshots = []
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        avg.update(model)
        snapshots.append({n: p.detach().clone() for n, p in model.named_parameters()})
    again = WeightAverage(model)
    again.load(avg.tensors())
    assert again.count == 3
    averaged = again.averaged(model)
    for name, p in averaged.named_parameters():
        want = (sum(s[name].double() for s in snapshots) / 3).float()
        assert torch.equal(p, want), name


def test_batchnorm_statistics_are_recomputed_as_a_cumulative_mean():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    model[1].running_mean.fill_(100.0)
    batches = [torch.randn(8, 4) * (k + 1) for k in range(3)]
    recompute_batchnorm(model, batches, lambda m, b: m(b))
    hidden = [model[0](b).detach() for b in batches]
    torch.testing.assert_close(model[1].running_mean, torch.stack([h.mean(0) for h in hidden])
                               .mean(0))
    torch.testing.assert_close(model[1].running_var, torch.stack([h.var(0) for h in hidden])
                               .mean(0))
    assert not model.training and model[1].momentum == 0.1


@pytest.mark.slow
def test_best_is_the_average_when_it_evaluates_better(tmp_path, validate_store):
    fold = str(int(validate_store.videos["fold"][0]))
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [
        "pretrain", "--store", str(validate_store.path), "--model", "dbof-tiny", "--steps",
        "30", "--batch-size", "8", "--max-len", "12", "--eval-every", "10", "--swa-from", "10",
        "--fold", fold, "--out", str(out)] + FAST)
    assert result.exit_code == 0, result.output
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in line]
    assert all("swa_loss" in r for r in evals)
    best = json.loads((out / "best" / "state.json").read_text())["state"]
    scores = [(r["loss"], False) for r in evals] + [(r["swa_loss"], True) for r in evals]
    lowest, is_average = min(scores)
    assert best["metrics"]["loss"] == pytest.approx(lowest)
    assert ("swa" in best) == is_average
