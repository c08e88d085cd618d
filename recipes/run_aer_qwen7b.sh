#!/usr/bin/env bash
# AER, adaptive entropy regularization (arXiv 2510.10959; our labelled reconstruction, see docs/entropy_methods.md)
# on the GRPO baseline of Qwen2.5-7B. AER_ESTIMATOR=erpo|ep_grpo|dapo combines it with another estimator.
#   bash recipes/run_aer_qwen7b.sh [hydra overrides...]      DRY_RUN=1 / PROFILE=cpu-tiny: see recipes/README.md
# Shared settings: recipes/common.sh; only ALGO_NAME and ALGO differ from the GRPO recipe.
set -euo pipefail
ALGO_NAME=aer
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
AER_ESTIMATOR=${AER_ESTIMATOR:-grpo}
AER_TARGET_RATIO=${AER_TARGET_RATIO:-0.4}         # tau: H* = tau * H_0 (our choice, see docs/entropy_methods.md)
AER_ALPHA_LR=${AER_ALPHA_LR:-1e-4}
AER_ALPHA_MAX=${AER_ALPHA_MAX:-1e-2}

ALGO=(
    algorithm.adv_estimator="${AER_ESTIMATOR}"
    algorithm.norm_adv_by_std_in_grpo=True
    trainer.v1.trainer_mode=erpo_sync               # holds AER's controller and feeds its per-token coefficients
    algorithm.use_kl_in_reward=False
    actor_rollout_ref.actor.use_kl_loss=False
    actor_rollout_ref.actor.kl_loss_coef=0.0
    actor_rollout_ref.actor.policy_loss.loss_mode=aer   # vanilla PPO loss - alpha_k * agg(c_i * H_theta)
    actor_rollout_ref.actor.entropy_checkpointing=True  # recompute the entropy's softmax in backward: -6..12 GB/GPU (docs/reproduction.md §3)
    +actor_rollout_ref.actor.policy_loss.aer_target_ratio="${AER_TARGET_RATIO}"
    +actor_rollout_ref.actor.policy_loss.aer_alpha_lr="${AER_ALPHA_LR}"
    +actor_rollout_ref.actor.policy_loss.aer_alpha_max="${AER_ALPHA_MAX}"
    actor_rollout_ref.actor.clip_ratio_low=0.2
    actor_rollout_ref.actor.clip_ratio_high=0.2
    actor_rollout_ref.actor.clip_ratio_c=3.0
    actor_rollout_ref.actor.loss_agg_mode=token-mean
    algorithm.filter_groups.enable=False
    reward.reward_manager.name=naive
)

run_recipe "$@"
