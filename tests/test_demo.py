"""`make demo`'s pipeline, tiny, through the real commands (scripts/demo.py --size tiny):
every stage's outputs exist and are well formed, and the fine-tuned mixture beats random
ranking by a wide margin (issue #15)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

DEMO = Path(__file__).parent.parent / "scripts" / "demo.py"


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "out"
    subprocess.run([sys.executable, str(DEMO), str(out), "--size", "tiny"], check=True,
                   capture_output=True, text=True)
    return out


@pytest.mark.slow
def test_every_stage_leaves_well_formed_outputs(demo):
    for split in ("train", "validate", "test"):
        assert (demo / "stores" / split / "manifest.json").is_file()
    assert (demo / "shards" / "test" / "truth.parquet").is_file()
    runs = sorted(p.name for p in (demo / "runs").iterdir())
    assert len(runs) == 10  # 2 pre-trained, 2 agnostic, 2 aware, the last 4 again with SWA
    for run in runs:
        assert (demo / "runs" / run / "last" / "model.safetensors").is_file()
        assert (demo / "runs" / run / "curves.png").read_bytes()[:4] == b"\x89PNG"
    for folder in ("predictions", "predictions/videos", *(
            str(p.relative_to(demo)) for p in (demo / "predictions").glob("fold*"))):
        n = None
        for npy in (demo / folder).glob("*.npy"):
            scores = np.load(npy, mmap_mode="r")
            assert scores.dtype == np.uint16 and scores.shape[1] == 1000
            assert scores.max() <= 9999
            n = n or scores.shape[0]
            assert scores.shape[0] == n, npy
    results = json.loads((demo / "results.json").read_text())
    rows = results["rows"]
    assert rows[0]["submission"] == "random scores" and len(rows) == 9
    assert len(results["blend"]["weights"]) == 4 and 0 <= results["prior_coverage"]["share"] <= 1
    for r in rows:
        header = Path(r["csv"]).read_text().splitlines()[0]
        assert header == "Class,Segments"
    assert (demo / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "| mixture agnostic + aware |" in (demo / "results.md").read_text()


@pytest.mark.slow
def test_the_fine_tuned_mixture_beats_random_ranking_by_a_wide_margin(demo):
    rows = {r["submission"]: r for r in json.loads((demo / "results.json").read_text())["rows"]}
    assert rows["mixture agnostic + aware"]["map"] > 2 * rows["random scores"]["map"] + 0.05


def test_refuses_a_folder_it_did_not_make(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "precious.txt").write_text("keep me")
    result = subprocess.run([sys.executable, str(DEMO), str(mine), "--size", "tiny"],
                            check=False, capture_output=True, text=True)
    assert result.returncode != 0 and "not an earlier demo's output" in result.stderr
    assert (mine / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize("command", ["ingest", "train", "predict"])
def test_console_scripts_answer_version(command):
    exe = Path(sys.executable).with_name(command)
    result = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert result.stdout.startswith(f"{command}, version ")
