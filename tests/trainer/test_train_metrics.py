"""Evaluation metrics (trainer/metrics.py) against brute-force definitions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.layers.moe import MoEOutput
from trainer.losses import video_loss
from trainer.metrics import (
    SegmentEvaluation,
    VideoEvaluation,
    average_ranks,
    log_loss,
    recall_precision,
    roc_auc,
)

try:
    from sklearn.metrics import roc_auc_score
except ImportError:  # not a dependency; compared against only where present
    roc_auc_score = None


def _pairwise_auc(p, y) -> float:
    """Every (positive, negative) pair: 1 if the positive is higher, 1/2 if tied."""
    pos, neg = p[y > 0.5], p[y <= 0.5]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def _tied_scores(seed: int, n: int, levels: int):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.float64)
    # few distinct values (many ties), mildly informative
    p = np.round(np.clip(rng.random(n) * 0.7 + 0.3 * y, 0, 1) * levels) / levels
    return p, y


@pytest.mark.parametrize("seed, n, levels", [(0, 50, 4), (1, 200, 10), (2, 300, 1000), (3, 7, 1)])
def test_auc_equals_pairwise_count_with_ties(seed, n, levels):
    p, y = _tied_scores(seed, n, levels)
    assert len(np.unique(p)) < n  # there are ties
    auc = roc_auc(p, y)
    assert auc == pytest.approx(_pairwise_auc(p, y), abs=1e-12)
    if roc_auc_score is not None:
        assert auc == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_auc_special_cases():
    y = np.array([0, 0, 1, 1])
    assert roc_auc([0.1, 0.2, 0.3, 0.4], y) == 1.0
    assert roc_auc([0.4, 0.3, 0.2, 0.1], y) == 0.0
    assert roc_auc([0.5] * 4, y) == 0.5
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1]))
    assert roc_auc(torch.tensor([0.1, 0.9, 0.3]), torch.tensor([0.0, 1.0, 0.0])) == 1.0
    with pytest.raises(ValueError, match="labels"):
        roc_auc([0.1, 0.2], [1])
    with pytest.raises(ValueError, match="NaN"):
        roc_auc([0.1, float("nan")], [0, 1])


def test_average_ranks():
    x = np.array([3.0, 1.0, 3.0, 2.0, 3.0, 1.0])
    want = [sum(x < v) + (sum(x == v) + 1) / 2 for v in x]
    np.testing.assert_array_equal(average_ranks(x), want)


def test_log_loss_is_eq1_and_agrees_with_the_training_loss():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, (4, 6))
    y = (rng.random((4, 6)) < 0.4).astype(np.float64)
    direct = np.mean([-(yy * math.log(pp) + (1 - yy) * math.log(1 - pp))
                      for pp, yy in zip(p.ravel(), y.ravel())])
    assert log_loss(p, y) == pytest.approx(direct, rel=1e-12)
    t = torch.from_numpy(p)
    torch_loss = video_loss(MoEOutput(t.log(), torch.log1p(-t)), torch.from_numpy(y))
    assert log_loss(p, y) == pytest.approx(torch_loss.item(), rel=1e-12)
    # p of exactly 0 or 1: clipped, finite
    extreme = log_loss([[0.0, 1.0]], [[1.0, 0.0]])
    assert math.isfinite(extreme) and extreme == pytest.approx(-math.log(1e-7), rel=1e-6)


def test_recall_precision_at_one_half():
    p = np.array([[0.9, 0.5, 0.51, 0.1], [0.7, 0.2, 0.6, 0.49]])
    y = np.array([[1, 1, 0, 0], [1, 0, 1, 1]])
    # predicted (p > 0.5): (0,0) (0,2) (1,0) (1,2); positives: (0,0) (0,1) (1,0) (1,2) (1,3)
    recall, precision = recall_precision(p, y)
    assert (recall, precision) == (3 / 5, 3 / 4)
    assert math.isnan(recall_precision([[0.1]], [[0]])[0])
    assert math.isnan(recall_precision([[0.1]], [[1]])[1])
    with pytest.raises(ValueError):
        recall_precision(p, y[:, :2])


def test_segment_evaluation_streams_and_drops_flagged_rows():
    p, y = _tied_scores(5, 120, 20)
    losses = np.random.default_rng(5).random(120)
    valid = np.random.default_rng(6).random(120) < 0.8
    ev = SegmentEvaluation()
    for lo in range(0, 120, 25):
        hi = lo + 25
        ev.update(torch.from_numpy(p[lo:hi]), y[lo:hi], losses[lo:hi], valid=valid[lo:hi])
    got = ev.compute()
    assert got["segments"] == valid.sum() and got["positives"] == int(y[valid].sum())
    assert got["auc"] == pytest.approx(_pairwise_auc(p[valid], y[valid]), abs=1e-12)
    assert got["loss"] == pytest.approx(losses[valid].mean(), rel=1e-12)
    empty = SegmentEvaluation().compute()
    assert empty["segments"] == 0 and math.isnan(empty["loss"]) and math.isnan(empty["auc"])


def test_video_evaluation_streams_counts():
    rng = np.random.default_rng(7)
    p = rng.random((40, 30))
    y = (rng.random((40, 30)) < 0.1 + 0.5 * p).astype(np.float32)
    valid = rng.random(40) < 0.75
    per_example = rng.random(40)
    with_losses, from_probs = VideoEvaluation(), VideoEvaluation()
    for lo in range(0, 40, 9):
        s = slice(lo, lo + 9)
        with_losses.update(p[s], y[s], per_example[s], valid=valid[s])
        from_probs.update(p[s], y[s], valid=valid[s])
    got = with_losses.compute()
    recall, precision = recall_precision(p[valid], y[valid])
    assert (got["recall"], got["precision"], got["videos"]) == (recall, precision, valid.sum())
    assert got["loss"] == pytest.approx(per_example[valid].mean(), rel=1e-12)
    assert from_probs.compute()["loss"] == pytest.approx(log_loss(p[valid], y[valid]), rel=1e-12)
