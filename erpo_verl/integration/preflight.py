"""The ``erpo_sync`` trainer mode: verl's synchronous v1 trainer whose advantage step feeds estimators the
per-token tensors stock verl keeps to itself.

Select it with one setting: ``trainer.v1.trainer_mode=erpo_sync``.

What it changes, and nothing else:

* **Advantage step.** Besides the fields verl already fetches from TransferQueue it fetches the old-policy
  ``entropy`` (computed by the old-log-prob pass, which always runs with ``calculate_entropy=True``) and
  passes ``old_entropy``, ``old_log_probs`` and ``ref_log_prob`` to *any* registered estimator whose
  signature names them (third-party estimators included). An estimator that also names ``metrics``
  receives a dict to fill; its entries are logged under ``erpo/``. Estimators that accept none of these
  go through verl's own ``compute_advantage`` unchanged.
* **Reference policy.** When the configured estimator needs ``ref_log_prob`` and the reference policy is
  off, :func:`prepare_config` turns it on through ``actor.use_kl_loss=True`` with ``kl_loss_coef=0``: the
  reference forward pass runs and ``actor/kl_loss`` is logged, but the loss gains nothing (0 · KL). A KL
  coefficient the user set is left as it is.

:func:`preflight` runs in the driver (wrapped around verl's ``validate_config``) and in the trainer's
constructor, so a wrong setup fails before Ray starts or, at the latest, before the first step.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

import numpy as np

from erpo_verl.estimators import ESTIMATORS, EXTRA_INPUTS

logger = logging.getLogger(__name__)

TRAINER_MODE = "erpo_sync"
METRIC_PREFIX = "erpo/"
# estimator keyword -> TransferQueue / DataProto field
FIELD_OF_INPUT = {"old_entropy": "entropy", "old_log_probs": "old_log_probs", "ref_log_prob": "ref_log_prob"}


class ERPOSetupError(ValueError):
    """The verl configuration cannot feed the selected estimator; the message says which setting to change."""


# ---------------------------------------------------------------------------------------------------------
# what an estimator accepts
# ---------------------------------------------------------------------------------------------------------
def accepted_extra_inputs(fn: Any) -> tuple[str, ...]:
    """The names of :data:`EXTRA_INPUTS` (and ``metrics``) that ``fn`` declares as parameters.

    Only explicitly named parameters count: a bare ``**kwargs`` does not opt an estimator in, so verl's own
    estimators are never handed tensors they do not expect.
    """
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return ()
    return tuple(name for name in (*EXTRA_INPUTS, "metrics") if name in params)


def estimator_requirements(config: Any) -> tuple[bool, bool]:
    """(needs_entropy, needs_ref_log_prob) of the configured estimator; validates its hyper-parameters.

    For our estimators this follows their configuration (e.g. ``progress_coef=0`` needs no reference
    policy); for a third-party estimator, whatever its signature names.
    """
    name = str(config.algorithm.adv_estimator)
    if name in ESTIMATORS:
        fn, build_config = ESTIMATORS[name]
        if build_config is None:
            return False, False
        cfg = build_config(config.algorithm)  # raises ValueError on unknown keys / bad values
        return cfg.needs_entropy, cfg.needs_ref_log_prob
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY

    fn = ADV_ESTIMATOR_REGISTRY.get(name)
    accepted = accepted_extra_inputs(fn) if fn is not None else ()
    return "old_entropy" in accepted, "ref_log_prob" in accepted


# ---------------------------------------------------------------------------------------------------------
# configuration checks and the reference policy
# ---------------------------------------------------------------------------------------------------------
def preflight(config: Any) -> list[str]:
    """Check that verl's configuration can feed the selected estimator (and AER) and prepare it.

    Returns the settings it changed; raises :class:`ERPOSetupError` (a ValueError) naming the setting to add
    when the configuration cannot work. Idempotent.
    """
    from erpo_verl.integration.aer_loss import aer_enabled

    needs_entropy, needs_ref = estimator_requirements(config)
    name = config.algorithm.adv_estimator
    use_aer = aer_enabled(config)
    if not (needs_entropy or needs_ref or use_aer):
        return []
    what = " and ".join(
        x
        for x, need in (
            ("the old-policy token entropy", needs_entropy),
            ("the reference log-probs", needs_ref),
        )
        if need
    )
    who = f"algorithm.adv_estimator={name} needs {what}" if what else ""
    if use_aer:
        aer_what = "actor_rollout_ref.actor.policy_loss.loss_mode=aer needs the erpo-verl trainer hook for its entropy controller"
        who = f"{who}; {aer_what}" if who else aer_what
    trainer_cfg = config.trainer
    if not trainer_cfg.get("use_v1", True):
        raise ERPOSetupError(
            f"{who}, which verl's legacy trainer (trainer.use_v1=false) cannot provide. Use the v1 trainer with "
            f"the erpo-verl mode: trainer.use_v1=true trainer.v1.trainer_mode={TRAINER_MODE}"
        )
    mode = trainer_cfg.get("v1", {}).get("trainer_mode", "sync")
    if mode != TRAINER_MODE:
        raise ERPOSetupError(
            f"{who}, which verl's '{mode}' trainer mode does not provide. Add: trainer.v1.trainer_mode={TRAINER_MODE}"
        )
    rollout_corr = config.algorithm.get("rollout_correction", None) or {}
    if needs_entropy and rollout_corr.get("bypass_mode", False):
        raise ERPOSetupError(
            f"algorithm.adv_estimator={name} needs the old-policy entropy, but "
            "algorithm.rollout_correction.bypass_mode=true skips the old-log-prob pass that computes it. "
            "Set algorithm.rollout_correction.bypass_mode=false"
        )
    if name == "ep_grpo" and config.algorithm.get("filter_groups", {}).get("enable", False):
        logger.warning(
            "ep_grpo keeps zero-variance groups on purpose (its fallback anchor); algorithm.filter_groups "
            "(DAPO dynamic sampling) removes them, which disables that part of EP-GRPO."
        )
    changes = []
    if needs_ref:
        changes += enable_reference_policy(config)
    if use_aer:
        changes += prepare_aer(config)
    return changes


def prepare_aer(config: Any) -> list[str]:
    """Select AER's config class for ``policy_loss`` and compute the current-policy entropy in the update."""
    from omegaconf import open_dict

    from erpo_verl.integration.aer_loss import aer_options

    actor = config.actor_rollout_ref.actor
    aer_options(config)  # validates the aer_* knobs before anything starts
    changes = []
    target = "erpo_verl.integration.aer_loss.AERPolicyLossConfig"
    with open_dict(config):
        if actor.policy_loss.get("_target_") != target:
            actor.policy_loss._target_ = target
            changes.append(f"actor_rollout_ref.actor.policy_loss._target_={target}")
        if not actor.get("calculate_entropy", False):
            actor.calculate_entropy = True
            changes.append("actor_rollout_ref.actor.calculate_entropy=True")
    return changes


def enable_reference_policy(config: Any) -> list[str]:
    """Turn the reference policy on without a KL term in the loss (``use_kl_loss=True, kl_loss_coef=0``)."""
    from omegaconf import open_dict

    from verl.trainer.ppo.utils import need_reference_policy

    if need_reference_policy(config):
        return []
    actor = config.actor_rollout_ref.actor
    ref = config.actor_rollout_ref.ref
    rollout = config.actor_rollout_ref.rollout
    changes = ["actor_rollout_ref.actor.use_kl_loss=True", "actor_rollout_ref.actor.kl_loss_coef=0.0"]
    with open_dict(config):
        actor.use_kl_loss = True
        actor.kl_loss_coef = 0.0
        if (
            not actor.get("use_dynamic_bsz", False)
            and ref.get("log_prob_micro_batch_size", None) is None
            and ref.get("log_prob_micro_batch_size_per_gpu", None) is None
        ):
            ref.log_prob_micro_batch_size_per_gpu = rollout.get("log_prob_micro_batch_size_per_gpu", None) or 1
            changes.append(f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={ref.log_prob_micro_batch_size_per_gpu}")
    logger.warning(
        "erpo-verl: %s needs reference log-probs; turned the reference policy on with no KL in the loss: %s",
        config.algorithm.adv_estimator,
        " ".join(changes),
    )
    return changes


def wrap_validate_config(module) -> None:
    """Wrap ``verl.utils.config.validate_config`` so that :func:`preflight` runs first, in the driver."""
    original = module.validate_config
    if getattr(original, "_erpo_preflight", False):
        return

    def validate_config(config, use_reference_policy, use_critic, *args, **kwargs):
        if preflight(config):
            from verl.trainer.ppo.utils import need_reference_policy

            use_reference_policy = need_reference_policy(config)
        return original(config, use_reference_policy, use_critic, *args, **kwargs)

    validate_config.__doc__ = original.__doc__
    validate_config.__wrapped__ = original
    validate_config._erpo_preflight = True
    module.validate_config = validate_config


# ---------------------------------------------------------------------------------------------------------
# the advantage step
# ---------------------------------------------------------------------------------------------------------
def compute_advantage_with_extras(data, config: Any, metrics: dict, batch_keys=None):
    """Compute ``advantages``/``returns`` on a padded verl ``DataProto``, forwarding the extra inputs.

    ``data.batch`` must hold ``token_level_rewards`` and ``response_mask`` and may hold ``entropy``,
    ``old_log_probs`` and ``ref_log_prob``; ``data.non_tensor_batch['uid']`` holds the group ids.
    Estimators that accept none of the extras go through verl's ``compute_advantage`` path unchanged.
    """
    from verl.trainer.ppo.core_algos import AdvantageEstimator, get_adv_estimator_fn
    from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories

    algo = config.algorithm
    name = algo.adv_estimator
    fn = None if name in (AdvantageEstimator.GAE, AdvantageEstimator.GRPO) else get_adv_estimator_fn(name)
    accepted = accepted_extra_inputs(fn) if fn is not None else ()
    if not accepted:
        return compute_advantage_for_multi_trajectories(
            data,
            batch_keys=batch_keys,
            adv_estimator=name,
            gamma=algo.gamma,
            lam=algo.lam,
            num_repeat=config.actor_rollout_ref.rollout.n,
            norm_adv_by_std_in_grpo=algo.get("norm_adv_by_std_in_grpo", True),
            config=algo,
        )
    kwargs = {
        "token_level_rewards": data.batch["token_level_rewards"],
        "response_mask": data.batch["response_mask"],
        "index": data.non_tensor_batch["uid"],
        "config": algo,
    }
    for arg in accepted:
        if arg == "metrics":
            continue
        field = FIELD_OF_INPUT[arg]
        kwargs[arg] = data.batch[field] if field in data.batch.keys() else None
    estimator_metrics: dict = {}
    if "metrics" in accepted:
        kwargs["metrics"] = estimator_metrics
    advantages, returns = fn(**kwargs)
    data.batch["advantages"] = advantages
    data.batch["returns"] = returns
    metrics.update({f"{METRIC_PREFIX}{k}": float(v) for k, v in estimator_metrics.items()})
    return data
