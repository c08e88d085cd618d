#!/usr/bin/env bash
# DAPO (arXiv 2503.14476) on Qwen2.5-7B, with verl 0.9.1's native DAPO pieces: clip-higher, token-level loss,
# dynamic sampling (v1 replay buffer) and soft overlong punishment (the dapo reward manager).
#   bash recipes/run_dapo_qwen7b.sh [hydra overrides...]     DRY_RUN=1 / PROFILE=cpu-tiny: see recipes/README.md
# Shared settings: recipes/common.sh. This file differs from the other three recipes only in ALGO_NAME and ALGO.
set -euo pipefail
ALGO_NAME=dapo
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

ALGO=(
    algorithm.adv_estimator=dapo                    # GRPO's outcome advantage, registered by erpo-verl as dapo
    algorithm.norm_adv_by_std_in_grpo=True
    trainer.v1.trainer_mode=sync
    algorithm.use_kl_in_reward=False
    actor_rollout_ref.actor.use_kl_loss=False       # DAPO drops the KL term
    actor_rollout_ref.actor.kl_loss_coef=0.0
    actor_rollout_ref.actor.policy_loss.loss_mode=vanilla
    actor_rollout_ref.actor.clip_ratio_low=0.2      # clip-higher: eps_low 0.2, eps_high 0.28
    actor_rollout_ref.actor.clip_ratio_high=0.28
    actor_rollout_ref.actor.clip_ratio_c=10.0       # dual-clip bound of verl's DAPO recipes
    actor_rollout_ref.actor.loss_agg_mode=token-mean  # token-level policy-gradient loss
    algorithm.filter_groups.enable=True             # dynamic sampling: drop groups whose metric is all equal
    algorithm.filter_groups.metric="${FILTER_GROUPS_METRIC}"
    algorithm.filter_groups.max_inflight_gen_batches="${MAX_INFLIGHT_GEN_BATCHES}"
    reward.reward_manager.name=dapo                 # soft overlong punishment (verl 0.9.1 key names)
    +reward.reward_kwargs.overlong_buffer_cfg.enable=True
    +reward.reward_kwargs.overlong_buffer_cfg.len="${OVERLONG_BUFFER_LEN}"
    +reward.reward_kwargs.overlong_buffer_cfg.penalty_factor="${OVERLONG_PENALTY_FACTOR}"
    +reward.reward_kwargs.overlong_buffer_cfg.log=True
    +reward.reward_kwargs.max_resp_len="${MAX_RESPONSE_LENGTH}"
)

run_recipe "$@"
