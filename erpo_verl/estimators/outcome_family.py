"""The outcome-only estimators (``dapo``, ``grpo_forking``): GRPO's Â_i on every valid token of response i,

    A_{i,t} = m_{i,t} · Â_i        (optionally · 1[H_{i,t} ≥ τ_ρ], the 80/20 forking-token mask of :mod:`forking`)

with Â_i exactly verl's (:mod:`outcome`). One read of the rewards (row sums), then one pass over the mask (and
the entropy) in row chunks that writes the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from erpo_verl.estimators.config import check_ratio, config_get, norm_adv_by_std
from erpo_verl.estimators.forking import top_entropy_threshold
from erpo_verl.estimators.outcome import outcome_from_rewards, sequence_rewards
from erpo_verl.estimators.segments import chunk_tokens
from erpo_verl.estimators.validation import check_inputs, check_shapes, float_mask, missing_input_message


@dataclass(frozen=True)
class OutcomeOptions:
    """Options of the outcome-only estimators (``dapo``, ``grpo_forking``)."""

    top_entropy_ratio: float | None
    norm_adv_by_std_in_grpo: bool = True

    @property
    def needs_entropy(self) -> bool:
        return self.top_entropy_ratio is not None

    needs_ref_log_prob = False


def outcome_config(config: Any, section: str, default_ratio: float | None) -> OutcomeOptions:
    """Validated options read from ``config[section]`` (only ``top_entropy_ratio`` is a valid key)."""
    ratio = default_ratio
    section_cfg = config_get(config, section, None) if config is not None else None
    if section_cfg is not None:
        for key in list(section_cfg.keys()):
            if key != "top_entropy_ratio":
                raise ValueError(f"unknown key algorithm.{section}.{key}; valid keys are: top_entropy_ratio")
        ratio = section_cfg.get("top_entropy_ratio", default_ratio)
    norm = norm_adv_by_std(config)
    return OutcomeOptions(check_ratio(ratio, f"algorithm.{section}.top_entropy_ratio"), norm)


def masked_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any,
    config: Any,
    section: str,
    default_ratio: float | None,
    old_entropy: torch.Tensor | None,
    metrics: dict | None,
) -> torch.Tensor:
    """GRPO's outcome advantage on the valid tokens, optionally restricted to the high-entropy tokens.

    NaN/inf are found from the row sums and only then reported by the full check (see
    :func:`validation.check_shapes`).
    """
    options = outcome_config(config, section, default_ratio)
    ratio = options.top_entropy_ratio
    if ratio is not None and old_entropy is None:
        raise ValueError(missing_input_message("old_entropy", f"by the forking-token mask (algorithm.{section}.top_entropy_ratio)"))
    entropy = old_entropy if ratio else None
    check_shapes(token_level_rewards, response_mask, index, old_entropy=entropy)

    def full_check() -> None:
        check_inputs(token_level_rewards, response_mask, index, old_entropy=entropy)

    rewards = sequence_rewards(token_level_rewards)
    if not bool(torch.isfinite(rewards).all()):
        full_check()
    try:
        stats = outcome_from_rewards(rewards, index, options.norm_adv_by_std_in_grpo)
    except ValueError:
        full_check()
        raise
    bs, width = response_mask.shape
    advantages = torch.empty(bs, width, dtype=torch.float32, device=response_mask.device)
    adv_hat = stats.advantage.unsqueeze(1)
    step = max(1, chunk_tokens(response_mask.device) // max(1, width))
    if ratio is None:
        for a in range(0, bs, step):
            torch.mul(float_mask(response_mask[a : a + step]), adv_hat[a : a + step], out=advantages[a : a + step])
        return advantages

    sanitize = False

    def masked_entropy(a: int) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal sanitize
        mf = float_mask(response_mask[a : a + step])
        x = old_entropy[a : a + step]
        if not sanitize:
            h = x * mf if x.dtype == torch.float32 else x.float().mul_(mf)
            if bool(torch.isfinite(h.sum(dim=1)).all()):
                return mf, h
            full_check()  # raises for NaN/inf on a valid position; else they are masked garbage
            sanitize = True
        return mf, torch.where(mf.bool(), x.float(), 0.0)

    values = []
    for a in range(0, bs, step):
        mf, h = masked_entropy(a)
        values.append(h[mf.bool()])
    threshold = top_entropy_threshold(torch.cat(values) if values else torch.zeros(0), ratio)
    kept = torch.zeros((), dtype=torch.float64, device=response_mask.device)
    valid = torch.zeros((), dtype=torch.float64, device=response_mask.device)
    for a in range(0, bs, step):
        mf, h = masked_entropy(a)
        keep = mf if threshold is None else (h >= threshold).to(torch.float32).mul_(mf)
        torch.mul(keep, adv_hat[a : a + step], out=advantages[a : a + step])
        if threshold is not None:
            kept += keep.sum()
        valid += mf.sum()
    if metrics is not None:
        metrics["forking_kept_frac"] = kept.item() / max(1.0, valid.item())
    return advantages
