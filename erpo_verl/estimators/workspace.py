"""Chunk-sized scratch arrays reused by every chunk of one estimator call (and, on a CPU, by the next call).

Fresh (rows, L)-sized temporaries per chunk would be freed and re-faulted by the allocator chunk after chunk
(page faults cost about as much as the arithmetic). On a CPU the storage is also kept, per thread, for the next
call, at most ~40 bytes per token of the largest chunk (~40 MB with the default chunk size), so that a training
loop does not fault it in again every step; an accelerator's caching allocator does that already.
"""

from __future__ import annotations

import threading

import torch

# Per-thread CPU storage kept between calls: {(name, dtype): 1-D tensor}.
_CPU_SCRATCH = threading.local()


class Workspace:
    """Named ``rows × width`` buffers, created on first use; ``ws("name", r)`` is the view of its first r rows."""

    def __init__(self, rows: int, width: int, device):
        self.rows, self.width, self.device = rows, width, torch.device(device)
        self._views: dict[str, torch.Tensor] = {}

    def _view(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        view = self._views.get(name)
        if view is None:
            numel = self.rows * self.width
            keep = self.device.type == "cpu"
            pool = getattr(_CPU_SCRATCH, "buffers", None) if keep else None
            if keep and pool is None:
                pool = _CPU_SCRATCH.buffers = {}
            flat = pool.get((name, dtype)) if keep else None
            if flat is None or flat.numel() < numel:
                flat = torch.empty(numel, dtype=dtype, device=self.device)
                if keep:
                    pool[(name, dtype)] = flat
            view = self._views[name] = flat[:numel].view(self.rows, self.width)
        return view

    def __call__(self, name: str, rows: int) -> torch.Tensor:
        """A float32 buffer."""
        return self._view(name, torch.float32)[:rows]

    def index(self, rows: int) -> torch.Tensor:
        """The int64 buffer (per-token bucket ids)."""
        return self._view("index", torch.long)[:rows]
