#!/usr/bin/env bash
# KL-Cov (The Entropy Mechanism of RL for Reasoning LMs, arXiv 2505.22617): verl's own policy loss
# loss_mode=kl_cov on the GRPO baseline of Qwen2.5-7B. KL_COV_ESTIMATOR=erpo|ep_grpo|dapo combines it with another estimator.
#   bash recipes/run_kl_cov_qwen7b.sh [hydra overrides...]  DRY_RUN=1 / PROFILE=cpu-tiny: see recipes/README.md
# Shared settings: recipes/common.sh; only ALGO_NAME and ALGO differ from the GRPO recipe.
set -euo pipefail
ALGO_NAME=kl_cov
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ESTIMATOR=${KL_COV_ESTIMATOR:-grpo}
case "$ESTIMATOR" in
    erpo|ep_grpo) MODE=erpo_sync ;;                 # entropy-aware estimators need the erpo-verl trainer mode
    *) MODE=sync ;;
esac

ALGO=(
    algorithm.adv_estimator="${ESTIMATOR}"
    algorithm.norm_adv_by_std_in_grpo=True
    trainer.v1.trainer_mode="${MODE}"
    algorithm.use_kl_in_reward=False
    actor_rollout_ref.actor.use_kl_loss=False
    actor_rollout_ref.actor.kl_loss_coef=0.0
    actor_rollout_ref.actor.policy_loss.loss_mode=kl_cov
    actor_rollout_ref.actor.policy_loss.kl_cov_ratio=0.002      # Entropy-Mechanism 7B script values
    actor_rollout_ref.actor.policy_loss.ppo_kl_coef=1.0
    actor_rollout_ref.actor.clip_ratio_low=0.2
    actor_rollout_ref.actor.clip_ratio_high=0.2
    actor_rollout_ref.actor.clip_ratio_c=3.0
    actor_rollout_ref.actor.loss_agg_mode=token-mean
    algorithm.filter_groups.enable=False
    reward.reward_manager.name=naive
)

run_recipe "$@"
