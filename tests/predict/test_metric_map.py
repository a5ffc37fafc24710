"""MAP@K: hand-checked examples and a direct transcription of the official loop."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from ingest.vocab import segment_class_ids
from predict.metric import average_precision, mean_average_precision, truth_by_class

IDS = segment_class_ids()


def truth_table(rows):
    """rows: (video_id, start, class_index, score)."""
    return pl.DataFrame(
        {"video_id": [r[0] for r in rows],
         "start_time": pl.Series([r[1] for r in rows], dtype=pl.Int32),
         "label": pl.Series([int(IDS[r[2]]) for r in rows], dtype=pl.Int32),
         "class_index": pl.Series([r[2] for r in rows], dtype=pl.Int16),
         "score": pl.Series([r[3] for r in rows], dtype=pl.Float32)})


def official_map(submission, truth_rows, k):
    """Transcription of segment_eval_inference.py: cut to k, drop unrated, AP / N_c, mean."""
    aps = []
    for c in sorted({r[2] for r in truth_rows}):
        rated = {f"{v}:{s}": score for v, s, cc, score in truth_rows if cc == c}
        n_pos = sum(1 for s in rated.values() if s == 1.0)
        if n_pos == 0:
            continue
        hits, seen, ap = 0, 0, 0.0
        for entry in submission.get(int(IDS[c]), [])[:k]:
            if entry not in rated:
                continue
            seen += 1
            if rated[entry] == 1.0:
                hits += 1
                ap += hits / seen
        aps.append(ap / n_pos)
    return float(np.mean(aps))


def test_hand_checked_example():
    rows = [("a", 5, 0, 1.0), ("b", 5, 0, 0.0), ("c", 5, 0, 1.0), ("d", 5, 0, 1.0),
            ("a", 5, 1, 0.0), ("e", 10, 1, 1.0), ("f", 0, 2, 0.0)]
    sub = {int(IDS[0]): ["x:0", "a:5", "y:0", "b:5", "c:5"],  # rated: a+, b-, c+; d+ missing
           int(IDS[1]): ["a:5", "e:10"]}
    result = mean_average_precision(sub, truth_by_class(truth_table(rows)), k=100)
    ap0 = (1 / 1 + 2 / 3) / 3  # positions after dropping unrated: a(1) b(2) c(3)
    ap1 = (1 / 2) / 1
    assert result.per_class == pytest.approx({int(IDS[0]): ap0, int(IDS[1]): ap1})
    assert result.classes == 2  # class 2 has no positive: not counted
    assert result.map == pytest.approx((ap0 + ap1) / 2)
    cut = mean_average_precision(sub, truth_by_class(truth_table(rows)), k=2)
    assert cut.per_class[int(IDS[0])] == pytest.approx(1 / 3)  # only x, a survive the cut


def test_perfect_and_missing_classes():
    rows = [("a", 5, 0, 1.0), ("b", 5, 0, 0.0), ("c", 0, 7, 1.0)]
    truth = truth_by_class(truth_table(rows))
    perfect = mean_average_precision({int(IDS[0]): ["a:5", "b:5"], int(IDS[7]): ["c:0"]}, truth, 10)
    assert perfect.map == 1.0
    half = mean_average_precision({int(IDS[0]): ["a:5"]}, truth, 10)  # class 7 missing: AP 0
    assert half.map == 0.5 and half.to_json()["per_class"] == {str(IDS[0]): 1.0, str(IDS[7]): 0.0}


def test_average_precision_examples():
    assert average_precision(np.array([1, 0, 1]), 2) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(np.array([], np.int8), 3) == 0.0
    assert average_precision(np.array([0, 0, 1]), 1) == pytest.approx(1 / 3)


@pytest.mark.parametrize("seed", range(4))
def test_matches_official_loop_on_random(seed):
    rng = np.random.default_rng(seed)
    videos = [f"v{i}" for i in range(60)]
    rows = []
    for c in rng.choice(1000, 25, replace=False):
        for v in rng.choice(60, 30, replace=False):
            rows.append((videos[v], int(rng.integers(0, 6)) * 5, int(c), float(rng.random() < 0.4)))
    seen, truth_rows = set(), []
    for r in rows:  # one rating per (segment, class)
        if (r[0], r[1], r[2]) not in seen:
            seen.add((r[0], r[1], r[2]))
            truth_rows.append(r)
    sub = {}
    for c in rng.choice(1000, 30, replace=False):
        pool = [f"{v}:{s}" for v in videos for s in range(0, 30, 5)]
        sub[int(IDS[c])] = list(rng.choice(pool, 80, replace=False))
    for k in (5, 40, 100):
        got = mean_average_precision(sub, truth_by_class(truth_table(truth_rows)), k)
        assert got.map == pytest.approx(official_map(sub, truth_rows, k))
