# mhdsr — one Makefile for a fresh machine: every target creates .venv when missing.
# Quickstart:  make demo   (shard -> train -> sample -> eval on the bundled real AthenaK data)
#              make demo-forecast (forecast windows -> FNO -> rollouts -> chain -> eval per lead)
#              make science (the science benchmark: benchmarks/science.md)
#              make test   (installs everything, starts local SLURM when CI=true, runs pytest)

SHELL      := /bin/bash
PYTHON     ?= python3
VENV       ?= .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.mhdsr-installed
TORCH_PIN  ?= torch==2.13.0
DS_PIN     ?= deepspeed==0.19.8
PYTEST_ARGS ?=
export DS_ACCELERATOR ?= cpu
export PYTHONUNBUFFERED := 1

.PHONY: venv test test-fast bench bench-gpu lint demo demo-forecast forecast-bench science science-smoke slurm-up slurm-down clean

venv: $(STAMP)

# torch first (pinned: a bare "torch" would pull a multi-GB CUDA build), then deepspeed without
# build isolation so it builds against that torch, then the package and its dev tools.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIN)
	$(PY) -m pip install -q --no-build-isolation $(DS_PIN)
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

# CI=true: the SLURM tests must run, so the local cluster must start (failure = test failure).
# Elsewhere: use a running local SLURM if there is one; SLURM tests skip with a reason otherwise
# (`make slurm-up` starts one: it installs Debian's slurm-wlm and munge, needs root).
test: $(STAMP)
	@if [ "$${CI:-}" = "true" ]; then bash scripts/local-slurm.sh start; \
	 else bash scripts/local-slurm.sh status >/dev/null 2>&1 && echo "local SLURM is up" || echo "local SLURM not running: SLURM tests will skip (make slurm-up)"; fi
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow and not slurm" $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py --out benchmarks/results.json

# one GPU, <= 8 min: gpu-40m bf16 ZeRO-2 samples/s + MFU (micro-batch 8/16/32, compile and
# channels_last on/off), data wait on real shards, sampling, bf16 vs fp32, 2-rank nccl when two
# GPUs are visible -> benchmarks/gpu-results.json + .md. Without CUDA: a tiny-model CPU fallback
# (< 2 min) that says no GPU was measured (tests/test_gpu_check.py runs it).
bench-gpu: $(STAMP)
	$(PY) benchmarks/gpu_check.py --out benchmarks/gpu-results.json

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

demo: $(STAMP)
	bash scripts/demo.sh

# forecast stage + chain: windows -> FNO (2 ranks) -> rollouts -> super-resolve -> eval per lead
demo-forecast: $(STAMP)
	bash scripts/demo-forecast.sh

# The longer forecast recipe (~1 h here): FNO + generative forecaster on 0.1-orbit data, 4-orbit
# ensemble rollouts, chain, eval, NFE trade-off -> benchmarks/forecast.md.
# FORECAST_DATA=<AthenaK folder with the full 0.1-orbit 128^2 seeds 5 and 6>.
FORECAST_DATA ?= data/athenak
forecast-bench: $(STAMP)
	FORECAST_DATA=$(FORECAST_DATA) bash scripts/forecast-recipe.sh

# The science benchmark (~1 h here): cpu-base from scratch, test + held-out sampling, eval, goals.
# SCIENCE_DATA=<AthenaK folder> runs it on a larger data set; results collect in benchmarks/science.md.
SCIENCE_DATA ?= data/athenak
science: $(STAMP)
	SCIENCE_DATA=$(SCIENCE_DATA) bash scripts/science.sh

science-smoke: $(STAMP)
	SCIENCE_DATA=$(SCIENCE_DATA) SCIENCE_SMOKE=1 bash scripts/science.sh

slurm-up:
	bash scripts/local-slurm.sh start

slurm-down:
	bash scripts/local-slurm.sh stop

clean:
	rm -rf runs outputs .pytest_cache
