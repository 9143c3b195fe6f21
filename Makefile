# Front end for the two README commands (`make run`, `make test`) and the other chores.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export DVC_NO_ANALYTICS := 1
export MPLBACKEND := Agg
export OMP_NUM_THREADS ?= 1
# bytecode caches on (an inherited PYTHONDONTWRITEBYTECODE=1 made every process, and pytest's assertion rewriting of
# every test module, compile from source: +8 s per pytest worker, +1-2 s per `python -m flows` subprocess)
export PYTHONDONTWRITEBYTECODE :=

.PHONY: help setup run lumi test lint bench bench-lumi-grid bench-overhead bench-ref server serve clean

PORT ?= 4200

## help: list the make targets with their one-line descriptions
help:
	@grep -E '^## ' $(MAKEFILE_LIST) | sed -e 's/^## /  /'

## setup: create .venv (if missing) with the pinned dependencies and install the project
setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)

## run: set up, then reproduce the default pipeline with DVC (one local Prefect server for all stages, unless PREFECT_API_URL is set)
run: setup
	$(PY) -m flows.repro  # nothing stale: done; else `flows check` (a bad params.yaml stops here), then dvc repro

## lumi: set up, then reproduce only the luminosity stages (lumi_scan -> lumi_report)
lumi: setup
	$(PY) -m flows.repro lumi_report

## test: set up, then run the test suite
test: setup
	$(PY) -m pytest

## lint: set up, then lint (ruff), check the formatting (ruff format) and type-check (mypy) the packages
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy tomopt_lib lumi_lib tasks flows config benchmarks

## bench: every benchmark of this project, 1 thread (JSON in bench_out/; the full 1600-inversion lumi grid is bench-lumi-grid)
bench: setup
	$(PY) benchmarks/run_all.py
	$(PY) benchmarks/bench_inference.py
	$(PY) benchmarks/bench_epoch.py
	$(PY) benchmarks/bench_lumi_model.py
	$(PY) benchmarks/bench_lumi_inversion.py
	$(PY) benchmarks/bench_layouts.py
	$(PY) benchmarks/bench_ladle_layouts.py
	$(PY) benchmarks/bench_regularisation.py --strengths 0.08 0.32 0.64 1.28 2.56 5.12

## bench-overhead: orchestration overhead of one stage process under one running Prefect server, as in make run (bench_out/stage_overhead.json)
bench-overhead: setup
	$(PY) benchmarks/bench_stage_overhead.py --repeats 3

## bench-lumi-grid: the reference's full "last example" grid, 1600 inversions, 2 single-threaded worker processes
bench-lumi-grid: setup
	$(PY) benchmarks/bench_lumi_inversion.py --sections grid --processes 2

## bench-ref: the same workloads side by side with the reference tomopt==0.1.0 (installed into .refvenv)
bench-ref: setup
	$(PY) benchmarks/run_all.py --with-reference

## server: start a local Prefect server + UI on http://127.0.0.1:$(PORT) (PORT=4200; export PREFECT_API_URL=http://127.0.0.1:$(PORT)/api)
server: setup
	$(VENV)/bin/prefect server start --host 127.0.0.1 --port $(PORT)

## serve: serve the cron deployments of params.yaml's schedules section (needs `make server` + PREFECT_API_URL)
serve: setup
	$(PY) -m flows.serve

clean:
	rm -rf bench_out .pytest_cache
