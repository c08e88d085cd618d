"""Symbolic answer comparison with a hard time bound that holds in any thread.

math-verify (sympy underneath) decides equivalences that string rules cannot (``\\sqrt{8}`` vs
``2\\sqrt{2}``, ``\\{1,2\\}`` vs ``\\{2,1\\}``), but its own timeout relies on ``signal.alarm`` and therefore
fails in threads - which is where verl calls reward functions (``loop.run_in_executor``) and why MATH scores
were silently 0 in Ray workers (verl PR #5635). And without a timeout, one hostile answer hangs the trainer.

Design chosen here:

* Comparisons run in a small pool of long-lived worker **subprocesses**
  (``python -m erpo_verl.rewards._symbolic_worker``, started lazily, talking JSON lines over pipes). A plain
  ``subprocess`` is used instead of ``multiprocessing``: it does not re-import the caller's ``__main__``
  (a training script without an ``if __name__ == "__main__"`` guard would otherwise run again) and it
  works the same from threads, Ray actors and forked processes.
* Each call has a deadline. The worker stops itself at 80 % of it (a signal timer in the worker's own main
  thread); if it has not answered by the deadline - a C-level bignum operation cannot be interrupted - the
  caller kills it and the next call starts a fresh one (about 0.5-1 s to import sympy).
* Callers wait for a free worker; waiting for a worker to *start* is bounded separately
  (``startup_timeout_s``) so that a slow first start does not turn correct answers into timeouts.

The pool is per process and rebuilt after ``fork``; workers exit when their stdin closes, so they never
outlive the process that started them.
"""

from __future__ import annotations

import atexit
import enum
import json
import logging
import os
import selectors
import subprocess
import sys
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # the directory that contains erpo_verl/
SOFT_DEADLINE_FRACTION = 0.8
UNAVAILABLE_RETRY_S = 30.0


def _site_directories() -> set[str]:
    import site

    directories = set(site.getsitepackages()) if hasattr(site, "getsitepackages") else set()
    if getattr(site, "ENABLE_USER_SITE", False):
        directories.add(site.getusersitepackages())
    return {str(Path(d).resolve()) for d in directories}


class Verdict(enum.Enum):
    EQUAL = "equal"
    NOT_EQUAL = "not_equal"
    TIMEOUT = "timeout"
    ERROR = "error"  # the comparison itself failed (parser bug, recursion); scored as not equal
    UNAVAILABLE = "unavailable"  # no worker could be started (e.g. math-verify missing)


class _WorkerGone(Exception):
    """The worker process died or closed its pipe."""


class _DeadlinePassed(Exception):
    """No reply arrived before the deadline."""


class _Worker:
    """One worker subprocess and the reading side of its reply pipe."""

    def __init__(self, memory_limit_mb: int):
        env = dict(os.environ)
        if _PACKAGE_ROOT not in _site_directories():  # a source checkout that is not pip-installed
            env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        env["ERPO_SYMBOLIC_MEMORY_MB"] = str(memory_limit_mb)
        for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            env[variable] = "1"  # sympy work is single-threaded; don't start a BLAS pool per worker
        self.process = subprocess.Popen(
            [sys.executable, "-m", "erpo_verl.rewards._symbolic_worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        self._buffer = b""
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.process.stdout, selectors.EVENT_READ)
        self._next_id = 0

    def _read_line(self, deadline: float) -> dict:
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _DeadlinePassed()
            if not self._selector.select(timeout=remaining):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise _WorkerGone()
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def wait_ready(self, deadline: float) -> None:
        message = self._read_line(deadline)
        if not message.get("ready"):
            raise _WorkerGone(message.get("error", "worker failed to start"))

    def compare(self, pred: str, gold: str, timeout_s: float) -> Verdict:
        self._next_id += 1
        request = {
            "id": self._next_id,
            "pred": pred,
            "gold": gold,
            "soft_timeout_s": timeout_s * SOFT_DEADLINE_FRACTION,
        }
        deadline = time.monotonic() + timeout_s
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode("ascii"))
            self.process.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise _WorkerGone() from exc
        while True:
            reply = self._read_line(deadline)
            if reply.get("id") == self._next_id:
                return Verdict(reply.get("verdict", "error"))

    def kill(self) -> None:
        try:
            self.process.kill()
        except OSError:
            pass
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self._selector.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - kill() is SIGKILL on POSIX
            pass


class SymbolicVerifier:
    """Thread-safe pool of symbolic-comparison workers with a per-call deadline.

    Args:
        max_workers: the most worker processes kept at once (each holds sympy, ~100 MB).
        startup_timeout_s: how long a call may wait for a new worker to import math-verify.
        memory_limit_mb: address-space limit of each worker (0 disables it).
    """

    def __init__(self, max_workers: int = 2, startup_timeout_s: float = 60.0, memory_limit_mb: int = 4096):
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.max_workers = max_workers
        self.startup_timeout_s = startup_timeout_s
        self.memory_limit_mb = memory_limit_mb
        self._idle: list[_Worker] = []
        self._live = 0
        self._condition = threading.Condition()
        self._unavailable_until = 0.0
        self._closed = False
        self.stats = {"calls": 0, "timeouts": 0, "restarts": 0, "errors": 0}

    def _start_worker(self) -> _Worker:
        try:
            worker = _Worker(self.memory_limit_mb)
        except OSError as exc:  # no python executable, no processes left, ...
            raise _WorkerGone(f"cannot start a symbolic worker: {exc!r}") from exc
        try:
            worker.wait_ready(time.monotonic() + self.startup_timeout_s)
        except (_DeadlinePassed, _WorkerGone, ValueError) as exc:
            worker.kill()
            raise _WorkerGone(f"symbolic worker did not start: {exc!r}") from exc
        return worker

    def _acquire(self) -> _Worker:
        with self._condition:
            while True:
                if self._closed:
                    raise _WorkerGone("verifier closed")
                if self._idle:
                    return self._idle.pop()
                if self._live < self.max_workers:
                    if time.monotonic() < self._unavailable_until:
                        raise _WorkerGone("symbolic workers unavailable (recent start failure)")
                    self._live += 1
                    break
                self._condition.wait()
        try:
            return self._start_worker()
        except BaseException:
            with self._condition:
                self._live -= 1
                self._unavailable_until = time.monotonic() + UNAVAILABLE_RETRY_S
                self._condition.notify()
            raise

    def _release(self, worker: _Worker | None) -> None:
        with self._condition:
            if worker is None:
                self._live -= 1
            elif self._closed:
                self._live -= 1
                worker.kill()
            else:
                self._idle.append(worker)
            self._condition.notify()

    def warm_up(self, workers: int = 1) -> bool:
        """Start up to ``workers`` workers now (e.g. before timing something); True if they are ready."""
        started = []
        try:
            for _ in range(min(workers, self.max_workers)):
                started.append(self._acquire())
        except _WorkerGone as exc:
            logger.warning("%s", exc)
            return False
        finally:
            for worker in started:
                self._release(worker)
        return True

    def compare(self, pred: str, gold: str, timeout_s: float) -> Verdict:
        """Whether ``pred`` and ``gold`` (LaTeX answers, no ``\\boxed``) are mathematically equal.

        Returns within ``timeout_s`` once a worker is available (plus the start of a worker when one has to
        be started). Never raises for a bad input; infrastructure failures give ``Verdict.UNAVAILABLE``.
        """
        self.stats["calls"] += 1
        try:
            worker = self._acquire()
        except _WorkerGone as exc:
            self._warn_unavailable(str(exc))
            return Verdict.UNAVAILABLE
        try:
            verdict = worker.compare(pred, gold, timeout_s)
        except _DeadlinePassed:
            self.stats["timeouts"] += 1
            self.stats["restarts"] += 1
            worker.kill()
            self._release(None)
            return Verdict.TIMEOUT
        except (_WorkerGone, ValueError, OSError):
            # The worker died (memory limit hit hard, killed from outside) or spoke garbage: replace it.
            self.stats["errors"] += 1
            self.stats["restarts"] += 1
            worker.kill()
            self._release(None)
            return Verdict.ERROR
        except BaseException:
            worker.kill()
            self._release(None)
            raise
        if verdict is Verdict.TIMEOUT:
            self.stats["timeouts"] += 1
        self._release(worker)
        return verdict

    _unavailable_warned = False

    def _warn_unavailable(self, reason: str) -> None:
        if not SymbolicVerifier._unavailable_warned:
            SymbolicVerifier._unavailable_warned = True
            logger.warning("symbolic answer checking is off (%s); scoring by string/number match only", reason)

    def close(self) -> None:
        """Stop all idle workers; busy ones are stopped when their call returns."""
        with self._condition:
            self._closed = True
            idle, self._idle = self._idle, []
            self._live -= len(idle)
            self._condition.notify_all()
        for worker in idle:
            worker.kill()


_shared: SymbolicVerifier | None = None
_shared_pid: int | None = None
_shared_lock = threading.Lock()


def default_worker_count() -> int:
    """Workers for the shared verifier: ``ERPO_SYMBOLIC_WORKERS`` or min(4, CPUs)."""
    configured = os.environ.get("ERPO_SYMBOLIC_WORKERS")
    if configured:
        return max(1, int(configured))
    return max(1, min(4, os.cpu_count() or 1))


def shared_verifier() -> SymbolicVerifier:
    """The process-wide verifier (created on first use, recreated in a forked child)."""
    global _shared, _shared_pid
    pid = os.getpid()
    if _shared is not None and _shared_pid == pid:
        return _shared
    with _shared_lock:
        if _shared is None or _shared_pid != pid:
            # After fork the parent's pipes belong to the parent; start over without touching them.
            _shared = SymbolicVerifier(max_workers=default_worker_count())
            _shared_pid = pid
        return _shared


def _close_shared() -> None:
    if _shared is not None and _shared_pid == os.getpid():
        _shared.close()


atexit.register(_close_shared)
