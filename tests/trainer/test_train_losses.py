"""Eq. 1 and Eq. 2 (trainer/losses.py) against a direct numpy computation, written from the
paper's formulas: per-example mined mean, zero mined negatives, the valid mask."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from trainer.layers.moe import MoEOutput
from trainer.losses import (
    REFERENCE_CODE_WEIGHTS,
    SegmentLossWeights,
    segment_loss,
    video_loss,
)


def _probs(seed: int, B: int, C: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.01, 0.99, (B, C))


def _out(p: np.ndarray) -> MoEOutput:
    t = torch.from_numpy(p)
    return MoEOutput(t.log(), torch.log1p(-t))


def _eq1(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Eq. 1 per example, one loop iteration per entry."""
    out = np.zeros(p.shape[0])
    for b in range(p.shape[0]):
        terms = [
            -(y[b, c] * math.log(p[b, c]) + (1 - y[b, c]) * math.log(1 - p[b, c]))
            for c in range(p.shape[1])
        ]
        out[b] = sum(terms) / len(terms)
    return out


def _eq2(p, cls, score, negatives, pos=1.5, neg=1.0, mined=0.5) -> np.ndarray:
    """Eq. 2 as printed, per example, with loops."""
    out = np.zeros(p.shape[0])
    for b in range(p.shape[0]):
        pj, y = p[b, cls[b]], score[b]
        rated = -(pos * y * math.log(pj) + (1 - y) * neg * math.log(1 - pj))
        ms = [-math.log(1 - p[b, c]) for c in range(p.shape[1]) if negatives[b, c]]
        out[b] = rated + (mined * sum(ms) / len(ms) if ms else 0.0)
    return out


def _segment_batch(seed: int, B=6, C=9):
    rng = np.random.default_rng(seed)
    p = _probs(seed, B, C)
    cls = rng.integers(0, C, B)
    score = (rng.random(B) < 0.5).astype(np.float64)
    score[:2] = (1.0, 0.0)  # both kinds present
    # very different mined counts per example, and one example with none
    negatives = rng.random((B, C)) < rng.uniform(0.1, 0.9, (B, 1))
    negatives[1] = False
    negatives[2] = True
    return p, cls, score, negatives


def _args(p, cls, score, negatives):
    return _out(p), torch.from_numpy(cls), torch.from_numpy(score), torch.from_numpy(negatives)


@pytest.mark.parametrize("seed", range(3))
def test_video_loss_is_eq1(seed):
    p = _probs(seed, 5, 7)
    y = np.random.default_rng(seed + 10).random((5, 7)) < 0.3
    got = video_loss(_out(p), torch.from_numpy(y))
    np.testing.assert_allclose(got.item(), _eq1(p, y).mean(), rtol=1e-12)
    per = video_loss(_out(p), torch.from_numpy(y), reduction="none")
    np.testing.assert_allclose(per.numpy(), _eq1(p, y), rtol=1e-12)
    with pytest.raises(ValueError, match="reduction"):
        video_loss(_out(p), torch.from_numpy(y), reduction="sum")


@pytest.mark.parametrize("seed", range(3))
def test_segment_loss_is_eq2_as_printed(seed):
    p, cls, score, negatives = _segment_batch(seed)
    args = _args(p, cls, score, negatives)
    want = _eq2(p, cls, score, negatives)
    np.testing.assert_allclose(segment_loss(*args, reduction="none").numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(segment_loss(*args).item(), want.mean(), rtol=1e-12)
    # The per-example mean is not the batch's mean over mined entries (the reference code's).
    pooled = -np.log(1 - p)[negatives].mean()
    rated = _eq2(p, cls, score, np.zeros_like(negatives)).mean()
    assert abs((rated + 0.5 * pooled) - want.mean()) > 1e-3


def test_example_without_mined_negatives_has_only_its_rated_term():
    p, cls, score, negatives = _segment_batch(0)
    per = segment_loss(*_args(p, cls, score, negatives), reduction="none").numpy()
    pj = p[1, cls[1]]  # example 1: score 0, no mined negatives
    np.testing.assert_allclose(per[1], -math.log(1 - pj), rtol=1e-12)
    no_mined = segment_loss(*_args(p, cls, score, negatives)[:3])
    want = _eq2(p, cls, score, np.zeros_like(negatives)).mean()
    np.testing.assert_allclose(no_mined.item(), want, rtol=1e-12)


def test_weights_are_the_papers_and_configurable():
    assert SegmentLossWeights() == SegmentLossWeights(positive=1.5, rated_negative=1.0, mined=0.5)
    assert REFERENCE_CODE_WEIGHTS.rated_negative == 0.5
    p, cls, score, negatives = _segment_batch(4)
    w = SegmentLossWeights(positive=2.0, rated_negative=0.25, mined=3.0)
    got = segment_loss(*_args(p, cls, score, negatives), weights=w)
    want = _eq2(p, cls, score, negatives, pos=2.0, neg=0.25, mined=3.0).mean()
    np.testing.assert_allclose(got.item(), want, rtol=1e-12)


def test_flagged_rows_are_ignored_even_when_not_finite():
    p, cls, score, negatives = _segment_batch(5)
    valid = np.array([True, True, False, True, False, True])
    out, c, s, n = _args(p, cls, score, negatives)
    poisoned = MoEOutput(out.log_p.clone(), out.log_not_p.clone())
    poisoned.log_p[2] = float("nan")
    poisoned.log_not_p[4] = float("-inf")
    got = segment_loss(poisoned, c, s, n, valid=torch.from_numpy(valid))
    want = _eq2(p, cls, score, negatives)[valid].mean()
    np.testing.assert_allclose(got.item(), want, rtol=1e-12)
    y = np.random.default_rng(1).random(p.shape) < 0.3
    got = video_loss(poisoned, torch.from_numpy(y), valid=torch.from_numpy(valid))
    np.testing.assert_allclose(got.item(), _eq1(p, y)[valid].mean(), rtol=1e-12)


def test_float_weights_and_an_all_invalid_batch():
    p, cls, score, negatives = _segment_batch(6)
    w = np.array([1.0, 0.0, 2.0, 0.5, 0.0, 1.0])
    got = segment_loss(*_args(p, cls, score, negatives), valid=torch.from_numpy(w))
    per = _eq2(p, cls, score, negatives)
    np.testing.assert_allclose(got.item(), (w * per).sum() / w.sum(), rtol=1e-12)
    none = torch.zeros(6, dtype=torch.bool)
    assert segment_loss(*_args(p, cls, score, negatives), valid=none).item() == 0.0


def test_gradient_reaches_only_valid_rows():
    p, cls, score, negatives = _segment_batch(7)
    out, c, s, n = _args(p, cls, score, negatives)
    log_p = out.log_p.clone().requires_grad_(True)
    log_not_p = out.log_not_p.clone().requires_grad_(True)
    valid = torch.tensor([True, False, True, True, True, False])
    segment_loss(MoEOutput(log_p, log_not_p), c, s, n, valid=valid).backward()
    for g in (log_p.grad, log_not_p.grad):
        assert torch.all(g[~valid] == 0) and torch.isfinite(g).all()
    reached = log_p.grad.abs().sum(dim=1) + log_not_p.grad.abs().sum(dim=1)
    assert (reached[valid] > 0).all()
