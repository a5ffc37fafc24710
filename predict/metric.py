"""MAP@K with the semantics of the challenge's `segment_eval_inference.py`.

Per class: cut the submitted list to K, drop the entries that are not rated for
that class, then AP = Σ_k precision@k · rel(k) over the remaining positions k,
divided by N_c, the number of positive rated segments of the class. MAP is the
mean of AP over the classes with at least one positive (a class with positives
but no submitted row scores 0). A rating is positive when its score > 0.5
(truth scores are 0.0 or 1.0).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from ingest.vocab import segment_class_ids
from predict.submission import entry_expr

POSITIVE_SCORE = 0.5  # a rated segment is positive above this score


@dataclass(frozen=True)
class ClassTruth:
    """The ratings of one class: `rated` maps `videoid:start` → 1 (positive) or 0."""

    rated: dict
    n_positive: int


def truth_by_class(truth: pl.DataFrame) -> dict[int, ClassTruth]:
    """{vocabulary class id: ClassTruth} from a truth table (ingest.truth.read_truth).

    A (segment, class) rated twice keeps its last rating.
    """
    keyed = truth.select(
        pl.col("class_index"),
        entry_expr().alias("entry"),
        (pl.col("score") > POSITIVE_SCORE).cast(pl.Int8).alias("rel"),
    )
    ids = segment_class_ids()
    out = {}
    for (ci,), part in keyed.partition_by("class_index", as_dict=True).items():
        if not 0 <= ci < len(ids):
            continue
        rated = dict(zip(part["entry"].to_list(), part["rel"].to_list()))
        out[int(ids[ci])] = ClassTruth(rated, sum(rated.values()))
    return out


def average_precision(rel: np.ndarray, n_positive: int) -> float:
    """AP of a ranked relevance vector rel (m,) {0,1} of rated entries, over n_positive."""
    if n_positive == 0:
        return 0.0
    rel = np.asarray(rel, np.float64)
    precision = np.cumsum(rel) / np.arange(1, rel.size + 1)
    return float(np.sum(precision * rel) / n_positive)


def class_ap(entries: list, truth: ClassTruth, k: int) -> float:
    """AP@k of one class's ranked `videoid:start` entries."""
    get = truth.rated.get
    rel = np.fromiter((r for r in map(get, entries[:k]) if r is not None), np.int8)
    return average_precision(rel, truth.n_positive)


@dataclass(frozen=True)
class MapResult:
    """MAP@k over `classes` classes with a positive; `per_class` {class id: AP}."""

    map: float
    k: int
    classes: int
    per_class: dict

    def to_json(self) -> dict:
        return {"map": self.map, "k": self.k, "classes": self.classes,
                "per_class": {str(c): ap for c, ap in sorted(self.per_class.items())}}


def mean_average_precision(submission: dict, truth: dict[int, ClassTruth], k: int) -> MapResult:
    """MAP@k of {class id: entries} against `truth_by_class` output."""
    per_class = {
        cid: class_ap(submission.get(cid, []), t, k)
        for cid, t in truth.items() if t.n_positive > 0
    }
    value = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return MapResult(value, k, len(per_class), per_class)
