"""The submission CSV: the numba row writer against a join twin, and the validator."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from ingest.vocab import segment_class_ids
from predict import submission
from predict.submission import (
    SubmissionError,
    read_submission,
    validate_submission,
    write_submission,
)

IDS = segment_class_ids()


@pytest.mark.parametrize("id_len,task_bytes,threads,starts,narrow_bits", [
    (12, 64 << 20, None, 400, 32), (1, 64 << 20, 1, 400, 32), (40, 5000, 3, 400, 32),
    (7, 30_000, 2, 400_000_000, 32), (20, 64 << 20, 2, 3, 4)])
def test_writer_matches_join_twin(tmp_path, monkeypatch, id_len, task_bytes, threads, starts,
                                  narrow_bits):
    """Byte for byte the join of the entries, whatever the group size, thread count, id
    length (1-6 words), start range (the presence table or np.unique), code width
    (uint32, or uint64 when the indices do not fit `narrow_bits`) and row order
    (videos grouped in runs, some met again later, as the entry table indexes them)."""
    monkeypatch.setattr(submission, "TASK_BYTES", task_bytes)  # groups of one or more lines
    monkeypatch.setattr(submission, "NARROW_CODE_BITS", narrow_bits)
    rng = np.random.default_rng(id_len)
    n = 300
    ids = [f"v{i // 3 % 70}-" + "x" * int(rng.integers(0, id_len + 1)) * (i // 3 % 70 == i // 3)
           for i in range(n)]  # runs of 3 rows; ids 0-69 twice, the later runs other ids
    table = pl.DataFrame({"video_id": ids,
                          "start_time": pl.Series(rng.integers(0, starts, n) * 5, dtype=pl.Int32)})
    table = table.unique(maintain_order=True)  # distinct entries, as a checked table has
    n = table.height
    wide = np.stack([rng.permutation(n)[:80] for _ in range(1000)]).astype(np.int32)
    rows = wide[:, ::2]  # a strided view, like top_k's result
    path = tmp_path / "s.csv"
    write_submission(path, rows, table, threads=threads)
    entries = [f"{v}:{s}" for v, s in table.iter_rows()]
    twin = ["Class,Segments"] + [f"{IDS[c]}," + " ".join(entries[r] for r in rows[c]) for c in range(1000)]
    assert path.read_bytes() == ("\n".join(twin) + "\n").encode()
    assert read_submission(path, k=40)[int(IDS[3])] == [entries[r] for r in rows[3]]
    assert [p.name for p in tmp_path.iterdir()] == ["s.csv"]
    codes = submission.entry_table(table).codes
    assert codes.dtype == (np.uint64 if narrow_bits < 10 else np.uint32)


def test_writer_plain_python_twin(tmp_path):
    """With YT8M_NO_JIT=1 (store_u64's Python twin) the file is byte for byte the same."""
    import os
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, polars as pl; from predict.submission import write_submission\n"
        "t = pl.DataFrame({'video_id': ['a', 'bbbbbbbbbbbbbbbbbbbbbbbbb', 'cc'], "
        "'start_time': pl.Series([5, 120, 35], dtype=pl.Int32)})\n"
        "rows = np.array([[1, 0, 2], [2, 1, 0]] * 500, np.int32)\n"
        "write_submission(sys.argv[1], rows, t)\n"
    )
    paths = [tmp_path / "jit.csv", tmp_path / "py.csv"]
    for path, jit in zip(paths, ("0", "1")):
        env = dict(os.environ, YT8M_NO_JIT=jit)
        subprocess.run([sys.executable, "-c", code, str(path)], env=env, check=True)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[0].read_text().splitlines()[1].endswith(",bbbbbbbbbbbbbbbbbbbbbbbbb:120 a:5 cc:35")


def write(tmp_path, text):
    p = tmp_path / "s.csv"
    p.write_text(text)
    return p


def test_valid_file_with_empty_row(tmp_path):
    p = write(tmp_path, f"Class,Segments\n{IDS[0]},a:5 b:10\n{IDS[1]},\n")
    assert validate_submission(p, k=5) == []
    assert validate_submission(p, k=5, exact=True) == []
    assert read_submission(p, k=5) == {int(IDS[0]): ["a:5", "b:10"], int(IDS[1]): []}


@pytest.mark.parametrize(
    "text,line,message",
    [
        ("Class,Segment\n", 1, "header"),
        (f"Class,Segments\n{IDS[0]},a:5\n1,a:5\n", 3, "not one of the 1000"),
        (f"Class,Segments\n{IDS[0]},a:5\n{IDS[0]},b:5\n", 3, "more than one row"),
        (f"Class,Segments\n{IDS[0]},a:5 a:x\n", 2, "bad entry 'a:x'"),
        (f"Class,Segments\n{IDS[0]},a:5  b:5\n", 2, "two spaces in a row after entry 1 ('a:5')"),
        (f"Class,Segments\n{IDS[0]},a:5 b:5 \n", 2, "a space after the last entry, entry 2 ('b:5')"),
        (f"Class,Segments\n{IDS[0]}, a:5\n", 2, "a space before the first entry"),
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
    assert validate_submission(p, k=3, exact=True) == problems  # the reference path agrees
    with pytest.raises(SubmissionError, match=f"line {line}: "):
        read_submission(p, k=3)


def test_all_problems_reported(tmp_path):
    p = write(tmp_path, f"Class,Segments\n{IDS[0]},a:5 a:5\nx,y\n{IDS[1]},b\n")
    assert [q.line for q in validate_submission(p, k=10)] == [2, 3, 4]


def test_fast_row_check_agrees_with_the_exact_one():
    """The numba row pass may only say yes where the regex-and-set check says yes."""
    from predict.submission import _check_entries, _fast_entry_count

    rng = np.random.default_rng(5)
    alphabet = list("abcXYZ019_-:, \t\x1c\u00e9")
    agree = 0
    for trial in range(3000):
        n = int(rng.integers(0, 6 if trial % 3 else 20))  # 20: past the insert lag
        entries = [f"v{rng.integers(0, 4)}:{rng.integers(0, 3) * 5}" for _ in range(n)]
        row = " ".join(entries)
        if row and trial % 2:  # a random edit: insert, delete or replace one character
            i = int(rng.integers(0, len(row)))
            c = alphabet[int(rng.integers(0, len(alphabet)))]
            row = [row[:i] + c + row[i:], row[:i] + row[i + 1:], row[:i] + c + row[i + 1:]][
                int(rng.integers(0, 3))]
        entries, reason = _check_entries(0, row, k=10)
        fast = _fast_entry_count(row.encode())
        if reason:
            assert fast is None, row
        elif fast is not None:  # yes: with each entry's hash and end, as plain Python has them
            hashes, ends = fast
            assert hashes.tolist() == [fnv1a(e.encode()) for e in entries], row
            assert ends.tolist() == [len(" ".join(entries[:j + 1])) for j in range(len(entries))]
            agree += 1
    assert agree > 500  # the fast pass does say yes to most valid rows
    assert _fast_entry_count(b"ab:1 ab:1") is None  # a repeated entry
    assert _fast_entry_count(b"a:1  b:2") is None and _fast_entry_count(b"a:1 ") is None
    assert len(_fast_entry_count(b"a:1 b:22 c-d_e:300")[0]) == 3
    assert len(_fast_entry_count(b"")[0]) == 0


def fnv1a(data: bytes) -> int:
    """FNV-1a 64 in plain Python (the twin of the kernels' entry hash)."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) % 2**64
    return h


def test_many_problems_in_file_order_counted_exactly(tmp_path):
    """Rows are checked by a pool of threads; problems still come in file order, the
    first MAX_PROBLEMS kept, every one counted; repeated classes found in file order."""
    rng = np.random.default_rng(3)
    lines, bad, used = ["Class,Segments"], [], []
    for i in range(900):
        kind = int(rng.integers(0, 4)) if rng.random() < 0.3 else -1
        cls = IDS[i] if kind != 3 else used[int(rng.integers(0, len(used)))] if used else "x"
        used += [cls] if kind != 3 else []
        segs = " ".join(f"v{j}:{5 * j}" for j in range(int(rng.integers(0, 300))))
        segs = {0: segs + " ", 1: "a:5 a:5", 2: "b:"}.get(kind, segs)
        lines.append(f"{cls},{segs}")
        if kind >= 0:
            bad.append(i + 2)
    p = write(tmp_path, "\n".join(lines) + "\n")
    problems = validate_submission(p, k=1000)
    assert [q.line for q in problems] == bad[: submission.MAX_PROBLEMS]
    assert problems.count == len(bad) > submission.MAX_PROBLEMS and not problems.stopped
    assert problems.summary(p) == f"{p}: {len(bad)} problems, the first on line {bad[0]}"
    assert validate_submission(p, k=1000, exact=True) == problems


def test_a_bad_header_stops_the_check(tmp_path):
    p = write(tmp_path, f"Class;Segments\n{IDS[0]},a:5\nnonsense\n")
    problems = validate_submission(p, k=5)
    assert problems.count == 1 and problems.stopped
    assert problems.summary(p).endswith("(checking stopped there)")
    with pytest.raises(SubmissionError, match="`predict validate` lists every problem"):
        read_submission(write(tmp_path, f"Class,Segments\n{IDS[0]},a:5 a:5\n{IDS[1]},b\n"), 5)


def test_writer_streams_into_a_pipe_without_replacing_it(tmp_path):
    """An --out that is a device or a pipe (/dev/null, /dev/stdout) is written in place:
    renaming the finished file onto it replaced /dev/null with a regular file."""
    import os
    import stat
    import threading

    table = pl.DataFrame({"video_id": ["a", "b"], "start_time": pl.Series([5, 10], dtype=pl.Int32)})
    rows = np.array([[1, 0]] * 1000, np.int32)
    write_submission(tmp_path / "file.csv", rows, table)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    write_submission(fifo, rows, table)
    reader.join(timeout=30)
    assert got == [(tmp_path / "file.csv").read_bytes()]
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.csv", "pipe"]
