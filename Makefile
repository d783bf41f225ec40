# chestx: every target sets up .venv from uv.lock first (installing uv with pip if it is missing).
SHELL := /bin/bash
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
VENV := .venv
PY := $(VENV)/bin/python
DATA ?= nih_sample
ROOT ?=
ARGS ?=

.PHONY: help venv test test-fast train benchmark perf clean

help:
	@echo "make train       train DenseNet121 on the embedded real NIH sample (5 epochs, 128 px, ~2-2.5 min on a 2-core VM, README) and print its test AUROC table"
	@echo "make test        run the whole test suite (what CI runs)"
	@echo "make test-fast   skip tests marked slow"
	@echo "make benchmark   sweep the five backbones and build the comparison report (DATA=nih ROOT=/data/ChestX-ray14 for the real thing)"
	@echo "make perf        loader / training / inference throughput table, perf.json in outputs/perf/<date>/<time> (ARGS=\"full=true\" etc.: keys of conf/perf.yaml)"

# --compile-bytecode: the .pyc files are written once here; without them every Python process (each test
# worker, each `python -m chestx.*` a test starts) compiles torch, lightning and timm again wherever
# PYTHONDONTWRITEBYTECODE is set or site-packages is read-only (about 8 s of CPU each on the 2-core VM)
$(VENV)/.synced: pyproject.toml uv.lock
	@$(UV) --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --dev --compile-bytecode
	@touch $@

venv: $(VENV)/.synced

# the suite runs on every core (pytest-xdist; one test file per worker at a time so module fixtures are built once),
# the files handed out in the order tests/conftest.py gives them (heaviest first), not reordered by test count
PYTEST := $(PY) -m pytest -q -n auto --dist loadfile --no-loadscope-reorder

test: venv
	$(PYTEST)

test-fast: venv
	$(PYTEST) -m "not slow"

train: venv
	$(PY) -m chestx.train experiment=demo $(ARGS)

# DATA=nih_sample (default): conf/experiment/benchmark_sample.yaml, about 10 min on 2 idle CPU cores (< 30 min);
# DATA=nih ROOT=...: conf/experiment/benchmark.yaml, full size (hours on a GPU). Report in <sweep>/report/.
benchmark: venv
	@if [ "$(DATA)" = nih_sample ]; then echo "make benchmark: 5 backbones on the embedded NIH sample (112 px, 3 epochs; experiment=benchmark_sample): about 10 min on 2 idle CPU cores, under 30"; else echo "make benchmark: 5 backbones on data=$(DATA) at full size (experiment=benchmark): hours; a GPU is advised"; fi
	$(PY) -m chestx.benchmark data=$(DATA) $(if $(filter-out nih_sample,$(DATA)),experiment=benchmark) $(if $(ROOT),data.root=$(ROOT)) $(ARGS)

# ARGS are chestx.perf overrides (conf/perf.yaml), e.g. ARGS="full=true" or ARGS="parts=[loader] hydra.run.dir=perf"
perf: venv
	$(PY) -m chestx.perf $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
