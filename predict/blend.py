"""`predict blend`: integer ensemble weights that maximise MAP@K on a held-out store (issue 23
§3).

    predict blend A.npy B.npy ... --truth STORE --k K [--fold F] [--max-weight 3] [--json]

The 2nd and 3rd places weighted their ensembles (the 3rd place's public code: 0.3, 0.3,
0.4 of three mixtures); here the weights are searched on predictions of rated segments
that no blended model was trained on (docs/predictions.md says which). Each candidate is
scored exactly as `predict topk --weights W` then `predict evaluate` would score it, in
memory: the same `top_k` (weights, seed, video prior) gives the rows of each class, and
`ap_sums` adds precision@m over the rated ones among them in list order, as the
evaluator's kernel does (`metric.score_hashed`), divided by the class's positives and
averaged over the classes with one in the same order: the same float64 numbers.

Search: coordinate ascent from all ones, each weight in 0..max_weight (0 leaves the
model out): for each model in turn, every value of its weight with the others fixed; the
best MAP is kept (a tie keeps the earlier); rounds until one changes nothing. Weights
that are multiples of each other give the same ensemble (`weighted_mean`), so each
direction is scored once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from numba import prange

from ingest.errors import IngestError
from ingest.jit import njit
from ingest.store.truth import read_truth
from predict.metric import POSITIVE_SCORE, EvaluationError, rated_pairs
from predict.predictions import Predictions
from predict.topk import top_k

DEFAULT_MAX_WEIGHT = 3  # weights 0..3: a small grid, as the winners' hand-set weights


class BlendError(IngestError):
    """Predictions or a truth that `predict blend` cannot score."""


@dataclass
class HeldOut:
    """The held-out rows to rank and their ratings.

    scores: per model (n, 1000) uint16 (memory maps, or the fold's rows copied); segments:
    their table; class_ptr (C + 1,) int64 and rated_rows (R,) int64, rated_rel (R,) int8:
    per class index the rated rows of `scores` and their label; n_positive (C,) int64:
    positives per class over the whole (restricted) truth, rated segments without a row
    included (the metric's N_c).
    """

    scores: list
    segments: pl.DataFrame
    class_ptr: np.ndarray
    rated_rows: np.ndarray
    rated_rel: np.ndarray
    n_positive: np.ndarray


def held_out(models: list[Predictions], truth_path, fold: int | None = None) -> HeldOut:
    """The `HeldOut` of `models` (one segment table) against the truth of `truth_path` (a
    store or a truth.parquet), restricted to the store's fold `fold` if given (its videos'
    rows and ratings only). One-line errors as `predict evaluate`'s."""
    segments = models[0].segments
    truth = read_truth(truth_path)
    scores = [m.scores for m in models]
    if fold is not None:
        videos = _fold_videos(truth_path, fold)
        truth = truth.filter(pl.col("video_id").is_in(videos.implode()))
        rows = np.flatnonzero(segments["video_id"].is_in(videos.implode()).to_numpy())
        if not len(rows):
            raise BlendError(f"{models[0].path}: no segment of a video of fold {fold} of "
                             f"{truth_path}")
        segments = segments[rows]
        scores = [np.ascontiguousarray(s[rows]) for s in scores]
    rated = rated_pairs(truth)
    n_cls = models[0].scores.shape[1]
    rel = (rated["score"] > POSITIVE_SCORE).cast(pl.Int8)
    cls = rated["class_index"].cast(pl.Int64).to_numpy()
    n_positive = np.bincount(cls[rel.to_numpy() == 1], minlength=n_cls).astype(np.int64)
    where = f"{truth_path}" + ("" if fold is None else f" (fold {fold})")
    if not n_positive.any():
        raise EvaluationError(f"{where}: no positive ratings (score > 0.5) among its "
                              f"{rated.height} rated (segment, class) pairs: MAP is undefined")
    keyed = (rated.with_columns(rel=rel)
             .join(segments.select("video_id", "start_time").with_row_index("row"),
                   on=["video_id", "start_time"], how="inner")
             .sort("class_index", "row"))
    if not keyed.height and not segments["video_id"].is_in(truth["video_id"].unique().implode()).any():
        raise EvaluationError(f"{models[0].path}: none of its video ids appears in {where} "
                              f"({rated.height} rated pairs): predictions for another split?")
    ptr = np.searchsorted(keyed["class_index"].cast(pl.Int64).to_numpy(), np.arange(n_cls + 1))
    return HeldOut(scores, segments, ptr.astype(np.int64), keyed["row"].cast(pl.Int64).to_numpy(),
                   keyed["rel"].to_numpy().astype(np.int8), n_positive)


def _fold_videos(truth_path, fold: int) -> pl.Series:
    from ingest.store import Store, StoreError

    if not Path(truth_path).is_dir():
        raise BlendError(f"--fold {fold}: --truth {truth_path} must be a store (a truth file "
                         "has no folds)")
    try:
        videos = Store(truth_path).videos
    except StoreError as err:
        raise BlendError(str(err)) from None
    if fold not in set(videos["fold"].to_list()):
        raise BlendError(f"--fold {fold}: {truth_path} has folds "
                         f"{sorted(set(videos['fold'].to_list()))}")
    return videos.filter(pl.col("fold") == fold)["video_id"]


@njit(parallel=True)
def ap_sums(rows, class_ptr, rated_rows, rated_rel, n_rows, n_parts):
    """(C,) float64: per class c, Σ precision@m over the rated entries among rows[c] (in
    list order), m counting rated entries only: `metric.score_hashed`'s sum.

    rows (C, k) int32 row indices best first; the rated rows of class c and their labels
    (1 positive) are rated_rows/rated_rel[class_ptr[c]:class_ptr[c + 1]]. Per thread a
    (n_rows,) int8 mark: 0 unrated, 1 rated negative, 2 rated positive, cleared after
    each class.
    """
    n_cls, k = rows.shape
    out = np.zeros(n_cls)
    for part in prange(n_parts):
        mark = np.zeros(n_rows, np.int8)
        for c in range(part * n_cls // n_parts, (part + 1) * n_cls // n_parts):
            a, b = class_ptr[c], class_ptr[c + 1]
            if a == b:
                continue
            for i in range(a, b):
                mark[rated_rows[i]] = 1 + rated_rel[i]
            m, hits = 0, 0
            ap = 0.0
            for j in range(k):
                x = mark[rows[c, j]]
                if x:
                    m += 1
                    if x == 2:
                        hits += 1
                        ap += hits / m
            out[c] = ap
            for i in range(a, b):
                mark[rated_rows[i]] = 0
    return out


def map_at_k(data: HeldOut, rows: np.ndarray, n_parts: int) -> float:
    """MAP@k of the class lists `rows` (C, k): `evaluate_submission`'s arithmetic."""
    ap = ap_sums(rows, data.class_ptr, data.rated_rows, data.rated_rel, len(data.segments),
                 n_parts)
    scored = np.flatnonzero(data.n_positive)
    per_class = [float(ap[i] / data.n_positive[i]) for i in scored]
    return float(np.mean(per_class))


@dataclass
class Search:
    """Every candidate scored, in order: (weights, MAP); `best` the best of them."""

    candidates: list = field(default_factory=list)
    best: tuple | None = None


def search(data: HeldOut, k: int, max_weight: int = DEFAULT_MAX_WEIGHT, seed: int = 0,
           restriction=None, report=None) -> Search:
    """Coordinate ascent over integer weights 0..max_weight from all ones (module
    docstring); `report(weights, map)` is called for each new candidate."""
    import numba

    n_models = len(data.scores)
    n_parts = max(1, numba.get_num_threads())
    seen: dict[tuple, float] = {}
    result = Search()

    def score(weights: tuple) -> float:
        key = _direction(weights)
        if key not in seen:
            rows = top_k(data.scores, k=k, seed=seed, weights=list(weights), progress=False,
                         restriction=restriction)
            seen[key] = map_at_k(data, rows, n_parts)
            result.candidates.append((weights, seen[key]))
            if report is not None:
                report(weights, seen[key])
        return seen[key]

    current = (1,) * n_models
    best = score(current)
    changed = True
    while changed:
        changed = False
        for i in range(n_models):
            pick = current
            for v in range(max_weight + 1):
                cand = current[:i] + (v,) + current[i + 1:]
                if sum(cand) == 0 or cand == current:
                    continue
                if (s := score(cand)) > best:
                    best, pick = s, cand
            if pick != current:
                current, changed = pick, True
    result.best = (current, best)
    return result


def _direction(weights: tuple) -> tuple:
    """Weights divided by their greatest common divisor: one key per ensemble."""
    g = math.gcd(*weights)
    return tuple(w // g for w in weights)
