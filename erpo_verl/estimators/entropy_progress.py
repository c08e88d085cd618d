"""The entropy-progress token advantage: one implementation behind ``erpo`` and ``ep_grpo``.

Notation (``shared/spec/algorithms.md`` §3–4): prompt group g, response i with |o_i| valid tokens, valid
token t (0-based column of a right-padded row), sequence reward R_i, mask m, old-policy entropy H,
implicit log-ratio s_{i,t} = λ (log π_old − log π_ref).

1. Outcome advantage (GRPO, exactly verl's):   Â_i = (R_i − mean_g R) / (std_g R + ε)

2. Entropy gate:                               z_{i,t} = (H_{i,t} − μ^H) / (σ^H + ε)
                                               W_{i,t} = sigmoid(γ z_{i,t})
   μ^H, σ^H (population) over the valid tokens of the group (or of the batch); ``mean1`` rescales W to
   mean 1 over the same tokens. ``gate=false`` means W ≡ 1.

3. Progress coordinate and bucket:             τ_{i,t} = (t + 1) / |o_i|                 (position)
                                               τ_{i,t} = S_{i,t} / S_{i,|o_i|−1}        (cum_entropy)
                                               b = clamp(⌈K τ⌉ − 1, 0, K − 1)
   with S the running sum of H over valid tokens; for ``position`` b = ⌊(K(t+1) − 1) / |o_i|⌋ exactly in
   integers; a response whose total entropy is 0 falls back to position.

4. Bucket-normalized implicit signal:          s̃ = (s − μ_{g,b}) / (σ_{g,b} + ε)          (zscore)
                                               s̃ =  s − μ_{g,b}                           (center)
   over the valid tokens of group g in bucket b; a cell with < 2 tokens gives s̃ = 0.

5. Result anchor:                              d_i = sign(Â_i)  if the group has ≥ 2 responses with
                                                                  rewards not all equal
                                               d_i = sign(R_i − θ) otherwise, if zero_var_fallback
                                               d_i = 0          otherwise

6. Synthesis:                                  Ψ_{i,t} = (W_{i,t} if anchor_gate else 1) · d_i · s̃_{i,t}
                                               A_{i,t} = m_{i,t} · (W_{i,t} Â_i + η Ψ_{i,t}),
                                               clamped to ±adv_clip when set.

7. Optional 80/20 mask (``top_entropy_ratio`` ρ): A_{i,t} ← 0 unless H_{i,t} is among the top ρ of the batch's
   valid-token entropies (see :mod:`forking`).

With ``gate=false`` and ``progress_coef=0`` this is exactly GRPO. Statistics are float32 whatever the
input dtype; no Python loop runs over samples or tokens (segment sums, see :mod:`segments`).

How it is computed (the cost is a few reads of the inputs and one write of the output, linear in the tokens):

* The batch is cut into chunks of whole prompt groups (:class:`segments.GroupChunks`, ~1M tokens on a CPU).
  Every statistic above is per group (or per group and bucket), so each chunk is finished on its own: each
  input is read once, the output rows are written once, the chunk's temporaries live in a few reused
  chunk-sized buffers, and the peak extra memory is the output plus those buffers.
  ``entropy_stats_scope: batch`` adds passes over the entropy for the batch-wide mean, std and gate mean.
* Every mean and variance is two-pass in float32: row sums first, added into groups (``index_add_`` over
  rows, not tokens), then the centred sum of squares.
* Buckets are contiguous column ranges of a row: b(t) is non-decreasing in t for ``position`` (it only
  depends on t and |o_i|) and for ``cum_entropy`` when the entropies are ≥ 0 (a running sum). Their edges
  come from integer arithmetic (``position``) or from running sums over blocks of columns (``cum_entropy``,
  float64); the per-(row, bucket) sums from block sums plus the partial blocks at the edges (float64), and
  the per-token cell statistics from one ``gather`` per statistic — no (bs, L) index into the groups. A row
  with negative entropies falls back to per-token bucket ids.
* NaN/inf inputs are detected from the row sums the estimator computes anyway; only then is the full check
  of :func:`validation.check_inputs` run (for its error message), and when the non-finite values sit on
  masked positions, which are allowed, the chunk zeroes them with ``torch.where`` instead of a product.
"""

from __future__ import annotations

import threading
from typing import Any

import torch

from erpo_verl.estimators.config import EntropyProgressConfig
from erpo_verl.estimators.forking import top_entropy_threshold
from erpo_verl.estimators.outcome import OutcomeStats, outcome_from_rewards, sequence_rewards
from erpo_verl.estimators.segments import GroupChunks, chunk_tokens, segment_sum
from erpo_verl.estimators.validation import check_inputs, check_shapes, float_mask

# The trainer mode (erpo_verl.integration.preflight) forwards these keyword arguments to any registered estimator whose
# signature names them. Keep the names in sync with spec §2.
EXTRA_INPUTS = ("old_entropy", "old_log_probs", "ref_log_prob")

# float32 sums of column indices t·m_t are exact while they stay below 2**24 (L (L - 1) / 2 < 2**24)
_EXACT_F32_WIDTH = 5793


def missing_input_message(name: str, reason: str) -> str:
    """The error for an input the trainer did not provide (spec §6): say how to enable it."""
    how = {
        "old_entropy": (
            "run verl with the erpo-verl trainer mode `trainer.v1.trainer_mode=erpo_sync`, which forwards "
            "the old-policy entropy of the old-log-prob pass"
        ),
        "ref_log_prob": (
            "run verl with `trainer.v1.trainer_mode=erpo_sync` (it turns the reference policy on for you), "
            "or enable the reference policy yourself with actor_rollout_ref.actor.use_kl_loss=True "
            "actor_rollout_ref.actor.kl_loss_coef=0"
        ),
        "old_log_probs": "run verl with `trainer.v1.trainer_mode=erpo_sync`",
    }[name]
    return f"{name} is required {reason} but was not provided: {how}. erpo-verl never falls back to GRPO silently."


def entropy_progress_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any,
    cfg: EntropyProgressConfig,
    old_entropy: torch.Tensor | None = None,
    old_log_probs: torch.Tensor | None = None,
    ref_log_prob: torch.Tensor | None = None,
    metrics: dict | None = None,
) -> torch.Tensor:
    """Token advantages A (bs, L) float32 per the module docstring; fills ``metrics`` when given."""
    if cfg.needs_entropy and old_entropy is None:
        what = "by the entropy gate" if cfg.gate else "by bucket_coord=cum_entropy"
        raise ValueError(missing_input_message("old_entropy", what))
    if cfg.needs_ref_log_prob:
        if ref_log_prob is None:
            raise ValueError(missing_input_message("ref_log_prob", "by the implicit progress term (progress_coef > 0)"))
        if old_log_probs is None:
            raise ValueError(missing_input_message("old_log_probs", "by the implicit progress term (progress_coef > 0)"))
    per_token = {
        "old_entropy": old_entropy if cfg.needs_entropy else None,
        "old_log_probs": old_log_probs if cfg.needs_ref_log_prob else None,
        "ref_log_prob": ref_log_prob if cfg.needs_ref_log_prob else None,
    }
    check_shapes(token_level_rewards, response_mask, index, **per_token)

    def full_check() -> None:  # the full scan, only run once a row sum came out NaN/inf: raises with the count
        check_inputs(token_level_rewards, response_mask, index, **per_token)

    rewards = sequence_rewards(token_level_rewards)
    if not bool(torch.isfinite(rewards).all()):
        full_check()
    try:
        out = outcome_from_rewards(rewards, index, cfg.norm_adv_by_std_in_grpo)
    except ValueError:
        full_check()  # report a bad input before a bad index, in check_inputs' order
        raise
    return _EntropyProgress(cfg, response_mask, per_token, out, full_check).run(metrics)


# Per-thread CPU scratch storage kept between calls: {(name, dtype): 1-D tensor} (see _Workspace).
_CPU_SCRATCH = threading.local()


class _Workspace:
    """Chunk-sized scratch arrays (``rows × width``), reused by every chunk (views ``[:rows]``).

    Fresh (bs, L)-sized temporaries per chunk would be freed and re-faulted by the allocator chunk after chunk
    (page faults cost about as much as the arithmetic). On a CPU the storage is also kept for the next call of
    the same thread (at most ~36 bytes per token of the largest chunk, ~36 MB with the default chunk size), so
    that a training loop does not fault it in again every step; an accelerator's caching allocator does that
    already. Buffers are created on first use.
    """

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
        return self._view(name, torch.float32)[:rows]

    def index(self, rows: int) -> torch.Tensor:
        return self._view("index", torch.long)[:rows]


class _EntropyProgress:
    """One call of the estimator: the chunk loop and its per-chunk kernels (see the module docstring)."""

    def __init__(self, cfg: EntropyProgressConfig, mask: torch.Tensor, per_token: dict, outcome: OutcomeStats,
                 full_check) -> None:
        self.cfg = cfg
        self.mask = mask
        self.entropy = per_token["old_entropy"]
        self.old = per_token["old_log_probs"]
        self.ref = per_token["ref_log_prob"]
        self.outcome = outcome
        self.full_check = full_check
        self.sanitize = False  # True once NaN/inf were found on masked positions: zero them with torch.where
        self.device = mask.device
        self.chunks = GroupChunks(outcome.group, mask.shape[1], chunk_tokens(mask.device))
        rows = max((p1 - p0 for p0, p1, _, _ in self.chunks.chunks), default=0)
        self.ws = _Workspace(rows, mask.shape[1], mask.device)
        # result anchor d_i (spec §4.5), per response
        informative = ((outcome.group_size >= 2) & ~outcome.all_equal)[outcome.group]
        anchor = torch.where(informative, torch.sign(outcome.advantage), torch.zeros_like(outcome.advantage))
        if cfg.zero_var_fallback:
            anchor = torch.where(informative, anchor, torch.sign(outcome.rewards - cfg.reward_threshold))
        self.anchor = anchor
        self.batch_gate = None  # (mu, sigma, gate mean) of entropy_stats_scope=batch, shape (1,) each

    # -- the loop ------------------------------------------------------------------------------------------
    def run(self, metrics: dict | None) -> torch.Tensor:
        cfg = self.cfg
        bs, width = self.mask.shape
        advantages = torch.empty(bs, width, dtype=torch.float32, device=self.device)
        if cfg.gate and cfg.entropy_stats_scope == "batch":
            self.batch_gate = self._batch_gate_stats()
        threshold = None
        if cfg.top_entropy_ratio is not None:
            threshold = top_entropy_threshold(self._valid_entropies(), cfg.top_entropy_ratio)
        acc = _MetricSums(self.device) if metrics is not None else None
        for p0, p1, k0, k1 in self.chunks.chunks:
            rows = self.chunks.rows(p0, p1)
            dest = advantages[rows] if isinstance(rows, slice) else None
            local = self.chunks.key[p0:p1] - k0
            result = self._chunk(rows, local, k1 - k0, dest, threshold, acc)
            if dest is None:
                advantages.index_copy_(0, rows, result)
        if metrics is not None:
            acc.fill(metrics, cfg, self.outcome)
        return advantages

    def _nonfinite(self) -> None:
        """A row sum is NaN/inf: the full check raises if a valid position holds it; else masked garbage."""
        if not self.sanitize:
            self.full_check()
            self.sanitize = True

    def _mask(self, rows) -> torch.Tensor:
        m = self.mask[rows]
        return float_mask(m, self.ws("mask", m.shape[0]))

    def _masked(self, source: torch.Tensor, rows, mf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``source[rows]`` in float32 with masked positions 0, and its row sums (finite-checked)."""
        x = source[rows]
        out = self.ws("entropy", x.shape[0])
        if not self.sanitize:
            if x.dtype == torch.float32:
                xm = torch.mul(x, mf, out=out)
            else:
                xm = out.copy_(x).mul_(mf)
            total = xm.sum(dim=1)
            if bool(torch.isfinite(total).all()):
                return xm, total
            self._nonfinite()
        xm = out.copy_(torch.where(mf.bool(), x.float(), 0.0))
        return xm, xm.sum(dim=1)

    def _logratio(self, rows, mf: torch.Tensor) -> torch.Tensor:
        """s = λ (log π_old − log π_ref) on valid positions, 0 elsewhere (its row sums are checked later)."""
        old, ref = self.old[rows], self.ref[rows]
        if not (old.dtype == ref.dtype == torch.float32):
            old, ref = old.float(), ref.float()
        out = self.ws("logratio", old.shape[0])
        if not self.sanitize:
            return torch.sub(old, ref, out=out).mul_(self.cfg.logratio_scale).mul_(mf)
        return out.copy_(torch.where(mf.bool(), (old - ref) * self.cfg.logratio_scale, 0.0))

    def _valid_entropies(self) -> torch.Tensor:
        values = []
        for p0, p1, _, _ in self.chunks.chunks:
            rows = self.chunks.rows(p0, p1)
            mf = self._mask(rows)
            h, _ = self._masked(self.entropy, rows, mf)
            values.append(h[mf.bool()])
        return torch.cat(values) if values else torch.zeros(0, device=self.device)

    def _batch_gate_stats(self):
        """μ^H, σ^H and the mean of W over the whole batch (entropy_stats_scope=batch): three passes."""
        cfg, eps = self.cfg, self.cfg.epsilon
        bs = self.mask.shape[0]
        scope = torch.zeros(bs, dtype=torch.long, device=self.device)
        count, total, squares, gates = (torch.zeros(bs, device=self.device) for _ in range(4))
        for p0, p1, _, _ in self.chunks.chunks:
            rows = self.chunks.rows(p0, p1)
            mf = self._mask(rows)
            _, hsum = self._masked(self.entropy, rows, mf)
            count[rows], total[rows] = mf.sum(dim=1), hsum
        safe = segment_sum(count, scope, 1).clamp_min(1.0)
        mu = segment_sum(total, scope, 1) / safe
        passes = [("squares", squares)] + ([("gates", gates)] if cfg.gate_norm == "mean1" else [])
        sigma = None
        for what, into in passes:
            for p0, p1, _, _ in self.chunks.chunks:
                rows = self.chunks.rows(p0, p1)
                mf = self._mask(rows)
                h, _ = self._masked(self.entropy, rows, mf)
                d = torch.addcmul(h, mf, mu.view(1, 1), value=-1.0, out=self.ws("gate", h.shape[0]))
                if what == "squares":
                    into[rows] = torch.mul(d, d, out=self.ws("scratch", h.shape[0])).sum(dim=1)
                else:
                    into[rows] = _gate_values(d, sigma.view(1, 1) + eps, cfg.gate_gamma, mf).sum(dim=1)
            if what == "squares":
                sigma = (segment_sum(squares, scope, 1) / safe).sqrt()
        gate_mean = segment_sum(gates, scope, 1) / safe if cfg.gate_norm == "mean1" else None
        return mu, sigma, gate_mean

    # -- one chunk of whole groups -------------------------------------------------------------------------
    def _chunk(self, rows, local: torch.Tensor, num_local: int, dest, threshold, acc):
        cfg = self.cfg
        mf = self._mask(rows)
        n = mf.sum(dim=1)  # valid tokens per row, exact integers
        adv_hat = self.outcome.advantage[rows].unsqueeze(1)
        h = hsum = None
        if cfg.needs_entropy:
            h, hsum = self._masked(self.entropy, rows, mf)

        gate = None
        if cfg.gate:
            gate = self._gate(h, hsum, mf, n, local, num_local, acc)

        psi = None  # η Ψ, 0 on masked positions
        if cfg.progress_coef > 0:
            psi = self._progress(rows, mf, n, h, hsum, local, num_local, gate)

        weight = gate if gate is not None else mf  # W (0 on masked positions) or the mask
        if psi is None:
            result = torch.mul(weight, adv_hat, out=dest)
        else:
            result = torch.addcmul(psi, weight, adv_hat, out=dest)
        if cfg.adv_clip is not None:
            result.clamp_(-cfg.adv_clip, cfg.adv_clip)
        keep = None
        if threshold is not None:
            keep = torch.ge(h, threshold, out=self.ws("scratch", h.shape[0])).mul_(mf)
            result.mul_(keep)
        if acc is not None:
            acc.add_chunk(result, mf, n, adv_hat, gate, psi, keep, self.ws("scratch", mf.shape[0]))
        return result

    def _gate(self, h, hsum, mf, n, local, num_local, acc) -> torch.Tensor:
        """W_{i,t} on valid tokens, 0 elsewhere (spec §4.2)."""
        cfg, eps = self.cfg, self.cfg.epsilon
        out = self.ws("gate", h.shape[0])
        if self.batch_gate is not None:
            mu, sigma, gate_mean = (None if v is None else v.view(1, 1) for v in self.batch_gate)
            d = torch.addcmul(h, mf, mu, value=-1.0, out=out)  # H − μ on valid tokens, 0 elsewhere
        else:
            safe = segment_sum(n, local, num_local).clamp_min(1.0)
            mu = segment_sum(hsum, local, num_local) / safe
            d = torch.addcmul(h, mf, mu[local].unsqueeze(1), value=-1.0, out=out)
            squares = torch.mul(d, d, out=self.ws("scratch", h.shape[0])).sum(dim=1)
            sigma = (segment_sum(squares, local, num_local) / safe).sqrt()[local].unsqueeze(1)
        scale = sigma + eps
        if acc is not None:  # pivots: z > 1 ⟺ H − μ > σ + ε (masked positions have H − μ = 0)
            acc.pivots += torch.gt(d, scale, out=self.ws("scratch", h.shape[0])).sum()
        gate = _gate_values(d, scale, cfg.gate_gamma, mf)
        if cfg.gate_norm == "mean1":
            if self.batch_gate is not None:
                gate.div_(gate_mean.clamp_min(eps))
            else:
                gate_mean = segment_sum(gate.sum(dim=1), local, num_local) / safe
                gate.div_(gate_mean.clamp_min(eps)[local].unsqueeze(1))
        return gate

    def _progress(self, rows, mf, n, h, hsum, local, num_local, gate) -> torch.Tensor:
        """η Ψ_{i,t} (spec §4.3–4.6) on valid tokens, 0 elsewhere."""
        cfg, eps, k = self.cfg, self.cfg.epsilon, self.cfg.num_buckets
        s = self._logratio(rows, mf)
        buckets = _buckets(cfg, mf, n, h, hsum, self.ws)
        sums = buckets.segment_sum(s)
        if not self.sanitize and not bool(torch.isfinite(sums).all()):
            self._nonfinite()  # raises, or NaN/inf sat on masked positions: recompute with torch.where
            s = self._logratio(rows, mf)
            sums = buckets.segment_sum(s)
        count = torch.zeros(num_local, k, device=self.device).index_add_(0, local, buckets.counts)
        safe = count.clamp_min(1.0)
        mean = torch.zeros(num_local, k, device=self.device).index_add_(0, local, sums) / safe
        expanded = self.ws("expanded", s.shape[0])
        # s − μ_{g,b} on valid tokens, 0 elsewhere
        centred = torch.addcmul(s, mf, buckets.expand(mean[local], expanded), value=-1.0,
                                out=self.ws("centred", s.shape[0]))
        factor = (cfg.progress_coef * self.anchor[rows]).unsqueeze(1) * (count >= 2)[local]
        if cfg.bucket_norm == "zscore":
            squares = buckets.segment_sum(torch.mul(centred, centred, out=self.ws("scratch", s.shape[0])))
            var = torch.zeros(num_local, k, device=self.device).index_add_(0, local, squares) / safe
            factor = factor / (var.sqrt() + eps)[local]
        psi = centred.mul_(buckets.expand(factor, expanded))
        if cfg.anchor_gate and gate is not None:
            psi.mul_(gate)
        return psi


def _gate_values(centred: torch.Tensor, scale: torch.Tensor, gamma: float, mf: torch.Tensor) -> torch.Tensor:
    """sigmoid(γ z) with z = (H − μ)/(σ + ε) (``centred`` = H − μ, ``scale`` = σ + ε), 0 on masked positions;
    computed in place in ``centred``."""
    return centred.mul_(gamma / scale).sigmoid_().mul_(mf)


# ---------------------------------------------------------------------------------------------------------
# buckets of a chunk
# ---------------------------------------------------------------------------------------------------------
class _RangeBuckets:
    """Buckets that are contiguous column ranges [starts[i, b], starts[i, b+1]) of each row (padding included).

    Per-(row, bucket) sums come from fixed blocks of ``block`` columns: a range's sum is the tail of its first
    block, the whole blocks in between and the head of its last block. Block sums are float32 (pairwise, no
    copy of the data), added in float64; the partial blocks at the edges are summed in float64. About one
    element-wise pass of work, in parallel, instead of a sequential segment reduction, and at least as precise
    as adding the range in float32 (no difference of large running sums cancels a short range).
    """

    def __init__(self, starts: torch.Tensor, mf: torch.Tensor, n: torch.Tensor, ws: _Workspace):
        rows, width = mf.shape
        k = starts.shape[1] - 1
        self.shape = (rows, k)
        self.starts = starts
        self.block = _block_size(width)
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
        if _right_padded(mf, n):  # valid tokens are columns 0..|o|-1: count them from the edges
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


def _block_size(width: int) -> int:
    """The largest power of two ≤ 64 that divides the width (0 below 8: use segment_reduce)."""
    block = 64
    while block >= 8 and width:
        if width % block == 0:
            return block
        block //= 2
    return 0


class _TokenBuckets:
    """Buckets given by a per-token id (rows, L) int64 (negative entropies: cum_entropy is not monotone)."""

    def __init__(self, bucket: torch.Tensor, mf: torch.Tensor, k: int):
        self.bucket = bucket
        self.shape = (mf.shape[0], k)
        self.counts = self.segment_sum(mf)

    def segment_sum(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(self.shape, dtype=x.dtype, device=x.device).scatter_add_(1, self.bucket, x)

    def expand(self, table: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return torch.gather(table, 1, self.bucket, out=out)


def _right_padded(mf: torch.Tensor, n: torch.Tensor) -> bool:
    """Whether every row's valid tokens are its first |o_i| columns: Σ_t t·m_t = |o|(|o|−1)/2 (exact)."""
    width = mf.shape[1]
    if width <= _EXACT_F32_WIDTH:
        moment = torch.mv(mf, torch.arange(width, dtype=torch.float32, device=mf.device)).double()
    else:
        moment = torch.mv(mf.double(), torch.arange(width, dtype=torch.float64, device=mf.device))
    n = n.double()
    return bool((moment == n * (n - 1) / 2).all())


def _position_starts(k: int, n: torch.Tensor, width: int) -> torch.Tensor:
    """(rows, K+1) first column of each position bucket: b(t) = ⌊(K(t+1) − 1)/|o|⌋ ≥ b ⟺ t ≥ ⌊b |o| / K⌋;
    columns past the last valid token are clamped into bucket K−1, so the last range ends at the width."""
    length = n.long().clamp_min(1).unsqueeze(1)
    b = torch.arange(k + 1, device=n.device).unsqueeze(0)
    starts = torch.div(b * length, k, rounding_mode="floor")
    starts[:, k] = width
    return starts


def _buckets(cfg: EntropyProgressConfig, mf, n, h, hsum, ws: _Workspace):
    k = cfg.num_buckets
    width = mf.shape[1]
    starts = _position_starts(k, n, width)
    if cfg.bucket_coord == "cum_entropy":
        if h.numel() and bool(h.min() < 0):  # running sums are not monotone: per-token bucket ids
            return _TokenBuckets(_progress_bucket(cfg, mf, n, h), mf, k)
        block = _block_size(width)
        if block:
            inner = _cum_entropy_edges(h, k, block)
        else:
            # K τ = (K S_t) / S_total, computed as in _progress_bucket, is non-decreasing along the row; the tokens
            # of bucket ≤ b are those with ⌈K τ⌉ ≤ b + 1, i.e. K τ ≤ b + 1: a binary search per row and edge
            k_tau = torch.cumsum(h, dim=1, out=ws("scratch", h.shape[0]))
            k_tau.mul_(k).div_(hsum.clamp_min(torch.finfo(torch.float32).tiny).unsqueeze(1))
            edges = torch.arange(1, k, dtype=torch.float32, device=mf.device).expand(mf.shape[0], k - 1).contiguous()
            inner = torch.searchsorted(k_tau, edges, right=True)
        entropy_starts = torch.cat([starts[:, :1], inner, starts[:, k:]], dim=1)
        starts = torch.where((hsum > 0).unsqueeze(1), entropy_starts, starts)
    return _RangeBuckets(starts, mf, n, ws)


def _cum_entropy_edges(h: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """(rows, K−1) first column of the cumulative-entropy buckets 1..K−1, without a running sum over tokens.

    A token is in a bucket ≤ b − 1 iff ⌈K S_t / S⌉ ≤ b, i.e. K S_t ≤ b S, with S_t the running sum of the (non-
    negative) entropies and S the row's total. Running sums over whole blocks of ``block`` columns (float64)
    find the block where K S_t crosses b S; a float64 running sum inside that block finds the column. The sums
    are more precise than a float32 running sum over the row; with exactly representable sums (e.g. entropies
    on a dyadic grid) the buckets are exactly those of the spec.
    """
    rows, width = h.shape
    blocks = width // block
    running = torch.zeros(rows, blocks + 1, dtype=torch.float64, device=h.device)
    torch.cumsum(h.view(rows, blocks, block).sum(dim=2), dim=1, dtype=torch.float64, out=running[:, 1:])
    level = running[:, -1:] * torch.arange(1, k, dtype=torch.float64, device=h.device)  # b S, (rows, K−1)
    # whole blocks whose end still has K S_t ≤ b S; the crossing lies in the next one
    crossing = torch.searchsorted(running[:, 1:] * k, level, right=True).clamp_(max=blocks - 1)
    ids = (crossing + torch.arange(rows, device=h.device).unsqueeze(1) * blocks).view(-1)
    part = torch.index_select(h.view(-1, block), 0, ids).view(rows, k - 1, block)
    inside = torch.cumsum(part, dim=2, dtype=torch.float64).add_(torch.gather(running, 1, crossing).unsqueeze(-1))
    return crossing * block + (inside.mul_(k) <= level.unsqueeze(-1)).sum(dim=2)


def _progress_bucket(
    cfg: EntropyProgressConfig, mask: torch.Tensor, lengths: torch.Tensor, entropy: torch.Tensor | None
) -> torch.Tensor:
    """Bucket index b ∈ [0, K) of each position (values on masked positions are irrelevant).

    The per-token form of the buckets (a (bs, L) int64 tensor): used where entropies are negative and by the
    tests; the estimator otherwise works with per-row bucket edges (:func:`_buckets`).
    """
    k = cfg.num_buckets
    width = mask.shape[1]
    col = torch.arange(width, device=mask.device, dtype=torch.long).unsqueeze(0)
    length = lengths.long().clamp_min(1).unsqueeze(1)
    # integer form: b = floor((K (t+1) - 1) / |o|), so no rounding moves a token across an edge
    position_bucket = torch.div(k * (col + 1) - 1, length, rounding_mode="floor").clamp_(0, k - 1)
    if cfg.bucket_coord == "position":
        return position_bucket
    cumulative = torch.cumsum(entropy, dim=1)
    total = entropy.sum(dim=1, keepdim=True)
    # K τ computed as (K S_t) / S_total, not (S_t / S_total) · K: when K τ is mathematically an integer and the
    # sums are exact, the division then returns that integer exactly, whereas rounding S_t / S_total first can
    # push K τ just above it and move the token one bucket up (e.g. constant entropy, |o| = K = 13, t = 6).
    k_tau = (k * cumulative) / total.clamp_min(torch.finfo(torch.float32).tiny)
    entropy_bucket = (torch.ceil(k_tau).long() - 1).clamp_(0, k - 1)
    return torch.where(total > 0, entropy_bucket, position_bucket)


# ---------------------------------------------------------------------------------------------------------
# metrics (spec §7), accumulated chunk by chunk
# ---------------------------------------------------------------------------------------------------------
class _Moments:
    """Count, mean and centred sum of squares of the valid values, chunk by chunk: each chunk two-pass in
    float32, chunks merged with the pairwise update of Chan, Golub & LeVeque in float64."""

    def __init__(self, device):
        self.n = torch.zeros((), dtype=torch.float64, device=device)
        self.mean = torch.zeros((), dtype=torch.float64, device=device)
        self.m2 = torch.zeros((), dtype=torch.float64, device=device)

    def add(self, values: torch.Tensor, mf: torch.Tensor, count: torch.Tensor, scratch: torch.Tensor) -> None:
        mean = values.sum() / count.clamp_min(1.0)
        centred = torch.addcmul(values, mf, mean, value=-1.0, out=scratch).view(-1)
        m2 = torch.dot(centred, centred).double()
        count, mean = count.double(), mean.double()
        total = self.n + count
        delta = mean - self.mean
        share = torch.where(total > 0, count / total.clamp_min(1.0), torch.zeros_like(total))
        self.m2 = self.m2 + m2 + delta * delta * self.n * share
        self.mean = self.mean + delta * share
        self.n = total

    def mean_std(self) -> tuple[float, float]:
        if self.n.item() == 0:
            return 0.0, 0.0
        return self.mean.item(), (self.m2 / self.n).clamp_min(0.0).sqrt().item()


class _MetricSums:
    def __init__(self, device):
        zero = lambda: torch.zeros((), dtype=torch.float64, device=device)  # noqa: E731
        self.valid, self.pivots, self.progress_abs, self.flips, self.kept = zero(), zero(), zero(), zero(), zero()
        self.gate_max = torch.full((), float("-inf"), device=device)
        self.gate = _Moments(device)
        self.adv = _Moments(device)

    def add_chunk(self, result, mf, n, adv_hat, gate, psi, keep, scratch) -> None:
        count = n.sum()
        self.valid += count
        if keep is not None:
            self.kept += keep.sum()
        if gate is not None:
            self.gate.add(gate, mf, count, scratch)
            if gate.numel():
                self.gate_max = torch.maximum(self.gate_max, gate.max())  # masked positions are 0 ≤ W
        if psi is not None:
            self.progress_abs += torch.abs(psi, out=scratch).sum()
        self.adv.add(result, mf, count, scratch)
        # tokens whose sign differs from sign(Â_i); a masked position (A = 0) differs iff Â_i ≠ 0: take those out
        outcome = torch.sign(adv_hat)
        differs = torch.ne(torch.sign(result, out=scratch), outcome, out=scratch).sum()
        self.flips += differs - ((result.shape[1] - n) * (outcome.squeeze(1) != 0)).sum()

    def fill(self, metrics: dict, cfg: EntropyProgressConfig, outcome: OutcomeStats) -> None:
        n = max(self.valid.item(), 1.0)
        if cfg.gate:
            mean, std = self.gate.mean_std()
            gate_max = self.gate_max.item() if self.valid.item() > 0 else 0.0
            metrics["gate_mean"], metrics["gate_std"], metrics["gate_max"] = mean, std, gate_max
            metrics["pivot_frac"] = self.pivots.item() / n
        else:
            metrics["gate_mean"], metrics["gate_std"], metrics["gate_max"] = (1.0, 0.0, 1.0)
        metrics["zero_var_group_frac"] = outcome.all_equal.float().mean().item() if outcome.num_groups else 0.0
        metrics["progress_abs_mean"] = self.progress_abs.item() / n if cfg.progress_coef > 0 else 0.0
        metrics["adv_mean"], metrics["adv_std"] = self.adv.mean_std()
        metrics["sign_flip_frac"] = self.flips.item() / n
        if cfg.top_entropy_ratio is not None:
            metrics["forking_kept_frac"] = self.kept.item() / n
