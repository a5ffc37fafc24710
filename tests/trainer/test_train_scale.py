"""What a run at the real dataset's size needs (issue #21): a bounded evaluation subset,
evaluation shared by the ranks and merged exactly, a save at least every few minutes of
work, the gradient norm in the log, and no per-step CPU-GPU sync."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from trainer.cli.main import main
from trainer.data import Loader, LoaderConfig, StoreIndex, eval_config
from trainer.metrics import SegmentEvaluation, VideoEvaluation
from trainer.recipes import loop as loop_module

FAST = ["--quiet", "--device", "cpu", "--threads", "1"]


@pytest.fixture(scope="module")
def vindex(validate_store) -> StoreIndex:
    return StoreIndex.build(validate_store.path)


def _videos(loader: Loader) -> set[int]:
    ix = loader.index
    rows = loader.samples
    return set((rows if loader.config.kind == "video" else ix.seg_video[rows]).tolist())


@pytest.mark.parametrize("kind", ["video", "segment"])
def test_max_videos_is_a_fixed_subset_of_the_fold(vindex, kind):
    base = eval_config(LoaderConfig(kind=kind, batch_size=4, max_len=8, threads=1))
    everything = _videos(Loader(vindex, base))
    limited = Loader(vindex, eval_config(base, max_videos=10))
    chosen = _videos(limited)
    assert len(chosen) == 10 and chosen < everything
    whole = set(Loader(vindex, base).samples.tolist())
    assert set(limited.samples.tolist()) <= whole  # every sample of a chosen video is kept
    again = [Loader(vindex, eval_config(base, max_videos=10, seed=s, world_size=2, rank=r))
             for s, r in ((7, 0), (3, 1))]
    assert all(_videos(a) == chosen for a in again)  # not the run's seed, not the rank
    assert _videos(Loader(vindex, eval_config(base, max_videos=len(everything)))) == everything
    assert np.all(np.diff(limited.samples) > 0)  # store order kept


def test_merged_evaluations_equal_one_evaluation():
    rng = np.random.default_rng(0)
    p, y = rng.random(300), rng.random(300) > 0.6
    loss = rng.random(300) * 1e3 + rng.random(300) * 1e-9
    one = SegmentEvaluation()
    one.update(p, y, loss)
    parts = [SegmentEvaluation() for _ in range(3)]
    for k, part in enumerate(parts):
        part.update(p[k::3], y[k::3], loss[k::3])
    assert SegmentEvaluation.merged([x.state() for x in parts]).compute() == one.compute()

    probs, labels = rng.random((50, 20)), rng.random((50, 20)) > 0.7
    video = VideoEvaluation()
    video.update(probs, labels)
    shares = [VideoEvaluation() for _ in range(2)]
    shares[0].update(probs[:17], labels[:17])
    shares[1].update(probs[17:], labels[17:])
    assert VideoEvaluation.merged([x.state() for x in shares]).compute() == video.compute()


def test_saves_at_the_first_log_step_after_the_minutes(tmp_path, train_store, monkeypatch):
    saved = []
    real = loop_module.save_checkpoint

    def recording(path, model, optimizer, scheduler, state, config, tensors=None):
        saved.append(state["step"])
        return real(path, model, optimizer, scheduler, state, config, tensors=tensors)

    monkeypatch.setattr(loop_module, "save_checkpoint", recording)
    args = ["pretrain", "--store", str(train_store.path), "--model", "dbof-tiny", "--steps", "6",
            "--batch-size", "4", "--max-len", "8", "--log-every", "2", "--eval-every", "100"]
    result = CliRunner().invoke(main, args + ["--out", str(tmp_path / "a"),
                                              "--checkpoint-minutes", "1e-9"] + FAST)
    assert result.exit_code == 0, result.output
    assert saved == [2, 4, 6]  # every log step: the minutes have always passed
    saved.clear()
    result = CliRunner().invoke(main, args + ["--out", str(tmp_path / "b")] + FAST)
    assert result.exit_code == 0, result.output
    assert saved == [6]  # by default (30 minutes) only at the end of this short run
    log = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["grad_norm"] > 0 for r in log)
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["loop"]["grad_clip"] == loop_module.GRAD_CLIP


@pytest.mark.gpu
def test_no_cpu_gpu_sync_per_training_step(tmp_path, validate_store):
    """The syncs of a run do not grow with its steps: 4 and 12 steps (one log, one save at
    the end) sync as often, counted by torch's sync debug mode."""

    def syncs(steps: int) -> int:
        args = ["pretrain", "--store", str(validate_store.path), "--model", "dbof-tiny",
                "--steps", str(steps), "--batch-size", "8", "--max-len", "20",
                "--log-every", "1000", "--eval-every", "1000", "--device", "cuda", "--quiet",
                "--out", str(tmp_path / f"run{steps}")]
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = CliRunner().invoke(main, args)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert result.exit_code == 0, result.output
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(12) == syncs(4)
