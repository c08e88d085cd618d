"""Bucket geometry of the implicit progress term (spec §4.3 and §8): which tokens of a row share bucket b.

A token's bucket only grows along its row: the rank t of a valid token (its column when the row is right-padded
without holes) grows, and so does the running entropy S_{i,t} when entropies are ≥ 0. So every bucket of a row
is a contiguous range of columns [starts[i, b], starts[i, b+1]) (masked columns inside a range carry zeros and
do not count), and the estimator works with these (rows, K+1) edges instead of a (rows, L) index:

=================  ===============================================  ==========================================
coordinate/edges   bucket of the valid token of rank t               first rank (position) / column (entropy)
=================  ===============================================  ==========================================
position, ceil     ⌊(K(t+1) − 1) / |o|⌋                              ⌊b |o| / K⌋
position, floor    min(⌊K t / |o|⌋, K − 1)                           ⌈b |o| / K⌉
cum_entropy, ceil  clamp(⌈K S_t / S⌉ − 1, 0, K − 1)                  #columns with K S_c ≤ b S
cum_entropy, floor min(⌊K S_{t−1} / S⌋, K − 1), S_{−1} = 0           #columns with K S_c < b S, plus 1
=================  ===============================================  ==========================================

A rank becomes a column through the running count of valid tokens. Running entropies are summed in float64
(spec §8), so that float32 rounding cannot move a token across an edge. A response whose total entropy is 0
uses the position buckets; a row with negative entropies (running sums not monotone) uses per-token bucket ids
(:class:`TokenBuckets`).
"""

from __future__ import annotations

import torch

from erpo_verl.estimators.config import EntropyProgressConfig
from erpo_verl.estimators.workspace import Workspace

# float32 sums of column indices t·m_t are exact while they stay below 2**24 (L (L - 1) / 2 < 2**24)
_EXACT_F32_WIDTH = 5793


def chunk_buckets(cfg: EntropyProgressConfig, mf: torch.Tensor, n: torch.Tensor, h: torch.Tensor | None,
                  hsum: torch.Tensor | None, ws: Workspace):
    """The buckets of a chunk: mask ``mf`` (rows, L) float32, ``n`` valid tokens per row, masked entropies ``h``
    and their row sums ``hsum`` (``cum_entropy`` only)."""
    k, floor = cfg.num_buckets, cfg.bucket_edges == "floor"
    cumulative = cfg.bucket_coord == "cum_entropy"
    if cumulative and h.numel() and bool(h.min() < 0):
        return TokenBuckets(progress_bucket(cfg, mf, n, h), mf, k)
    right_padded = is_right_padded(mf, n)
    starts = position_starts(k, n, mf, right_padded, floor, ws)
    if cumulative and mf.shape[1]:
        inner = cum_entropy_edges(h, k, block_size(mf.shape[1]) or 1, floor)
        entropy_starts = torch.cat([starts[:, :1], inner, starts[:, k:]], dim=1)
        starts = torch.where((hsum > 0).unsqueeze(1), entropy_starts, starts)
    return RangeBuckets(starts, mf, n, ws, right_padded)


def position_starts(k: int, n: torch.Tensor, mf: torch.Tensor, right_padded: bool, floor: bool,
                    ws: Workspace | None = None) -> torch.Tensor:
    """(rows, K+1) first column of each position bucket; the last range ends at the width."""
    rows, width = mf.shape
    length = n.long().unsqueeze(1)
    b = torch.arange(k + 1, device=mf.device).unsqueeze(0)
    numerator = b * length + (k - 1 if floor else 0)  # ⌈b|o|/K⌉ = ⌊(b|o| + K − 1)/K⌋
    first_rank = torch.div(numerator, k, rounding_mode="floor")
    if right_padded:
        starts = first_rank
    else:  # the column of the valid token of rank r: the first column where the running count reaches r + 1
        count = torch.cumsum(mf, dim=1, out=ws("scratch", rows) if ws is not None else None)
        starts = torch.searchsorted(count, (first_rank + 1).to(torch.float32), right=False)
    starts[:, 0] = 0
    starts[:, k] = width
    return starts


def cum_entropy_edges(h: torch.Tensor, k: int, block: int, floor: bool = False) -> torch.Tensor:
    """(rows, K−1) first column of the cumulative-entropy buckets 1..K−1 (see the module table).

    Running sums over whole blocks of ``block`` columns (float64) find the block where K S_c crosses b S; a
    float64 running sum inside that block finds the column.
    """
    rows, width = h.shape
    blocks = width // block
    running = torch.zeros(rows, blocks + 1, dtype=torch.float64, device=h.device)
    torch.cumsum(h.view(rows, blocks, block).sum(dim=2, dtype=torch.float64), dim=1, out=running[:, 1:])
    level = running[:, -1:] * torch.arange(1, k, dtype=torch.float64, device=h.device)  # b S, (rows, K−1)
    # whole blocks whose end is still before the edge; the crossing lies in the next one
    crossing = torch.searchsorted(running[:, 1:] * k, level, right=not floor).clamp_(max=blocks - 1)
    ids = (crossing + torch.arange(rows, device=h.device).unsqueeze(1) * blocks).view(-1)
    part = torch.index_select(h.view(-1, block), 0, ids).view(rows, k - 1, block)
    inside = torch.cumsum(part, dim=2, dtype=torch.float64).add_(torch.gather(running, 1, crossing).unsqueeze(-1))
    inside.mul_(k)
    before = (inside < level.unsqueeze(-1)) if floor else (inside <= level.unsqueeze(-1))
    column = crossing * block + before.sum(dim=2)
    return (column + 1).clamp_(max=width) if floor else column


def progress_bucket(cfg: EntropyProgressConfig, mask: torch.Tensor, lengths: torch.Tensor,
                    entropy: torch.Tensor | None) -> torch.Tensor:
    """Bucket b ∈ [0, K) of every position, (bs, L) int64 (values on masked positions are irrelevant).

    The per-token form of the table above; used where entropies are negative, and by the tests.
    """
    k, floor = cfg.num_buckets, cfg.bucket_edges == "floor"
    valid = mask != 0
    rank = torch.cumsum(valid.long(), dim=1) - 1
    length = lengths.long().clamp_min(1).unsqueeze(1)
    if floor:
        position_bucket = torch.div(k * rank, length, rounding_mode="floor").clamp_(0, k - 1)
    else:
        position_bucket = torch.div(k * (rank + 1) - 1, length, rounding_mode="floor").clamp_(0, k - 1)
    if cfg.bucket_coord == "position":
        return position_bucket
    h = torch.where(valid, entropy.double(), 0.0)
    running = torch.cumsum(h, dim=1)
    total = running[:, -1:] if h.shape[1] else torch.zeros(h.shape[0], 1, dtype=torch.float64)
    # K τ as (K S_t) / S_total: when K τ is an integer and the sums are exact the division returns it exactly
    if floor:  # S_{t−1}: the running sum at the previous column (masked columns add nothing)
        before = torch.nn.functional.pad(running[:, :-1], (1, 0))
        entropy_bucket = torch.floor(k * before / total).long().clamp_(0, k - 1)
    else:
        entropy_bucket = (torch.ceil(k * running / total).long() - 1).clamp_(0, k - 1)
    return torch.where(total > 0, entropy_bucket, position_bucket)


def is_right_padded(mf: torch.Tensor, n: torch.Tensor) -> bool:
    """Whether every row's valid tokens are its first |o_i| columns: Σ_t t·m_t = |o|(|o|−1)/2 (exact)."""
    width = mf.shape[1]
    if width <= _EXACT_F32_WIDTH:
        moment = torch.mv(mf, torch.arange(width, dtype=torch.float32, device=mf.device)).double()
    else:
        moment = torch.mv(mf.double(), torch.arange(width, dtype=torch.float64, device=mf.device))
    n = n.double()
    return bool((moment == n * (n - 1) / 2).all())


def block_size(width: int) -> int:
    """The largest power of two ≤ 64 that divides the width (0 below 8: sequential range sums)."""
    block = 64
    while block >= 8 and width:
        if width % block == 0:
            return block
        block //= 2
    return 0


class RangeBuckets:
    """Buckets that are contiguous column ranges [starts[i, b], starts[i, b+1]) of each row (padding included).

    Per-(row, bucket) sums come from fixed blocks of ``block`` columns: a range's sum is the tail of its first
    block, the whole blocks in between and the head of its last block. Block sums are float32 (pairwise, no
    copy of the data), added in float64; the partial blocks at the edges are summed in float64. About one
    element-wise pass of work, in parallel, instead of a sequential segment reduction, and at least as precise
    as adding the range in float32 (no difference of large running sums cancels a short range).
    """

    def __init__(self, starts: torch.Tensor, mf: torch.Tensor, n: torch.Tensor, ws: Workspace, right_padded: bool):
        rows, width = mf.shape
        k = starts.shape[1] - 1
        self.shape = (rows, k)
        self.starts = starts
        self.block = block_size(width)
        if self.block:
            blocks = width // self.block
            self.edge_block = torch.clamp(torch.div(starts, self.block, rounding_mode="floor"), max=blocks - 1)
            # row-major index of each edge's block among the (rows · blocks) blocks of the chunk
            self.edge_row_block = (self.edge_block + torch.arange(rows, device=mf.device).unsqueeze(1) * blocks).view(-1)
            offset = starts - self.edge_block * self.block  # 0..block (= block only at the row's end)
            self.head_last = (offset - 1).clamp_(min=0).unsqueeze(-1)  # last column of the head, if any
            self.has_head = offset > 0
        else:
            self.lengths = (starts[:, 1:] - starts[:, :-1]).reshape(-1)
        # the bucket of every position: the running count of bucket edges passed
        ids = ws.index(rows).zero_()
        if width:
            inner = starts[:, 1:k]
            ids.scatter_add_(1, inner.clamp(max=width - 1), (inner < width).long())
            ids.cumsum_(dim=1)
        self.ids = ids
        if right_padded:  # valid tokens are columns 0..|o|-1: count them from the edges
            ends = torch.minimum(starts[:, 1:], n.long().unsqueeze(1))
            self.counts = (ends - starts[:, :-1]).clamp_min_(0).to(torch.float32)
        else:
            self.counts = self.segment_sum(mf)

    def segment_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Per-(row, bucket) sums of ``x`` (rows, L), float32."""
        rows, k = self.shape
        if not self.block:
            return torch.segment_reduce(x.reshape(-1), "sum", lengths=self.lengths, unsafe=True).view(self.shape)
        blocks = x.view(rows, -1, self.block)
        # running sums over whole blocks (float32 block sums, accumulated in float64): R[q] = Σ_{q' < q} block q'
        running = torch.zeros(rows, blocks.shape[1] + 1, dtype=torch.float64, device=x.device)
        torch.cumsum(blocks.sum(dim=2), dim=1, dtype=torch.float64, out=running[:, 1:])
        # the blocks that hold an edge, in float64: the parts before (head) and from (tail) the edge
        edge = torch.index_select(x.view(-1, self.block), 0, self.edge_row_block).view(rows, k + 1, self.block)
        running_edge = torch.cumsum(edge, dim=2, dtype=torch.float64)
        head = torch.gather(running_edge, 2, self.head_last).squeeze(-1).mul_(self.has_head)
        tail = running_edge[:, :, -1] - head
        first, last = self.edge_block[:, :-1], self.edge_block[:, 1:]
        head_s, head_e, tail_s = head[:, :-1], head[:, 1:], tail[:, :-1]
        # range [start, end): within one block head_e − head_s; else tail of the first block + whole blocks
        # strictly between + head of the last block
        inner = torch.gather(running, 1, last) - torch.gather(running, 1, first + 1)
        across = tail_s + inner + head_e
        return torch.where(first == last, head_e - head_s, across).to(torch.float32)

    def expand(self, table: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Per-token values (rows, L) from a per-(row, bucket) ``table`` (rows, K), written into ``out``."""
        return torch.gather(table, 1, self.ids, out=out)


class TokenBuckets:
    """Buckets given by a per-token id (rows, L) int64 (negative entropies: cum_entropy is not monotone)."""

    def __init__(self, bucket: torch.Tensor, mf: torch.Tensor, k: int):
        self.bucket = bucket
        self.shape = (mf.shape[0], k)
        self.counts = self.segment_sum(mf)

    def segment_sum(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(self.shape, dtype=x.dtype, device=x.device).scatter_add_(1, self.bucket, x)

    def expand(self, table: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return torch.gather(table, 1, self.bucket, out=out)
