"""EP-GRPO — Entropy-Progress Aligned GRPO with Implicit Process Guidance (arXiv 2605.04960).

EP-GRPO is the same estimator family as ERPO (same authors) with two changes aimed at GRPO's
"zero-variance collapse" and at trajectories that progress at different speeds:

* **Cumulative-entropy mapping** (Eq. 20–25): tokens are bucketed by the share of the response's total
  entropy spent so far, τ_{i,t} = S_{i,t} / S_{i,|o_i|}, S_{i,t} = Σ_{k≤t} H_{i,k}, b = clamp(⌈K τ⌉ − 1, 0, K−1),
  so "logical progress" rather than token position aligns the implicit signal across responses.
* **Zero-variance fallback**: when all rewards of a group are equal, Â_i = 0 and GRPO's gradient vanishes;
  EP-GRPO keeps the implicit term alive with the anchor d_i = sign(R_i − θ):
      A_{i,t} = W_{i,t} Â_i + η · W_{i,t} · d_i · s̃_{i,t}
  (θ = 0.5 for {0, 1} rewards, 0 for {−1, +1}).

Everything else (gate W, implicit signal s = λ (log π_old − log π_ref), z-scoring per (group, bucket)) is as
in :mod:`erpo_verl.estimators.erpo`: the preset is ERPO's with ``config.EP_GRPO_CHANGES``. Equations in
:mod:`erpo_verl.estimators.reference` and :mod:`erpo_verl.estimators.entropy_progress`, provenance of each
default in ``docs/algorithms.md``. Hyper-parameters: ``algorithm.ep_grpo.*``.

Do not combine with DAPO's dynamic sampling (``algorithm.filter_groups``): EP-GRPO keeps zero-variance
groups on purpose.
"""

from __future__ import annotations

from typing import Any

import torch

from erpo_verl.estimators.config import EP_GRPO_DEFAULTS, EntropyProgressConfig
from erpo_verl.estimators.entropy_progress import entropy_progress_advantage

CONFIG_SECTION = "ep_grpo"


def ep_grpo_config(config: Any = None) -> EntropyProgressConfig:
    """The validated EP-GRPO configuration from verl's ``algorithm`` section (``algorithm.ep_grpo.*``)."""
    return EntropyProgressConfig.from_algorithm_config(config, CONFIG_SECTION, EP_GRPO_DEFAULTS)


def compute_ep_grpo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any = None,
    config: Any = None,
    *,
    old_entropy: torch.Tensor | None = None,
    old_log_probs: torch.Tensor | None = None,
    ref_log_prob: torch.Tensor | None = None,
    metrics: dict | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """EP-GRPO token advantages; returns float32 ``(advantages, returns)`` (identical), 0 where masked."""
    advantages = entropy_progress_advantage(
        token_level_rewards,
        response_mask,
        index,
        ep_grpo_config(config),
        old_entropy=old_entropy,
        old_log_probs=old_log_probs,
        ref_log_prob=ref_log_prob,
        metrics=metrics,
    )
    return advantages, advantages
