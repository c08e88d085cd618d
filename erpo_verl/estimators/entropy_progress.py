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
"""

from __future__ import annotations

from typing import Any

import torch

from erpo_verl.estimators.config import EntropyProgressConfig
from erpo_verl.estimators.forking import top_entropy_mask
from erpo_verl.estimators.outcome import outcome_advantage
from erpo_verl.estimators.segments import rowwise_segment_mean_std, segment_mean_std
from erpo_verl.estimators.validation import check_inputs

# The trainer mode (erpo_verl.trainer) forwards these keyword arguments to any registered estimator whose
# signature names them. Keep the names in sync with spec §2.
EXTRA_INPUTS = ("old_entropy", "old_log_probs", "ref_log_prob")


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
    mask = check_inputs(
        token_level_rewards,
        response_mask,
        index,
        old_entropy=old_entropy if cfg.needs_entropy else None,
        old_log_probs=old_log_probs if cfg.needs_ref_log_prob else None,
        ref_log_prob=ref_log_prob if cfg.needs_ref_log_prob else None,
    )
    eps = cfg.epsilon
    out = outcome_advantage(token_level_rewards, index, cfg.norm_adv_by_std_in_grpo)
    gid, num_groups = out.group, out.num_groups
    lengths = mask.sum(dim=1)

    entropy = None
    if cfg.needs_entropy:
        # masked positions may hold garbage (even NaN): zero them before any reduction
        entropy = torch.where(mask.bool(), old_entropy.float(), 0.0)

    # 2. entropy gate W (None means W ≡ 1)
    gate = z = None
    if cfg.gate:
        scope = gid if cfg.entropy_stats_scope == "group" else torch.zeros_like(gid)
        num_scopes = num_groups if cfg.entropy_stats_scope == "group" else 1
        mu, sigma, _ = rowwise_segment_mean_std(entropy, mask, scope, num_scopes)
        z = (entropy - mu[scope].unsqueeze(1)) / (sigma[scope].unsqueeze(1) + eps)
        gate = torch.sigmoid(z * cfg.gate_gamma)
        if cfg.gate_norm == "mean1":
            gate_mean, _, _ = rowwise_segment_mean_std(gate * mask, mask, scope, num_scopes)
            gate = gate / gate_mean.clamp_min(eps)[scope].unsqueeze(1)

    advantages = out.advantage.unsqueeze(1) * mask if gate is None else gate * out.advantage.unsqueeze(1) * mask

    # 3–6. implicit progress term η Ψ
    progress = None
    if cfg.progress_coef > 0:
        s = torch.where(mask.bool(), (old_log_probs.float() - ref_log_prob.float()) * cfg.logratio_scale, 0.0)
        bucket = _progress_bucket(cfg, mask, lengths, entropy)
        cell = (gid.unsqueeze(1) * cfg.num_buckets + bucket).reshape(-1)
        flat_mask = mask.reshape(-1)
        mu_c, sigma_c, count_c = segment_mean_std(s.reshape(-1), cell, num_groups * cfg.num_buckets, flat_mask)
        s_norm = s - mu_c[cell].view_as(s)
        if cfg.bucket_norm == "zscore":
            s_norm = s_norm / (sigma_c[cell].view_as(s) + eps)
        s_norm = torch.where((count_c[cell] >= 2).view_as(s), s_norm, 0.0)

        informative = (out.group_size >= 2) & ~out.all_equal
        anchor = torch.where(informative[gid], torch.sign(out.advantage), torch.zeros_like(out.advantage))
        if cfg.zero_var_fallback:
            fallback = torch.sign(out.rewards - cfg.reward_threshold)
            anchor = torch.where(informative[gid], anchor, fallback)

        progress = anchor.unsqueeze(1) * s_norm * mask
        if cfg.anchor_gate and gate is not None:
            progress = progress * gate
        advantages = advantages + cfg.progress_coef * progress

    if cfg.adv_clip is not None:
        advantages = advantages.clamp(-cfg.adv_clip, cfg.adv_clip)

    keep = None
    if cfg.top_entropy_ratio is not None:  # the 80/20 forking-token mask, see forking.py
        keep = top_entropy_mask(entropy, mask, cfg.top_entropy_ratio)
        advantages = advantages * keep

    if metrics is not None:
        _fill_metrics(metrics, cfg, mask, gate, z, out, advantages, progress)
        if keep is not None:
            metrics["forking_kept_frac"] = keep.sum().item() / max(1.0, mask.sum().item())
    return advantages


def _progress_bucket(
    cfg: EntropyProgressConfig, mask: torch.Tensor, lengths: torch.Tensor, entropy: torch.Tensor | None
) -> torch.Tensor:
    """Bucket index b ∈ [0, K) of each position (values on masked positions are irrelevant)."""
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


def _fill_metrics(metrics, cfg, mask, gate, z, out, advantages, progress) -> None:
    """Spec §7 diagnostics over the valid tokens (unprefixed; the trainer adds ``erpo/``)."""
    n = mask.sum().clamp_min(1.0)
    valid = mask.bool()

    def mean_std_max(x: torch.Tensor) -> tuple[float, float, float]:
        vals = x[valid]
        if vals.numel() == 0:
            return 0.0, 0.0, 0.0
        return vals.mean().item(), vals.std(unbiased=False).item(), vals.max().item()

    if gate is not None:
        metrics["gate_mean"], metrics["gate_std"], metrics["gate_max"] = mean_std_max(gate)
        metrics["pivot_frac"] = ((z > 1) & valid).sum().item() / n.item()
    else:
        metrics["gate_mean"], metrics["gate_std"], metrics["gate_max"] = (1.0, 0.0, 1.0)
    metrics["zero_var_group_frac"] = out.all_equal.float().mean().item() if out.num_groups else 0.0
    metrics["progress_abs_mean"] = (
        (cfg.progress_coef * progress.abs() * mask).sum().item() / n.item() if progress is not None else 0.0
    )
    metrics["adv_mean"], metrics["adv_std"], _ = mean_std_max(advantages)
    outcome_sign = torch.sign(out.advantage).unsqueeze(1)
    metrics["sign_flip_frac"] = ((torch.sign(advantages) != outcome_sign) & valid).sum().item() / n.item()
