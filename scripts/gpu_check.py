"""`make gpu-check`: the checks to run first on a new GPU machine (issue #22), at most 8 minutes
on one H100, every result in one folder.

    python3 scripts/gpu_check.py [OUT] [--venv DIR|none] [--torch SPEC] [--wheels DIR]
                                 [--budget SECONDS] [--keep-data]

Run it with the Python whose CUDA build of torch it should use (`make gpu-check
PYTHON=...`; default python3). Without a CUDA device it stops at once, writing nothing:
one line `gpu-check: needs a CUDA device: <why>` and exit status 2.

Setup: the check's own virtual environment (`--venv`, default .venv-gpu) is made with
`--system-site-packages`, plus a .pth file listing the launching Python's site-packages,
so that it sees that Python's torch even where that Python is itself a virtual
environment (`venv --system-site-packages` alone sees only the base installation's
packages, not a parent venv's). It has no pip of its own: the launching Python's pip,
seen through that file, installs the project's runtime dependencies (pyproject.toml) and
pytest into it, keeping those already there (a venv's own pip from ensurepip would, on
Python 3.11, bring setuptools 65, older than torch requires; ensurepip runs only where no
pip is visible). The project itself runs from this checkout (PYTHONPATH). `--torch SPEC`
first installs a torch build (a pip requirement with its options, e.g.
"torch==2.11.0 --index-url https://download.pytorch.org/whl/cu128");
`--wheels DIR` installs from a folder of wheels with no index (a machine without internet).
`--venv none` uses the launching Python as it is. The Makefile's CPU pin (TORCH) is never
used.

Stages, each a process of its own with its own time limit (a stage still running at its
limit is killed with its process group and recorded as a timeout; the stages after it run
in the time left; a stage whose input failed is skipped). Data lives in OUT/data (deleted at
the end unless --keep-data):

1. env: the GPU, driver, torch, CUDA, cuDNN, NCCL (scripts/gpu_probe.py env);
2. data: `ingest synth` train, validate and test shards of the demo's world (50 classes,
   frame noise 0.1) and `ingest convert` of each;
3. gpu tests: `pytest -m gpu` over the test files that have gpu-marked tests;
4. loader: `train loader-bench --device cuda`, video batches (B 48, Lm 150) and segment
   batches (B 128): samples/s, MB/s to the device;
5. train bench: `benchmarks/bench_train.py --device cuda --precision bf16`, rows dbof-3
   (B 128), nxvlad-2 (B 48), aware dbof-3+nxvlad-2 (B 128) in one process: steps/s,
   samples/s, share of step time waiting for data, peak GPU memory;
6. pipeline: `train pretrain` of dbof-tiny and nxvlad-tiny, `train finetune` agnostic
   (from dbof-tiny) and aware (nxvlad-tiny context and segment encoders) with a held-out
   fold, `predict segments` of the test store with both, then checks (scripts/gpu_probe.py
   check): finite losses and metrics, held-out and test AUC above chance;
7. train bench --compile: the rows of 5 again with `--compile`.

`--stages` runs some groups only (env, data, tests, loader, bench, pipeline, compiled).
`--device cpu` (hidden; development) runs the same stages on the CPU with tiny sizes: a dry
run of the orchestration, no GPU result.

OUT holds report.md and report.json (scripts/gpu_report.py), logs/ (one log per stage,
the pytest JUnit XML) and runs/ (the pipeline's config.json, metrics.jsonl, curves.png).
Exit status 0 when every stage passed, 1 otherwise (the report says which), 2 when there
is no CUDA device.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_report import failed, write_report

REPO = Path(__file__).resolve().parent.parent
MARKER = ".gpu-check-output"  # the folders this script made (and may replace)
STAMP = ".gpu-check-installed"  # in the venv: what was installed, to skip it next time
BUDGET_S = 465.0  # issue #22: at most 8 minutes on one H100, setup included, with
REPORT_RESERVE_S = 10.0  # this kept back from the last stage, and a kill's grace after it
KILL_GRACE_S = 5.0  # SIGTERM, then SIGKILL after this long
MIN_STAGE_S = 5.0  # a stage with less time than this left is skipped
CLI = {"ingest": "ingest.cli.main", "train": "trainer.cli.main", "predict": "predict.cli.main"}
ENCODERS = ("dbof-tiny", "nxvlad-tiny")  # pre-trained by the pipeline
AGNOSTIC = "dbof-tiny"  # the pre-training run the context-agnostic model starts from
AWARE = ("nxvlad-tiny", "nxvlad-tiny")  # the aware model's context and segment encoders

# Sizes and time limits (seconds). "cuda" is the check; "cpu" is a dry run of the same
# stages on the CPU with tiny sizes (development: --device cpu).
PROFILES = {
    "cuda": {
        "budget_s": BUDGET_S,
        "splits": {"train": (4, 150), "validate": (8, 300), "test": (2, 100)},
        "classes": 50, "noise_std": 0.1,
        "loader": {"video": (48, 150), "segment": (128, 150)}, "loader_threads": 4,
        "loader_seconds": 10,
        "bench_rows": ("dbof-3", "nxvlad-2", "aware"), "bench_size": None,
        "bench_steps": 20, "bench_warmup": 3,
        "pre_steps": 300, "ft_steps": 600, "lr": 1e-2, "batch": 32, "max_len": 20,
        "eval_every": 100,
        "limits": {"setup": 180, "env": 60, "data": 150, "tests": 150, "loader": 60,
                   "bench": 150, "pretrain": 90, "finetune": 120, "predict": 60,
                   "check": 60, "compiled": 240},
    },
    "cpu": {
        "budget_s": 3600.0,
        "splits": {"train": (2, 24), "validate": (2, 30), "test": (1, 24)},
        "classes": 20, "noise_std": 0.1,
        "loader": {"video": (8, 20), "segment": (16, 20)}, "loader_threads": 1,
        "loader_seconds": 2,
        "bench_rows": ("dbof-tiny", "nxvlad-tiny", "aware-tiny"), "bench_size": (8, 20),
        "bench_steps": 2, "bench_warmup": 1,
        "pre_steps": 100, "ft_steps": 150, "lr": 1e-2, "batch": 8, "max_len": 12,
        "eval_every": 50,
        "limits": {"setup": 900, "env": 120, "data": 600, "tests": 600, "loader": 120,
                   "bench": 600, "pretrain": 300, "finetune": 300, "predict": 120,
                   "check": 120, "compiled": 1200},
    },
}
GROUPS = ("env", "data", "tests", "loader", "bench", "pipeline", "compiled")


class Refusal(Exception):
    """No CUDA device for the check: the one-line reason."""


# ---------------------------------------------------------------- running commands

@dataclass
class Stage:
    """One stage's record (a stage of the report)."""

    name: str
    group: str
    limit_s: float
    status: str = "pass"
    seconds: float = 0.0
    commands: list[str] = field(default_factory=list)
    log: str = ""
    message: str = ""
    result: dict = field(default_factory=dict)

    def record(self) -> dict:
        return {"name": self.name, "group": self.group, "status": self.status,
                "seconds": round(self.seconds, 2), "limit_s": round(self.limit_s, 1),
                "commands": self.commands, "log": self.log, "message": self.message,
                "result": self.result}


class Runner:
    """Runs commands with time limits into log files, against one overall deadline."""

    def __init__(self, out: Path, python: str, deadline: float, env: dict):
        self.out, self.python, self.deadline, self.env = out, python, deadline, env
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.deadline - time.monotonic() - REPORT_RESERVE_S

    def run(self, stage: Stage, argv: list[str], shown: str | None = None) -> tuple[int, str]:
        """Run `argv` within what is left of `stage`'s limit; (exit status, stdout).
        stderr streams into the stage's log, stdout is appended to it at the end. Status
        -9: the limit was reached and the command's process group killed."""
        shown = shown or shlex.join(argv)
        stage.commands.append(shown)
        log = self.logs / f"{_slug(stage.name)}.log"
        stage.log = str(log.relative_to(self.out))
        remaining = min(stage.limit_s - stage.seconds, self.left())
        with open(log, "a") as f:
            f.write(f"$ {shown}\n")
            f.flush()
            t0 = time.monotonic()
            proc = subprocess.Popen(argv, cwd=REPO, env=self.env, stdout=subprocess.PIPE,
                                    stderr=f, text=True, start_new_session=True)
            try:
                stdout, _ = proc.communicate(timeout=max(remaining, 0.1))
                code = proc.returncode
            except subprocess.TimeoutExpired:
                stdout, code = _stop(proc), -9
            except KeyboardInterrupt:
                _stop(proc)
                raise
            stage.seconds += time.monotonic() - t0
            f.write(stdout or "")
            f.write(f"[exit status {code}, {time.monotonic() - t0:.1f} s]\n\n")
        return code, stdout or ""

    def cli(self, *args: str) -> tuple[list[str], str]:
        """A toolkit command (`ingest`, `train`, `predict`) run by the check's Python from
        this checkout, and how it is shown."""
        code = f"import sys; sys.argv[0] = {args[0]!r}; from {CLI[args[0]]} import main; main()"
        return [self.python, "-c", code, *args[1:]], shlex.join(args)


def _stop(proc: subprocess.Popen) -> str:
    """Stop a command and every process it started (its own process group)."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            return proc.communicate(timeout=wait)[0] or ""
        except subprocess.TimeoutExpired:
            continue
    return ""


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "-", name).strip("-")


# ---------------------------------------------------------------- refusal and setup

PROBE = """import json, site, sys
out = {"python": sys.version.split()[0], "executable": sys.executable,
       "site": [p for p in site.getsitepackages() + [site.getusersitepackages()]]}
try:
    import torch
    out.update(torch=torch.__version__, cuda=torch.version.cuda,
               available=torch.cuda.is_available(), devices=torch.cuda.device_count())
except Exception as err:
    out["torch_error"] = f"{type(err).__name__}: {err}"
print(json.dumps(out))
"""


def probe(python: str) -> dict:
    """What `python` has: its version, site-packages folders, torch and whether it sees CUDA."""
    try:
        done = subprocess.run([python, "-c", PROBE], capture_output=True, text=True,
                              timeout=120, check=False)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError) as err:
        return {"torch_error": f"{python} could not be run ({err})"}


def gpu_present() -> None:
    """Raise Refusal where no NVIDIA GPU is visible (before anything is installed)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        if Path("/dev/nvidiactl").exists():
            return
        raise Refusal("no NVIDIA driver or GPU found (nvidia-smi is not installed, "
                      "no /dev/nvidiactl)")
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=60,
                             check=False)
    except (OSError, subprocess.SubprocessError) as err:
        raise Refusal(f"nvidia-smi -L failed ({err})") from None
    if out.returncode != 0 or "GPU" not in out.stdout:
        why = " ".join((out.stderr or out.stdout).split())[:200] or "no GPU listed"
        raise Refusal(f"nvidia-smi -L lists no GPU ({why})")


def torch_usable(info: dict, who: str) -> None:
    """Raise Refusal unless `info` (probe()) has a torch that sees a CUDA device."""
    hint = ("give a Python with a CUDA build of torch (make gpu-check PYTHON=...) or a build "
            "to install (GPU_TORCH=...; docs/real-dataset.md)")
    if "torch" not in info:
        raise Refusal(f"no torch in {who} ({info.get('torch_error', '?')}); {hint}")
    if not info.get("cuda"):
        raise Refusal(f"torch {info['torch']} of {who} is a CPU build; {hint}")
    if not info.get("available"):
        raise Refusal(f"torch {info['torch']} (CUDA {info['cuda']}) of {who} sees no CUDA "
                      f"device (a driver older than CUDA {info['cuda']} needs? "
                      f"CUDA_VISIBLE_DEVICES?)")


def dependencies() -> list[str]:
    """The runtime requirements of pyproject.toml's [project] dependencies."""
    text = (REPO / "pyproject.toml").read_text()
    block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.DOTALL | re.MULTILINE)
    if block is None:
        raise SystemExit(f"gpu-check: {REPO / 'pyproject.toml'}: no dependencies list")
    return re.findall(r'^\s*"([^"]+)"', block.group(1), re.MULTILINE)


def setup(args, runner: Runner, base: dict, stage: Stage) -> str | None:
    """Make or reuse the check's venv; its Python, or None when a step failed."""
    if args.venv == "none":
        stage.message = f"no venv: {sys.executable} as it is"
        return sys.executable
    venv = (REPO / args.venv).resolve()
    python = str(venv / "bin" / "python")
    deps = dependencies()
    want = {"python": base.get("executable"), "torch": args.torch, "wheels": args.wheels,
            "deps": deps}
    stamp = venv / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()) == want and Path(python).exists():
        stage.message = f"{args.venv} up to date"
        return python
    if not _ok(runner, stage, [sys.executable, "-m", "venv", "--without-pip",
                               "--system-site-packages", str(venv)]):
        return None
    (venv / ".gitignore").write_text("*\n")  # never part of the checkout (nor of a copy)
    site = _site_packages(python)
    if site is None:
        stage.status, stage.message = "fail", f"{python}: cannot read its site-packages"
        return None
    (Path(site) / "_gpu_check_base.pth").write_text(
        "".join(p + "\n" for p in base.get("site", []) if Path(p).is_dir()))
    # pip: the launching Python's, seen through the bridge; only without one the venv's own
    # (ensurepip: on Python 3.11 it also brings setuptools 65, older than torch requires)
    if runner.run(stage, [python, "-m", "pip", "--version"])[0] != 0 and \
            not _ok(runner, stage, [python, "-m", "ensurepip"]):
        return None
    offline = ["--no-index", "--find-links", str(Path(args.wheels).resolve())] \
        if args.wheels else []
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    if args.torch:
        spec = shlex.split(args.torch)
        if not _ok(runner, stage, pip + spec + ([] if "--index-url" in spec else offline)):
            return None
    if not _ok(runner, stage, pip + offline + deps + ["pytest"]):
        return None
    stamp.write_text(json.dumps(want))
    stage.message = f"{args.venv} made: {len(deps)} requirements and pytest"
    return python


def _ok(runner: Runner, stage: Stage, argv: list[str]) -> bool:
    code, _ = runner.run(stage, argv)
    if code != 0:
        stage.status = "timeout" if code == -9 else "fail"
        stage.message = f"`{shlex.join(argv)}` " + (
            "ran out of time" if code == -9 else f"failed (exit status {code}); see the log")
    return code == 0


def _site_packages(python: str) -> str | None:
    try:
        code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
        return subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------- the stages

class Check:
    """The stages after setup, in order, sharing the data folder and what earlier stages
    learnt (store counts, the held-out fold)."""

    def __init__(self, runner: Runner, profile: dict, device: str, stages: set[str]):
        self.r, self.p, self.device, self.groups = runner, profile, device, stages
        self.data = runner.out / "data"
        self.records: list[Stage] = []
        self.info: dict[str, dict] = {}

    def stage(self, name: str, group: str, limit_key: str, needs: tuple[str, ...] = ()):
        """A new stage record, or None (recorded as skipped) when its group is not selected,
        a stage it needs did not pass, or the budget is spent."""
        if group not in self.groups:  # not selected (--stages): not in the report
            return None
        s = Stage(name, group, self.p["limits"][limit_key])
        self.records.append(s)
        if bad := [n for n in needs if self._status(n) != "pass"]:
            s.status, s.message = "skipped", f"needs {bad[0]} ({self._status(bad[0])})"
        elif self.r.left() < MIN_STAGE_S:
            s.status, s.message = "skipped", "the time budget was spent"
        else:
            return s
        return None

    def _status(self, name: str) -> str:
        return next((s.status for s in self.records if s.name == name), "not run")

    def finish(self, s: Stage, code: int, what: str = "") -> bool:
        if code == -9:
            s.status = "timeout"
            s.message = s.message or f"killed at its limit ({s.limit_s:.0f} s or the budget)"
        elif code != 0:
            s.status = "fail"
            s.message = s.message or f"{what or 'the command'} exited with status {code}; " \
                                     f"see {s.log}"
        return s.status == "pass"

    def commands(self, s: Stage, argvs: list[tuple[list[str], str]]) -> bool:
        for argv, shown in argvs:
            code, _ = self.r.run(s, argv, shown)
            if not self.finish(s, code, f"`{shown}`"):
                return False
        return True

    def run_all(self) -> None:
        self.env_stage()
        self.data_stage()
        self.tests_stage()
        for kind in ("video", "segment"):
            self.loader_stage(kind)
        self.bench_stage(compile_=False)
        self.pipeline()
        self.bench_stage(compile_=True)

    # -- 1. env
    def env_stage(self) -> None:
        if not (s := self.stage("env", "env", "env")):
            return
        code, out = self.r.run(s, [self.r.python, "scripts/gpu_probe.py", "env", "--device",
                                   self.device], "python scripts/gpu_probe.py env")
        if self.finish(s, code):
            s.result = json.loads(out)
            if self.device == "cuda" and not s.result.get("cuda_available"):
                s.status, s.message = "fail", "torch sees no CUDA device"
            elif (s.result.get("bf16_matmul_error") or 0) > 0.05:
                s.status = "fail"
                s.message = f"bf16 matrix product off by {s.result['bf16_matmul_error']:.3g}"

    # -- 2. data
    def data_stage(self) -> None:
        if not (s := self.stage("data", "data", "data")):
            return
        workers = str(max(1, min(8, (os.cpu_count() or 1) - 1)))
        argvs = []
        for split, (shards, videos) in self.p["splits"].items():
            argvs.append(self.r.cli(
                "ingest", "synth", str(self.data / "shards" / split), "--split", split,
                "--shards", str(shards), "--videos-per-shard", str(videos), "--seed", "0",
                "--classes", str(self.p["classes"]), "--noise-std", str(self.p["noise_std"]),
                "--quiet"))
            argvs.append(self.r.cli(
                "ingest", "convert", str(self.data / "shards" / split / "*.tfrecord"),
                "--out", str(self.store(split)), "--workers", workers, "--quiet"))
        if not self.commands(s, argvs):
            return
        for split in self.p["splits"]:
            code, out = self.r.run(s, *self.r.cli("ingest", "info", str(self.store(split)),
                                                  "--json"))
            if not self.finish(s, code):
                return
            self.info[split] = json.loads(out)
        s.result = {f"{split} {key}": self.info[split][key] for split in self.info
                    for key in ("videos", "rated_segments", "candidate_segments", "store_bytes")
                    if self.info[split].get(key)}

    def store(self, split: str) -> Path:
        return self.data / "stores" / split

    # -- 3. gpu tests
    def tests_stage(self) -> None:
        if not (s := self.stage("gpu tests", "tests", "tests")):
            return
        files = gpu_test_files()
        xml = self.r.logs / "gpu-tests.xml"
        argv = [self.r.python, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                f"--junitxml={xml}", *files]
        code, _ = self.r.run(s, argv, shlex.join(["pytest", "-m", "gpu", "-q", *files]))
        s.result = junit_counts(xml) if xml.is_file() else {}
        if code == -9 or not s.result:
            self.finish(s, code or 1, "pytest")
        elif s.result["failed"] or s.result["errors"] or code not in (0, 1):
            s.status = "fail"
            s.message = f"{s.result['failed']} failed, {s.result['errors']} errors " \
                        f"(pytest exit status {code})"
        elif self.device == "cuda" and (s.result["skipped"] or not s.result["passed"]):
            s.status = "fail"
            s.message = f"{s.result['skipped']} gpu tests skipped: pytest saw no CUDA device"

    # -- 4. loader
    def loader_stage(self, kind: str) -> None:
        if not (s := self.stage(f"loader {kind}", "loader", "loader", needs=("data",))):
            return
        batch, max_len = self.p["loader"][kind]
        code, out = self.r.run(s, *self.r.cli(
            "train", "loader-bench", str(self.store("validate")), "--kind", kind,
            "--batch-size", str(batch), "--max-len", str(max_len), "--threads",
            str(self.p["loader_threads"]), "--device", self.device, "--seconds",
            str(self.p["loader_seconds"]), "--json", "--quiet"))
        if self.finish(s, code):
            s.result = json.loads(out)

    # -- 5. and 7. the training benchmark
    def bench_stage(self, compile_: bool) -> None:
        """All rows in one process (one start-up of torch; of the compiler with --compile);
        the rows measured before a timeout are still reported."""
        name = "train bench" + (" --compile" if compile_ else "")
        group = "compiled" if compile_ else "bench"
        if not (s := self.stage(name, group, group, needs=("data",))):
            return
        path = self.r.logs / f"{_slug(name)}.json"
        rows = ",".join(self.p["bench_rows"])
        args = ["benchmarks/bench_train.py", "--models", rows, "--device", self.device,
                "--precision", "bf16" if self.device == "cuda" else "fp32",
                "--store", str(self.store("validate")), "--reference", "off",
                "--steps", str(self.p["bench_steps"]), "--warmup",
                str(self.p["bench_warmup"]), "--threads", str(self.p["loader_threads"]),
                "--json", str(path)]
        if size := self.p["bench_size"]:
            args += ["--batch-size", str(size[0]), "--max-len", str(size[1])]
        if compile_:
            args.append("--compile")
        code, _ = self.r.run(s, [self.r.python, *args], shlex.join(["python", *args]))
        s.result = json.loads(path.read_text()) if path.is_file() else {}
        self.finish(s, code, "bench_train.py")

    # -- 6. pre-training → fine-tuning → predict segments → checks
    def pipeline(self) -> None:
        runs, preds = self.data / "runs", self.data / "predictions"
        p = self.p
        common = ["--batch-size", str(p["batch"]), "--quiet", "--seed", "0", "--eval-every",
                  str(p["eval_every"]), "--lr", str(p["lr"]), "--device", self.device]
        for model in ENCODERS:
            self.train_stage(f"pretrain {model}", "pretrain", ("data",), (
                "train", "pretrain", "--store", str(self.store("train")), "--model", model,
                "--out", str(runs / f"pretrain-{model}"), "--steps", str(p["pre_steps"]),
                "--max-len", str(p["max_len"]), *common))
        fold = str(min(int(f) for f in self.info.get("validate", {}).get("folds", [0])))
        ft = ["--store", str(self.store("validate")), "--fold", fold, "--steps",
              str(p["ft_steps"]), *common]
        context, segment = AWARE
        self.train_stage(f"finetune agnostic {AGNOSTIC}", "finetune", (f"pretrain {AGNOSTIC}",), (
            "train", "finetune", "--kind", "agnostic", "--init",
            str(runs / f"pretrain-{AGNOSTIC}"), "--out", str(runs / "agnostic"), *ft))
        self.train_stage(f"finetune aware {context}+{segment}", "finetune",
                         tuple({f"pretrain {m}" for m in AWARE}), (
            "train", "finetune", "--kind", "aware", "--context", str(runs / f"pretrain-{context}"),
            "--segment", str(runs / f"pretrain-{segment}"), "--out", str(runs / "aware"),
            "--max-len", str(p["max_len"]), *ft))
        preds.mkdir(parents=True, exist_ok=True)
        for kind, stage in (("agnostic", f"finetune agnostic {AGNOSTIC}"),
                            ("aware", f"finetune aware {context}+{segment}")):
            self.train_stage(f"predict {kind}", "predict", (stage,), (
                "predict", "segments", "--store", str(self.store("test")), "--model",
                str(runs / kind), "--out", str(preds / f"{kind}.npy"), "--device",
                self.device, "--quiet"))
        self.check_stage(runs, preds)

    def train_stage(self, name: str, limit: str, needs: tuple[str, ...], args) -> None:
        if s := self.stage(name, "pipeline", limit, needs=needs):
            self.commands(s, [self.r.cli(*args)])
            if args[0] == "train":
                s.result = last_eval(Path(args[args.index("--out") + 1]))

    def check_stage(self, runs: Path, preds: Path) -> None:
        needs = ("predict agnostic", "predict aware")
        if not (s := self.stage("pipeline checks", "pipeline", "check", needs=needs)):
            return
        args = ["scripts/gpu_probe.py", "check", "--truth",
                str(self.data / "shards" / "test" / "truth.parquet"), "--candidates",
                str(self.info["test"]["candidate_segments"])]
        for kind in ("agnostic", "aware"):
            args += ["--run", f"{kind}={runs / kind}", "--pred", f"{kind}={preds / kind}.npy"]
        code, out = self.r.run(s, [self.r.python, *args], shlex.join(["python", *args]))
        try:
            s.result = json.loads(out)
        except ValueError:
            s.result = {}
        if code == 1 and s.result.get("checks"):
            bad = [c["name"] for c in s.result["checks"] if not c["ok"]]
            s.status, s.message = "fail", "failed: " + "; ".join(bad)
        else:
            self.finish(s, code, "gpu_probe.py check")


def gpu_test_files() -> list[str]:
    """The test files that hold gpu-marked tests (collecting only those keeps pytest from
    importing the TensorFlow and Dask test modules)."""
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").rglob("test_*.py")
                  if "mark.gpu" in p.read_text())


def junit_counts(xml: Path) -> dict:
    """passed / failed / skipped / errors and the failures' ids and first lines."""
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0, "failures": []}
    try:
        cases = ET.parse(xml).getroot().iter("testcase")
    except ET.ParseError:
        return {}
    for case in cases:
        tid = f"{case.get('classname')}::{case.get('name')}"
        for tag, key in (("failure", "failed"), ("error", "errors"), ("skipped", "skipped")):
            if (el := case.find(tag)) is not None:
                counts[key] += 1
                if key != "skipped":
                    counts["failures"].append(f"{tid}: {el.get('message', '')}"[:500])
                break
        else:
            counts["passed"] += 1
    return counts


def last_eval(run: Path) -> dict:
    """The last held-out evaluation in a run's metrics.jsonl (empty without one)."""
    path = run / "metrics.jsonl"
    if not path.is_file():
        return {}
    evals = [json.loads(line) for line in path.read_text().splitlines() if '"eval"' in line]
    return {f"held-out {k}": v for k, v in evals[-1].items() if k != "split"} if evals else {}


# ---------------------------------------------------------------- main

def prepare(out: Path) -> None:
    """A new folder, or an earlier gpu-check's (replaced); anything else is refused."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise SystemExit(f"gpu-check: {out} exists and is not an earlier gpu-check's "
                             f"output (no {MARKER}); choose another folder (GPU_OUT=dir)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by scripts/gpu_check.py; a later run may replace it\n")
    (out / ".gitignore").write_text("*\n")


def keep_runs(data: Path, out: Path) -> None:
    """The pipeline runs' small files into out/runs/ (the data folder may go)."""
    for run in sorted((data / "runs").glob("*")):
        for name in ("config.json", "metrics.jsonl", "curves.png"):
            if (run / name).is_file():
                (out / "runs" / run.name).mkdir(parents=True, exist_ok=True)
                shutil.copy2(run / name, out / "runs" / run.name / name)


def commit() -> str | None:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"],
                               capture_output=True, text=True, timeout=10,
                               check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + (" (with local changes)" if dirty else "")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="gpu_check", type=Path,
                        help="the report folder (default gpu_check)")
    parser.add_argument("--venv", default=".venv-gpu",
                        help="the check's venv (default .venv-gpu); 'none': this Python as is")
    parser.add_argument("--torch", default="",
                        help="a torch build to install first (pip requirement and options)")
    parser.add_argument("--wheels", default="", help="install from this folder of wheels only")
    parser.add_argument("--budget", type=float,
                        help=f"seconds for everything (default {BUDGET_S:.0f})")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep OUT/data (stores, runs, predictions)")
    parser.add_argument("--stages", default=",".join(GROUPS),
                        help=f"comma-separated groups to run: {', '.join(GROUPS)}")
    # development: the same stages on the CPU with tiny sizes (no GPU result)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help=argparse.SUPPRESS)
    parser.add_argument("--profile", choices=sorted(PROFILES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if unknown := set(args.stages.split(",")) - set(GROUPS):
        parser.error(f"unknown stage group {min(unknown)!r}: one of {', '.join(GROUPS)}")
    if args.venv == "none" and (args.torch or args.wheels):
        parser.error("--torch and --wheels install into the check's venv: not with --venv none")
    return args


def refuse_without_cuda(args) -> dict:
    """The launching Python's probe; exits with one line where the check cannot run."""
    if args.device == "cpu":
        return probe(sys.executable)
    try:
        gpu_present()
        base = probe(sys.executable)
        if not args.torch:
            torch_usable(base, sys.executable)
    except Refusal as why:
        print(f"gpu-check: needs a CUDA device: {why}", file=sys.stderr)
        sys.exit(2)
    return base


def main() -> None:
    args = parse_args()
    t0, started = time.monotonic(), datetime.now(timezone.utc).isoformat(timespec="seconds")
    base = refuse_without_cuda(args)
    profile = PROFILES[args.profile or args.device]
    budget = args.budget or profile["budget_s"]
    prepare(args.out)
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    runner = Runner(args.out.resolve(), sys.executable, t0 + budget, env)
    check = Check(runner, profile, args.device, set(args.stages.split(",")))
    results = {"title": "gpu-check", "mode": "cuda" if args.device == "cuda" else "cpu (dry run)",
               "started": started, "budget_s": budget, "commit": commit(),
               "command": shlex.join([Path(sys.executable).name, *sys.argv]),
               "environment": {}, "stages": []}
    refusal = None
    setup_stage = Stage("setup", "setup", profile["limits"]["setup"])
    check.records.append(setup_stage)
    try:
        python = setup(args, runner, base, setup_stage)
        if python and args.device == "cuda" and args.torch:
            try:
                torch_usable(probe(python), python)
            except Refusal as why:
                refusal = f"gpu-check: needs a CUDA device: {why}"
                setup_stage.status, setup_stage.message, python = "fail", refusal, None
        if python:
            runner.python = python
            check.run_all()
        else:
            setup_stage.status = "fail" if setup_stage.status == "pass" else setup_stage.status
    except KeyboardInterrupt:
        check.records[-1].status, check.records[-1].message = "fail", "interrupted (Ctrl-C)"
    finally:
        env_stage = next((s for s in check.records if s.group == "env"), None)
        results["environment"] = dict(env_stage.result) if env_stage else {}
        results["environment"].setdefault("python", base.get("python"))
        results["environment"].setdefault("torch", base.get("torch"))
        results["environment"].setdefault("cuda", base.get("cuda"))
        results["stages"] = [s.record() for s in check.records]
        results["seconds"] = round(time.monotonic() - t0, 1)
        keep_runs(check.data, args.out)
        if not args.keep_data:
            shutil.rmtree(check.data, ignore_errors=True)
        write_report(results, args.out)
    bad = failed(results)
    print(f"gpu-check: {len(results['stages']) - len(bad)} of {len(results['stages'])} stages "
          f"passed in {results['seconds']:.0f} s; report: {args.out / 'report.md'}")
    if refusal:
        print(refusal, file=sys.stderr)
        sys.exit(2)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
