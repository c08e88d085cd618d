#!/usr/bin/env bash
# EP-GRPO (arXiv 2605.04960) on Qwen2.5-7B: entropy gate + cumulative-entropy buckets + zero-variance fallback,
# with the defaults of docs/algorithms.md (add +algorithm.ep_grpo.<key>=... to change one). No dynamic sampling:
# EP-GRPO keeps zero-variance groups on purpose (its fallback anchor gives them a signal).
#   bash recipes/run_ep_grpo_qwen7b.sh [hydra overrides...]  DRY_RUN=1 / PROFILE=cpu-tiny: see recipes/README.md
# Shared settings: recipes/common.sh. This file differs from the other three recipes only in ALGO_NAME and ALGO.
set -euo pipefail
ALGO_NAME=ep_grpo
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ALGO=(
    algorithm.adv_estimator=ep_grpo
    algorithm.norm_adv_by_std_in_grpo=True
    trainer.v1.trainer_mode=erpo_sync               # forwards old entropy and old/ref log-probs to the estimator
    algorithm.use_kl_in_reward=False
    actor_rollout_ref.actor.use_kl_loss=True        # runs the reference policy (log pi_ref for the implicit signal)
    actor_rollout_ref.actor.kl_loss_coef=0.0        # ... with no KL term in the loss (0 x KL, logged only)
    actor_rollout_ref.actor.policy_loss.loss_mode=vanilla
    actor_rollout_ref.actor.clip_ratio_low=0.2
    actor_rollout_ref.actor.clip_ratio_high=0.2
    actor_rollout_ref.actor.clip_ratio_c=3.0
    actor_rollout_ref.actor.loss_agg_mode=token-mean
    algorithm.filter_groups.enable=False            # keeps zero-variance groups (no DAPO dynamic sampling)
    reward.reward_manager.name=naive
)

run_recipe "$@"
