"""Groups and chunks: the bookkeeping that lets the estimators avoid Python loops over samples or tokens.

* :func:`group_ids` maps verl's ``uid`` array to contiguous int64 group ids;
* :func:`segment_sum` adds per-row values into per-group (or per-cell) totals with ``index_add_``, so a
  group statistic costs a pass over the rows, not over the tokens;
* :class:`GroupChunks` cuts the batch into cache-sized chunks of whole groups, so that every per-group
  statistic is finished within one chunk.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def group_ids(index: Any, batch_size: int, device: torch.device) -> tuple[torch.Tensor, int]:
    """Map verl's ``uid`` array (any hashable values) to contiguous int64 group ids on ``device``.

    Returns ``(ids, num_groups)``. Ids follow first appearance, so they do not depend on how uids sort.
    """
    if index is None:
        raise ValueError(
            "index (the prompt-group id of each response, verl's non_tensor_batch['uid']) is required "
            "to form GRPO groups"
        )
    if isinstance(index, torch.Tensor):
        if index.dim() != 1 or index.shape[0] != batch_size:
            raise ValueError(f"index has shape {tuple(index.shape)}; expected ({batch_size},), one id per response")
        _, ids = torch.unique(index.to(device), return_inverse=True)
        return ids.long(), int(ids.max().item()) + 1 if batch_size else 0
    values = np.asarray(index, dtype=object) if not isinstance(index, np.ndarray) else index
    if values.ndim != 1 or values.shape[0] != batch_size:
        raise ValueError(f"index has length {values.shape[0] if values.ndim else 0}; expected {batch_size}, one id per response")
    import pandas as pd  # hash-based factorization in C: O(n), works for any hashable uid type

    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return torch.as_tensor(codes, dtype=torch.long, device=device), len(uniques)


def segment_sum(values: torch.Tensor, seg: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Sum of ``values`` per segment (1-D inputs of equal length)."""
    out = torch.zeros(num_segments, dtype=values.dtype, device=values.device)
    return out.index_add_(0, seg, values)


# ---------------------------------------------------------------------------------------------------------
# blocking: the batch in cache-sized chunks of whole groups
# ---------------------------------------------------------------------------------------------------------
# Tokens per chunk. The estimator reads each input once per chunk however many element-wise steps it runs, and
# its peak extra memory is the output plus one chunk's temporaries. On a CPU (measured on 2 cores) smaller chunks
# stay in cache but pay the per-operation overhead of ~40 passes more often: 2**20 tokens was the fastest of
# 2**17..2**21 with 2 threads. On an accelerator chunks only bound the memory.
CPU_CHUNK_TOKENS = 1 << 20
DEVICE_CHUNK_TOKENS = 1 << 23


def chunk_tokens(device: torch.device) -> int:
    return CPU_CHUNK_TOKENS if torch.device(device).type == "cpu" else DEVICE_CHUNK_TOKENS


class GroupChunks:
    """The rows of a batch in chunks of whole groups, ~``tokens`` tokens each (at least one group).

    Rows are processed in ``order`` (None: row order, when every group's rows are adjacent, as verl lays out
    the ``n`` responses of a prompt; otherwise the rows sorted by group). ``key[p]`` is the group of the row
    at processing position ``p`` renumbered 0, 1, ... in processing order, so the groups of a chunk are
    ``key`` values ``k0 .. k1-1`` and ``key - k0`` is a chunk-local group id.
    """

    def __init__(self, group: torch.Tensor, width: int, tokens: int):
        device = group.device
        g = group.detach().cpu().numpy()
        bs = g.shape[0]
        self.order = None
        if bs:
            change = np.empty(bs, dtype=bool)
            change[0] = True
            np.not_equal(g[1:], g[:-1], out=change[1:])
            if int(change.sum()) != len(np.unique(g)):  # some group's rows are not adjacent: sort by group
                perm = np.argsort(g, kind="stable")
                g = g[perm]
                np.not_equal(g[1:], g[:-1], out=change[1:])
                self.order = torch.as_tensor(perm, dtype=torch.long, device=device)
            key = np.cumsum(change) - 1
            starts = np.flatnonzero(change)
        else:
            key = np.zeros(0, dtype=np.int64)
            starts = np.zeros(0, dtype=np.int64)
        self.key = torch.as_tensor(key, dtype=torch.long, device=device)
        rows_per_chunk = max(1, tokens // max(1, width))
        chunk_of_group = starts // rows_per_chunk
        firsts = np.flatnonzero(np.r_[True, chunk_of_group[1:] != chunk_of_group[:-1]]) if len(starts) else []
        bounds = list(firsts) + [len(starts)]
        row_starts = list(starts) + [bs]
        # (p0, p1, k0, k1): processing positions p0..p1-1 hold the groups k0..k1-1
        self.chunks = [
            (int(row_starts[a]), int(row_starts[b]), int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])
        ]

    def rows(self, p0: int, p1: int) -> slice | torch.Tensor:
        """The batch rows at processing positions p0..p1-1: a slice (a view, no copy) or an index tensor."""
        return slice(p0, p1) if self.order is None else self.order[p0:p1]
