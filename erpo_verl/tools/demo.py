"""``make demo``: train ERPO (and GRPO on the same seed) through verl's real trainer on the CPU.

    python -m erpo_verl.tools.demo --out outputs/demo [--steps 40] [--estimators erpo,grpo] [--seed 1]

Builds the offline tiny model and the toy "digits" task, runs ``python -m verl.trainer.main_ppo`` once per
estimator with the CPU profile, prints one progress line per step, and leaves in ``--out``:

* ``<estimator>/metrics.jsonl`` — verl's file logger output, verl's own metric names, one line per step;
* ``<estimator>/train.log`` — verl's console output;
* ``metrics.csv`` — every metric of every run, one row per (run, step);
* ``demo.png`` — reward, entropy, response length and the ``erpo/`` diagnostics per step, one line per run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from erpo_verl.integration.cpu.launch import run_verl_cpu
from erpo_verl.integration.cpu.profile import cpu_overrides
from erpo_verl.tools.metrics_io import series, write_csv
from erpo_verl.tools.plotting import plot_runs
from erpo_verl.toy.assets import build_all

# Settings of the toy runs, chosen from measurements on a 2-core machine (docs/cpu.md): big enough steps
# that the reward rises within ~40 steps, small enough that both runs fit in well under ten minutes.
DEMO_SETTINGS = dict(train_batch_size=8, n=4, max_response_length=16, lr=3e-3)

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
            f"  step_time {record.get('timing_s/step', float('nan')):.1f}s",
            flush=True,
        )

    return run_verl_cpu(overrides, out_dir, on_step=progress)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Train ERPO and GRPO on CPU through verl with a tiny model.")
    parser.add_argument("--out", default="outputs/demo", help="output folder (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=40, help="training steps per run (default: %(default)s)")
    parser.add_argument("--estimators", default="erpo,grpo", help="comma-separated (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be >= 1")
    estimators = [e.strip() for e in args.estimators.split(",") if e.strip()]
    for name in estimators:
        estimator_overrides(name)

    out = Path(args.out).resolve()
    start = time.time()
    print(f"building the tiny model and the toy task in {out / 'assets'} ...", flush=True)
    assets = build_all(out / "assets", seed=0)
    runs, summary = {}, []
    for name in estimators:
        print(f"training {name} for {args.steps} steps through verl.trainer.main_ppo on CPU "
              f"(Ray start-up takes ~40 s; log: {out / name / 'train.log'})", flush=True)
        run = train_toy(name, out / name, assets, args.steps, args.seed)
        if run.returncode != 0 or not run.metrics:
            print(f"\n{name} failed (exit code {run.returncode}); last lines of {run.log_path}:\n{run.log_tail()}",
                  file=sys.stderr)
            return 1
        runs[name] = run.metrics
        _, rewards = series(run.metrics, "critic/score/mean")
        summary.append((name, rewards[0], rewards[-1], len(rewards), run.seconds))

    write_csv(runs, out / "metrics.csv")
    plot = plot_runs(runs, out / "demo.png", title=f"toy 'digits' task, tiny Qwen2 on CPU, seed {args.seed}")
    print(f"\nplot: {plot}\nmetrics: {out / 'metrics.csv'} and {out}/<estimator>/metrics.jsonl")
    for name, first, last, n_steps, seconds in summary:
        print(f"{name:8s} reward first step {first:.3f} -> last step {last:.3f}  ({n_steps} steps, {seconds:.0f}s)")
    print(f"total time {time.time() - start:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
