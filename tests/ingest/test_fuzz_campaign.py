"""The decoder's fuzz campaign (`make fuzz`, benchmarks/fuzz_decoder.py): a smoke run of a
few thousand mutated records as shipped, the harness seeing crashes, hangs and bounds-check
errors, and (slow) the same records with numba's bounds checks on."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fuzz_decoder.py"


def campaign(tmp_path: Path, *args: str, timeout: float = 600) -> tuple[int, dict, str]:
    """Run the campaign script; (exit status, its JSON summary, stderr)."""
    proc = subprocess.run([sys.executable, str(SCRIPT), "--json", "--tmp", str(tmp_path),
                           "--keep", str(tmp_path / "kept"), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def assert_clean(summary: dict, mode: str, records: int) -> dict:
    m = summary["modes"][mode]
    assert m["crashes"] == [] and m["hangs"] == [] and m["twin_disagreements"] == []
    assert m["records"] == records
    assert set(m["by_family"]) == {"proto-struct", "proto-bytes", "framing"}
    assert all(n > 0 for n in m["by_family"].values())
    assert 0 < m["decoded_ok"] < records  # most mutations are errors, some decode
    assert m["twin_checks"] > 0
    reasons = m["reasons"]
    assert len(reasons) >= 25, reasons
    for expected in ("data CRC mismatch (corrupt record)",  # framing
                     "invalid or unsupported wire type (groups and types 6, 7)",  # proto
                     "length-delimited field runs past the end of its message"):
        assert reasons.get(expected, 0) > 0, expected
    assert any(r.startswith("rgb frame of N bytes") or "in feature list" in r for r in reasons)
    return m


def test_smoke_as_shipped(tmp_path):
    code, summary, err = campaign(tmp_path, "--records", "2000", "--batch", "1000",
                                  "--modes", "shipped")
    assert code == 0, err
    m = assert_clean(summary, "shipped", 2000)
    assert m["records_per_s_decode"] > 0 and m["batches"] == 2
    assert "== shipped: 2,000 mutated records" in err
    assert not (tmp_path / "kept").exists()


@pytest.mark.parametrize("inject, says", [
    ("segfault", "exit status -11"),
    ("exception", "IndexError: index is out of bounds"),
    ("hang", None),
])
def test_harness_reports_crashes_and_hangs(tmp_path, inject, says):
    """A batch that dies by a signal, whose decoder raises something other than ShardError
    (as a bounds check does), or that never ends: the campaign says so and exits 1."""
    code, summary, err = campaign(tmp_path, "--records", "20", "--batch", "20", "--modes",
                                  "shipped", "--inject", inject, "--timeout", "3")
    assert code == 1, err
    m = summary["modes"]["shipped"]
    if says is None:
        assert len(m["hangs"]) == 1 and m["crashes"] == []
        assert "HANG" in err
        return
    assert m["crashes"] and all(says in c["what"] for c in m["crashes"])
    assert "CRASH" in err
    if inject == "exception":  # the input that made the decoder fail is kept
        kept = [Path(c["input"]) for c in m["crashes"]]
        assert all(k.is_file() and k.parent == tmp_path / "kept" for k in kept)


@pytest.mark.slow
def test_smoke_with_bounds_checks(tmp_path):
    """NUMBA_BOUNDSCHECK=1 with the kernels compiled afresh (each batch checks that an
    out-of-bounds read really raises, else it exits 3: a crash); ~40 s of compilation."""
    code, summary, err = campaign(tmp_path, "--records", "2000", "--batch", "2000",
                                  "--modes", "boundscheck,shipped")
    assert code == 0, err
    checked = assert_clean(summary, "boundscheck", 2000)
    shipped = assert_clean(summary, "shipped", 2000)
    assert checked["reasons"] == shipped["reasons"]  # the same records, the same outcomes
    assert checked["decoded_ok"] == shipped["decoded_ok"]
