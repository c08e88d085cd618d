"""``make bench-learning``: do ERPO / EP-GRPO learn better than GRPO and DAPO? Through the real verl trainer.

    python -m erpo_verl.tools.bench_learning --out outputs/bench_learning [--steps 30] [--seeds 1,2,3]
                                       [--estimators grpo,dapo,erpo,ep_grpo]

Trains every estimator for the same number of steps on the toy "digits" task of the CPU end-to-end setup
(tiny Qwen2, ``erpo_verl.tools.demo`` settings, one run per estimator and seed, through ``verl.trainer.main_ppo``;
each run costs about a minute of start-up plus ~3 s per step on 2 cores) and reports per estimator, as the
mean ± standard deviation over seeds:

* ``final reward``: the mean of ``critic/score/mean`` over the last steps (the last ``--window`` steps);
* ``reward AUC``: the area under the reward curve divided by its length (the mean reward over all steps), so
  an estimator that gets there sooner scores higher;
* ``entropy end/start``: ``actor/entropy`` over the last window divided by the same over the first window;
* ``response length``: the mean of ``response_length/mean`` over all steps;

with a PNG of the curves (mean ± standard deviation over seeds) and a Markdown table. Finished runs are kept
(``<estimator>_seed<k>/metrics.jsonl``) and reused when the command is run again with the same settings.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from erpo_verl.tools.metrics_io import load_metrics, series

REWARD, ENTROPY, LENGTH = "critic/score/mean", "actor/entropy", "response_length/mean"
PANELS = [(REWARD, "reward (critic/score/mean)"), (ENTROPY, "entropy (actor/entropy)"),
          (LENGTH, "response length (tokens)"), ("timing_s/step", "step time (s)")]


def run_dir(out: Path, estimator: str, seed: int) -> Path:
    return out / f"{estimator}_seed{seed}"


def run_once(out: Path, assets: dict, estimator: str, seed: int, steps: int, log=print) -> list[dict]:
    """Train (or reuse a finished run of) ``estimator`` with ``seed``; returns its per-step records."""
    from erpo_verl.tools.demo import train_toy

    folder = run_dir(out, estimator, seed)
    done = folder / "done.json"
    if done.exists() and json.loads(done.read_text()).get("steps") == steps:
        records = load_metrics(folder / "metrics.jsonl")
        log(f"[{estimator} seed {seed}] reusing the finished run in {folder}")
        return records
    if folder.exists():  # an unfinished or different run: start over
        for path in sorted(folder.rglob("*"), reverse=True):
            path.unlink() if path.is_file() or path.is_symlink() else path.rmdir()
    start = time.time()
    log(f"[{estimator} seed {seed}] training {steps} steps (log: {folder / 'train.log'})")
    run = train_toy(estimator, folder, assets, steps, seed, quiet=True)
    if run.returncode != 0 or len(run.metrics) < steps:
        raise RuntimeError(f"{estimator} seed {seed} failed (exit code {run.returncode}, {len(run.metrics)} of "
                           f"{steps} steps); last lines of {run.log_path}:\n{run.log_tail()}")
    done.write_text(json.dumps({"steps": steps, "seconds": run.seconds}))
    log(f"[{estimator} seed {seed}] done in {time.time() - start:.0f}s, final reward "
        f"{run.metrics[-1].get(REWARD, float('nan')):.3f}")
    return run.metrics


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def run_summary(records: list[dict], window: int) -> dict:
    """The four numbers of one run (see the module docstring)."""
    _, reward = series(records, REWARD)
    _, entropy = series(records, ENTROPY)
    _, length = series(records, LENGTH)
    w = max(1, min(window, len(reward)))
    if len(reward) >= 2:
        auc = sum((a + b) / 2 for a, b in zip(reward[:-1], reward[1:])) / (len(reward) - 1)
    else:
        auc = _mean(reward)
    start_entropy = _mean(entropy[:w])
    return {
        "final_reward": _mean(reward[-w:]),
        "reward_auc": auc,
        "entropy_end_over_start": _mean(entropy[-w:]) / start_entropy if entropy and start_entropy else float("nan"),
        "response_length": _mean(length),
        "first_reward": _mean(reward[:w]),
        "steps": len(reward),
    }


def aggregate(per_seed: dict[int, dict]) -> dict:
    """mean and sample standard deviation over seeds of every summary number."""
    keys = next(iter(per_seed.values())).keys()
    out = {}
    for key in keys:
        values = [s[key] for s in per_seed.values()]
        out[key] = {"mean": _mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "values": values}
    return out


def curves(runs: dict[int, list[dict]], key: str, steps: int) -> tuple[list[int], list[float], list[float]]:
    """Mean and standard deviation over seeds, step by step (steps that every seed logged)."""
    per_step: dict[int, list[float]] = {}
    for records in runs.values():
        for step, value in zip(*series(records, key)):
            per_step.setdefault(int(step), []).append(value)
    xs = [s for s in sorted(per_step) if len(per_step[s]) == len(runs) and s <= steps]
    means = [_mean(per_step[s]) for s in xs]
    stds = [statistics.stdev(per_step[s]) if len(per_step[s]) > 1 else 0.0 for s in xs]
    return xs, means, stds


def plot(all_runs: dict[str, dict[int, list[dict]]], steps: int, out_png: Path, title: str) -> Path:
    """Mean ± standard deviation over seeds of each panel's metric."""
    from erpo_verl.tools.plotting import plot_bands

    panels = [(label, {f"{name} (n={len(runs)})": curves(runs, key, steps) for name, runs in all_runs.items()})
              for key, label in PANELS]
    return plot_bands(panels, out_png, title, cols=2)


def markdown(summary: dict[str, dict], window: int) -> str:
    lines = [f"| estimator | seeds | final reward (last {window} steps) | reward AUC (mean over steps) | "
             f"entropy end/start | response length |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, agg in summary.items():
        cell = lambda key, fmt=".3f": f"{agg[key]['mean']:{fmt}} ± {agg[key]['std']:{fmt}}"  # noqa: E731
        lines.append(f"| {name} | {len(agg['final_reward']['values'])} | {cell('final_reward')} | {cell('reward_auc')} "
                     f"| {cell('entropy_end_over_start', '.2f')} | {cell('response_length', '.1f')} |")
    return "\n".join(lines)


def _difference(a: dict, b: dict) -> tuple[float, float]:
    """mean(a) − mean(b) and the standard error of that difference over seeds (Welch)."""
    n_a, n_b = len(a["values"]), len(b["values"])
    se = math.sqrt(a["std"] ** 2 / n_a + b["std"] ** 2 / n_b) if n_a > 1 and n_b > 1 else float("nan")
    return a["mean"] - b["mean"], se


def verdict(summary: dict[str, dict], baseline: str = "grpo") -> str:
    """The ranking on final reward and AUC, and every estimator against ``baseline`` in standard errors of the
    difference over seeds (|t| < 2.78, the two-sided 95% point of Student's t for 3 + 3 seeds, reads as noise)."""
    lines = []
    for key, label in (("final_reward", "final reward"), ("reward_auc", "reward AUC")):
        ranked = sorted(summary, key=lambda n: summary[n][key]["mean"], reverse=True)
        text = f"{label}: " + " > ".join(f"{n} {summary[n][key]['mean']:.3f}" for n in ranked)
        if baseline in summary:
            parts = []
            for name in ranked:
                if name == baseline:
                    continue
                gap, se = _difference(summary[name][key], summary[baseline][key])
                if math.isnan(se) or se == 0:
                    parts.append(f"{name} {gap:+.3f}")
                    continue
                # 2.78: two-sided 95% of Student's t with 4 degrees of freedom (3 + 3 seeds)
                noise = "within seed noise" if abs(gap) < 2.78 * se else ("better" if gap > 0 else "worse")
                parts.append(f"{name} {gap:+.3f} ({gap / se:+.1f} SE, {noise})")
            text += f"; against {baseline}: " + ", ".join(parts)
        lines.append(text)
    return "\n".join(f"- {line}" for line in lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Learning benchmark of the estimators on the toy task (CPU, verl).")
    parser.add_argument("--out", default="outputs/bench_learning", help="output folder (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=30, help="training steps per run (default: %(default)s)")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds, at least 3 (default: %(default)s)")
    parser.add_argument("--estimators", default="grpo,dapo,erpo,ep_grpo", help="comma-separated (default: %(default)s)")
    parser.add_argument("--window", type=int, default=5, help="steps averaged for 'final' and 'start' (default: 5)")
    args = parser.parse_args(argv)
    from erpo_verl.tools.demo import estimator_overrides

    if args.steps < 2:
        parser.error("--steps must be >= 2")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if len(set(seeds)) < 3:
        parser.error("the learning benchmark needs at least 3 distinct seeds (--seeds 1,2,3)")
    estimators = [e.strip() for e in args.estimators.split(",") if e.strip()]
    for name in estimators:
        estimator_overrides(name)  # exits with the list of valid names

    from erpo_verl.toy.assets import build_all

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    print(f"{len(estimators)} estimators x {len(seeds)} seeds x {args.steps} steps on the toy task "
          f"({len(estimators) * len(seeds)} runs, roughly {len(estimators) * len(seeds) * (60 + 3 * args.steps) / 60:.0f}"
          f" min on 2 cores)", flush=True)
    assets = build_all(out / "assets", seed=0)
    all_runs: dict[str, dict[int, list[dict]]] = {name: {} for name in estimators}
    for seed in seeds:  # seed-major order: an interrupted benchmark still has every estimator on the first seeds
        for name in estimators:
            all_runs[name][seed] = run_once(out, assets, name, seed, args.steps, log=lambda m: print(m, flush=True))

    summary = {name: aggregate({seed: run_summary(r, args.window) for seed, r in runs.items()})
               for name, runs in all_runs.items()}
    import torch

    training_s = sum(json.loads((run_dir(out, name, seed) / "done.json").read_text()).get("seconds", 0.0)
                     for name in estimators for seed in seeds)
    machine = {"nproc": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
               "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "training_minutes": training_s / 60, "this_command_minutes": (time.time() - started) / 60}
    command = "python -m erpo_verl.tools.bench_learning " + " ".join(argv if argv is not None else sys.argv[1:])
    png = plot(all_runs, args.steps, out / "bench_learning.png",
               f"toy 'digits' task through verl on CPU: mean ± std over seeds {','.join(map(str, seeds))}")
    table = markdown(summary, args.window)
    from erpo_verl.tools.bench import overhead_table, step_shares

    overhead = {name: step_shares(list(runs.values())) for name, runs in all_runs.items()}
    text = "\n".join([
        f"# Learning benchmark ({machine['date']})", "",
        f"Command: `{command}`  ", f"Machine: nproc {machine['nproc']}, torch {machine['torch']}; "
        f"{machine['training_minutes']:.0f} min of training runs (finished runs are reused)", "",
        table, "", verdict(summary), "", f"Curves: {png}", "",
        f"Step time and the share of the advantage step (`timing_s/adv`) and of the reference forward pass "
        f"(`timing_s/ref`, erpo/ep_grpo only) in it, mean over seeds and steps 2–{args.steps}:", "",
        overhead_table(overhead), ""])
    (out / "bench_learning.md").write_text(text)
    (out / "bench_learning.json").write_text(json.dumps(
        {"command": command, "machine": machine, "steps": args.steps, "seeds": seeds, "window": args.window,
         "summary": summary, "step_shares": overhead,
         "curves": {name: {key: curves(runs, key, args.steps) for key, _ in PANELS} for name, runs in all_runs.items()}},
        indent=2))
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
