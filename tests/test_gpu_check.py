"""`make gpu-check` (scripts/gpu_check.py, issue #22) where no GPU is: the one-line refusal,
the report writer on a fake result, the stage runner's time limits, and the check's venv
seeing the launching Python's torch. The stages themselves need a GPU; `--device cpu` runs
them on the CPU (a dry run) in the last test."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_check.py"
sys.path.insert(0, str(REPO / "scripts"))
import gpu_check
from gpu_report import markdown, write_report

NO_GPU = shutil.which("nvidia-smi") is None and not Path("/dev/nvidiactl").exists()
needs_no_gpu = pytest.mark.skipif(not NO_GPU, reason="this machine has an NVIDIA GPU")


def _fake_results() -> dict:
    rows = [{"row": "dbof-3", "model": "dbof-3", "kind": "video", "batch": 128, "max_len": 150,
             "way": "project loader", "device": "cuda", "precision": "bf16", "compile": False,
             "warmup": 3, "steps": 20, "step_s": 0.05, "steps_per_s": 20.0,
             "samples_per_s": 2560.0, "wait_share": 0.031, "peak_gpu_mib": 5123.4}]
    return {
        "title": "gpu-check", "mode": "cuda", "started": "2026-12-07T12:00:00+00:00",
        "seconds": 401.2, "budget_s": 480.0, "command": "python3 scripts/gpu_check.py",
        "commit": "abc1234",
        "environment": {"gpu": "NVIDIA H100 80GB HBM3", "gpu_memory_gib": 79.2,
                        "capability": "9.0", "driver": "580.159.04", "torch": "2.11.0+cu130",
                        "cuda": "13.0", "cudnn": 91002, "python": "3.12.3"},
        "stages": [
            {"name": "setup", "group": "setup", "status": "pass", "seconds": 21.0,
             "limit_s": 180, "commands": [], "log": "logs/setup.log",
             "message": ".venv-gpu made", "result": {}},
            {"name": "gpu tests", "group": "tests", "status": "fail", "seconds": 40.5,
             "limit_s": 150, "commands": ["pytest -m gpu -q tests/trainer/test_loader.py"],
             "log": "logs/gpu-tests.log", "message": "1 failed, 0 errors (pytest exit status 1)",
             "result": {"passed": 5, "failed": 1, "skipped": 0, "errors": 0,
                        "failures": [("tests.trainer.test_loader::test_cuda_batches_equal_cpu"
                                     "_batches: AssertionError: frames | differ")]}},
            {"name": "loader video", "group": "loader", "status": "pass", "seconds": 14.0,
             "limit_s": 60, "commands": [], "log": "logs/loader-video.log", "message": "",
             "result": {"kind": "video", "batch_size": 48, "max_len": 150, "threads": 4,
                        "device": "cuda", "samples_per_s": 4321.9,
                        "feature_mb_per_s": 3583.6, "batches": 50, "epoch_done": True}},
            {"name": "train bench", "group": "bench", "status": "pass", "seconds": 70.0,
             "limit_s": 150, "commands": [], "log": "logs/train-bench.log", "message": "",
             "result": {"reference_skipped": "--reference off", "rows": rows}},
            {"name": "pipeline checks", "group": "pipeline", "status": "fail", "seconds": 2.0,
             "limit_s": 60, "commands": [], "log": "logs/pipeline-checks.log",
             "message": "failed: aware: held-out AUC > 0.55",
             "result": {"checks": [
                 {"name": "aware: held-out AUC > 0.55", "ok": False,
                  "detail": "AUC 0.4911 at step 600 (chance 0.5)"},
                 {"name": "agnostic: test AUC > 0.55", "ok": True, "detail": "a | b"}]}},
            {"name": "train bench --compile", "group": "compiled", "status": "timeout",
             "seconds": 150.0, "limit_s": 240, "commands": [], "log": "logs/x.log",
             "message": "killed at its limit (240 s or the budget)",
             "result": {"rows": [{**rows[0], "compile": True, "wait_share": math.nan}]}},
            {"name": "finetune aware", "group": "pipeline", "status": "skipped", "seconds": 0,
             "limit_s": 120, "commands": [], "log": "", "message": "the time budget was spent",
             "result": {}},
        ]}


def test_report_of_a_fake_result(tmp_path):
    results = _fake_results()
    json_path, md_path = write_report(results, tmp_path / "report")
    assert json.loads(json_path.read_text())["stages"][1]["result"]["failed"] == 1
    md = md_path.read_text()
    for text in ("NVIDIA H100 80GB HBM3", "580.159.04", "2.11.0+cu130",
                 "| CUDA (torch's) | 13.0 |", "4 of 7 stages did not pass", "gpu tests (fail)",
                 "train bench --compile (timeout)",
                 "| gpu tests | FAIL |", "| finetune aware | SKIPPED |",
                 "the time budget was spent",
                 "5 passed, 1 failed, 0 skipped, 0 errors",
                 "test_cuda_batches_equal_cpu_batches: AssertionError: frames | differ",
                 "| samples/s | 4,322 |", "| feature MB/s to the device | 3,584 |",
                 ("| dbof-3 | dbof-3 | 128 | 150 | project loader | bf16 | no | 20.00 | 2,560 "
                 "| 3.1% | 5,123 |"), "Reference rows not run: --reference off.",
                 "| aware: held-out AUC > 0.55 | **NO** | AUC 0.4911 at step 600 (chance 0.5) |",
                 "| nan% |", "Command: `python3 scripts/gpu_check.py` at commit `abc1234`"):
        assert text in md, text
    assert "| agnostic: test AUC > 0.55 | yes | a \\| b |" in md  # a pipe in a cell, escaped
    assert "## finetune aware" not in md  # a skipped stage: its reason is in the table


def test_report_says_when_everything_passed_and_what_is_not_a_gpu_result():
    results = _fake_results()
    results["stages"] = [s for s in results["stages"] if s["status"] == "pass"]
    results["mode"], results["environment"] = "cpu (dry run)", {"torch": "2.13.0+cpu"}
    md = markdown(results)
    assert "**every stage passed.**" in md and "not a GPU result" in md
    assert "| GPU | - |" in md and "| driver | - |" in md


def _no_gpu_path() -> str:
    """PATH with the test's Python and the system's tools, without nvidia-smi."""
    return os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])


@needs_no_gpu
def test_refuses_at_once_without_a_gpu_writing_nothing(tmp_path):
    out = tmp_path / "report"
    t = time.monotonic()
    done = subprocess.run([sys.executable, str(SCRIPT), str(out)], capture_output=True,
                          text=True, env={**os.environ, "PATH": _no_gpu_path()}, check=False)
    assert done.returncode == 2 and time.monotonic() - t < 30
    assert done.stderr.startswith("gpu-check: needs a CUDA device: no NVIDIA driver or GPU")
    assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""
    assert not out.exists()


@needs_no_gpu
@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_gpu_check_refuses_without_a_gpu(tmp_path):
    out = tmp_path / "report"
    done = subprocess.run(["make", "-s", "-C", str(REPO), "gpu-check", f"GPU_OUT={out}"],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "PATH": _no_gpu_path()})
    assert done.returncode != 0
    ours = [line for line in done.stderr.splitlines() if line.startswith("gpu-check:")]
    assert len(ours) == 1 and ours[0].startswith("gpu-check: needs a CUDA device")
    assert not out.exists()


def test_refuses_a_cpu_build_of_torch_even_where_a_gpu_is(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.version.cuda is not None:
        pytest.skip("this Python's torch is a CUDA build")
    fake = tmp_path / "bin" / "nvidia-smi"  # a driver that lists a GPU
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0)'\n")
    fake.chmod(0o755)
    path = os.pathsep.join([str(fake.parent), _no_gpu_path()])
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "report")],
                          capture_output=True, text=True, env={**os.environ, "PATH": path},
                          check=False)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"gpu-check: needs a CUDA device: torch {torch.__version__} of {sys.executable} is a "
        "CPU build; give a Python with a CUDA build of torch (make gpu-check PYTHON=...) or a "
        "build to install (GPU_TORCH=...; docs/real-dataset.md)")
    assert not (tmp_path / "report").exists()


SLEEPER = ("import subprocess, sys, time\n"
           "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
           "print(child.pid, flush=True)\n"
           "print('working', file=sys.stderr, flush=True)\n"
           "time.sleep(60)\n")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state == "Z"  # killed, not yet reaped by its new parent


def test_a_stage_over_its_limit_is_killed_with_its_children(tmp_path):
    runner = gpu_check.Runner(tmp_path, sys.executable, time.monotonic() + 120, dict(os.environ))
    stage = gpu_check.Stage("slow stage", "x", limit_s=1.5)
    t = time.monotonic()
    code, out = runner.run(stage, [sys.executable, "-c", SLEEPER], "sleeper")
    assert code == -9 and time.monotonic() - t < 1.5 + 2 * gpu_check.KILL_GRACE_S
    child = int(out.split()[0])
    deadline = time.monotonic() + 5
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(child)
    log = (tmp_path / stage.log).read_text()
    assert log.startswith("$ sleeper\nworking\n") and "[exit status -9" in log
    quick = gpu_check.Stage("next", "x", limit_s=30)
    assert runner.run(quick, [sys.executable, "-c", "print('ok')"])[0] == 0  # the next one runs


def test_stages_are_skipped_after_a_failed_input_or_with_no_time_left(tmp_path):
    runner = gpu_check.Runner(tmp_path, sys.executable, time.monotonic() + 120, dict(os.environ))
    check = gpu_check.Check(runner, gpu_check.PROFILES["cpu"], "cpu", set(gpu_check.GROUPS))
    check.records.append(gpu_check.Stage("data", "data", 10, status="timeout"))
    assert check.stage("loader video", "loader", "loader", needs=("data",)) is None
    assert check.records[-1].status == "skipped"
    assert check.records[-1].message == "needs data (timeout)"
    assert check.stage("env", "env", "env") is not None
    runner.deadline = time.monotonic()
    assert check.stage("gpu tests", "tests", "tests") is None
    assert check.records[-1].message == "the time budget was spent"


def test_junit_counts_of_a_real_pytest_run(tmp_path):
    (tmp_path / "test_four.py").write_text(
        "import pytest\n"
        "@pytest.fixture\ndef broken():\n    raise RuntimeError('no fixture')\n"
        "def test_pass():\n    pass\n"
        "def test_fail():\n    assert 1 == 2\n"
        "@pytest.mark.skip(reason='no CUDA')\ndef test_skip():\n    pass\n"
        "def test_error(broken):\n    pass\n")
    xml = tmp_path / "out.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    f"--junitxml={xml}", "test_four.py"], cwd=tmp_path, capture_output=True,
                   check=False)
    counts = gpu_check.junit_counts(xml)
    assert {k: counts[k] for k in ("passed", "failed", "skipped", "errors")} == \
        {"passed": 1, "failed": 1, "skipped": 1, "errors": 1}
    assert [f.split(":")[0] for f in counts["failures"]] == ["test_four", "test_four"]
    assert "test_fail" in counts["failures"][0] and "assert 1 == 2" in counts["failures"][0]


def test_the_gpu_test_files_and_the_dependencies_it_installs():
    files = gpu_check.gpu_test_files()
    assert "tests/trainer/test_loader.py" in files
    assert all("pytest.mark.gpu" in (REPO / f).read_text() for f in files)
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    with open(REPO / "pyproject.toml", "rb") as f:
        assert gpu_check.dependencies() == tomllib.load(f)["project"]["dependencies"]


@pytest.mark.slow
def test_the_checks_venv_sees_the_launching_pythons_torch(tmp_path):
    """`venv --system-site-packages` made from a venv's Python sees only the base
    installation's packages; the .pth bridge adds the launching Python's. With an empty
    wheel folder (no index) the install succeeds only if everything is already visible."""
    pytest.importorskip("torch")
    (tmp_path / "wheels").mkdir()
    runner = gpu_check.Runner(tmp_path / "out", sys.executable, time.monotonic() + 600,
                              dict(os.environ))
    args = type("Args", (), {"venv": str(tmp_path / "venv"), "torch": "",
                             "wheels": str(tmp_path / "wheels")})
    stage, base = gpu_check.Stage("setup", "setup", 600), gpu_check.probe(sys.executable)
    python = gpu_check.setup(args, runner, base, stage)
    assert python == str(tmp_path / "venv" / "bin" / "python"), stage.message
    import torch

    where = subprocess.run([python, "-c", ("import torch, zarr, polars, pytest; "
                            "print(torch.__file__)")], capture_output=True, text=True, check=True)
    assert where.stdout.strip() == torch.__file__
    assert (tmp_path / "venv" / ".gitignore").read_text() == "*\n"
    again = gpu_check.Stage("setup", "setup", 600)
    assert gpu_check.setup(args, runner, base, again) == python
    assert again.commands == [] and "up to date" in again.message


@pytest.mark.slow
def test_dry_run_on_the_cpu(tmp_path):
    """The orchestration end to end on the CPU (`--device cpu`: tiny sizes, the same
    commands): stores made, loader and training benchmarks measured, one report; the
    pipeline's stages are left out here (scripts/demo.py's test covers those commands)."""
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, str(SCRIPT), str(out), "--device", "cpu", "--venv",
                           "none", "--stages", "env,data,loader,bench"], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((out / "report.json").read_text())
    assert results["mode"] == "cpu (dry run)"
    stages = {s["name"]: s for s in results["stages"]}
    assert list(stages) == ["setup", "env", "data", "loader video", "loader segment",
                            "train bench"]
    assert all(s["status"] == "pass" for s in stages.values())
    assert results["environment"]["torch"] and results["environment"]["gpu"] is None
    assert stages["data"]["result"]["test candidate_segments"] > 0
    for kind in ("video", "segment"):
        res = stages[f"loader {kind}"]["result"]
        assert res["kind"] == kind and res["samples_per_s"] > 0 and res["device"] == "cpu"
    rows = stages["train bench"]["result"]["rows"]
    assert [r["row"] for r in rows] == ["dbof-tiny", "nxvlad-tiny", "aware-tiny"]
    assert all(r["steps_per_s"] > 0 and 0 <= r["wait_share"] <= 1 for r in rows)
    md = (out / "report.md").read_text()
    assert "**every stage passed.**" in md and "| train bench | pass |" in md
    assert (out / "logs" / "data.log").read_text().startswith("$ ingest synth ")
    assert not (out / "data").exists()  # the stores are removed at the end
