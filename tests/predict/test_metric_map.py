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


def random_world(seed, n_videos=50, n_classes=40):
    """A truth (with some (segment, class) pairs rated twice) and a submission dict."""
    rng = np.random.default_rng(seed)
    # some ids not ASCII: their rows go the validator's slow way, and are hashed apart
    videos = [f"v{i}" + "x" * int(rng.integers(0, 12)) + "é" * (i % 9 == 0)
              for i in range(n_videos)]
    classes = rng.choice(1000, n_classes, replace=False)
    rows = [(videos[int(v)], int(rng.integers(0, 8)) * 5, int(c), float(rng.random() < 0.4))
            for c in classes for v in rng.choice(n_videos, 30)]
    pool = [f"{v}:{s}" for v in videos for s in range(0, 40, 5)]
    scored = list(classes[: n_classes - 5]) + list(rng.choice(1000, 5))  # a few unrated
    sub = {int(IDS[c]): list(rng.choice(pool, int(rng.integers(0, 120)), replace=False))
           for c in scored}
    return rows, sub


def write_csv(path, sub):
    lines = ["Class,Segments"] + [f"{c}," + " ".join(e) for c, e in sub.items()]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("seed", range(5))
def test_streaming_kernel_matches_the_python_twin(tmp_path, seed):
    """`evaluate_submission` (numba `score_hashed` over the file's bytes, with the
    validator's hashes or, for rows that are not ASCII, `hash_entries`') against
    `mean_average_precision` on the dict of strings, per class, on random data with
    repeated ratings (the last one counts), cuts at k and unrated entries."""
    from predict.metric import evaluate_submission, truth_index

    rows, sub = random_world(seed)
    write_csv(tmp_path / "s.csv", sub)
    table = truth_table(rows)
    for k in (1, 7, 60, 100_000):
        want = mean_average_precision(sub, truth_by_class(table), k)
        got = evaluate_submission(tmp_path / "s.csv", truth_index(table), k, progress=False)
        assert got.result.per_class.keys() == want.per_class.keys()
        for c, ap in want.per_class.items():
            assert got.result.per_class[c] == pytest.approx(ap, rel=1e-12, abs=1e-15), c
        assert got.result.map == pytest.approx(want.map, rel=1e-12)
        assert got.result.classes == want.classes and got.video_overlap
    assert want.map > 0.05  # the data does score


def test_score_row_counts_rated_entries_and_videos():
    """The kernel's other outputs: rated entries within k, and whether a video is known."""
    from predict.metric import score_row, truth_index

    index = truth_index(truth_table([("a", 5, 3, 1.0), ("b", 10, 3, 0.0), ("c", 0, 4, 1.0)]))

    def score(text, k=100, c=3):
        return score_row(np.frombuffer(text.encode(), np.uint8), k, c, True, index.pairs,
                         index.rel, index.videos)

    assert score("x:5 a:5 b:10") == (1.0, 2, 1)
    assert score("b:10 a:5") == (0.5, 2, 1)
    assert score("b:10 a:5", k=1) == (0.0, 1, 1)
    assert score("c:0 a:10 zz:5") == (0.0, 0, 1)  # c is rated for class 4 only; a:10 never
    assert score("zz:5 y:0") == (0.0, 0, 0)
    assert score("") == (0.0, 0, 0)
    assert score("ab:5 a:55 a:5") == (1 / 1, 1, 1)  # prefixes of a rated entry do not match


def test_hash_entries_matches_plain_python():
    from predict.metric import hash_entries

    row = "ab:5 vé:10 x-y_z:300".encode()
    hashes, ends = np.empty(8, np.uint64), np.empty(8, np.int64)
    n = hash_entries(np.frombuffer(row, np.uint8), hashes, ends)
    entries = row.split(b" ")
    assert n == 3 and ends[:n].tolist() == [4, 11, 21]  # "v\u00e9" is 3 bytes
    assert hashes[:n].tolist() == [fnv1a(e) for e in entries]


def fnv1a(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) % 2**64
    return h
