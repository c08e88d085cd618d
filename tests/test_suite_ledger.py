"""The suite's ledger of end-to-end runs (docs/testing.md, "Keeping it fast"): a run that docs/testing.md does not
list fails the session; waiting helpers fail on a stall, not on a fixed deadline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from erpo_testlib import undeclared_run_owners, wait_until

from erpo_verl import run_ledger
from erpo_verl.integration.cpu.launch import _override

REPO = Path(__file__).resolve().parents[1]
PROBE_ENV = "ERPO_TEST_LEDGER_PROBE"


def test_a_run_is_recorded_with_its_owner_only_when_a_ledger_is_set(tmp_path, monkeypatch):
    ledger = tmp_path / "runs.jsonl"
    monkeypatch.delenv(run_ledger.LEDGER_ENV, raising=False)
    run_ledger.record_run("verl", 1.0)
    assert not ledger.exists() and run_ledger.read_runs(ledger) == []
    monkeypatch.setenv(run_ledger.LEDGER_ENV, str(ledger))
    monkeypatch.setenv(run_ledger.OWNER_ENV, "tests/test_x.py::some_fixture")
    run_ledger.record_run("verl", 12.34, layout="1 node x 1 rank")
    monkeypatch.delenv(run_ledger.OWNER_ENV)
    run_ledger.record_run("vllm_generate", 2.0)  # no owner set: pytest's current test
    first, second = run_ledger.read_runs(ledger)
    assert (first["kind"], first["owner"], first["seconds"], first["layout"]) == (
        "verl", "tests/test_x.py::some_fixture", 12.3, "1 node x 1 rank")
    assert second["owner"].startswith("tests/test_suite_ledger.py::test_a_run_is_recorded")


def test_owners_missing_from_the_doc_are_reported_once_each():
    runs = [{"owner": "tests/a.py::run"}, {"owner": "tests/b.py::test_b"}, {"owner": "tests/b.py::test_b"}]
    doc = "| `tests/a.py::run` | 60 s |\nmentions tests/b.py::test_b only without backticks"
    assert undeclared_run_owners(runs, doc) == ["tests/b.py::test_b"]
    assert undeclared_run_owners(runs, doc + "\n`tests/b.py::test_b`") == []


def test_the_ledger_reads_the_last_value_of_an_override():
    overrides = ["trainer.total_training_steps=2", "+algorithm.adv_estimator=grpo", "algorithm.adv_estimator=erpo"]
    assert _override(overrides, "trainer.total_training_steps") == "2"
    assert _override(overrides, "algorithm.adv_estimator") == "erpo"
    assert _override(overrides, "trainer.nnodes") is None


@pytest.mark.skipif(os.environ.get(PROBE_ENV) != "1", reason="only inside the session test below")
def test_probe_an_undeclared_end_to_end_run():
    run_ledger.record_run("verl", 0.5)


def test_a_session_with_an_end_to_end_run_that_docs_testing_md_does_not_list_fails(tmp_path):
    env = {**os.environ, PROBE_ENV: "1", run_ledger.LEDGER_ENV: str(tmp_path / "runs.jsonl")}
    env.pop(run_ledger.OWNER_ENV, None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "tests/test_suite_ledger.py::test_probe_an_undeclared_end_to_end_run"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert "1 passed" in out, out[-3000:]
    assert proc.returncode == 1, out[-3000:]  # the test passed, the session failed
    assert "docs/testing.md does not list" in out
    assert "tests/test_suite_ledger.py::test_probe_an_undeclared_end_to_end_run" in out
    (entry,) = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert entry["owner"] == "tests/test_suite_ledger.py::test_probe_an_undeclared_end_to_end_run"


def test_wait_until_returns_the_result_and_waits_as_long_as_progress_is_made():
    start = time.monotonic()
    ticks = iter(range(1000))
    # ~0.6 s in all with a 0.25 s stall limit: it keeps waiting because the progress value keeps changing
    result = wait_until(lambda: time.monotonic() - start > 0.6 and "done", progress=lambda: next(ticks),
                        stall_s=0.25, poll_s=0.05)
    assert result == "done" and time.monotonic() - start > 0.6


def test_wait_until_fails_when_nothing_moves_for_the_stall_time():
    start = time.monotonic()
    with pytest.raises(AssertionError, match="waiting for the thing: nothing moved for 0s"):
        wait_until(lambda: False, progress=lambda: 7, stall_s=0.3, poll_s=0.05, what="the thing")
    assert 0.3 <= time.monotonic() - start < 5
