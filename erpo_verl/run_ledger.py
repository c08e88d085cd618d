"""The test suite's ledger of end-to-end runs: how ``make test`` knows every run it pays for is declared.

Off unless ``ERPO_RUN_LEDGER`` names a file (tests/conftest.py sets it for a test session). The one place that
starts CPU training runs (:mod:`erpo_verl.integration.cpu.launch`) and ``erpo-eval generate`` (vLLM's engine)
append one JSON line per finished run: its kind, wall seconds and owner, the test or fixture that started it
(``ERPO_RUN_OWNER``, set by the conftest; else pytest's current test). At the end of the session the conftest
fails the suite if an owner is not listed in docs/testing.md, so a new end-to-end run states its cost there.
When the variable is unset, :func:`record_run` is one environment lookup. No dependencies.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

LEDGER_ENV = "ERPO_RUN_LEDGER"
OWNER_ENV = "ERPO_RUN_OWNER"


def record_run(kind: str, seconds: float, **fields: Any) -> None:
    """Append one finished run (``kind``: ``verl`` trainer run, ``vllm_generate``) to the ledger, if one is set."""
    path = os.environ.get(LEDGER_ENV)
    if not path:
        return
    owner = os.environ.get(OWNER_ENV) or os.environ.get("PYTEST_CURRENT_TEST", "?")
    entry = {"kind": kind, "owner": owner, "seconds": round(seconds, 1), "pid": os.getpid(), "time": time.time(),
             **fields}
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, default=str) + "\n")
    except OSError:  # the ledger must never break a run
        pass


def read_runs(path: str | Path) -> list[dict[str, Any]]:
    """Every run in the ledger at ``path``, in the order they finished (missing file: none)."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
