# make test   : create .venv from nothing, install everything the tests need, run the suite
# make demo   : the main job end to end on built-in synthetic data
# make bench  : the benchmarks (results in benchmarks/RESULTS.md)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The CPU wheel of this version lies on the development machines' disk; GPU users
# install their own torch build first and then `pip install -e .`.
TORCH  ?= torch==2.13.0
DEMO   ?= demo_out

.PHONY: test test-fast demo bench lint clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[tf,dask,bench,dev]"
	touch $(STAMP)

# The suite runs in $(WORKERS) processes (pytest-xdist; each test file in one of them): 5.5 min
# on the 2-core VM (AMD EPYC Zen 4, AVX-512) from a clean checkout, against 7.4 min in one (numba compiles every kernel
# on a first run). WORKERS=0 runs it in this one process.
WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile -m "not slow"

demo: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python scripts/demo.py "$(DEMO)"

bench: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash benchmarks/run_all.sh

# make fuzz  : the decoder's fuzz campaign (not part of make test): 1,000,000 mutated records
#              with numba's bounds checks on, then as shipped (benchmarks/RESULTS.md `## fuzz`)
.PHONY: fuzz
fuzz: $(STAMP)
	$(BIN)/python benchmarks/fuzz_decoder.py --records 1000000 --keep fuzz_crashes

# make gpu-check : run first on a new GPU machine (needs CUDA; at most 8 min on one H100): the
#   gpu tests, loader and training benchmarks on the device, a short train -> predict; one folder
#   $(GPU_OUT) (default gpu_check/: report.md, report.json, logs/). Not the CPU pin above: it
#   uses PYTHON's CUDA torch through its own venv (GPU_VENV, default .venv-gpu; none: PYTHON as
#   is); GPU_TORCH='torch==X --index-url URL' installs a build, WHEELS=dir installs offline.
.PHONY: gpu-check
gpu-check:
	@$(PYTHON) scripts/gpu_check.py "$(or $(GPU_OUT),gpu_check)" --venv "$(or $(GPU_VENV),.venv-gpu)" \
	  --torch "$(GPU_TORCH)" --wheels "$(WHEELS)"

# make rehearsal : the 3rd challenge's sizes on synthetic data through every stage (about
#   30 minutes and ~45 GB of disk under bench_data/rehearsal on a 2-core CPU VM; REHEARSAL_ARGS
#   passes options, e.g. --scale 0.01 or --keep): benchmarks/RESULTS.md `## rehearsal`
.PHONY: rehearsal
rehearsal: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python benchmarks/rehearsal.py $(REHEARSAL_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check ingest trainer predict tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
	if [ -f "$(DEMO)/.demo-output" ]; then rm -rf "$(DEMO)"; fi
