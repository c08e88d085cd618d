#!/usr/bin/env bash
# Beyond the 80/20 rule (arXiv 2506.01939): DAPO with the policy gradient restricted to the top-20% entropy
# ("forking") tokens of each batch; the loss is still normalised by all valid tokens.
#   bash recipes/run_forking_qwen7b.sh [hydra overrides...]  DRY_RUN=1 / PROFILE=cpu-tiny: see recipes/README.md
# Shared settings: recipes/common.sh; the ALGO block is the DAPO recipe's plus the mask.
set -euo pipefail
ALGO_NAME=forking
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
TOP_ENTROPY_RATIO=${TOP_ENTROPY_RATIO:-0.2}        # rho, the paper's 20%

ALGO=(
    algorithm.adv_estimator=dapo
    +algorithm.dapo.top_entropy_ratio="${TOP_ENTROPY_RATIO}"
    algorithm.norm_adv_by_std_in_grpo=True
    trainer.v1.trainer_mode=erpo_sync               # forwards the old-policy entropy the mask needs
    algorithm.use_kl_in_reward=False
    actor_rollout_ref.actor.use_kl_loss=False
    actor_rollout_ref.actor.kl_loss_coef=0.0
    actor_rollout_ref.actor.policy_loss.loss_mode=vanilla
    actor_rollout_ref.actor.clip_ratio_low=0.2
    actor_rollout_ref.actor.clip_ratio_high=0.28
    actor_rollout_ref.actor.clip_ratio_c=10.0
    actor_rollout_ref.actor.loss_agg_mode=token-mean
    algorithm.filter_groups.enable=True
    algorithm.filter_groups.metric="${FILTER_GROUPS_METRIC}"
    algorithm.filter_groups.max_inflight_gen_batches="${MAX_INFLIGHT_GEN_BATCHES}"
    reward.reward_manager.name=dapo
    +reward.reward_kwargs.overlong_buffer_cfg.enable=True
    +reward.reward_kwargs.overlong_buffer_cfg.len="${OVERLONG_BUFFER_LEN}"
    +reward.reward_kwargs.overlong_buffer_cfg.penalty_factor="${OVERLONG_PENALTY_FACTOR}"
    +reward.reward_kwargs.overlong_buffer_cfg.log=True
    +reward.reward_kwargs.max_resp_len="${MAX_RESPONSE_LENGTH}"
)

run_recipe "$@"
