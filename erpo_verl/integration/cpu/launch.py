"""Launch ``python -m verl.trainer.main_ppo`` on the CPU backend and collect its per-step metrics.

The one place that starts CPU training runs for the demo, the tests, the recipes' ``PROFILE=cpu-tiny`` and the
learning benchmark: it sets the CPU environment, points verl's file logger at ``<out_dir>/metrics.jsonl``,
sends verl's console output to ``<out_dir>/train.log`` and reports each finished step to an optional callback
while the run goes on.

Every run gets a private Ray temp root (:mod:`.cluster`); a layout with ``trainer.nnodes > 1`` in the overrides
(``CPU_NNODES``) also gets a local multi-node Ray cluster, started before verl and joined through
``ray_kwargs.ray_init.address``. Whatever happens — success, failure, timeout, Ctrl-C — the run's Ray processes
are ended and its temp root deleted before the call returns.

    python -m erpo_verl.integration.cpu.launch -- <verl overrides>    # streams verl's output; used by recipes
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from erpo_verl import run_ledger
from erpo_verl.integration.cpu.cluster import (
    Layout,
    LocalCluster,
    cleanup_run,
    join_overrides,
    layout_of_overrides,
    make_ray_tmpdir,
    processes_of,
)
from erpo_verl.integration.cpu.profile import cpu_env
from erpo_verl.integration.cpu.shm import ShmTracker
from erpo_verl.tools.metrics_io import load_metrics

SHUTDOWN_GRACE_S = 15.0  # Ray's own shutdown after the driver exits; what is still alive after it is ended


@dataclass
class CPURun:
    returncode: int
    out_dir: Path
    log_path: Path
    metrics_path: Path
    metrics: list[dict[str, float]]
    seconds: float
    layout: Layout = field(default_factory=Layout)
    node_ids: list[str] = field(default_factory=list)  # the local cluster's raylets (multi-node layouts)
    ray_tmpdir: Path | None = None  # deleted when the run returns
    stragglers: list[int] = field(default_factory=list)  # run processes still alive after the grace period
    shm_seen: list[str] = field(default_factory=list)  # /dev/shm segments of vLLM / verl's weight transfer it used
    shm_removed: list[str] = field(default_factory=list)  # ... of which it left these behind (removed)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class _RunContext:
    """The run's private Ray temp root and, for several nodes, its local cluster; tears both down on exit."""

    def __init__(self, overrides: list[str], env: dict[str, str], node_env: dict[int, dict[str, str]] | None):
        self.layout = layout_of_overrides(overrides)  # raises LayoutError with the variable's name
        self.overrides = list(overrides)
        self.env = env
        self.node_env = node_env
        self.cluster: LocalCluster | None = None
        self.ray_tmpdir: Path | None = None
        self.stragglers: list[int] = []
        self.shm: ShmTracker | None = None
        self.started = 0.0

    def __enter__(self) -> _RunContext:
        self.started = time.time()
        self.ray_tmpdir = make_ray_tmpdir()
        self.env["RAY_TMPDIR"] = str(self.ray_tmpdir)  # every process of the run carries it (see cluster.py)
        tmpdir = self.ray_tmpdir
        self.shm = ShmTracker(lambda: processes_of(tmpdir)).start()  # the run's /dev/shm segments (shm.py)
        self.env.pop("RAY_ADDRESS", None)  # never join someone else's cluster
        if self.layout.multi_node:
            self.cluster = LocalCluster(self.layout, self.env, self.node_env)
            try:
                self.cluster.__enter__()
            except BaseException:
                self.__exit__(None, None, None)
                raise
            self.overrides += join_overrides(self.cluster.address)
        return self

    @property
    def node_ids(self) -> list[str]:
        return list(self.cluster.node_ids) if self.cluster else []

    def __exit__(self, *exc) -> None:
        try:
            if self.cluster is not None:
                self.cluster.__exit__(None, None, None)
        finally:
            if self.ray_tmpdir is not None:
                deadline = time.time() + SHUTDOWN_GRACE_S
                while processes_of(self.ray_tmpdir) and time.time() < deadline:
                    time.sleep(0.5)
                self.stragglers = cleanup_run(self.ray_tmpdir)
            if self.shm is not None:
                self.shm.finish()
            run_ledger.record_run("verl", time.time() - self.started, layout=self.layout.describe(),
                                   steps=_override(self.overrides, "trainer.total_training_steps"),
                                   estimator=_override(self.overrides, "algorithm.adv_estimator"),
                                   rollout=_override(self.overrides, "actor_rollout_ref.rollout.name"))


def _override(overrides: list[str], key: str) -> str | None:
    """The last value given to ``key`` in Hydra overrides (for the test ledger)."""
    found = None
    for item in overrides:
        name, sep, value = item.lstrip("+").partition("=")
        if sep and name == key:
            found = value
    return found


def _stop(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """Ask the driver to stop (SIGINT: verl/Ray shut down cleanly), then kill it."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 5.0)):
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def run_verl_cpu(
    overrides: Sequence[str],
    out_dir: str | Path,
    timeout: float = 900,
    on_step: Callable[[dict[str, float]], None] | None = None,
    extra_env: dict[str, str] | None = None,
    node_env: dict[int, dict[str, str]] | None = None,
) -> CPURun:
    """Run verl's trainer entry point with ``overrides`` (the CPU profile plus the caller's).

    The layout (nodes x ranks per node) is read from the overrides' ``trainer.nnodes`` / ``trainer.n_gpus_per_node``.
    ``node_env`` adds environment variables to single nodes of a multi-node layout (tests only).
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log_path, metrics_path = out / "train.log", out / "metrics.jsonl"
    env = cpu_env()
    env["VERL_FILE_LOGGER_PATH"] = str(metrics_path)
    env.update(extra_env or {})
    start = time.time()
    seen = 0
    ctx = _RunContext(list(overrides), env, node_env)
    with log_path.open("w") as log, ctx:
        cmd = [sys.executable, "-m", "verl.trainer.main_ppo", *ctx.overrides]
        log.write(f"# layout: {ctx.layout.describe()}; Ray temp root {ctx.ray_tmpdir}\n$ " + " ".join(cmd) + "\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(out),
                                start_new_session=True)
        try:
            while proc.poll() is None:
                if time.time() - start > timeout:
                    raise TimeoutError(f"verl run in {out} exceeded {timeout:.0f}s; see {log_path}")
                seen = _report_new_steps(metrics_path, seen, on_step)
                time.sleep(1.0)
        finally:
            _stop(proc)
    _report_new_steps(metrics_path, seen, on_step)
    metrics = load_metrics(metrics_path) if metrics_path.exists() else []
    return CPURun(proc.returncode, out, log_path, metrics_path, metrics, time.time() - start, ctx.layout,
                  ctx.node_ids, ctx.ray_tmpdir, ctx.stragglers,
                  shm_seen=sorted(ctx.shm.seen) if ctx.shm else [], shm_removed=list(ctx.shm.removed) if ctx.shm else [])


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


def main(argv=None) -> int:
    """``python -m erpo_verl.integration.cpu.launch [--] <overrides>``: one run with the output on this terminal.

    The environment is the caller's plus the CPU profile's; the recipes call this for ``PROFILE=cpu-tiny``.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] == "--":
        args = args[1:]
    if not args or args[0] in ("-h", "--help"):
        print(main.__doc__)
        return 0 if args else 2
    env = cpu_env()

    def _interrupt(signum, frame):  # SIGTERM (e.g. from a job scheduler) tears down like Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)
    # Explicitly, not Python's default: a shell that starts a job in the background without job control (CI
    # scripts, `cmd &`) makes it ignore SIGINT, and Python then keeps ignoring it; `kill -INT` must still tear
    # the run down (seen: the interrupt test, run from such a shell, trained all its steps instead).
    signal.signal(signal.SIGINT, _interrupt)
    try:
        ctx = _RunContext(args, env, None)
    except ValueError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    rc = 1
    try:
        with ctx:
            cmd = [sys.executable, "-m", "verl.trainer.main_ppo", *ctx.overrides]
            print(f"[erpo launch] layout {ctx.layout.describe()}; Ray temp root {ctx.ray_tmpdir}", file=sys.stderr,
                  flush=True)
            proc = subprocess.Popen(cmd, env=env, start_new_session=True)
            try:
                rc = proc.wait()
            finally:
                _stop(proc)
    except KeyboardInterrupt:
        print("[erpo launch] interrupted: the run's Ray processes were ended", file=sys.stderr)
        return 130
    if ctx.stragglers:
        print(f"[erpo launch] ended {len(ctx.stragglers)} process(es) Ray left behind", file=sys.stderr)
    if ctx.shm is not None and ctx.shm.removed:
        print(f"[erpo launch] removed {len(ctx.shm.removed)} /dev/shm segment(s) the run left: "
              f"{', '.join(ctx.shm.removed)}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
