#!/usr/bin/env bash
# GRPO (verl's own estimator) on Qwen2.5-7B — the baseline of the controlled comparison.
#   bash recipes/run_grpo_qwen7b.sh [hydra overrides...]     DRY_RUN=1 / PROFILE=cpu-tiny: see recipes/README.md
# Shared settings: recipes/common.sh. This file differs from the other three recipes only in ALGO_NAME and ALGO.
set -euo pipefail
ALGO_NAME=grpo
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ALGO=(
    algorithm.adv_estimator=grpo                    # (r - mean) / std over the n responses of a prompt
    algorithm.norm_adv_by_std_in_grpo=True
    trainer.v1.trainer_mode=sync                    # verl's synchronous v1 trainer
    algorithm.use_kl_in_reward=False
    actor_rollout_ref.actor.use_kl_loss=False       # no KL term and no reference policy
    actor_rollout_ref.actor.kl_loss_coef=0.0
    actor_rollout_ref.actor.policy_loss.loss_mode=vanilla
    actor_rollout_ref.actor.clip_ratio_low=0.2
    actor_rollout_ref.actor.clip_ratio_high=0.2
    actor_rollout_ref.actor.clip_ratio_c=3.0
    actor_rollout_ref.actor.loss_agg_mode=token-mean
    algorithm.filter_groups.enable=False
    reward.reward_manager.name=naive
)

run_recipe "$@"
