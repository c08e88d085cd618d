"""Entry point of the ``verl.plugins`` group: verl imports this module on every ``import verl``.

It registers, in every process (driver, TaskRunner, Ray workers):

* the advantage estimators ``erpo``, ``ep_grpo``, ``dapo`` and ``grpo_forking`` in verl's estimator registry,
* the policy loss ``aer`` (adaptive entropy regularization) in verl's policy-loss registry,
* the trainer modes ``erpo_sync``, ``erpo_colocate_async``, ``erpo_separate_async`` in verl's v1 trainer registry,
* a preflight check around verl's ``validate_config`` (driver-side, before Ray starts),
* the CPU backend, only when ``VERL_PLATFORM=cpu``.

Each registration happens when (and where) verl's module that holds the registry is first imported, so
importing verl stays as cheap as before in processes that never use them. verl swallows exceptions raised
while loading plugins, so ``erpo-verl doctor`` and the tests check that the names really resolve.
Importing this module twice is harmless.
"""

from __future__ import annotations

import os

from erpo_verl.estimators import ESTIMATORS
from erpo_verl.integration.hooks import after_import
from erpo_verl.integration.touchpoints import mark_applied
from erpo_verl.integration.verl_fixes import tolerate_flush_in_separate_async_logger
from erpo_verl.integration.trace import record_registration
from erpo_verl.integration.version import version_ok_for_registration


def _register_estimators_and_losses(core_algos) -> None:
    if not version_ok_for_registration():
        return
    from erpo_verl.integration.aer_loss import register_loss

    for name, (fn, _) in ESTIMATORS.items():
        if core_algos.ADV_ESTIMATOR_REGISTRY.get(name) is not fn:
            core_algos.register_adv_est(name)(fn)  # raises if another function already owns the name
    mark_applied("register.estimators")
    register_loss(core_algos)
    record_registration(core_algos)  # test-only trace (ERPO_TRACE_DIR); a no-op otherwise


def _register_trainer_mode(_trainer_sync_module) -> None:
    if not version_ok_for_registration():
        return
    import erpo_verl.integration.trainer_mode  # noqa: F401  (its @register_trainer runs on import)

    mark_applied("register.trainer_mode")


def _install_preflight(config_module) -> None:
    from erpo_verl.integration.preflight import wrap_validate_config

    wrap_validate_config(config_module)  # always: preflight reports a wrong verl version itself


def cpu_mode_requested() -> bool:
    """Whether the user asked for the CPU backend (``VERL_PLATFORM=cpu``)."""
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu"


def install() -> None:
    after_import("verl.trainer.ppo.core_algos", _register_estimators_and_losses)
    after_import("verl.trainer.ppo.v1.trainer_sync", _register_trainer_mode)
    # verl 0.9.1 bug in separate_async (ours or verl's) with hybrid_engine=False: erpo_verl/integration/verl_fixes.py
    after_import("verl.trainer.ppo.v1.trainer_separate_async", tolerate_flush_in_separate_async_logger)
    after_import("verl.utils.config", _install_preflight)
    if cpu_mode_requested():
        from erpo_verl.integration.cpu import activate

        activate()


install()
