# erpo-verl: every target uses ./.venv (created by `make install`).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.erpo-installed
TORCH_VERSION ?= 2.13.0
# No network in tests or the demo.
OFFLINE := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false PYTHONHASHSEED=0
PYTEST_ARGS ?=
BENCH_ARGS ?=
BENCH_LEARNING_ARGS ?=

.PHONY: help install test test-fast demo bench bench-learning clean

help: ## show this help
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch first: the CPU wheel on these machines (a plain "torch" from PyPI would be a multi-GB CUDA build)
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

install: $(STAMP) ## create ./.venv with torch, verl[verl-core]==0.9.1 and erpo-verl (idempotent)
	@echo "erpo-verl installed in $(VENV)"

test: $(STAMP) ## run the whole test suite (unit, property, CPU end-to-end through the real verl trainer)
	$(OFFLINE) $(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## run the suite without the slow end-to-end tests
	$(OFFLINE) $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP) ## train ERPO and GRPO through verl on CPU with a tiny model; writes outputs/demo/
	$(OFFLINE) $(PY) -m erpo_verl.tools.demo --out outputs/demo

bench: $(STAMP) ## time the estimators against verl's grpo and a memory-bandwidth floor; writes outputs/bench/
	$(OFFLINE) $(PY) -m erpo_verl.tools.bench --out outputs/bench $(BENCH_ARGS)

bench-learning: $(STAMP) ## learning benchmark over estimators and seeds on the toy task (tens of minutes)
	$(OFFLINE) $(PY) -m erpo_verl.tools.bench_learning --out outputs/bench_learning $(BENCH_LEARNING_ARGS)

clean: ## remove outputs and caches (keeps .venv)
	rm -rf outputs .pytest_cache .hypothesis build *.egg-info
