"""Preflight: the configuration checks of the erpo-verl trainer modes, run in the driver before Ray starts.

Select a mode with one setting, the name of verl's v1 mode prefixed with ``erpo_`` (:data:`ERPO_TRAINER_MODES`):
``trainer.v1.trainer_mode=erpo_sync`` (verl's ``sync``), ``erpo_colocate_async`` or ``erpo_separate_async``.
Each runs verl's own mode unchanged except for the advantage step (the extra inputs), AER and its checkpoint
state. Its settings are verl's section of that mode (``trainer.v1.colocate_async.num_warmup_batches`` ...) and
may also be given under the mode's own name (``trainer.v1.erpo_sync``: the section verl's generic code, e.g.
rollout-skip, reads for the selected mode); a key set differently in the two is refused.

* **Reference policy.** When the configured estimator needs ``ref_log_prob`` and the reference policy is
  off, :func:`prepare_config` turns it on through ``actor.use_kl_loss=True`` with ``kl_loss_coef=0``: the
  reference forward pass runs and ``actor/kl_loss`` is logged, but the loss gains nothing (0 · KL). A KL
  coefficient the user set is left as it is.
* **AER.** Selects AER's policy-loss config class and ``calculate_entropy=True``; rejects the combinations that
  cannot work (bypass mode, distillation, backends other than FSDP).
* **verl's version.** Stops unless the pinned verl is installed (:mod:`.version`).

:func:`preflight` runs in the driver (wrapped around verl's ``validate_config``) and in the trainer's
constructor, so a wrong setup fails before Ray starts or, at the latest, before the first step. The advantage
step itself is :mod:`erpo_verl.integration.advantage_step`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from erpo_verl.aer_controller import aer_enabled
from erpo_verl.estimators import ESTIMATORS
from erpo_verl.integration.advantage_step import accepted_extra_inputs
from erpo_verl.integration.touchpoints import mark_applied, replace_attribute

logger = logging.getLogger(__name__)

TRAINER_MODE = "erpo_sync"
# erpo-verl mode -> the verl 0.9.1 v1 mode it runs (trainer/ppo/v1/trainer_{sync,colocate_async,separate_async}.py)
ERPO_TRAINER_MODES = {
    "erpo_sync": "sync",
    "erpo_colocate_async": "colocate_async",
    "erpo_separate_async": "separate_async",
}
VERL_TRAINER_MODES = tuple(ERPO_TRAINER_MODES.values())
# actor/critic strategies whose workers the erpo_sync mode and AER have been run and tested with
SUPPORTED_STRATEGIES = ("fsdp", "fsdp2")


class ERPOSetupError(ValueError):
    """The verl configuration cannot feed the selected estimator; the message says which setting to change."""


def estimator_requirements(config: Any) -> tuple[bool, bool]:
    """(needs_entropy, needs_ref_log_prob) of the configured estimator; validates its hyper-parameters.

    For our estimators this follows their configuration (e.g. ``progress_coef=0`` needs no reference
    policy); for a third-party estimator that opted in, whatever its signature names.
    """
    name = str(config.algorithm.adv_estimator)
    if name in ESTIMATORS:
        _, build_config = ESTIMATORS[name]
        cfg = build_config(config.algorithm)  # raises ValueError on unknown keys / bad values
        return cfg.needs_entropy, cfg.needs_ref_log_prob
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY

    accepted = accepted_extra_inputs(ADV_ESTIMATOR_REGISTRY.get(name))
    return "old_entropy" in accepted, "ref_log_prob" in accepted


def trainer_mode_of(config: Any) -> str:
    """``trainer.v1.trainer_mode`` (verl's default: ``sync``)."""
    return str((config.trainer.get("v1", {}) or {}).get("trainer_mode", "sync"))


def uses_erpo_verl(config: Any) -> bool:
    """Whether the configuration selects any of our names (estimator, AER loss, trainer mode)."""
    return (
        str(config.algorithm.adv_estimator) in ESTIMATORS
        or aer_enabled(config)
        or trainer_mode_of(config) in ERPO_TRAINER_MODES
    )


def erpo_mode_for(verl_mode: str) -> str | None:
    """The erpo-verl mode that runs verl's ``verl_mode`` (``None`` for modes we do not wrap)."""
    return next((ours for ours, theirs in ERPO_TRAINER_MODES.items() if theirs == verl_mode), None)


def mode_section(config: Any, erpo_mode: str) -> dict:
    """The settings of ``erpo_mode``: verl's section of the mode it runs, updated by ``trainer.v1.<erpo_mode>``.

    Raises :class:`ERPOSetupError` when a key is set differently in the two (one of them would be ignored).
    """
    v1 = config.trainer.get("v1", {}) or {}
    verl_mode = ERPO_TRAINER_MODES[erpo_mode]
    theirs = dict(v1.get(verl_mode, None) or {})
    ours = dict(v1.get(erpo_mode, None) or {})
    conflicts = {k: (theirs[k], ours[k]) for k in ours if k in theirs and _plain(theirs[k]) != _plain(ours[k])}
    if conflicts:
        raise ERPOSetupError(
            f"trainer.v1.trainer_mode={erpo_mode} runs verl's '{verl_mode}' mode with its settings, but "
            + "; ".join(
                f"trainer.v1.{verl_mode}.{k}={a} and trainer.v1.{erpo_mode}.{k}={b} differ" for k, (a, b) in conflicts.items()
            )
            + f". Set each key once (trainer.v1.{verl_mode}.<key> or trainer.v1.{erpo_mode}.<key>)"
        )
    merged = dict(theirs)
    merged.update(ours)
    return merged


def _plain(value: Any) -> Any:
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) else value


# ---------------------------------------------------------------------------------------------------------
# configuration checks and the reference policy
# ---------------------------------------------------------------------------------------------------------
def preflight(config: Any) -> list[str]:
    """Check that verl's configuration can feed the selected estimator (and AER) and prepare it.

    Returns the settings it changed; raises :class:`ERPOSetupError` (a ValueError) naming the setting to add
    when the configuration cannot work. Idempotent.
    """
    if uses_erpo_verl(config):
        from erpo_verl.integration.version import check_verl_version

        check_verl_version()  # VerlVersionError (a RuntimeError) naming both versions
    check_cpu_rollout(config)
    needs_entropy, needs_ref = estimator_requirements(config)
    name = config.algorithm.adv_estimator
    use_aer = aer_enabled(config)
    mode = trainer_mode_of(config)
    check_trainer_mode_name(mode)
    if mode in ERPO_TRAINER_MODES:
        mode_section(config, mode)  # conflicting settings
        check_strategy(config, f"trainer.v1.trainer_mode={mode}")
        if mode == "erpo_separate_async":
            check_separate_async(config)
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
    if mode not in ERPO_TRAINER_MODES:
        ours = erpo_mode_for(mode)
        fix = (
            f"Add: trainer.v1.trainer_mode={ours} (verl's '{mode}' mode with the extra inputs)"
            if ours
            else "Use one of: " + ", ".join(f"trainer.v1.trainer_mode={m}" for m in ERPO_TRAINER_MODES)
        )
        raise ERPOSetupError(f"{who}, which verl's '{mode}' trainer mode does not provide. {fix}")
    rollout_corr = config.algorithm.get("rollout_correction", None) or {}
    if (needs_entropy or use_aer) and rollout_corr.get("bypass_mode", False):
        user = f"algorithm.adv_estimator={name}" if needs_entropy else "actor_rollout_ref.actor.policy_loss.loss_mode=aer"
        raise ERPOSetupError(
            f"{user} needs the old-policy entropy, but algorithm.rollout_correction.bypass_mode=true skips the "
            "old-log-prob pass that computes it. Set algorithm.rollout_correction.bypass_mode=false"
        )
    distillation = config.get("distillation", None) or {}
    if use_aer and distillation.get("enabled", False):
        raise ERPOSetupError(
            "actor_rollout_ref.actor.policy_loss.loss_mode=aer replaces the actor's loss function (set_loss_fn), "
            "which would silently drop verl's distillation loss (distillation.enabled=true). AER and distillation "
            "cannot be combined: set distillation.enabled=false or use another policy loss."
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


def check_cpu_rollout(config: Any) -> None:
    """On the CPU backend, refuse a vLLM rollout with ``full_determinism`` before Ray starts.

    vLLM implements ``full_determinism`` with batch-invariant Triton kernels, which do not exist on a CPU: the
    engine starts and then dies in its first forward pass, minutes into the run.
    """
    if os.environ.get("VERL_PLATFORM") != "cpu":
        return
    rollout = config.actor_rollout_ref.rollout
    if rollout.get("name") == "vllm" and rollout.get("full_determinism", False):
        raise ERPOSetupError(
            "actor_rollout_ref.rollout.full_determinism=True with actor_rollout_ref.rollout.name=vllm cannot run on "
            "the CPU backend (VERL_PLATFORM=cpu): vLLM implements it with batch-invariant Triton kernels, which do "
            "not exist on CPU. Set actor_rollout_ref.rollout.full_determinism=False, or use rollout.name=hf, whose "
            "full_determinism works on CPU."
        )


def check_strategy(config: Any, who: str) -> None:
    """Reject the actor/critic backends (megatron, veomni, torchtitan) erpo_sync/AER were never run with."""
    from verl.trainer.ppo.utils import need_critic

    sections = {"actor_rollout_ref.actor.strategy": config.actor_rollout_ref.actor.get("strategy", None)}
    if need_critic(config):
        sections["critic.strategy"] = config.critic.get("strategy", None)
    for key, value in sections.items():
        if value is not None and str(value) not in SUPPORTED_STRATEGIES:
            raise ERPOSetupError(
                f"{who}; erpo-verl's trainer mode and AER loss are tested only with the FSDP workers "
                f"({'/'.join(SUPPORTED_STRATEGIES)}), but {key}={value}. Use verl's FSDP config (ppo_trainer) "
                "or an estimator/loss that needs no erpo_sync mode."
            )


def check_trainer_mode_name(mode: str) -> None:
    """A mode named like ours but not one of them (a typo) stops here, not in verl's TaskRunner after Ray started."""
    if mode.startswith("erpo") and mode not in ERPO_TRAINER_MODES:
        import difflib

        close = difflib.get_close_matches(mode, list(ERPO_TRAINER_MODES), n=1)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise ERPOSetupError(
            f"trainer.v1.trainer_mode={mode} is not an erpo-verl trainer mode; choose one of "
            f"{', '.join(ERPO_TRAINER_MODES)} (verl's {', '.join(VERL_TRAINER_MODES)} with the extra inputs).{hint}"
        )


def check_separate_async(config: Any) -> None:
    """verl's separate_async asserts these in its constructor, after Ray and TransferQueue started; check them here."""
    section = mode_section(config, "erpo_separate_async")
    sync_step = int(section.get("parameter_sync_step", 1))
    batch = int(config.data.train_batch_size)
    mini = int(config.actor_rollout_ref.actor.ppo_mini_batch_size)
    if batch != sync_step * mini:
        raise ERPOSetupError(
            f"trainer.v1.trainer_mode=erpo_separate_async (verl's separate_async) needs data.train_batch_size == "
            f"trainer.v1.separate_async.parameter_sync_step * actor_rollout_ref.actor.ppo_mini_batch_size, but "
            f"{batch} != {sync_step} * {mini}. Set actor_rollout_ref.actor.ppo_mini_batch_size={batch // max(1, sync_step)} "
            "or change parameter_sync_step"
        )
    rollout = config.actor_rollout_ref.rollout
    for key in ("nnodes", "n_gpus_per_node"):
        if int(rollout.get(key, 0) or 0) <= 0:
            raise ERPOSetupError(
                f"trainer.v1.trainer_mode=erpo_separate_async runs rollout on its own devices: set "
                f"actor_rollout_ref.rollout.{key} > 0 (now {rollout.get(key, 0)})"
            )
    backend = rollout.checkpoint_engine.backend
    if backend == "naive":
        cpu = os.environ.get("VERL_PLATFORM") == "cpu"
        choice = "cpu_gloo (the CPU backend's engine)" if cpu else "nccl, nixl, mooncake, ..."
        raise ERPOSetupError(
            "trainer.v1.trainer_mode=erpo_separate_async sends weights to rollout devices of their own, which "
            "actor_rollout_ref.rollout.checkpoint_engine.backend=naive (colocated only) cannot do: set it to "
            + choice
        )


def prepare_aer(config: Any) -> list[str]:
    """Select AER's config class for ``policy_loss`` and compute the current-policy entropy in the update."""
    from omegaconf import open_dict

    from erpo_verl.integration.aer_loss import CONFIG_TARGET as target, aer_options

    actor = config.actor_rollout_ref.actor
    aer_options(config)  # validates the aer_* knobs before anything starts
    changes = []
    with open_dict(config):
        if actor.policy_loss.get("_target_") != target:
            actor.policy_loss._target_ = target
            changes.append(f"actor_rollout_ref.actor.policy_loss._target_={target}")
        mark_applied("config.aer_policy_loss_target")
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
        mark_applied("config.reference_policy_no_kl")
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


def wrap_validate_config(module) -> bool:
    """Wrap ``verl.utils.config.validate_config`` so that :func:`preflight` runs first, in the driver.

    Returns False when it is already wrapped (touchpoint ``wrapper.validate_config``).
    """

    def make(original):
        def validate_config(config, use_reference_policy, use_critic, *args, **kwargs):
            if preflight(config):
                from verl.trainer.ppo.utils import need_reference_policy

                use_reference_policy = need_reference_policy(config)
            return original(config, use_reference_policy, use_critic, *args, **kwargs)

        validate_config.__doc__ = original.__doc__
        return validate_config

    return replace_attribute("wrapper.validate_config", module, "validate_config", make)


