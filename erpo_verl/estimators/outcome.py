"""GRPO's outcome advantage, vectorized (shared by every estimator of this package).

For prompt group g with responses i = 1..G and sequence rewards R_i (the row sums of
``token_level_rewards``, as in verl):

    Â_i = (R_i − mean_g R) / (std_g R + ε)      (norm_adv_by_std_in_grpo = true, GRPO)
    Â_i =  R_i − mean_g R                       (norm_adv_by_std_in_grpo = false, Dr. GRPO)

with ``std`` the *unbiased* standard deviation and, for a group with a single response, mean 0 and
std 1 — exactly verl's ``compute_grpo_outcome_advantage`` (same ε = 1e-6), computed with segment sums
instead of a Python loop over the batch. Every valid token of response i receives Â_i.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from erpo_verl.estimators.segments import group_ids, segment_sum

GRPO_EPSILON = 1e-6  # verl's default in compute_grpo_outcome_advantage


@dataclass
class OutcomeStats:
    """Per-response outcome quantities shared by all estimators of this package."""

    rewards: torch.Tensor  # (bs,) float32 sequence rewards R_i
    advantage: torch.Tensor  # (bs,) float32 Â_i
    group: torch.Tensor  # (bs,) int64 group id
    num_groups: int
    group_size: torch.Tensor  # (num_groups,) responses per group (float32)
    all_equal: torch.Tensor  # (num_groups,) bool: every reward of the group is identical (incl. size 1)


def outcome_advantage(
    token_level_rewards: torch.Tensor,
    index: Any,
    norm_adv_by_std_in_grpo: bool = True,
    epsilon: float = GRPO_EPSILON,
) -> OutcomeStats:
    """Compute Â_i per response (see the module docstring) and the group bookkeeping."""
    return outcome_from_rewards(sequence_rewards(token_level_rewards), index, norm_adv_by_std_in_grpo, epsilon)


def sequence_rewards(token_level_rewards: torch.Tensor) -> torch.Tensor:
    """R_i = the row sums of ``token_level_rewards``, in float32 (no float32 copy of a bfloat16 input)."""
    if token_level_rewards.dtype == torch.float32:
        return token_level_rewards.sum(dim=-1)
    return token_level_rewards.sum(dim=-1, dtype=torch.float32)


def outcome_from_rewards(
    rewards: torch.Tensor,
    index: Any,
    norm_adv_by_std_in_grpo: bool = True,
    epsilon: float = GRPO_EPSILON,
) -> OutcomeStats:
    """:func:`outcome_advantage` from the sequence rewards R_i (bs,) float32."""
    bs = rewards.shape[0]
    gid, num_groups = group_ids(index, bs, rewards.device)

    size = segment_sum(torch.ones_like(rewards), gid, num_groups)
    mean = segment_sum(rewards, gid, num_groups) / size.clamp_min(1.0)
    centred = rewards - mean[gid]
    var = segment_sum(centred * centred, gid, num_groups) / (size - 1.0).clamp_min(1.0)
    single = size < 2
    mean = torch.where(single, torch.zeros_like(mean), mean)
    std = torch.where(single, torch.ones_like(var), var.sqrt())

    advantage = rewards - mean[gid]
    if norm_adv_by_std_in_grpo:
        advantage = advantage / (std[gid] + epsilon)

    gmax = torch.full((num_groups,), -torch.inf, device=rewards.device).scatter_reduce_(0, gid, rewards, "amax")
    gmin = torch.full((num_groups,), torch.inf, device=rewards.device).scatter_reduce_(0, gid, rewards, "amin")
    return OutcomeStats(rewards, advantage, gid, num_groups, size, gmax == gmin)
