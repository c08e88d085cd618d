"""The entropy-progress token advantage: one implementation behind ``erpo`` and ``ep_grpo``.

Notation (``docs/algorithms.md``: Notation, Steps): prompt group g, response i with |o_i| valid tokens, valid
token t (0-based rank among the valid tokens of its row: its column when the row is right-padded without
holes), sequence reward R_i, mask m, old-policy entropy H, implicit log-ratio s_{i,t} = λ (log π_old − log π_ref).

1. Outcome advantage (GRPO, exactly verl's):   Â_i = (R_i − mean_g R) / (std_g R + ε)

2. Entropy gate:                               z_{i,t} = (H_{i,t} − μ^H) / (σ^H + ε)
                                               W_{i,t} = sigmoid(γ z_{i,t})
   μ^H, σ^H (population) over the valid tokens of the group, the batch or the response itself
   (``entropy_stats_scope``); ``mean1`` rescales W to mean 1 over the same tokens. ``gate=false``: W ≡ 1.

3. Progress coordinate and bucket (``bucket_edges: ceil``; ``floor`` uses the progress before the token):
                                               τ_{i,t} = (t + 1) / |o_i|                 (position)
                                               τ_{i,t} = S_{i,t} / S_{i,|o_i|−1}        (cum_entropy)
                                               b = clamp(⌈K τ⌉ − 1, 0, K − 1)
   floor:                                      τ⁻ = t / |o_i|  or  S_{i,t−1} / S_{i,|o_i|−1},  b = min(⌊K τ⁻⌋, K−1)
   with S the running sum of H over valid tokens; integer arithmetic for ``position``; a response whose total
   entropy is 0 falls back to position (see :mod:`buckets`).

4. Bucket-normalized implicit signal:          s̃ = (s − μ_{g,b}) / (σ_{g,b} + ε)          (zscore)
                                               s̃ =  s − μ_{g,b}                           (center)
   over the valid tokens of group g in bucket b, σ with n (``population``) or n − 1 (``unbiased``) in the
   denominator; a cell with < 2 tokens gives s̃ = 0.

5. Result anchor:                              d_i = sign(Â_i)  if the group has ≥ 2 responses with
                                                                  rewards not all equal
                                               d_i = sign(R_i − θ) otherwise, if zero_var_fallback
                                               d_i = 0          otherwise

6. Synthesis:                                  Ψ_{i,t} = (W_{i,t} if anchor_gate else 1) · d_i · s̃_{i,t}
                                               A_{i,t} = m_{i,t} · (W_{i,t} Â_i + η Ψ_{i,t}),
                                               clamped to ±adv_clip when set.

7. Optional 80/20 mask (``top_entropy_ratio`` ρ): A_{i,t} ← 0 unless H_{i,t} is among the top ρ of the batch's
   valid-token entropies (see :mod:`forking`).

With ``gate=false`` and ``progress_coef=0`` this is exactly GRPO. :mod:`reference` computes the same in a dozen
plain tensor lines; this module is the fast path, and the tests hold the two equal on every option.

How it is computed (a few reads of the inputs and one write of the output, linear in the tokens):

* The batch is cut into chunks of whole prompt groups (:class:`segments.GroupChunks`, ~1M tokens on a CPU).
  Every statistic is per group, per response or per (group, bucket), so each chunk is finished on its own; its
  temporaries live in reused chunk-sized buffers (:mod:`workspace`). ``entropy_stats_scope: batch`` adds passes
  over the entropy for the batch-wide mean, std and gate mean.
* Every mean and variance is two-pass in float32: row sums first, added into groups (``index_add_`` over
  rows, not tokens), then the centred sum of squares.
* Buckets are contiguous column ranges of a row (:mod:`buckets`): per-(row, bucket) sums from block sums, and
  per-token cell statistics from one ``gather`` — no (bs, L) index into the groups.
* NaN/inf inputs are detected from the row sums computed anyway; only then does the full check of
  :func:`validation.check_inputs` run (for its error message), and when the non-finite values sit on masked
  positions, which are allowed, the chunk zeroes them with ``torch.where`` instead of a product.
* The metrics of spec §7 are accumulated chunk by chunk (:mod:`diagnostics`).
"""

from __future__ import annotations

from typing import Any

import torch

from erpo_verl.estimators.buckets import chunk_buckets
from erpo_verl.estimators.config import EntropyProgressConfig
from erpo_verl.estimators.diagnostics import MetricSums
from erpo_verl.estimators.forking import top_entropy_threshold
from erpo_verl.estimators.outcome import OutcomeStats, outcome_from_rewards, sequence_rewards
from erpo_verl.estimators.segments import GroupChunks, chunk_tokens, segment_sum
from erpo_verl.estimators.validation import check_inputs, check_shapes, float_mask, missing_input_message
from erpo_verl.estimators.workspace import Workspace


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
        what = ("by the entropy gate" if cfg.gate else "by bucket_coord=cum_entropy"
                if cfg.progress_coef > 0 and cfg.bucket_coord == "cum_entropy" else "by the forking-token mask")
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
        self.ws = Workspace(rows, mask.shape[1], mask.device)
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
        acc = MetricSums(self.device) if metrics is not None else None
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
            if cfg.entropy_stats_scope == "response":  # every row is its own scope
                local = torch.arange(h.shape[0], device=self.device)
                num_local = h.shape[0]
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
        buckets = chunk_buckets(cfg, mf, n, h, hsum, self.ws)
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
            dof = safe if cfg.bucket_std == "population" else (count - 1.0).clamp_min(1.0)
            var = torch.zeros(num_local, k, device=self.device).index_add_(0, local, squares) / dof
            factor = factor / (var.sqrt() + eps)[local]
        psi = centred.mul_(buckets.expand(factor, expanded))
        if cfg.anchor_gate and gate is not None:
            psi.mul_(gate)
        return psi


def _gate_values(centred: torch.Tensor, scale: torch.Tensor, gamma: float, mf: torch.Tensor) -> torch.Tensor:
    """sigmoid(γ z) with z = (H − μ)/(σ + ε) (``centred`` = H − μ, ``scale`` = σ + ε), 0 on masked positions;
    computed in place in ``centred``."""
    return centred.mul_(gamma / scale).sigmoid_().mul_(mf)
