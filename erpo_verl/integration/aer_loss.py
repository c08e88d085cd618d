"""AER's verl side: the policy-loss config class, the registered ``aer`` loss and the actor loss with the
entropy term. The controller (knobs, coefficients, state, metrics) is :mod:`erpo_verl.aer_controller`, which
imports without verl; its docstring states the objective.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from erpo_verl.aer_controller import AER_DEFAULTS, AER_KEYS, COEF_FIELD, LOSS_MODE, validate_aer_options
from erpo_verl.integration.trace import record
from verl.workers.config import PolicyLossConfig

CONFIG_TARGET = "erpo_verl.integration.aer_loss.AERPolicyLossConfig"  # what preflight writes into policy_loss._target_


@dataclass
class AERPolicyLossConfig(PolicyLossConfig):
    """verl's PolicyLossConfig plus the AER knobs; defaults and meaning: :data:`erpo_verl.aer_controller.AER_DEFAULTS`."""

    aer_target_ratio: float = AER_DEFAULTS["aer_target_ratio"]
    aer_difficulty_mode: str = AER_DEFAULTS["aer_difficulty_mode"]
    aer_acc_threshold: float = AER_DEFAULTS["aer_acc_threshold"]
    aer_correct_threshold: float = AER_DEFAULTS["aer_correct_threshold"]
    aer_alpha_init: float = AER_DEFAULTS["aer_alpha_init"]
    aer_alpha_lr: float = AER_DEFAULTS["aer_alpha_lr"]
    aer_alpha_max: float = AER_DEFAULTS["aer_alpha_max"]
    aer_update: str = AER_DEFAULTS["aer_update"]

    def __post_init__(self):
        parent = getattr(super(), "__post_init__", None)
        if parent is not None:
            parent()
        validate_aer_options(self)


def compute_policy_loss_aer(
    old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None, rollout_is_weights=None
):
    """The policy-gradient part of AER: verl's ``vanilla`` (dual-clip PPO) loss, unchanged.

    AER's entropy term needs the current-policy entropy, which verl does not hand to registered policy losses;
    :func:`aer_ppo_loss`, installed in the actor workers by the ``erpo_sync`` trainer, adds it.
    """
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    return get_policy_loss_fn("vanilla")(
        old_log_prob=old_log_prob,
        log_prob=log_prob,
        advantages=advantages,
        response_mask=response_mask,
        loss_agg_mode=loss_agg_mode,
        config=config,
        rollout_is_weights=rollout_is_weights,
    )


def aer_ppo_loss(config, model_output, data, dp_group=None):
    """verl's ``ppo_loss`` plus ``− agg(aer_coef · H_θ)``; replaces the actor's loss when AER is on."""
    from verl.trainer.ppo.core_algos import agg_loss
    from verl.utils.metric import AggregationType, Metric
    from verl.workers.utils.losses import ppo_loss
    from verl.workers.utils.padding import no_padding_2_padding

    record("loss.aer")  # test-only trace (ERPO_TRACE_DIR): where the AER loss runs; a no-op otherwise
    policy_loss, metrics = ppo_loss(config, model_output, data, dp_group)
    entropy = model_output.get("entropy", None)
    if entropy is None:
        raise RuntimeError("AER needs the current-policy entropy in the update (actor.calculate_entropy=True)")
    if COEF_FIELD not in data.keys():
        raise RuntimeError(f"AER: the batch has no '{COEF_FIELD}' field; run with trainer.v1.trainer_mode=erpo_sync")
    entropy = no_padding_2_padding(entropy, data)
    padded = data.select("response_mask", COEF_FIELD).to_padded_tensor()
    mask = padded["response_mask"].to(bool)
    coef = padded[COEF_FIELD].to(entropy.dtype)
    term = agg_loss(loss_mat=coef * entropy, loss_mask=mask, loss_agg_mode=config.loss_agg_mode, **config.global_batch_info)
    aggregation = metrics["actor/pg_loss"].aggregation if "actor/pg_loss" in metrics else AggregationType.MEAN
    metrics["actor/aer_entropy_bonus"] = Metric(value=term, aggregation=aggregation)
    return policy_loss - term, metrics


def aer_options(config: Any) -> AERPolicyLossConfig:
    """The validated AER knobs from verl's ``actor_rollout_ref.actor.policy_loss`` section."""
    section = config.actor_rollout_ref.actor.policy_loss
    return AERPolicyLossConfig(loss_mode=LOSS_MODE, **{k: section[k] for k in AER_KEYS if k in section})


def register_loss(core_algos) -> None:
    """Register ``loss_mode=aer`` in verl's policy-loss registry (called when core_algos is imported)."""
    from erpo_verl.integration.touchpoints import mark_applied

    if core_algos.POLICY_LOSS_REGISTRY.get(LOSS_MODE) is not compute_policy_loss_aer:
        core_algos.register_policy_loss(LOSS_MODE)(compute_policy_loss_aer)
    mark_applied("register.aer_loss")
