"""The estimator of spec §4 and §8 in plain tensor code: the readable form of :mod:`entropy_progress`.

Each step is one or two lines over the whole (bs, L) batch: per-row position ranks from a running count,
statistics per scope with ``index_add_`` over rows, statistics per (group, bucket) cell with ``index_add_`` over
tokens. No chunks, buffers or bucket-edge arithmetic, so it reads like the spec and is held equal to the fast
path by the tests, on every option; ``make bench`` times it next to the fast path. Statistics are in
``dtype`` (float64 by default; the running entropy sums that decide a bucket are float64 always, spec §8).
"""

from __future__ import annotations

from typing import Any

import torch

from erpo_verl.estimators.config import EntropyProgressConfig
from erpo_verl.estimators.forking import top_entropy_mask
from erpo_verl.estimators.outcome import outcome_advantage
from erpo_verl.estimators.validation import check_inputs


def reference_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any,
    cfg: EntropyProgressConfig,
    old_entropy: torch.Tensor | None = None,
    old_log_probs: torch.Tensor | None = None,
    ref_log_prob: torch.Tensor | None = None,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """Token advantages A (bs, L) float32, 0 where the mask is 0 (spec §4 with the options of §5 and §8)."""
    check_inputs(token_level_rewards, response_mask, index,
                 old_entropy=old_entropy if cfg.needs_entropy else None,
                 old_log_probs=old_log_probs if cfg.needs_ref_log_prob else None,
                 ref_log_prob=ref_log_prob if cfg.needs_ref_log_prob else None)
    eps, k = cfg.epsilon, cfg.num_buckets
    valid = response_mask != 0
    m = valid.to(dtype)
    bs = m.shape[0]

    # 1. outcome advantage Â_i, exactly verl's GRPO
    out = outcome_advantage(token_level_rewards, index, cfg.norm_adv_by_std_in_grpo)
    group, a_hat = out.group, out.advantage.to(dtype).unsqueeze(1)
    H = torch.where(valid, old_entropy.to(dtype), 0.0) if cfg.needs_entropy else None

    # 2. entropy gate W = sigmoid(γ z), z the entropy z-score over the valid tokens of the scope
    W = m
    if cfg.gate:
        scope = {"group": group, "batch": torch.zeros_like(group), "response": torch.arange(bs, device=m.device)}[cfg.entropy_stats_scope]
        mu, sigma = _row_scope_stats(H, m, scope)
        W = torch.sigmoid(cfg.gate_gamma * (H - mu) / (sigma + eps)) * m
        if cfg.gate_norm == "mean1":
            W = W / _row_scope_stats(W, m, scope)[0].clamp_min(eps)

    # 3.-6. implicit progress term η Ψ
    psi = torch.zeros_like(m)
    if cfg.progress_coef > 0:
        bucket = progress_buckets(cfg, valid, old_entropy)
        s = torch.where(valid, cfg.logratio_scale * (old_log_probs.to(dtype) - ref_log_prob.to(dtype)), 0.0)
        cell = group.unsqueeze(1) * k + bucket  # (group, bucket) of every token
        count, mu, sigma = _cell_stats(s, m, cell, out.num_groups * k, unbiased=cfg.bucket_std == "unbiased")
        centred = s - mu
        s_tilde = centred / (sigma + eps) if cfg.bucket_norm == "zscore" else centred
        s_tilde = torch.where(count >= 2, s_tilde, 0.0)
        informative = ((out.group_size >= 2) & ~out.all_equal)[group]
        fallback = torch.sign(out.rewards - cfg.reward_threshold) if cfg.zero_var_fallback else torch.zeros(bs, device=m.device)
        d = torch.where(informative, torch.sign(out.advantage), fallback).to(dtype).unsqueeze(1)
        psi = (W if cfg.anchor_gate else 1.0) * d * s_tilde

    # synthesis, clamp, 80/20 mask
    A = m * (W * a_hat + cfg.progress_coef * psi)
    if cfg.adv_clip is not None:
        A = A.clamp(-cfg.adv_clip, cfg.adv_clip)
    if cfg.top_entropy_ratio is not None:
        A = A * top_entropy_mask(torch.where(valid, old_entropy.float(), 0.0), valid, cfg.top_entropy_ratio)
    return A.float()


def progress_buckets(cfg: EntropyProgressConfig, valid: torch.Tensor, entropy: torch.Tensor | None) -> torch.Tensor:
    """Bucket b ∈ [0, K) of every token (spec §4.3, §8), with t the rank among the row's valid tokens."""
    k, floor = cfg.num_buckets, cfg.bucket_edges == "floor"
    t = torch.cumsum(valid.long(), dim=1) - 1
    n = valid.sum(dim=1, keepdim=True).clamp_min(1)
    position = (k * t) // n if floor else (k * (t + 1) - 1) // n
    position = position.clamp(0, k - 1)
    if cfg.bucket_coord == "position":
        return position
    S = torch.cumsum(torch.where(valid, entropy.double(), 0.0), dim=1)  # S_{i,t}, float64
    total = S[:, -1:]
    if floor:
        before = torch.nn.functional.pad(S[:, :-1], (1, 0))  # S_{i,t−1}, S_{i,−1} = 0
        by_entropy = torch.floor(k * before / total).long().clamp(0, k - 1)
    else:
        by_entropy = (torch.ceil(k * S / total).long() - 1).clamp(0, k - 1)
    return torch.where(total > 0, by_entropy, position)


def _row_scope_stats(x: torch.Tensor, m: torch.Tensor, scope: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population std of ``x`` over the valid tokens of each row's scope, as (bs, 1) columns."""
    num = int(scope.max()) + 1 if scope.numel() else 0
    total = lambda v: torch.zeros(num, dtype=x.dtype, device=x.device).index_add_(0, scope, v.sum(dim=1))  # noqa: E731
    n = total(m).clamp_min(1.0)
    mean = (total(x * m) / n)[scope].unsqueeze(1)
    var = (total((x - mean) ** 2 * m) / n)[scope].unsqueeze(1)
    return mean, var.sqrt()


def _cell_stats(x: torch.Tensor, m: torch.Tensor, cell: torch.Tensor, num: int, unbiased: bool):
    """Count, mean and std of ``x`` over the valid tokens of each token's cell, as (bs, L) tensors."""
    total = lambda v: torch.zeros(num, dtype=x.dtype, device=x.device).index_add_(0, cell.reshape(-1), v.reshape(-1))  # noqa: E731
    count = total(m)
    mean = total(x * m) / count.clamp_min(1.0)
    var = total((x - mean[cell]) ** 2 * m) / (count - 1.0 if unbiased else count).clamp_min(1.0)
    return count[cell], mean[cell], var.sqrt()[cell]
