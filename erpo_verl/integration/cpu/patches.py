"""verl 0.9.1 behaviours patched only in CPU mode: two that cannot work without an accelerator, one that is too slow.

1. ``verl.utils.distributed.initialize_global_process_group_ray`` builds the backend string
   ``f"cpu:gloo,{device}:{backend}"``; with device ``cpu`` that is ``cpu:gloo,cpu:gloo``, which
   ``torch.distributed`` rejects as a duplicate (docs/cpu.md). On CPU every collective is gloo, so the default
   becomes ``"gloo"`` (and ``"cpu:gloo"`` passed explicitly stays valid).
2. FSDP2 forward-only models (the reference policy) are built with ``CPUOffloadPolicy(pin_memory=True)``;
   pinning needs an accelerator. In CPU mode ``pin_memory`` is forced to False.
3. The v1 trainer's ``ReplayBuffer`` waits for a step's samples by polling the TransferQueue every 2 s, a
   constructor default no config key reaches. A GPU step takes minutes; a CPU step of a tiny model takes a few
   seconds, of which the poll rounded generation up to 2 or 4 s. In CPU mode the default becomes
   :data:`CPU_POLL_INTERVAL_S` (an explicit ``poll_interval`` argument is kept). It changes when samples are
   picked up, never which.

Each patch is applied when its module is first imported, in every process, through
:func:`erpo_verl.integration.touchpoints.replace_attribute` (touchpoints ``cpu.gloo_backend``,
``cpu.no_pin_memory`` and ``cpu.replay_buffer_poll``), so ``erpo-verl doctor`` lists it and tests check that nothing is patched outside CPU mode.
"""

from __future__ import annotations

import functools

from erpo_verl.integration.hooks import after_import
from erpo_verl.integration.touchpoints import replace_attribute


def _patch_process_group(distributed_module) -> None:
    def make(original):
        @functools.wraps(original)
        def initialize_global_process_group_ray(timeout_second=None, backend=None):
            return original(timeout_second=timeout_second, backend=backend or "gloo")

        return initialize_global_process_group_ray

    replace_attribute("cpu.gloo_backend", distributed_module, "initialize_global_process_group_ray", make)


def _patch_cpu_offload_policy(fsdp_module) -> None:
    def make(original_init):
        @functools.wraps(original_init)
        def __init__(self, *args, **kwargs):
            original_init(self, *args, **kwargs)
            self.pin_memory = False  # pinned host memory needs an accelerator

        return __init__

    replace_attribute("cpu.no_pin_memory", fsdp_module.CPUOffloadPolicy, "__init__", make)


CPU_POLL_INTERVAL_S = 0.1


def _patch_replay_buffer_poll(replay_buffer_module) -> None:
    def make(original_init):
        @functools.wraps(original_init)
        def __init__(self, *args, **kwargs):
            kwargs.setdefault("poll_interval", CPU_POLL_INTERVAL_S)  # verl passes none: its default is 2.0 s
            original_init(self, *args, **kwargs)

        return __init__

    replace_attribute("cpu.replay_buffer_poll", replay_buffer_module.ReplayBuffer, "__init__", make)


def install_patches() -> None:
    """Arrange for the patches to be applied as soon as their modules are imported."""
    after_import("verl.utils.distributed", _patch_process_group)
    after_import("torch.distributed.fsdp", _patch_cpu_offload_policy)
    after_import("verl.trainer.ppo.v1.replay_buffer", _patch_replay_buffer_poll)
