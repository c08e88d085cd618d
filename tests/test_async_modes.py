"""The erpo-verl trainer modes on top of verl's asynchronous v1 modes, without Ray (issue 20): registration, the
settings each mode reads, preflight's errors before Ray, the ``erpo/old_policy/*`` staleness metrics, the CPU
profile of each mode, and the ``cpu_gloo`` checkpoint engine moving weights between processes.
The end-to-end runs of the modes are in tests/test_async_e2e.py.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp

import pytest
import torch
from hydra import compose, initialize_config_module

import verl  # noqa: F401  (loads the plugin)
from erpo_testlib import construct_trainer_with_probe
from erpo_verl.integration.advantage_step import old_policy_lag_metrics
from erpo_verl.integration.cpu.cluster import LayoutError
from erpo_verl.integration.cpu.profile import trainer_mode_overrides
from erpo_verl.integration.preflight import ERPO_TRAINER_MODES, ERPOSetupError, preflight


def verl_config(*overrides: str):
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="ppo_trainer", overrides=list(overrides))


SEPARATE = (
    "trainer.v1.trainer_mode=erpo_separate_async",
    "data.train_batch_size=8",
    "actor_rollout_ref.actor.ppo_mini_batch_size=2",
    "trainer.v1.separate_async.parameter_sync_step=4",
    "actor_rollout_ref.rollout.nnodes=1",
    "actor_rollout_ref.rollout.n_gpus_per_node=1",
    "actor_rollout_ref.rollout.checkpoint_engine.backend=nccl",
)


# -- registration ---------------------------------------------------------------------------------------------------
def test_each_erpo_mode_is_registered_as_verls_mode_class_with_the_forwarding_mixin():
    from erpo_verl.integration.trainer_mode import EntropyForwardingMixin
    from verl.trainer.ppo.v1 import get_trainer_cls
    from verl.trainer.ppo.v1.trainer_colocate_async import PPOTrainerColocateAsync
    from verl.trainer.ppo.v1.trainer_separate_async import PPOTrainerSeparateAsync
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    verl_classes = {"sync": PPOTrainerSync, "colocate_async": PPOTrainerColocateAsync,
                    "separate_async": PPOTrainerSeparateAsync}
    assert set(ERPO_TRAINER_MODES) == {"erpo_sync", "erpo_colocate_async", "erpo_separate_async"}
    for ours, theirs in ERPO_TRAINER_MODES.items():
        cls = get_trainer_cls(ours)
        assert issubclass(cls, EntropyForwardingMixin) and issubclass(cls, verl_classes[theirs])
        # the mixin's methods win over verl's (it comes first in the MRO)
        assert cls._compute_advantage is EntropyForwardingMixin._compute_advantage
        assert cls.mro().index(EntropyForwardingMixin) < cls.mro().index(verl_classes[theirs])


# -- the settings each mode reads --------------------------------------------------------------------------------------
def _constructed(monkeypatch, config):
    return construct_trainer_with_probe(monkeypatch, config)


def test_erpo_colocate_async_runs_verls_colocate_async_code_paths_with_its_settings(monkeypatch):
    config = verl_config("trainer.v1.trainer_mode=erpo_colocate_async", "trainer.v1.colocate_async.num_warmup_batches=2")
    trainer, seen = _constructed(monkeypatch, config)
    assert seen["mode"] == "colocate_async" and seen["step"] == 1
    assert seen["section"] == {"num_warmup_batches": 2}
    # what verl's own methods of the mode read (on_train_begin: trainer.v1.colocate_async.num_warmup_batches)
    assert config.trainer.v1.colocate_async.num_warmup_batches == 2
    assert config.trainer.v1.erpo_colocate_async.num_warmup_batches == 2  # rollout-skip reads the selected name


def test_erpo_separate_async_takes_parameter_sync_step_from_verls_section_or_its_own(monkeypatch):
    config = verl_config(*SEPARATE)
    trainer, seen = _constructed(monkeypatch, config)
    assert seen["mode"] == "separate_async" and seen["step"] == 4 and trainer.parameter_sync_step == 4
    config = verl_config(*SEPARATE[:3], "+trainer.v1.erpo_separate_async.parameter_sync_step=4", *SEPARATE[4:])
    config.trainer.v1.separate_async.parameter_sync_step = 4  # verl's default is 4 too: no conflict
    _, seen = _constructed(monkeypatch, config)
    assert seen["step"] == 4


def test_a_mode_setting_given_differently_under_both_names_is_rejected():
    config = verl_config("trainer.v1.trainer_mode=erpo_colocate_async",
                         "+trainer.v1.erpo_colocate_async.num_warmup_batches=3")
    with pytest.raises(ERPOSetupError, match=r"trainer\.v1\.colocate_async\.num_warmup_batches=1 and "
                                             r"trainer\.v1\.erpo_colocate_async\.num_warmup_batches=3 differ"):
        preflight(config)


# -- preflight: a wrong combination stops before Ray, naming the setting -----------------------------------------------
@pytest.mark.parametrize("mode", ["colocate_async", "separate_async", "sync"])
def test_an_estimator_that_needs_entropy_in_a_plain_verl_mode_is_told_the_erpo_mode_of_it(mode):
    config = verl_config("algorithm.adv_estimator=erpo", f"trainer.v1.trainer_mode={mode}")
    with pytest.raises(ERPOSetupError, match=rf"verl's '{mode}' trainer mode does not provide\. "
                                             rf"Add: trainer\.v1\.trainer_mode=erpo_{mode}"):
        preflight(config)


def test_a_misspelled_erpo_mode_is_rejected_with_the_closest_name():
    config = verl_config("trainer.v1.trainer_mode=erpo_colocate_asnyc")
    with pytest.raises(ERPOSetupError, match=r"erpo_colocate_asnyc is not an erpo-verl trainer mode.*"
                                             r"Did you mean erpo_colocate_async\?"):
        preflight(config)


def test_separate_async_batch_sizes_that_verl_would_assert_on_are_rejected_before_ray():
    config = verl_config(*SEPARATE[:2], "actor_rollout_ref.actor.ppo_mini_batch_size=4", *SEPARATE[3:])
    with pytest.raises(ERPOSetupError, match=r"8 != 4 \* 4\. Set actor_rollout_ref\.actor\.ppo_mini_batch_size=2"):
        preflight(config)


def test_separate_async_with_the_colocated_naive_checkpoint_engine_is_rejected():
    config = verl_config(*SEPARATE[:-1], "actor_rollout_ref.rollout.checkpoint_engine.backend=naive")
    with pytest.raises(ERPOSetupError, match=r"checkpoint_engine\.backend=naive"):
        preflight(config)


def test_separate_async_without_rollout_devices_is_rejected():
    config = verl_config(*SEPARATE[:5], "actor_rollout_ref.rollout.n_gpus_per_node=0", SEPARATE[-1])
    with pytest.raises(ERPOSetupError, match=r"actor_rollout_ref\.rollout\.n_gpus_per_node > 0"):
        preflight(config)


@pytest.mark.parametrize("mode", ["erpo_colocate_async", "erpo_separate_async"])
def test_bypass_mode_which_copies_rollout_log_probs_without_entropy_is_refused_in_async_modes(mode):
    extra = SEPARATE[1:] if mode == "erpo_separate_async" else ()
    config = verl_config("algorithm.adv_estimator=erpo", f"trainer.v1.trainer_mode={mode}", *extra,
                         "algorithm.rollout_correction.bypass_mode=true")
    with pytest.raises(ERPOSetupError, match=r"bypass_mode=true skips the old-log-prob pass"):
        preflight(config)


def test_erpo_in_each_async_mode_passes_preflight_and_gets_the_reference_policy():
    for extra in (("trainer.v1.trainer_mode=erpo_colocate_async",), SEPARATE):
        config = verl_config("algorithm.adv_estimator=erpo", *extra)
        assert "actor_rollout_ref.actor.use_kl_loss=True" in preflight(config)


# -- erpo/old_policy/*: hand-computed ----------------------------------------------------------------------------------
def test_old_policy_lag_is_the_version_gap_between_pi_old_and_the_oldest_sampling_weights():
    tags = [
        {"min_global_steps": 4, "max_global_steps": 4},  # sampled by the weights pi_old has at step 5: lag 0
        {"min_global_steps": 3, "max_global_steps": 4},  # started one version earlier, spans 2 versions: lag 1
        {"min_global_steps": 2, "max_global_steps": 2},  # two versions old: lag 2
        {"min_global_steps": 0, "max_global_steps": 0, "is_padding": True},  # verl's padding row: left out
    ]
    padding = [False, False, False, True]
    m = old_policy_lag_metrics(tags, global_steps=5, padding=padding, local_updates=1)
    assert m == {
        "erpo/old_policy/lag_mean": 1.0,
        "erpo/old_policy/lag_max": 2.0,
        "erpo/old_policy/stale_fraction": pytest.approx(2 / 3),
        "erpo/old_policy/versions_per_sample_max": 2.0,
        "erpo/old_policy/local_updates": 1.0,
        "erpo/old_policy/samples": 3.0,
    }


def test_old_policy_lag_is_zero_for_a_synchronous_step_and_absent_without_versions():
    sync = [{"min_global_steps": 6, "max_global_steps": 6}] * 4
    assert old_policy_lag_metrics(sync, global_steps=7)["erpo/old_policy/lag_max"] == 0.0
    assert old_policy_lag_metrics([{"status": "success"}], global_steps=7) == {}
    assert old_policy_lag_metrics(None, global_steps=7) == {}


# -- the CPU profile of each mode ---------------------------------------------------------------------------------------
def test_the_cpu_profile_gives_separate_async_one_rollout_device_and_two_mini_batches():
    assert trainer_mode_overrides("sync", 1) == [] and trainer_mode_overrides("erpo_colocate_async", 1) == []
    ov = trainer_mode_overrides("separate_async", 2, train_batch_size=4)
    assert "trainer.n_gpus_per_node=1" in ov and "actor_rollout_ref.rollout.n_gpus_per_node=1" in ov
    assert "actor_rollout_ref.rollout.checkpoint_engine.backend=cpu_gloo" in ov
    assert "trainer.v1.separate_async.parameter_sync_step=2" in ov
    assert "actor_rollout_ref.actor.ppo_mini_batch_size=2" in ov  # 4 == 2 * 2, as verl asserts
    with pytest.raises(LayoutError, match="CPU_GPUS_PER_NODE=2"):
        trainer_mode_overrides("separate_async", 1)
    with pytest.raises(ValueError, match="TRAINER_MODE='fully_async'"):
        trainer_mode_overrides("fully_async", 1)


# -- the cpu_gloo checkpoint engine ----------------------------------------------------------------------------------
def _engine_process(role, rank, world, master, queue):
    from erpo_verl.integration.cpu.checkpoint_engine import CPUGlooCheckpointEngine

    engine = CPUGlooCheckpointEngine(bucket_size=1 << 20, is_master=(role == "actor" and rank == 0))
    engine.init_process_group(rank=rank, world_size=world, master=master)
    weights = _weights()

    async def transfer():
        if role == "actor":
            return await engine.send_weights(iter(weights), global_steps=3)
        received = [(name, tensor) async for name, tensor in engine.receive_weights(global_steps=3)]
        return [name for name, _ in received] == [n for n, _ in weights] and all(
            t.dtype == w.dtype and torch.equal(t, w) for (_, t), (_, w) in zip(received, weights))

    result = asyncio.run(transfer())
    engine.finalize()
    queue.put((role, rank, result))


def _weights():
    g = torch.Generator().manual_seed(0)
    # a bf16 tensor larger than one 1 MiB bucket, a float32 matrix and a 0-d tensor
    return [("a", torch.randn(3, 4, generator=g)), ("b", torch.randn(700_000, generator=g).to(torch.bfloat16)),
            ("c", torch.tensor(5))]


def test_cpu_gloo_sends_every_tensor_bit_exact_from_actor_rank_0_to_every_rollout_worker():
    from erpo_verl.integration.cpu.checkpoint_engine import CPUGlooCheckpointEngine
    from verl.checkpoint_engine.base import CheckpointEngineRegistry

    assert CheckpointEngineRegistry.get("cpu_gloo") is CPUGlooCheckpointEngine
    actor, rollout = CPUGlooCheckpointEngine.build_topology(2, 2, [CPUGlooCheckpointEngine(1).prepare()])
    assert actor["rank"] == [0, -1] and rollout["rank"] == [1, 2] and set(actor["world_size"]) == {3}
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_engine_process, args=("actor", actor["rank"][i], 3, actor["master"][i], queue))
             for i in range(2)]
    procs += [ctx.Process(target=_engine_process, args=("rollout", rollout["rank"][i], 3, rollout["master"][i], queue))
              for i in range(2)]
    for p in procs:
        p.start()
    results = sorted((queue.get(timeout=120) for _ in procs), key=lambda r: (r[0], r[1]))
    for p in procs:
        p.join(timeout=30)
    nbytes = 3 * 4 * 4 + 700_000 * 2 + 8
    assert results == [("actor", -1, {}), ("actor", 0, {"cpu_gloo/bytes": float(nbytes), "cpu_gloo/tensors": 3.0}),
                       ("rollout", 1, True), ("rollout", 2, True)]


# -- make bench-modes: the arithmetic of its table ------------------------------------------------------------------
def test_bench_modes_leaves_the_warm_up_step_out_and_uses_the_median():
    from erpo_verl.tools.bench_modes import mode_overrides, table, throughput

    t = throughput([9.0, 2.0, 4.0, 3.0], samples_per_step=16)  # step 1 (9 s) is the warm-up
    assert t == {"median_step_s": 3.0, "steps_per_min": 20.0, "samples_per_s": pytest.approx(16 / 3), "timed_steps": 3.0}
    with pytest.raises(ValueError, match="at least 2 steps"):
        throughput([1.0], 16)
    assert mode_overrides("erpo", "separate_async")[-1] == "trainer.v1.trainer_mode=erpo_separate_async"
    assert mode_overrides("grpo", "colocate_async")[-1] == "trainer.v1.trainer_mode=colocate_async"
    with pytest.raises(ValueError, match="unknown trainer mode 'async'"):
        mode_overrides("grpo", "async")
    md = table([{"estimator": "grpo", "mode": "sync", **throughput([1, 2, 2], 16)},
                {"estimator": "grpo", "mode": "colocate_async", **throughput([1, 1, 1], 16)}])
    assert "| grpo | colocate_async | 1.00 | 60.0 | 16.0 | 2.00× |" in md


def test_separate_async_logger_accepts_verls_flush_argument():
    import verl.trainer.ppo.v1.trainer_separate_async as module

    module.logger.info("hybrid replicas disabled", flush=True)  # verl 0.9.1's call; a TypeError without the fix
    assert module.logger.process("m", {"flush": True, "extra": None}) == ("m", {"extra": None})
