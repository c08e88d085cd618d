"""The ``/dev/shm`` segments of one CPU run: which ones it used, and removing those it leaves behind.

vLLM's message queues (``psm_*``, Python's ``SharedMemory`` names) and verl's shared-memory weight transfer
(``verl_weights_*``, used when the platform has no CUDA IPC, as on CPU) live in ``/dev/shm``. When Ray ends the
rollout server at shutdown, nothing unlinks them: every vLLM run leaked two segments (160-240 MB each, sparse).

:class:`ShmTracker` watches the run's own processes (``pids()``) while it runs and records every such segment
they map (``/proc/<pid>/maps``), so that at the end exactly the segments of *this* run — never those of another
run on the same machine — are removed. ``seen`` and ``removed`` are reported in the run's result.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

SHM_DIR = Path("/dev/shm")
PREFIXES = ("psm_", "verl_weights_")


def segments_mapped_by(pid: int, prefixes: Iterable[str] = PREFIXES) -> set[str]:
    """Names of ``/dev/shm`` segments with one of ``prefixes`` that process ``pid`` has mapped."""
    found = set()
    try:
        with open(f"/proc/{pid}/maps", errors="replace") as maps:
            for line in maps:
                idx = line.find(f"{SHM_DIR}/")
                if idx < 0:
                    continue
                name = line[idx + len(str(SHM_DIR)) + 1 :].strip().removesuffix(" (deleted)")
                if name.startswith(tuple(prefixes)):
                    found.add(name)
    except OSError:  # the process ended meanwhile, or is not ours
        pass
    return found


class ShmTracker:
    """Poll ``pids()`` every ``interval`` seconds in a daemon thread; :meth:`finish` removes what is left."""

    def __init__(self, pids: Callable[[], list[int]], interval: float = 2.0, shm_dir: Path = SHM_DIR) -> None:
        self._pids = pids
        self._interval = interval
        self._shm_dir = shm_dir
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="erpo-shm-tracker", daemon=True)
        self.seen: set[str] = set()
        self.removed: list[str] = []

    def start(self) -> ShmTracker:
        self._thread.start()
        return self

    def poll(self) -> None:
        for pid in self._pids():
            self.seen |= segments_mapped_by(pid)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.poll()
            except Exception:  # never let bookkeeping break a run
                pass

    def stop(self) -> None:
        """Stop polling, after one last look (call before the run's processes are ended)."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
        try:
            self.poll()
        except Exception:
            pass

    def finish(self) -> list[str]:
        """Remove the segments this run used that still exist (call after its processes are gone)."""
        self.stop()
        for name in sorted(self.seen):
            path = self._shm_dir / name
            try:
                os.unlink(path)
                self.removed.append(name)
            except FileNotFoundError:
                pass
        return self.removed

    def left(self) -> list[str]:
        """Segments this run used that exist now (after :meth:`finish`: should be none)."""
        return sorted(n for n in self.seen if (self._shm_dir / n).exists())
