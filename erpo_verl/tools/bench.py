"""``make bench``: time the advantage estimators against verl's GRPO and a memory-bandwidth floor.

    python -m erpo_verl.tools.bench --out outputs/bench [--tiny] [--repeats 7] [--cases erpo,ep_grpo] [--trainer-overhead]

Batches are shaped like real RL steps: 8,192 responses (512 prompts × 16), right-padded to 4,096 tokens with
a jagged length spread (a log-normal around a quarter of the width, clipped, plus a spike of truncated
responses at the maximum length), rewards in {0, 1} on the last valid token, verl's int64 ``response_mask``,
and ¼ and ½ of that batch for the scaling exponent. In one process, interleaved and repeated (the median of
``--repeats`` runs, after one warm-up), on PyTorch's default number of threads, it times:

* ``floor_outcome`` / ``floor``: one pass that reads every input tensor the estimator needs — rewards and mask
  for the outcome estimators; rewards, mask, old entropy, old and reference log-probs for ERPO/EP-GRPO — and
  writes one float32 output of the same shape (row blocks, so that each input is read from memory once);
* verl's ``grpo`` (``compute_grpo_outcome_advantage``) and ``grpo_vectorized``;
* our ``dapo``, ``erpo`` and ``ep_grpo``, called as the trainer calls them (``algorithm`` config, ``metrics``);
* ``erpo:<option>`` / ``ep_grpo:<option>``: the same with one option of spec §8 switched on (``floor``:
  ``bucket_edges=floor``, ``unbiased``: ``bucket_std=unbiased``, ``response``: ``entropy_stats_scope=response``)
  and with all three (``floor+unbiased+response``): the targets hold with every option on and off;
* ``erpo:reference`` / ``ep_grpo:reference``: the plain implementation of :mod:`erpo_verl.estimators.reference`
  in float32, the readable form that the fast path is held equal to (no target: it shows what the fast path buys).

Sizes and cases are interleaved too (all batches stay in memory). It reports milliseconds, padded tokens per
second, the ratio to the estimator's floor and to verl's ``grpo``,
the peak additional memory per padded token (measured: each case runs once in a fresh subprocess, whose peak
RSS — ``VmHWM``, reset through ``/proc/self/clear_refs`` after the inputs are built — minus its RSS before the
call; the returned advantages, 4 bytes per token, are included) and the scaling exponent (the log-log slope of
time against tokens over the three sizes). With a CUDA device the same runs on the GPU (peak memory from
``torch.cuda.max_memory_allocated``). ``--trainer-overhead`` also trains the toy task through verl on the CPU
and reports the share of ``timing_s/adv`` and ``timing_s/ref`` in ``timing_s/step`` for ``grpo``, ``erpo`` and
``ep_grpo``. Writes ``bench.json`` and ``bench.md`` into ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

GROUP_SIZE = 16
SIZES = {"quarter": (2048, 4096), "half": (4096, 4096), "full": (8192, 4096)}
TINY_SIZES = {"quarter": (64, 256), "half": (128, 256), "full": (256, 256)}
# response lengths: log-normal with median width · MEDIAN_FRACTION, clipped to [1, width]; a share TRUNCATED of the
# responses hit the maximum length (truncated generations)
MEDIAN_FRACTION = 0.25
LENGTH_SIGMA = 0.8
TRUNCATED = 0.08

# the options of spec §8, one at a time and together (the presets' defaults are the "off" rows erpo / ep_grpo)
OPTIONS = {
    "floor": {"bucket_edges": "floor"},
    "unbiased": {"bucket_std": "unbiased"},
    "response": {"entropy_stats_scope": "response"},
    "floor+unbiased+response": {"bucket_edges": "floor", "bucket_std": "unbiased", "entropy_stats_scope": "response"},
}
PRESETS = ("erpo", "ep_grpo")
VARIANTS = tuple(f"{preset}:{option}" for preset in PRESETS for option in OPTIONS)
REFERENCES = tuple(f"{preset}:reference" for preset in PRESETS)
CASES = ("floor_outcome", "floor", "grpo", "grpo_vectorized", "dapo", "erpo", "ep_grpo", *VARIANTS, *REFERENCES)
FLOOR_OF = {"grpo": "floor_outcome", "grpo_vectorized": "floor_outcome", "dapo": "floor_outcome",
            **{name: "floor" for name in ("erpo", "ep_grpo", *VARIANTS, *REFERENCES)}}
INPUTS_OF = {"floor_outcome": "rewards, mask", "floor": "rewards, mask, entropy, old/ref log-probs"}
TARGETS = {"ratio_floor": 6.0, "ratio_grpo": 3.0, "bytes_per_token": 40.0, "exponent": (0.9, 1.1)}
TARGET_CASES = ("erpo", "ep_grpo", *VARIANTS)
FLOOR_BLOCK_TOKENS = 1 << 19


# ---------------------------------------------------------------------------------------------------------
# batches and cases
# ---------------------------------------------------------------------------------------------------------
def make_batch(bs: int, width: int, seed: int = 0, device: str = "cpu") -> dict:
    """A jagged batch shaped like a real step (see the module docstring); groups of GROUP_SIZE responses."""
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    lengths = np.exp(rng.normal(math.log(width * MEDIAN_FRACTION), LENGTH_SIGMA, bs)).round()
    lengths = np.clip(lengths, 1, width).astype(np.int64)
    lengths[rng.random(bs) < TRUNCATED] = width
    length = torch.as_tensor(lengths)
    mask = (torch.arange(width).unsqueeze(0) < length.unsqueeze(1)).to(torch.int64)  # verl's response_mask dtype
    success = rng.random(bs // GROUP_SIZE + 1)[np.arange(bs) // GROUP_SIZE]  # per-prompt solve rate
    rewards = torch.zeros(bs, width)
    rewards[torch.arange(bs), length - 1] = torch.as_tensor((rng.random(bs) < success).astype(np.float32))
    entropy = torch.empty(bs, width).exponential_(2.0, generator=gen)  # mean 0.5 nats
    old = torch.empty(bs, width).exponential_(3.0, generator=gen).neg_()
    ref = torch.randn(bs, width, generator=gen).mul_(0.05).add_(old)
    batch = {"token_level_rewards": rewards, "response_mask": mask, "old_entropy": entropy,
             "old_log_probs": old, "ref_log_prob": ref}
    batch = {k: v.to(device) for k, v in batch.items()}
    batch["index"] = np.array([f"uid-{i // GROUP_SIZE}" for i in range(bs)], dtype=object)
    batch["valid_frac"] = float(lengths.sum()) / (bs * width)
    return batch


def floor_pass(tensors: list[torch.Tensor], block_tokens: int = FLOOR_BLOCK_TOKENS) -> torch.Tensor:
    """One pass that reads every tensor once and writes one float32 output of the same shape (row blocks)."""
    bs, width = tensors[0].shape
    out = torch.empty(bs, width, dtype=torch.float32, device=tensors[0].device)
    step = max(1, block_tokens // max(1, width)) if out.device.type == "cpu" else max(1, bs)
    for a in range(0, bs, step):
        block = out[a : a + step]
        block.copy_(tensors[0][a : a + step])
        for t in tensors[1:]:
            block.add_(t[a : a + step])
    return out


def case_functions(batch: dict, names=CASES) -> dict:
    """name -> zero-argument callable running that case on ``batch`` (as verl's trainer would call it)."""
    from erpo_verl.estimators import ESTIMATORS, compute_dapo_outcome_advantage, reference_advantage

    rewards, mask, index = batch["token_level_rewards"], batch["response_mask"], batch["index"]
    extras = {k: batch[k] for k in ("old_entropy", "old_log_probs", "ref_log_prob")}
    config = {"norm_adv_by_std_in_grpo": True}

    def estimator(preset: str, options: dict):
        fn, build = ESTIMATORS[preset]
        cfg = {**config, preset: options}
        return lambda: fn(rewards, mask, index, cfg, metrics={}, **extras)[0]

    def reference(preset: str):
        cfg = ESTIMATORS[preset][1](config)
        return lambda: reference_advantage(rewards, mask, index, cfg, **extras, dtype=torch.float32)

    fns = {
        "floor_outcome": lambda: floor_pass([rewards, mask]),
        "floor": lambda: floor_pass([rewards, mask, *extras.values()]),
        "dapo": lambda: compute_dapo_outcome_advantage(rewards, mask, index, config, metrics={})[0],
        **{preset: estimator(preset, {}) for preset in PRESETS},
        **{f"{preset}:{option}": estimator(preset, values) for preset in PRESETS for option, values in OPTIONS.items()},
        **{f"{preset}:reference": reference(preset) for preset in PRESETS},
    }
    if "grpo" in names or "grpo_vectorized" in names:
        from verl.trainer.ppo import core_algos

        vectorized = core_algos.get_adv_estimator_fn("grpo_vectorized")
        fns["grpo"] = lambda: core_algos.compute_grpo_outcome_advantage(rewards, mask, index, norm_adv_by_std_in_grpo=True)[0]
        fns["grpo_vectorized"] = lambda: vectorized(rewards, mask, index, norm_adv_by_std_in_grpo=True)[0]
    return {name: fns[name] for name in names}


# ---------------------------------------------------------------------------------------------------------
# timing (one process, interleaved) and memory (one subprocess per case)
# ---------------------------------------------------------------------------------------------------------
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_cases(batches: dict[str, dict], repeats: int, device: str, names=CASES) -> dict[str, dict[str, list[float]]]:
    """Milliseconds of every run of every case on every batch (size -> case -> runs).

    All (size, case) pairs are interleaved in one process, their order rotated each round, so that a change of
    the machine's load during the benchmark spreads over all of them instead of biasing one size or case.
    """
    fns = {size: case_functions(batch, names) for size, batch in batches.items()}
    order = [(size, name) for size in batches for name in names]
    times: dict[str, dict[str, list[float]]] = {size: {name: [] for name in names} for size in batches}
    for size, name in order:  # warm-up (lazy imports, first-touch allocations, kernels)
        fns[size][name]()
    _sync(device)
    for r in range(repeats):
        shift = (r * len(names) + r) % len(order)
        for size, name in order[shift:] + order[:shift]:
            _sync(device)
            start = time.perf_counter()
            out = fns[size][name]()
            _sync(device)
            times[size][name].append((time.perf_counter() - start) * 1e3)
            del out
    return times


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def measure_memory_here(cases: tuple[str, ...], bs: int, width: int, seed: int) -> dict[str, dict]:
    """Peak additional RSS of one call of each of ``cases``, in this process (``--memory-case``).

    The accurate measurement runs one case per fresh process. Several cases in one process (``--tiny``) are
    approximate: memory that an earlier case left in the allocator's free lists is reused without showing up.
    """
    import gc
    import resource

    warm = case_functions(make_batch(32, 64, seed), cases)
    for fn in warm.values():  # load code paths and lazily imported modules on a small batch first
        fn()
    batch = make_batch(bs, width, seed)
    fns = case_functions(batch, cases)
    result = {}
    for case, fn in fns.items():
        gc.collect()
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            baseline_kib, method = _status_kib("VmRSS"), "VmHWM"
        except OSError:  # no /proc: ru_maxrss cannot be reset, so the inputs' construction may dominate
            baseline_kib, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
        out = fn()
        peak_kib = _status_kib("VmHWM") if method == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        del out
        extra = max(0, peak_kib - baseline_kib) * 1024
        result[case] = {"peak_bytes": extra, "bytes_per_token": extra / (bs * width), "method": method,
                        "process": "own" if len(cases) == 1 else "shared"}
    return result


def measure_memory(cases: tuple[str, ...], bs: int, width: int, seed: int) -> dict[str, dict]:
    cmd = [sys.executable, "-m", "erpo_verl.tools.bench", "--memory-case", ",".join(cases), "--bs", str(bs),
           "--width", str(width), "--seed", str(seed)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"memory measurement of {cases} ({bs}x{width}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_cuda_memory(batch: dict, names=CASES) -> dict[str, dict]:
    fns = case_functions(batch, names)
    result = {}
    for name, fn in fns.items():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = fn()
        torch.cuda.synchronize()
        extra = torch.cuda.max_memory_allocated() - base
        del out
        tokens = batch["token_level_rewards"].numel()
        result[name] = {"peak_bytes": extra, "bytes_per_token": extra / tokens, "method": "cuda.max_memory_allocated"}
    return result


# ---------------------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------------------
def scaling_exponent(tokens: list[float], ms: list[float]) -> float:
    """Least-squares slope of log(ms) against log(tokens)."""
    x, y = np.log(np.asarray(tokens, dtype=float)), np.log(np.asarray(ms, dtype=float))
    return float(np.polyfit(x, y, 1)[0])


def summarize(sizes: dict, times: dict, memory: dict) -> dict:
    """Per case: ms per size, tokens/s, ratios at the largest size, peak bytes/token, scaling exponent."""
    largest = max(sizes, key=lambda s: sizes[s]["tokens"])
    cases = {}
    for name in CASES:
        if name not in times[largest]:
            continue
        row = {"ms": {}, "ms_runs": {}, "tokens_per_s": {}, "bytes_per_token": {}, "peak_bytes": {}}
        for size, info in sizes.items():
            ms = statistics.median(times[size][name])
            row["ms"][size] = ms
            row["ms_runs"][size] = times[size][name]
            row["tokens_per_s"][size] = info["tokens"] / (ms / 1e3)
            if name in memory.get(size, {}):
                row["bytes_per_token"][size] = memory[size][name]["bytes_per_token"]
                row["peak_bytes"][size] = memory[size][name]["peak_bytes"]
        floor = FLOOR_OF.get(name)
        row["floor"] = floor
        row["ratio_floor"] = row["ms"][largest] / statistics.median(times[largest][floor]) if floor else None
        grpo = times[largest].get("grpo")
        row["ratio_grpo"] = row["ms"][largest] / statistics.median(grpo) if grpo else None
        order = sorted(sizes, key=lambda s: sizes[s]["tokens"])
        row["exponent"] = scaling_exponent([sizes[s]["tokens"] for s in order], [row["ms"][s] for s in order]) \
            if len(order) >= 2 else None
        cases[name] = row
    targets = {}
    for name in TARGET_CASES:
        if name not in cases:
            continue
        row = cases[name]
        low, high = TARGETS["exponent"]
        bpt = row["bytes_per_token"].get(largest)
        targets[name] = {
            "ratio_floor": {"value": row["ratio_floor"], "target": f"<= {TARGETS['ratio_floor']}",
                            "met": row["ratio_floor"] <= TARGETS["ratio_floor"]},
            "ratio_grpo": {"value": row["ratio_grpo"], "target": f"<= {TARGETS['ratio_grpo']}",
                           "met": row["ratio_grpo"] is not None and row["ratio_grpo"] <= TARGETS["ratio_grpo"]},
            "bytes_per_token": {"value": bpt, "target": f"<= {TARGETS['bytes_per_token']}",
                                "met": bpt is not None and bpt <= TARGETS["bytes_per_token"]},
            "exponent": {"value": row["exponent"], "target": f"in [{low}, {high}]",
                         "met": row["exponent"] is not None and low <= row["exponent"] <= high},
        }
    return {"largest": largest, "cases": cases, "targets": targets}


def _fmt(value, spec: str, missing: str = "–") -> str:
    return missing if value is None else format(value, spec)


def markdown_table(section: dict, sizes: dict) -> str:
    largest = section["largest"]
    order = sorted(sizes, key=lambda s: sizes[s]["tokens"])
    size_cols = " | ".join(f"ms {sizes[s]['bs']}×{sizes[s]['width']}" for s in order)
    lines = [
        f"| case | {size_cols} | Mtok/s | × floor | × verl grpo | peak B/token | scaling exp. |",
        "|---|" + "---:|" * (len(order) + 5),
    ]
    for name, row in section["cases"].items():
        label = name if name not in INPUTS_OF else f"{name} ({INPUTS_OF[name]})"
        ms = " | ".join(f"{row['ms'][s]:.1f}" for s in order)
        floor = f"{row['ratio_floor']:.2f} ({row['floor']})" if row["ratio_floor"] is not None else "–"
        lines.append(
            f"| {label} | {ms} | {row['tokens_per_s'][largest] / 1e6:.3g} | {floor} | "
            f"{_fmt(row['ratio_grpo'], '.2f')} | {_fmt(row['bytes_per_token'].get(largest), '.1f')} | "
            f"{_fmt(row['exponent'], '.2f')} |"
        )
    if section["targets"]:
        keys = (("ratio_floor", "× floor ≤ 6"), ("ratio_grpo", "× verl grpo ≤ 3"),
                ("bytes_per_token", "peak ≤ 40 B/token"), ("exponent", "exponent in [0.9, 1.1]"))
        lines += ["", "| targets | " + " | ".join(label for _, label in keys) + " |", "|---|" + "---|" * len(keys)]
        for name, t in section["targets"].items():
            cells = []
            for key, _ in keys:
                v = t[key]["value"]
                cells.append(("met" if t[key]["met"] else "**NOT met**") + (f" ({v:.2f})" if v is not None else ""))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


# ---------------------------------------------------------------------------------------------------------
# trainer overhead (item 3 of the issue)
# ---------------------------------------------------------------------------------------------------------
def trainer_overhead(out: Path, steps: int, estimators: list[str], seed: int = 1) -> dict:
    """Short CPU runs of the toy task; mean over steps 2.. of timing_s/adv, timing_s/ref and timing_s/step."""
    from erpo_verl.tools.demo import train_toy
    from erpo_verl.toy.assets import build_all

    assets = build_all(out / "assets", seed=0)
    result = {}
    for name in estimators:
        run = train_toy(name, out / name, assets, steps, seed, quiet=True)
        if run.returncode != 0 or not run.metrics:
            raise RuntimeError(f"trainer run of {name} failed (exit code {run.returncode}):\n{run.log_tail()}")
        result[name] = {**step_shares([run.metrics]), "run_seconds": run.seconds}
    return result


def step_shares(runs: list[list[dict]]) -> dict:
    """Mean over runs and steps 2.. (step 1 carries one-time costs) of timing_s/{step,adv,ref} and their shares."""
    records = [r for metrics in runs for r in (metrics[1:] or metrics)]
    mean = lambda key: statistics.mean(r.get(key, 0.0) for r in records)  # noqa: E731
    step, adv, ref = mean("timing_s/step"), mean("timing_s/adv"), mean("timing_s/ref")
    return {"steps": max(len(m) for m in runs), "runs": len(runs), "step_s": step, "adv_s": adv, "ref_s": ref,
            "adv_share": adv / step, "ref_share": ref / step, "adv_plus_ref_share": (adv + ref) / step,
            "old_log_prob_s": mean("timing_s/old_log_prob")}


def overhead_table(overhead: dict) -> str:
    lines = ["| estimator | step s | timing_s/adv s | adv share | timing_s/ref s | ref share | adv+ref share |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, r in overhead.items():
        lines.append(f"| {name} | {r['step_s']:.2f} | {r['adv_s']:.4f} | {100 * r['adv_share']:.2f}% | "
                     f"{r['ref_s']:.3f} | {100 * r['ref_share']:.1f}% | {100 * r['adv_plus_ref_share']:.1f}% |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------------------
def run_device(device: str, sizes_spec: dict, repeats: int, seed: int, memory: bool, memory_sizes,
               shared_memory_process: bool = False, names: tuple[str, ...] = CASES) -> dict:
    sizes, times, mem = {}, {}, {}
    if memory and device == "cpu":
        groups = [names] if shared_memory_process else [(case,) for case in names]
        jobs = [(size, cases) for size in memory_sizes for cases in groups]
        with ThreadPoolExecutor(max_workers=2) as pool:  # before the timings, which then run alone
            results = pool.map(lambda job: measure_memory(job[1], *sizes_spec[job[0]], seed), jobs)
            for (size, _), res in zip(jobs, results):
                mem.setdefault(size, {}).update(res)
    batches = {}
    for size, (bs, width) in sizes_spec.items():
        batches[size] = make_batch(bs, width, seed, device)
        sizes[size] = {"bs": bs, "width": width, "tokens": bs * width, "valid_frac": batches[size]["valid_frac"]}
        if memory and device.startswith("cuda") and size in memory_sizes:
            mem[size] = measure_cuda_memory(batches[size], names)
    load_before = os.getloadavg()
    times = time_cases(batches, repeats, device, names)
    load_after = os.getloadavg()
    del batches
    summary = summarize(sizes, times, mem)
    return {"device": device, "sizes": sizes, "load_before": load_before, "load_after": load_after,
            "memory_process": "shared" if shared_memory_process else "own", **summary}


def _memory_note(section: dict) -> str:
    rows = [row for row in section["cases"].values() if row["bytes_per_token"]]
    if not rows:
        return "memory not measured"
    if section["device"] != "cpu":
        return "peak memory from torch.cuda.max_memory_allocated"
    shared = section.get("memory_process") == "shared"
    return ("peak memory: all cases in one process (approximate)" if shared else
            "peak memory: one fresh process per case (VmHWM − VmRSS before the call; the 4 B/token output included)")


def render(report: dict) -> str:
    m = report["machine"]
    parts = [f"# Estimator microbenchmark ({m['date']})", "",
             f"Command: `{report['command']}`  ",
             f"Machine: {m['cpu']}, nproc {m['nproc']}, torch {m['torch']} ({m['torch_threads']} threads, the default), "
             f"Python {m['python']}" + (f", GPU {m['cuda']}" if m["cuda"] else ""), ""]
    for section in report["devices"]:
        sizes = section["sizes"]
        valid = ", ".join(f"{v['valid_frac']:.2f}" for v in sizes.values())
        parts += [f"## {section['device'].upper()}", "",
                  f"Load average (1/5/15 min) before the timings {tuple(round(x, 2) for x in section['load_before'])}, "
                  f"after {tuple(round(x, 2) for x in section['load_after'])}. Valid-token fraction {valid}; "
                  f"median of {report['repeats']} interleaved runs; Mtok/s, ratios and memory at "
                  f"{sizes[section['largest']]['bs']}×{sizes[section['largest']]['width']} padded tokens; "
                  f"{_memory_note(section)}.", "",
                  markdown_table(section, sizes), ""]
    if report.get("trainer_overhead"):
        o = report["trainer_overhead"]
        parts += ["## Trainer overhead (CPU end-to-end, toy task)", "",
                  f"Mean over steps 2–{o['steps']} of one run per estimator (seed {o['seed']}); the reference "
                  "forward pass (`timing_s/ref`) only runs for erpo/ep_grpo.", "", overhead_table(o["runs"]), ""]
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Time the estimators against verl's grpo and a memory-bandwidth floor.")
    parser.add_argument("--out", default="outputs/bench", help="output folder (default: %(default)s)")
    parser.add_argument("--tiny", action="store_true", help="tiny batches (seconds): the configuration of the tests")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case and size (default 7, tiny 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--memory-sizes", default=None,
                        help="comma-separated sizes (quarter,half,full) whose memory is measured (default: all; tiny: full)")
    parser.add_argument("--no-cuda", action="store_true", help="skip the GPU section even when CUDA is available")
    parser.add_argument("--cases", default=None,
                        help="comma-separated cases to run (default: all); their floors and verl's grpo are added")
    parser.add_argument("--trainer-overhead", action="store_true",
                        help="also train the toy task on the CPU and report timing_s/adv and timing_s/ref shares (minutes)")
    parser.add_argument("--overhead-steps", type=int, default=8)
    parser.add_argument("--overhead-estimators", default="grpo,erpo,ep_grpo")
    # internal: one memory measurement in this process
    parser.add_argument("--memory-case", help=argparse.SUPPRESS)  # comma-separated cases
    parser.add_argument("--bs", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--width", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.memory_case:
        cases = tuple(args.memory_case.split(","))
        unknown = [c for c in cases if c not in CASES]
        if unknown:
            parser.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
        print(json.dumps(measure_memory_here(cases, args.bs, args.width, args.seed)))
        return 0

    names = CASES
    if args.cases:
        wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = [c for c in wanted if c not in CASES]
        if unknown:
            parser.error(f"unknown case(s) {unknown} in --cases; choose from {', '.join(CASES)}")
        wanted += ["grpo"] + [FLOOR_OF[c] for c in wanted if c in FLOOR_OF]
        names = tuple(c for c in CASES if c in wanted)
    sizes_spec = TINY_SIZES if args.tiny else SIZES
    repeats = args.repeats or (5 if args.tiny else 7)
    if repeats < 1:
        parser.error("--repeats must be >= 1")
    memory_sizes = args.memory_sizes.split(",") if args.memory_sizes else (["full"] if args.tiny else list(sizes_spec))
    for size in memory_sizes:
        if size not in sizes_spec:
            parser.error(f"unknown size {size!r} in --memory-sizes; choose from {', '.join(sizes_spec)}")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)

    report = {"command": "python -m erpo_verl.tools.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine_info(), "repeats": repeats, "group_size": GROUP_SIZE,
              "lengths": {"median_fraction": MEDIAN_FRACTION, "sigma": LENGTH_SIGMA, "truncated": TRUNCATED},
              "mask_dtype": "int64", "targets": {k: list(v) if isinstance(v, tuple) else v for k, v in TARGETS.items()},
              "devices": []}
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and not args.no_cuda else [])
    for device in devices:
        report["devices"].append(run_device(device, sizes_spec, repeats, args.seed, not args.no_memory, memory_sizes,
                                            shared_memory_process=args.tiny, names=names))
    write_report(report, out)  # the microbenchmark first: the trainer runs take minutes
    if args.trainer_overhead:
        estimators = [e.strip() for e in args.overhead_estimators.split(",") if e.strip()]
        print(f"\ntraining the toy task for {args.overhead_steps} steps with {', '.join(estimators)} "
              f"(about a minute of start-up each) ...", flush=True)
        runs = trainer_overhead(out / "trainer_overhead", args.overhead_steps, estimators)
        report["trainer_overhead"] = {"steps": args.overhead_steps, "seed": 1, "runs": runs}
        write_report(report, out)
    print(render(report))
    print(f"\nwritten: {out / 'bench.json'}, {out / 'bench.md'}")
    return 0


def write_report(report: dict, out: Path) -> None:
    (out / "bench.json").write_text(json.dumps(report, indent=2))
    (out / "bench.md").write_text(render(report) + "\n")


if __name__ == "__main__":
    sys.exit(main())
