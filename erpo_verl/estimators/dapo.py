"""DAPO — Decoupled Clip and Dynamic sAmpling Policy Optimization (arXiv 2503.14476): the ``dapo`` estimator.

DAPO's advantage is GRPO's outcome advantage,

    Â_i = (R_i − mean_g R) / (std_g R + ε)      on every valid token of response i,

and everything else that makes DAPO lives in verl's configuration: clip-higher
(``actor.clip_ratio_low=0.2 clip_ratio_high=0.28``), the token-level loss (``loss_agg_mode=token-mean``),
dynamic sampling (``algorithm.filter_groups``) and overlong reward shaping (``reward.reward_manager.name=dapo``).
Registering it under its own name lets DAPO runs take the same code path as ERPO/EP-GRPO (same vectorized
statistics, same metrics), and gives it the 80/20 forking-token mask as an option
(``+algorithm.dapo.top_entropy_ratio=0.2``, which needs ``trainer.v1.trainer_mode=erpo_sync``).
"""

from __future__ import annotations

from typing import Any

import torch

from erpo_verl.estimators.outcome_family import OutcomeOptions, masked_outcome_advantage, outcome_config

CONFIG_SECTION = "dapo"


def dapo_config(config: Any = None) -> OutcomeOptions:
    return outcome_config(config, CONFIG_SECTION, None)


def compute_dapo_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Any = None,
    *,
    old_entropy: torch.Tensor | None = None,
    metrics: dict | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO's outcome advantage broadcast to the valid tokens; float32 ``(advantages, returns)``."""
    advantages = masked_outcome_advantage(
        token_level_rewards, response_mask, index, config, CONFIG_SECTION, None, old_entropy, metrics
    )
    return advantages, advantages
