"""Launch ``python -m verl.trainer.main_ppo`` on the CPU backend and collect its per-step metrics.

The one place that starts CPU training runs for the demo, the tests and the learning benchmark: it sets the
CPU environment, points verl's file logger at ``<out_dir>/metrics.jsonl``, sends verl's console output to
``<out_dir>/train.log`` and reports each finished step to an optional callback while the run goes on.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from erpo_verl.integration.cpu.profile import cpu_env
from erpo_verl.tools.metrics_io import load_metrics


@dataclass
class CPURun:
    returncode: int
    out_dir: Path
    log_path: Path
    metrics_path: Path
    metrics: list[dict[str, float]]
    seconds: float

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def run_verl_cpu(
    overrides: Sequence[str],
    out_dir: str | Path,
    timeout: float = 900,
    on_step: Callable[[dict[str, float]], None] | None = None,
    extra_env: dict[str, str] | None = None,
) -> CPURun:
    """Run verl's trainer entry point with ``overrides`` (the CPU profile plus the caller's)."""
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log_path, metrics_path = out / "train.log", out / "metrics.jsonl"
    env = cpu_env()
    env["VERL_FILE_LOGGER_PATH"] = str(metrics_path)
    env.update(extra_env or {})
    overrides = list(overrides)  # the CPU profile turns verl's file logger on; it writes to metrics_path
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", *overrides]
    start = time.time()
    seen = 0
    with log_path.open("w") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(out))
        try:
            while proc.poll() is None:
                if time.time() - start > timeout:
                    proc.kill()
                    proc.wait()
                    raise TimeoutError(f"verl run in {out} exceeded {timeout:.0f}s; see {log_path}")
                seen = _report_new_steps(metrics_path, seen, on_step)
                time.sleep(1.0)
        finally:
            if proc.poll() is None:
                proc.kill()
    _report_new_steps(metrics_path, seen, on_step)
    metrics = load_metrics(metrics_path) if metrics_path.exists() else []
    return CPURun(proc.returncode, out, log_path, metrics_path, metrics, time.time() - start)


def _report_new_steps(path: Path, seen: int, on_step) -> int:
    if on_step is None or not path.exists():
        return seen
    try:
        records = load_metrics(path)
    except ValueError:  # a line being written right now
        return seen
    for record in records[seen:]:
        on_step(record)
    return len(records)
