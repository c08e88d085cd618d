"""``make bench-modes``: throughput of grpo and erpo in verl's three v1 trainer modes on the toy task (CPU).

    python -m erpo_verl.tools.bench_modes --out outputs/bench_modes [--steps 8] [--estimators grpo,erpo]
                                          [--modes sync,colocate_async,separate_async]

One run per (estimator, mode), one at a time, through the real trainer with the CPU profile. Each run's first
step (warm-up, and the async modes' prefetch) is left out; from the others:

* steps per minute = 60 / median ``timing_s/step``;
* samples per second = trained samples per step (``train_batch_size × n``) / median ``timing_s/step``.

separate_async gets the CPU profile's layout for it (2 logical devices: one trains, one rolls out). On this
2-core machine both devices share the same two cores, so async modes can only overlap what the cores leave
idle (waits, Python overhead): the numbers measure the modes' bookkeeping on CPU, not a GPU cluster's speed-up.
Writes ``results.json`` and ``table.md`` to ``--out``; prints the load (``os.getloadavg``) before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from erpo_verl.integration.cpu.launch import run_verl_cpu
from erpo_verl.integration.cpu.profile import TRAINER_MODES, cpu_overrides, trainer_mode_overrides
from erpo_verl.toy.assets import build_all

TRAIN_BATCH_SIZE, N = 4, 4
ESTIMATORS = {
    "grpo": ("algorithm.adv_estimator=grpo", None),
    "erpo": ("algorithm.adv_estimator=erpo", "erpo_"),
}


def mode_overrides(estimator: str, mode: str) -> list[str]:
    """The trainer-mode setting of a run: erpo needs erpo_<mode>, grpo runs verl's mode itself."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose from {', '.join(ESTIMATORS)}")
    if mode not in TRAINER_MODES:
        raise ValueError(f"unknown trainer mode {mode!r}; choose from {', '.join(TRAINER_MODES)}")
    setting, prefix = ESTIMATORS[estimator]
    return [setting, f"trainer.v1.trainer_mode={(prefix or '')}{mode}"]


def throughput(step_seconds: list[float], samples_per_step: int) -> dict[str, float]:
    """Steps/min and samples/s from the per-step times, the first step left out (warm-up)."""
    timed = step_seconds[1:]
    if not timed:
        raise ValueError("need at least 2 steps to leave the warm-up step out")
    median = statistics.median(timed)
    return {
        "median_step_s": median,
        "steps_per_min": 60.0 / median,
        "samples_per_s": samples_per_step / median,
        "timed_steps": float(len(timed)),
    }


def table(results: list[dict]) -> str:
    """Markdown table; each async mode also as the ratio to the same estimator's sync samples/s."""
    sync = {r["estimator"]: r["samples_per_s"] for r in results if r["mode"] == "sync"}
    lines = ["| estimator | trainer mode | median step (s) | steps/min | samples/s | vs sync |", "|---|---|---|---|---|---|"]
    for r in results:
        ratio = r["samples_per_s"] / sync[r["estimator"]] if r["estimator"] in sync else float("nan")
        lines.append(f"| {r['estimator']} | {r['mode']} | {r['median_step_s']:.2f} | {r['steps_per_min']:.1f} | "
                     f"{r['samples_per_s']:.1f} | {ratio:.2f}× |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="outputs/bench_modes")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--estimators", default="grpo,erpo")
    parser.add_argument("--modes", default=",".join(TRAINER_MODES))
    args = parser.parse_args(argv)
    if args.steps < 2:
        parser.exit(2, "ERROR: --steps must be >= 2 (the first step is left out)\n")
    runs = [(e, m) for e in args.estimators.split(",") for m in args.modes.split(",")]
    for e, m in runs:
        try:
            mode_overrides(e, m)
        except ValueError as exc:
            parser.exit(2, f"ERROR: {exc}\n")
    out = Path(args.out).resolve()
    assets = build_all(out / "assets", seed=0)
    load_before = os.getloadavg()
    results = []
    for estimator, mode in runs:
        gpus = 2 if mode == "separate_async" else 1
        overrides = cpu_overrides(str(assets["model"]), str(assets["train"]), str(assets["val"]), steps=args.steps,
                                  train_batch_size=TRAIN_BATCH_SIZE, n=N, gpus_per_node=gpus,
                                  output_dir=str(out / f"{estimator}_{mode}"))
        overrides += trainer_mode_overrides(mode, gpus, TRAIN_BATCH_SIZE) + mode_overrides(estimator, mode)
        start = time.time()
        run = run_verl_cpu(overrides, out / f"{estimator}_{mode}", timeout=1800)
        if run.returncode != 0:
            print(run.log_tail(40))
            parser.exit(1, f"ERROR: the {estimator} / {mode} run failed (rc {run.returncode}); see {run.log_path}\n")
        steps = [float(r["timing_s/step"]) for r in run.metrics]
        result = {"estimator": estimator, "mode": mode, "wall_s": time.time() - start, "steps": len(steps),
                  "step_seconds": steps, **throughput(steps, TRAIN_BATCH_SIZE * N)}
        results.append(result)
        print(f"[bench-modes] {estimator:5s} {mode:15s} {result['steps_per_min']:6.1f} steps/min "
              f"{result['samples_per_s']:6.1f} samples/s (run {result['wall_s']:.0f} s)", flush=True)
    load_after = os.getloadavg()
    payload = {"load_before": load_before, "load_after": load_after, "cpus": os.cpu_count(), "results": results,
               "train_batch_size": TRAIN_BATCH_SIZE, "n": N}
    (out / "results.json").write_text(json.dumps(payload, indent=2))
    (out / "table.md").write_text(table(results))
    print(table(results) + f"load before {load_before}, after {load_after}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
