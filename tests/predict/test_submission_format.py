"""The submission CSV: the numba row writer against a join twin, and the validator."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from ingest.vocab import segment_class_ids
from predict.submission import (
    SubmissionError,
    read_submission,
    validate_submission,
    write_submission,
)

IDS = segment_class_ids()


def test_writer_matches_join_twin(tmp_path):
    rng = np.random.default_rng(0)
    n = 300
    table = pl.DataFrame({"video_id": [f"v{rng.integers(1e6)}-x_{i}" for i in range(n)],
                          "start_time": pl.Series(rng.integers(0, 400, n) * 5, dtype=pl.Int32)})
    rows = np.stack([rng.permutation(n)[:40] for _ in range(1000)]).astype(np.int32)
    path = tmp_path / "s.csv"
    write_submission(path, rows, table)
    entries = [f"{v}:{s}" for v, s in table.iter_rows()]
    twin = ["Class,Segments"] + [f"{IDS[c]}," + " ".join(entries[r] for r in rows[c]) for c in range(1000)]
    assert path.read_text().splitlines() == twin
    assert read_submission(path, k=40)[int(IDS[3])] == [entries[r] for r in rows[3]]
    assert [p.name for p in tmp_path.iterdir()] == ["s.csv"]


def write(tmp_path, text):
    p = tmp_path / "s.csv"
    p.write_text(text)
    return p


def test_valid_file_with_empty_row(tmp_path):
    p = write(tmp_path, f"Class,Segments\n{IDS[0]},a:5 b:10\n{IDS[1]},\n")
    assert validate_submission(p, k=5) == []
    assert read_submission(p, k=5) == {int(IDS[0]): ["a:5", "b:10"], int(IDS[1]): []}


@pytest.mark.parametrize(
    "text,line,message",
    [
        ("Class,Segment\n", 1, "header"),
        (f"Class,Segments\n{IDS[0]},a:5\n1,a:5\n", 3, "not one of the 1000"),
        (f"Class,Segments\n{IDS[0]},a:5\n{IDS[0]},b:5\n", 3, "more than one row"),
        (f"Class,Segments\n{IDS[0]},a:5 a:x\n", 2, "bad entry 'a:x'"),
        (f"Class,Segments\n{IDS[0]},a:5  b:5\n", 2, "bad entry ''"),
        (f"Class,Segments\n{IDS[0]},a5\n", 2, "bad entry 'a5'"),
        (f"Class,Segments\n{IDS[0]},b:5 a:5 b:5\n", 2, "'b:5' appears more than once"),
        (f"Class,Segments\n{IDS[0]},a:5 b:5 c:5 d:5\n", 2, "4 entries, more than k = 3"),
        (f"Class,Segments\n{IDS[0]},a:5\n\n", 3, "empty line"),
        (f"Class,Segments\n{IDS[0]} a:5\n", 2, "no comma"),
    ],
)
def test_problems_name_their_line(tmp_path, text, line, message):
    p = write(tmp_path, text)
    problems = validate_submission(p, k=3)
    assert len(problems) == 1 and problems[0].line == line
    assert message in problems[0].reason
    with pytest.raises(SubmissionError, match=f"line {line}: "):
        read_submission(p, k=3)


def test_all_problems_reported(tmp_path):
    p = write(tmp_path, f"Class,Segments\n{IDS[0]},a:5 a:5\nx,y\n{IDS[1]},b\n")
    assert [q.line for q in validate_submission(p, k=10)] == [2, 3, 4]
