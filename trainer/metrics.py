"""Evaluation metrics of the paper's tables, in numpy (no torch import; torch tensors are
accepted, on any device, and copied to the host).

- Segment classifiers (Tables 3-4): ROC AUC over the **rated** labels only (the caller
  passes the rated (probability, score) pairs; mined negatives are not labels) and the
  Eq. 2 loss.
- Video-level models (Tables 1-2): the Eq. 1 log loss, and recall and precision of the
  positive labels at a 0.5 cut-off (an entry is predicted positive when p > 0.5).

`roc_auc` is exact: the Mann-Whitney statistic with tied probabilities given their
average rank (a tie between a positive and a negative counts 1/2), O(n log n).
Undefined values (AUC with one class only, recall without positives, precision without
predicted positives) are NaN.

`SegmentEvaluation` and `VideoEvaluation` stream an evaluation over many batches:
`update(...)` per batch, `compute()` at the end. Under DDP each rank evaluates its share;
`state()` is what a rank holds (numpy arrays and integers, picklable) and `merged(states)`
the evaluation of all of them: the same numbers as one process that saw every example
(losses are summed with `math.fsum`, exactly rounded whatever the order).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

# Paper Tables 1-2: recall and precision of the positive labels at a 0.5 cut-off.
THRESHOLD = 0.5
# Probabilities are clipped to [eps, 1 − eps] in `log_loss` (p = 0 or 1 in float32).
LOG_LOSS_EPS = 1e-7


def _numpy(x: Any, dtype=np.float64) -> np.ndarray:
    """A numpy array of `x` (numpy, list, or a torch tensor on any device)."""
    if hasattr(x, "detach"):  # a torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of `x (n,)`, tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def roc_auc(probs: Any, labels: Any) -> float:
    """Area under the ROC curve of `probs (n,)` for `labels (n,)` (positive: > 0.5).

    = P(p_pos > p_neg) + 1/2 P(p_pos = p_neg) over all (positive, negative) pairs; NaN
    when one class is absent.
    """
    p, y = _numpy(probs).ravel(), _numpy(labels).ravel() > 0.5
    if p.shape != y.shape:
        raise ValueError(f"{p.size} probabilities but {y.size} labels")
    if np.isnan(p).any():
        raise ValueError("NaN among the probabilities")
    positives = int(y.sum())
    negatives = len(y) - positives
    if positives == 0 or negatives == 0:
        return float("nan")
    rank_sum = average_ranks(p)[y].sum()
    return float((rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives))


def _log_loss_per_example(p: np.ndarray, y: np.ndarray, eps: float) -> np.ndarray:
    """`(B, C)` → `(B,)` Eq. 1 per example, p clipped to [eps, 1 − eps]."""
    p = np.clip(p, eps, 1.0 - eps)
    return -(y * np.log(p) + (1.0 - y) * np.log1p(-p)).mean(axis=-1)


def log_loss(probs: Any, labels: Any, eps: float = LOG_LOSS_EPS) -> float:
    """Eq. 1 from probabilities: mean binary cross-entropy of `probs (B, C)` against
    multi-hot `labels (B, C)`, p clipped to [eps, 1 − eps] (the training loss works in log
    space instead and needs no clipping)."""
    return float(_log_loss_per_example(_numpy(probs), _numpy(labels), eps).mean())


def _counts(probs: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """[true positives, false positives, false negatives] at p > threshold."""
    predicted, positive = probs > threshold, labels > 0.5
    tp = np.count_nonzero(predicted & positive)
    return np.array([tp, np.count_nonzero(predicted) - tp, np.count_nonzero(positive) - tp])


def _recall_precision(counts: np.ndarray) -> tuple[float, float]:
    tp, fp, fn = (int(c) for c in counts)
    recall = tp / (tp + fn) if tp + fn else float("nan")
    precision = tp / (tp + fp) if tp + fp else float("nan")
    return recall, precision


def recall_precision(
    probs: Any, labels: Any, threshold: float = THRESHOLD
) -> tuple[float, float]:
    """(recall, precision) of the positive labels, an entry predicted positive when
    p > threshold; `probs`, `labels` any equal shape, e.g. `(B, C)`."""
    p, y = _numpy(probs), _numpy(labels)
    if p.shape != y.shape:
        raise ValueError(f"probabilities {p.shape} but labels {y.shape}")
    return _recall_precision(_counts(p, y, threshold))


def _kept(valid: Any, *arrays: np.ndarray) -> list[np.ndarray]:
    if valid is None:
        return list(arrays)
    keep = _numpy(valid, dtype=bool)
    return [a[keep] for a in arrays]


class SegmentEvaluation:
    """Streaming evaluation of a segment classifier over many batches.

    `update(probs (B,), scores (B,), losses (B,), valid (B,) | None)`: each rated example's
    probability of its rated class, its score (0/1) and its per-example Eq. 2 loss
    (`segment_loss(..., reduction="none")`); rows with `valid` False are dropped.
    `compute()` → {"loss", "auc", "segments", "positives"}.
    """

    def __init__(self) -> None:
        self._probs: list[np.ndarray] = []
        self._scores: list[np.ndarray] = []
        self._losses: list[np.ndarray] = []

    def update(self, probs: Any, scores: Any, losses: Any, valid: Any = None) -> None:
        p, y, loss = _kept(valid, _numpy(probs), _numpy(scores), _numpy(losses))
        self._probs.append(p.ravel())
        self._scores.append(y.ravel())
        self._losses.append(loss.ravel())

    def state(self) -> dict:
        """{"probs", "scores", "losses"}: `(n,)` float64 arrays of this process's examples."""
        return {"probs": _joined(self._probs), "scores": _joined(self._scores),
                "losses": _joined(self._losses)}

    @classmethod
    def merged(cls, states: list[dict]) -> SegmentEvaluation:
        ev = cls()
        for st in states:
            ev.update(st["probs"], st["scores"], st["losses"])
        return ev

    def compute(self) -> dict:
        st = self.state()
        p, y, loss = st["probs"], st["scores"], st["losses"]
        return {
            "loss": math.fsum(loss) / loss.size if loss.size else float("nan"),
            "auc": roc_auc(p, y),
            "segments": int(p.size),
            "positives": int(np.count_nonzero(y > 0.5)),
        }


class VideoEvaluation:
    """Streaming evaluation of a video-level model: keeps counts and per-video losses, not
    the `(N, C)` arrays.

    `update(probs (B, C), labels (B, C), losses (B,) | None, valid (B,) | None)`: losses
    are per-example Eq. 1 losses (`video_loss(..., reduction="none")`); without them
    they are computed from the probabilities (`log_loss`'s clipping).
    `compute()` → {"loss", "recall", "precision", "videos"}.
    """

    def __init__(self, threshold: float = THRESHOLD) -> None:
        self.threshold = threshold
        self._counts = np.zeros(3, dtype=np.int64)
        self._losses: list[np.ndarray] = []

    def update(self, probs: Any, labels: Any, losses: Any = None, valid: Any = None) -> None:
        p, y = _kept(valid, _numpy(probs), _numpy(labels))
        if losses is None:
            loss = _log_loss_per_example(p, y, LOG_LOSS_EPS)
        else:
            (loss,) = _kept(valid, _numpy(losses))
        self._counts += _counts(p, y, self.threshold)
        self._losses.append(np.asarray(loss, np.float64).ravel())

    def state(self) -> dict:
        """{"counts": [tp, fp, fn] int64, "losses": `(n,)` float64 per-video losses}."""
        return {"counts": self._counts.copy(), "losses": _joined(self._losses)}

    @classmethod
    def merged(cls, states: list[dict], threshold: float = THRESHOLD) -> VideoEvaluation:
        ev = cls(threshold)
        for st in states:
            ev._counts += np.asarray(st["counts"], np.int64)
            ev._losses.append(np.asarray(st["losses"], np.float64))
        return ev

    def compute(self) -> dict:
        recall, precision = _recall_precision(self._counts)
        losses = _joined(self._losses)
        loss = math.fsum(losses) / losses.size if losses.size else float("nan")
        return {"loss": loss, "recall": recall, "precision": precision, "videos": int(losses.size)}


def _joined(pieces: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(pieces) if pieces else np.zeros(0)
