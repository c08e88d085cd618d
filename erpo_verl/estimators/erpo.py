"""ERPO — Token-Level Entropy-Regulated Policy Optimization (arXiv 2603.28204), as a verl estimator.

ERPO replaces GRPO's one-advantage-per-response with a token-level advantage built from three parts:

* **Entropy-aware gating** amplifies "critical decision pivots" (high-entropy tokens):
      z_{i,t} = (H_{i,t} − μ_g^H) / (σ_g^H + ε),    W_{i,t} = sigmoid(γ z_{i,t})   (rescaled to mean 1)
* **Bucket-based implicit normalization** aligns tokens by *relative position*: the implicit signal
      s_{i,t} = λ (log π_old(o_{i,t}) − log π_ref(o_{i,t}))
  is z-scored within K position buckets b = ⌊(K(t+1) − 1)/|o_i|⌋ of each prompt group.
* **Result-anchored synthesis** gives the implicit term the sign of the outcome:
      Ψ_{i,t} = W_{i,t} · sign(Â_i) · s̃_{i,t},      A_{i,t} = W_{i,t} Â_i + η Ψ_{i,t}

Defaults (``algorithm.erpo.*``): γ = 2, λ = 0.1, η = 0.2, K = 10, group-scoped statistics, no zero-variance
fallback. The paper's method section is not public; which values come from the paper, from secondary
sources, or are ours is listed in ``docs/algorithms.md``. The full equations are in
:mod:`erpo_verl.estimators.entropy_progress` (fast path) and :mod:`erpo_verl.estimators.reference` (plain form);
options of spec §8 (``bucket_edges``, ``bucket_std``, ``entropy_stats_scope: response``) switch to the conventions
of a third-party implementation citing ERPO Eq. 9.

Inputs beyond stock verl: the old-policy entropy, ``old_log_probs`` and ``ref_log_prob`` — run verl with
``trainer.v1.trainer_mode=erpo_sync`` so they are forwarded.
"""

from __future__ import annotations

from typing import Any

import torch

from erpo_verl.estimators.config import ERPO_DEFAULTS, EntropyProgressConfig
from erpo_verl.estimators.entropy_progress import entropy_progress_advantage

CONFIG_SECTION = "erpo"


def erpo_config(config: Any = None) -> EntropyProgressConfig:
    """The validated ERPO configuration from verl's ``algorithm`` section (``algorithm.erpo.*``)."""
    return EntropyProgressConfig.from_algorithm_config(config, CONFIG_SECTION, ERPO_DEFAULTS)


def compute_erpo_advantage(
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
    """ERPO token advantages; returns float32 ``(advantages, returns)`` (identical), 0 where masked."""
    advantages = entropy_progress_advantage(
        token_level_rewards,
        response_mask,
        index,
        erpo_config(config),
        old_entropy=old_entropy,
        old_log_probs=old_log_probs,
        ref_log_prob=ref_log_prob,
        metrics=metrics,
    )
    return advantages, advantages
