"""The two verl 0.9.1 behaviours that cannot work without an accelerator, patched only in CPU mode.

1. ``verl.utils.distributed.initialize_global_process_group_ray`` builds the backend string
   ``f"cpu:gloo,{device}:{backend}"``; with device ``cpu`` that is ``cpu:gloo,cpu:gloo``, which
   ``torch.distributed`` rejects as a duplicate (shared/research/cpu-verl.md, failure #4). On CPU every
   collective is gloo, so the default becomes ``"gloo"`` (and ``"cpu:gloo"`` passed explicitly stays valid).
2. FSDP2 forward-only models (the reference policy) are built with ``CPUOffloadPolicy(pin_memory=True)``;
   pinning needs an accelerator (failure #11). In CPU mode ``pin_memory`` is forced to False.

Each patch is applied when its module is first imported, in every process, and marks what it replaced
so that :func:`applied_patches` can report it and tests can check that nothing is patched outside CPU mode.
"""

from __future__ import annotations

import functools

from erpo_verl.integration.hooks import after_import

_APPLIED: set[str] = set()


def _patch_process_group(distributed_module) -> None:
    original = distributed_module.initialize_global_process_group_ray
    if getattr(original, "_erpo_cpu_patch", False):
        return

    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        return original(timeout_second=timeout_second, backend=backend or "gloo")

    initialize_global_process_group_ray._erpo_cpu_patch = True
    distributed_module.initialize_global_process_group_ray = initialize_global_process_group_ray
    _APPLIED.add("verl.utils.distributed.initialize_global_process_group_ray")


def _patch_cpu_offload_policy(fsdp_module) -> None:
    policy_cls = fsdp_module.CPUOffloadPolicy
    original_init = policy_cls.__init__
    if getattr(original_init, "_erpo_cpu_patch", False):
        return

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.pin_memory = False  # pinned host memory needs an accelerator

    __init__._erpo_cpu_patch = True
    policy_cls.__init__ = __init__
    _APPLIED.add("torch.distributed.fsdp.CPUOffloadPolicy.pin_memory")


def install_patches() -> None:
    """Arrange for both patches to be applied as soon as their modules are imported."""
    after_import("verl.utils.distributed", _patch_process_group)
    after_import("torch.distributed.fsdp", _patch_cpu_offload_policy)


def applied_patches() -> frozenset[str]:
    """What has been patched in this process (empty unless CPU mode is on)."""
    return frozenset(_APPLIED)
