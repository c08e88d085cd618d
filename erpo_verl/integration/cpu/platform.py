"""A ``cpu`` platform for verl's platform registry (selected only by ``VERL_PLATFORM=cpu``).

verl 0.9.1 knows CUDA, NPU and ROCm; on a machine without an accelerator it falls back to ``nvidia`` and
fails at the first NCCL call (docs/cpu.md, failure #3). This platform makes verl's
device helpers answer for the CPU: device ``cpu``, collective backend ``gloo``, no-op synchronisation and
memory calls. Ray's resource name stays ``GPU`` so that verl's resource pools (which only count GPUs)
can be satisfied with *logical* GPUs (``ray_init.num_gpus``) on a CPU-only host.
"""

from __future__ import annotations

import contextlib
import os
from types import SimpleNamespace
from typing import Any

import torch

from verl.plugin.platform import PlatformBase


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def _zero(*args: Any, **kwargs: Any) -> int:
    return 0


def _make_device_module() -> SimpleNamespace:
    """The ``torch.<device>``-like namespace verl calls through ``get_torch_device()``.

    Only what verl 0.9.1's CPU-reachable code paths call (see the README of this package); an attribute
    that is missing raises AttributeError, so a new verl call shows up as an error instead of a silent no-op.
    """

    class _Stream:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def wait_stream(self, *args: Any) -> None:
            pass

        def record_event(self, *args: Any) -> None:
            pass

        def wait_event(self, *args: Any) -> None:
            pass

        def synchronize(self) -> None:
            pass

    class _Event(_Stream):
        def record(self, *args: Any) -> None:
            pass

        def query(self) -> bool:
            return True

    def mem_get_info(*args: Any) -> tuple[int, int]:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return avail, pages

    return SimpleNamespace(
        is_available=lambda: False,
        device_count=lambda: 1,
        current_device=lambda: 0,
        set_device=_noop,
        synchronize=_noop,
        empty_cache=_noop,
        ipc_collect=_noop,
        manual_seed=torch.manual_seed,
        manual_seed_all=torch.manual_seed,
        get_rng_state=torch.get_rng_state,
        set_rng_state=torch.set_rng_state,
        mem_get_info=mem_get_info,
        memory_allocated=_zero,
        memory_reserved=_zero,
        max_memory_allocated=_zero,
        max_memory_reserved=_zero,
        reset_peak_memory_stats=_noop,
        set_per_process_memory_fraction=_noop,
        get_device_name=lambda *a: "cpu",
        Stream=_Stream,
        Event=_Event,
        current_stream=lambda *a: _Stream(),
        stream=lambda *a: contextlib.nullcontext(),
    )


class PlatformCPU(PlatformBase):
    """verl platform for CPU-only hosts (gloo collectives, logical Ray GPUs)."""

    _device_module = _make_device_module()

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self):
        return self._device_module

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        return False  # never auto-selected: only VERL_PLATFORM=cpu picks it

    def current_device(self):
        # verl does `model.to(device=get_device_id())`; an int would mean cuda:<int>
        return torch.device("cpu")

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index=None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0):
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        return "CUDA_VISIBLE_DEVICES"

    def ray_resource_name(self) -> str:
        return "GPU"  # logical GPUs: start Ray with num_gpus=<ranks> (the CPU profile does)

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self):
        return None

    @contextlib.contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None
