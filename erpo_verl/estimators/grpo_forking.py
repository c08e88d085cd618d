"""``grpo_forking``: GRPO advantages kept only on the high-entropy "forking" tokens (arXiv 2506.01939).

``algorithm.adv_estimator=grpo_forking``; ρ under ``algorithm.grpo_forking.top_entropy_ratio`` (default 0.2, the
paper's). The mask itself is in :mod:`forking`; it needs ``trainer.v1.trainer_mode=erpo_sync`` for the entropy.
"""

from __future__ import annotations

from typing import Any

import torch

from erpo_verl.estimators.forking import DEFAULT_RATIO
from erpo_verl.estimators.outcome_family import OutcomeOptions, masked_outcome_advantage, outcome_config


def grpo_forking_config(config: Any = None) -> OutcomeOptions:
    return outcome_config(config, "grpo_forking", DEFAULT_RATIO)


def compute_grpo_forking_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Any = None,
    *,
    old_entropy: torch.Tensor | None = None,
    metrics: dict | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``grpo_forking``: GRPO advantages kept only on the top-ρ entropy tokens (ρ = 0.2 by default)."""
    advantages = masked_outcome_advantage(
        token_level_rewards, response_mask, index, config, "grpo_forking", DEFAULT_RATIO, old_entropy, metrics
    )
    return advantages, advantages
