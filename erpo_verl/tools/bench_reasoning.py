"""``make bench-reasoning``: entropy methods side by side on a CPU-scale reasoning task, pass@1 and pass@16.

    python -m erpo_verl.tools.bench_reasoning --out outputs/bench_reasoning [--methods grpo,erpo,...]
                                              [--seeds 1,2,3] [--steps 30] [--tiny] [--plan]

1. writes the countdown task (erpo_verl.tasks.countdown) as verl parquet: a training split and a test split;
2. SFTs the tiny Qwen2 on generated solutions (cached under ``<out>/policy/sft-<hash>``) and measures the base
   policy's pass@1 / pass@16 on the test split with HF sampling;
3. trains every method x seed from that policy through ``verl.trainer.main_ppo`` on the CPU backend with the
   same shared settings (:data:`PROTOCOL`), validating on the test split with ``val_kwargs.n = 16`` samples per
   prompt every ``test_freq`` steps (verl's validation; generations dumped by ``trainer.validation_data_dir``);
   the step-0 validation is the same for every method of a seed (common random numbers), so a run copies it from
   a finished run of its seed when there is one (:func:`step0_donor`);
4. scores each validation dump: pass@1 = avg@16, unbiased pass@16 (erpo_verl.eval.metrics.pass_at_k), the area
   under the pass@1 curve; and reads entropy, response length and step time from verl's metrics;
5. writes ``<out>/results.md`` (mean ± SE over seeds per method, the seed-paired difference to GRPO with a 95%
   Student-t interval), ``results.json`` (every per-seed number and curve) and ``curves.png`` (pass@1, pass@16
   and entropy over steps, mean ± SE bands).

A finished run (``runs/<method>_seed<k>/done.json`` with the same protocol hash) is reused; a progress line with
an ETA follows every run. ``--tiny`` (one method, two steps, a few prompts) checks the whole path in ~2 minutes;
its numbers mean nothing. The protocol and its reading are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from erpo_verl.tools.metrics_io import load_metrics, series

# ---------------------------------------------------------------------------------------------- protocol


@dataclass(frozen=True)
class Protocol:
    """Settings shared by every method (docs/benchmarks.md, "Protocol"). Fixed before the first comparison."""

    steps: int = 30
    train_batch_size: int = 8  # prompts per step
    n: int = 8  # responses per prompt (group size)
    lr: float = 1e-4  # checked on GRPO only (held-out seed 4) before any comparison: 5e-4 degraded it
    max_prompt_length: int = 48  # the chat-rendered prompt is at most 40 tokens; never truncated
    max_response_length: int = 32
    temperature: float = 1.0  # training and validation sampling: T = 1, no top-k / top-p
    test_freq: int = 10  # validation every 10 steps (and before training): 0, 10, 20, 30
    val_n: int = 16  # k: samples per test prompt
    num_train: int = 800  # of the 989 (numbers, target) problems the default difficulty has; a run uses 240
    num_test: int = 64  # 32 in the pilot: too few (evaluation noise of the order of the effects)
    data_seed: int = 0
    sft_steps: int = 1500  # tuned (docs/benchmarks.md): 1000 gave base pass@1 0.048 on the 64 test prompts
    sft_batch_size: int = 32

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


PROTOCOL = Protocol()
TINY = Protocol(steps=2, train_batch_size=2, n=4, test_freq=2, val_n=4, num_train=100, num_test=4,
                sft_steps=10, sft_batch_size=8)

_NO_KL = ["algorithm.use_kl_in_reward=False", "actor_rollout_ref.actor.use_kl_loss=False",
          "actor_rollout_ref.actor.kl_loss_coef=0.0"]
# ERPO / EP-GRPO need the reference log-probs (implicit progress signal) but no KL term in the loss.
_REF_NO_KL = ["algorithm.use_kl_in_reward=False", "actor_rollout_ref.actor.use_kl_loss=True",
              "actor_rollout_ref.actor.kl_loss_coef=0.0"]
_PPO = ["actor_rollout_ref.actor.clip_ratio_low=0.2", "actor_rollout_ref.actor.clip_ratio_high=0.2",
        "actor_rollout_ref.actor.clip_ratio_c=3.0", "actor_rollout_ref.actor.loss_agg_mode=token-mean",
        "algorithm.norm_adv_by_std_in_grpo=True", "algorithm.filter_groups.enable=False",
        "reward.reward_manager.name=naive"]
# AER: recipes/run_aer_qwen7b.sh defaults (tau 0.4, alpha lr 1e-4, alpha max 1e-2)
_AER = ["actor_rollout_ref.actor.policy_loss.loss_mode=aer",
        "+actor_rollout_ref.actor.policy_loss.aer_target_ratio=0.4",
        "+actor_rollout_ref.actor.policy_loss.aer_alpha_lr=1e-4",
        "+actor_rollout_ref.actor.policy_loss.aer_alpha_max=1e-2"]


def _dapo(max_response_length: int) -> list[str]:
    """DAPO's four parts as in recipes/run_dapo_qwen7b.sh; the overlong window is a quarter of the length cap."""
    return ["algorithm.adv_estimator=dapo", "algorithm.norm_adv_by_std_in_grpo=True", "trainer.v1.trainer_mode=sync",
            *_NO_KL, "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla",
            "actor_rollout_ref.actor.clip_ratio_low=0.2", "actor_rollout_ref.actor.clip_ratio_high=0.28",
            "actor_rollout_ref.actor.clip_ratio_c=10.0", "actor_rollout_ref.actor.loss_agg_mode=token-mean",
            "algorithm.filter_groups.enable=True", "algorithm.filter_groups.metric=acc",
            "algorithm.filter_groups.max_inflight_gen_batches=3",
            "reward.reward_manager.name=dapo", "+reward.reward_kwargs.overlong_buffer_cfg.enable=True",
            f"+reward.reward_kwargs.overlong_buffer_cfg.len={max(1, max_response_length // 4)}",
            "+reward.reward_kwargs.overlong_buffer_cfg.penalty_factor=0.5",
            "+reward.reward_kwargs.overlong_buffer_cfg.log=True",
            f"+reward.reward_kwargs.max_resp_len={max_response_length}"]


def method_overrides(name: str, protocol: Protocol = PROTOCOL) -> list[str]:
    """verl overrides that switch ``name`` on (the ALGO blocks of recipes/run_*_qwen7b.sh)."""
    methods = {
        "grpo": ["algorithm.adv_estimator=grpo", "trainer.v1.trainer_mode=sync", *_NO_KL,
                 "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla", *_PPO],
        "dapo": _dapo(protocol.max_response_length),
        "erpo": ["algorithm.adv_estimator=erpo", "trainer.v1.trainer_mode=erpo_sync", *_REF_NO_KL,
                 "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla", *_PPO],
        "ep_grpo": ["algorithm.adv_estimator=ep_grpo", "trainer.v1.trainer_mode=erpo_sync", *_REF_NO_KL,
                    "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla", *_PPO],
        # GRPO with the 80/20 forking-token mask (rho = 0.2, the estimator's default)
        "grpo_forking": ["algorithm.adv_estimator=grpo_forking", "trainer.v1.trainer_mode=erpo_sync", *_NO_KL,
                         "actor_rollout_ref.actor.policy_loss.loss_mode=vanilla", *_PPO],
        # verl's own losses, Entropy-Mechanism 7B script values (recipes/run_{clip,kl}_cov_qwen7b.sh)
        "clip_cov": ["algorithm.adv_estimator=grpo", "trainer.v1.trainer_mode=sync", *_NO_KL,
                     "actor_rollout_ref.actor.policy_loss.loss_mode=clip_cov",
                     "actor_rollout_ref.actor.policy_loss.clip_cov_ratio=0.0002",
                     "actor_rollout_ref.actor.policy_loss.clip_cov_lb=1.0",
                     "actor_rollout_ref.actor.policy_loss.clip_cov_ub=5.0", *_PPO],
        "kl_cov": ["algorithm.adv_estimator=grpo", "trainer.v1.trainer_mode=sync", *_NO_KL,
                   "actor_rollout_ref.actor.policy_loss.loss_mode=kl_cov",
                   "actor_rollout_ref.actor.policy_loss.kl_cov_ratio=0.002",
                   "actor_rollout_ref.actor.policy_loss.ppo_kl_coef=1.0", *_PPO],
        "aer_grpo": ["algorithm.adv_estimator=grpo", "trainer.v1.trainer_mode=erpo_sync", *_NO_KL, *_AER, *_PPO],
        "aer_erpo": ["algorithm.adv_estimator=erpo", "trainer.v1.trainer_mode=erpo_sync", *_REF_NO_KL, *_AER, *_PPO],
    }
    if name not in methods:
        raise SystemExit(f"unknown method {name!r}; choose from {', '.join(methods)}")
    return methods[name]


METHODS = ["grpo", "dapo", "erpo", "ep_grpo", "grpo_forking", "clip_cov", "kl_cov", "aer_grpo", "aer_erpo"]
ENTROPY, LENGTH, STEP_TIME = "actor/entropy", "response_length/mean", "timing_s/step"

# two-sided 95% points of Student's t (no scipy in the environment); df > 30 uses 1.96
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 25: 2.060, 30: 2.042}


def t95(df: int) -> float:
    if df < 1:
        return float("nan")
    if df in _T95:
        return _T95[df]
    return next((_T95[d] for d in sorted(_T95) if d >= df), 1.96)


# ---------------------------------------------------------------------------------------------- assets


def prepare(out: Path, protocol: Protocol, log=print) -> dict:
    """Task data and the SFT policy (both cached), and the base policy's sampled pass@1 / pass@k."""
    from erpo_verl.tasks import countdown
    from erpo_verl.tasks.countdown_policy import SFTConfig, build_policy, sample_pass_at_k

    task = countdown.CountdownConfig()
    data_dir = out / "data" / f"countdown-{protocol.data_seed}-{protocol.num_train}-{protocol.num_test}"
    written = countdown.write_parquet(data_dir, protocol.num_train, protocol.num_test, protocol.data_seed, task)
    stats = written["stats"]
    log(f"countdown data: {protocol.num_train} train / {protocol.num_test} test prompts in {data_dir}; distinct "
        f"solutions per prompt mean {stats['train']['distinct_solutions_mean']:.2f} (min "
        f"{stats['train']['distinct_solutions_min']}), response strings per prompt mean "
        f"{stats['train']['response_strings_mean']:.1f}")
    sft = SFTConfig(steps=protocol.sft_steps, batch_size=protocol.sft_batch_size)
    policy, info = build_policy(out / "policy", written["splits"]["train"], task, sft, protocol.data_seed, log=log)
    longest = _longest_prompt(policy, written["splits"])
    if longest > protocol.max_prompt_length:  # verl's rollout would left-truncate the prompt silently
        raise SystemExit(f"the longest rendered prompt has {longest} tokens > max_prompt_length "
                         f"{protocol.max_prompt_length}; raise Protocol.max_prompt_length")
    base_file = policy / f"base_eval_k{protocol.val_n}_n{protocol.num_test}.json"
    if base_file.exists():
        base = json.loads(base_file.read_text())
    else:
        base = sample_pass_at_k(policy, written["splits"]["test"], k=protocol.val_n,
                                max_new_tokens=protocol.max_response_length)
        base_file.write_text(json.dumps(base))
    log(f"base policy (HF sampling, T=1): pass@1 {base['pass@1']:.3f}, pass@{protocol.val_n} "
        f"{base[f'pass@{protocol.val_n}']:.3f} on {base['prompts']} test prompts; SFT took {info['seconds']:.0f}s")
    return {"model": policy, "train": written["paths"]["train"], "test": written["paths"]["test"],
            "task": asdict(task), "task_stats": stats, "sft": info, "base": base}


def _longest_prompt(policy: Path, splits: dict) -> int:
    from transformers import AutoTokenizer

    from erpo_verl.tasks.countdown_policy import chat_prompt

    tokenizer = AutoTokenizer.from_pretrained(str(policy))
    return max(len(tokenizer.encode(chat_prompt(tokenizer, numbers, target), add_special_tokens=False))
               for rows in splits.values() for numbers, target, _ in rows)


# ---------------------------------------------------------------------------------------------- runs


def run_dir(out: Path, method: str, seed: int) -> Path:
    return out / "runs" / f"{method}_seed{seed}"


def run_overrides(assets: dict, method: str, seed: int, protocol: Protocol, folder: Path,
                  validate_before_training: bool = True) -> list[str]:
    from erpo_verl.integration.cpu.profile import cpu_overrides

    overrides = cpu_overrides(str(assets["model"]), str(assets["train"]), str(assets["test"]),
                              steps=protocol.steps, train_batch_size=protocol.train_batch_size, n=protocol.n,
                              max_prompt_length=protocol.max_prompt_length,
                              max_response_length=protocol.max_response_length, lr=protocol.lr, seed=seed,
                              output_dir=str(folder), reward_path="pkg://erpo_verl.tasks.countdown")
    overrides += method_overrides(method, protocol)
    overrides += [
        # the same scores as compute_score without its diagnostic keys, which verl's validation bootstraps (slow)
        "reward.custom_reward_function.name=score_and_acc",
        f"actor_rollout_ref.rollout.temperature={protocol.temperature}",
        # common random numbers: the CPU rollout draws each response from a stream keyed by (seed, step, prompt,
        # sample index), so two methods on the same seed see the same random numbers at every step; their step-0
        # validations are identical and their paired differences carry far less sampling noise
        "actor_rollout_ref.rollout.full_determinism=True",
        # validation: the test split, k samples per prompt, the training sampler (T = 1, no top-k / top-p)
        # False only when the seed's step-0 validation is taken from another method's run (run_once)
        f"trainer.val_before_train={validate_before_training}",
        f"trainer.test_freq={protocol.test_freq}",
        f"trainer.validation_data_dir={folder / 'validation'}",
        f"actor_rollout_ref.rollout.val_kwargs.n={protocol.val_n}",
        "actor_rollout_ref.rollout.val_kwargs.do_sample=True",
        f"actor_rollout_ref.rollout.val_kwargs.temperature={protocol.temperature}",
        "actor_rollout_ref.rollout.val_kwargs.top_p=1.0",
        "actor_rollout_ref.rollout.val_kwargs.top_k=0",
        f"trainer.experiment_name={method}_seed{seed}",
        "trainer.project_name=bench_reasoning",
    ]
    return overrides


def validation_curve(folder: Path, k: int) -> list[dict]:
    """pass@1 (avg@k) and unbiased pass@k of every validation dump ``<step>.jsonl`` in ``folder``."""
    from erpo_verl.eval.metrics import pass_at_k

    points = []
    for path in sorted(folder.glob("*.jsonl"), key=lambda p: int(p.stem)):
        groups: dict[str, list[bool]] = {}
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                # the reward's own verdict; the score alone can carry DAPO's overlong penalty
                correct = bool(row["acc"]) if "acc" in row else float(row["score"]) > 0
                groups.setdefault(row["input"], []).append(correct)
        sizes = {len(v) for v in groups.values()}
        if sizes != {k}:
            raise ValueError(f"{path}: expected {k} samples per prompt, got sizes {sorted(sizes)}")
        points.append({
            "step": int(path.stem),
            "pass@1": statistics.fmean(sum(v) / k for v in groups.values()),
            f"pass@{k}": statistics.fmean(pass_at_k(k, sum(v), k) for v in groups.values()),
            "prompts": len(groups),
        })
    return points


def auc(points: list[dict], key: str) -> float:
    """Trapezoid area under ``key`` over steps, divided by the step span (a mean level over training)."""
    if len(points) < 2:
        return points[0][key] if points else float("nan")
    area = sum((b["step"] - a["step"]) * (a[key] + b[key]) / 2 for a, b in zip(points[:-1], points[1:]))
    return area / (points[-1]["step"] - points[0]["step"])


def run_summary(records: list[dict], curve: list[dict], k: int, window: int = 5) -> dict:
    _, entropy = series(records, ENTROPY)
    _, length = series(records, LENGTH)
    _, step_time = series(records, STEP_TIME)  # verl times validation apart (timing_s/testing)
    _, val_time = series(records, "timing_s/testing")
    w = max(1, min(window, len(entropy)))
    return {
        "final_pass@1": curve[-1]["pass@1"],
        f"final_pass@{k}": curve[-1][f"pass@{k}"],
        "auc_pass@1": auc(curve, "pass@1"),
        "base_pass@1": curve[0]["pass@1"],
        "entropy_final": statistics.fmean(entropy[-w:]) if entropy else float("nan"),
        "entropy_first": statistics.fmean(entropy[:w]) if entropy else float("nan"),
        "response_length": statistics.fmean(length) if length else float("nan"),
        # step 1 carries start-up costs (first compile, warm caches): left out of the step time
        "step_seconds": statistics.fmean(step_time[1:] or step_time) if step_time else float("nan"),
        "validation_seconds": statistics.fmean(val_time) if val_time else float("nan"),
    }


def step0_donor(out: Path, wanted: dict) -> Path | None:
    """A finished run of another method on the same seed, protocol and SFT policy whose step-0 validation dump
    this run can take instead of validating the same policy again.

    Under common random numbers the step-0 validation depends only on the policy, the test split and the seed,
    not on the method: the nine seed-1 runs, each validating on its own, dumped the same 1,024 (prompt, response,
    verdict) triples. Copying it saves one validation per run (~1 min on 2 cores, more when two runs share them).
    """
    for done in sorted((out / "runs").glob(f"*_seed{wanted['seed']}/done.json")):
        if done.parent.name == f"{wanted['method']}_seed{wanted['seed']}":
            continue
        try:
            other = json.loads(done.read_text())["wanted"]
        except (OSError, ValueError, KeyError):
            continue
        same = all(other.get(key) == wanted[key] for key in ("protocol", "sft", "seed"))
        if same and (done.parent / "validation" / "0.jsonl").is_file():
            return done.parent
    return None


def run_once(out: Path, assets: dict, method: str, seed: int, protocol: Protocol, log=print) -> dict:
    """Train (or reuse) one method x seed; returns ``{"records", "curve", "summary", "seconds", "reused"}``."""
    import shutil

    from erpo_verl.integration.cpu.launch import run_verl_cpu

    folder = run_dir(out, method, seed)
    done = folder / "done.json"
    wanted = {"protocol": protocol.key(), "sft": assets["sft"]["key"], "method": method, "seed": seed,
              "overrides": method_overrides(method, protocol)}
    if done.exists():
        record = json.loads(done.read_text())
        if record.get("wanted") == wanted:
            records = load_metrics(folder / "metrics.jsonl")
            curve = validation_curve(folder / "validation", protocol.val_n)
            return {"records": records, "curve": curve, "summary": run_summary(records, curve, protocol.val_n),
                    "seconds": record["seconds"], "reused": True, "step0_from": record.get("step0_from")}
    if folder.exists():  # unfinished, or another protocol: start over
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    donor = step0_donor(out, wanted)
    run = run_verl_cpu(run_overrides(assets, method, seed, protocol, folder, validate_before_training=donor is None),
                       folder, timeout=max(900, 60 * protocol.steps))
    if run.returncode != 0 or len(run.metrics) < protocol.steps:
        raise RuntimeError(f"{method} seed {seed} failed (exit code {run.returncode}, {len(run.metrics)} of "
                           f"{protocol.steps} steps); last lines of {run.log_path}:\n{run.log_tail()}")
    if donor is not None:
        shutil.copyfile(donor / "validation" / "0.jsonl", folder / "validation" / "0.jsonl")
    curve = validation_curve(folder / "validation", protocol.val_n)
    expected = sorted({0, protocol.steps, *range(protocol.test_freq, protocol.steps + 1, protocol.test_freq)})
    if [p["step"] for p in curve] != expected:
        raise RuntimeError(f"{method} seed {seed}: validations at steps {[p['step'] for p in curve]}, "
                           f"expected {expected} (see {folder / 'validation'})")
    step0_from = donor.name if donor is not None else None
    done.write_text(json.dumps({"wanted": wanted, "seconds": run.seconds, "step0_from": step0_from}))
    return {"records": run.metrics, "curve": curve, "summary": run_summary(run.metrics, curve, protocol.val_n),
            "seconds": run.seconds, "reused": False, "step0_from": step0_from}


# ---------------------------------------------------------------------------------------------- statistics


def mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return mean, se


def paired_difference(method: dict[int, float], baseline: dict[int, float]) -> dict:
    """mean(method - baseline) over the seeds both ran (same data order and sampling seed), 95% t interval."""
    seeds = sorted(set(method) & set(baseline))
    diffs = [method[s] - baseline[s] for s in seeds]
    if not diffs:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "seeds": 0}
    mean, se = mean_se(diffs)
    half = t95(len(diffs) - 1) * se if len(diffs) > 1 else float("nan")
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "seeds": len(diffs)}


def summarize(results: dict[str, dict[int, dict]], k: int, baseline: str = "grpo") -> dict:
    keys = ["final_pass@1", f"final_pass@{k}", "auc_pass@1", "entropy_final", "response_length", "step_seconds"]
    table = {}
    for method, per_seed in results.items():
        row = {"seeds": sorted(per_seed)}
        for key in keys:
            values = [per_seed[s]["summary"][key] for s in sorted(per_seed)]
            row[key] = dict(zip(("mean", "se"), mean_se(values)), values=values)
        if baseline in results and method != baseline:
            row["vs_" + baseline] = {
                key: paired_difference({s: r["summary"][key] for s, r in per_seed.items()},
                                       {s: r["summary"][key] for s, r in results[baseline].items()})
                for key in keys[:3]}
        table[method] = row
    return table


def reading(table: dict, k: int, baseline: str = "grpo") -> list[str]:
    """One sentence per method and endpoint: better / worse than the baseline, or not distinguishable."""
    lines = []
    for method, row in table.items():
        diffs = row.get("vs_" + baseline)
        if not diffs:
            continue
        parts = []
        for key, label in (("final_pass@1", "pass@1"), (f"final_pass@{k}", f"pass@{k}"), ("auc_pass@1", "AUC")):
            d = diffs[key]
            if d["seeds"] < 2 or math.isnan(d["lo"]):
                parts.append(f"{label} {d['mean']:+.3f} (one seed: no interval)")
            elif d["lo"] > 0:
                parts.append(f"{label} {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] better")
            elif d["hi"] < 0:
                parts.append(f"{label} {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] worse")
            else:
                parts.append(f"{label} {d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] not distinguishable")
        lines.append(f"- {method} vs {baseline}: " + "; ".join(parts))
    return lines


def markdown_table(table: dict, k: int, baseline: str = "grpo") -> str:
    def cell(entry, fmt=".3f"):
        se = "" if math.isnan(entry["se"]) else f" ± {entry['se']:{fmt}}"
        return f"{entry['mean']:{fmt}}{se}"

    def diff(row, key):
        d = row.get("vs_" + baseline, {}).get(key)
        if d is None:
            return "–"
        if d["seeds"] < 2 or math.isnan(d["lo"]):
            return f"{d['mean']:+.3f}"
        return f"{d['mean']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]"

    lines = [f"| method | seeds | final pass@1 | final pass@{k} | AUC pass@1 | Δ pass@1 vs {baseline} (95% CI) | "
             f"Δ pass@{k} vs {baseline} | Δ AUC vs {baseline} | final entropy | response length | step time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for method, row in table.items():
        lines.append(f"| {method} | {len(row['seeds'])} | {cell(row['final_pass@1'])} | {cell(row[f'final_pass@{k}'])} "
                     f"| {cell(row['auc_pass@1'])} | {diff(row, 'final_pass@1')} | {diff(row, f'final_pass@{k}')} "
                     f"| {diff(row, 'auc_pass@1')} | {cell(row['entropy_final'])} | {cell(row['response_length'], '.1f')} "
                     f"| {cell(row['step_seconds'], '.1f')} |")
    return "\n".join(lines)


def seed_curve(per_seed: dict[int, dict], key: str) -> tuple[list[int], list[float], list[float]]:
    """Steps every seed has, the mean over seeds and its standard error (0 for one seed), for ``key``:
    a validation endpoint (``pass@1``, ``pass@k``) or a training metric (``actor/entropy``)."""
    by_step: dict[int, list[float]] = {}
    for run in per_seed.values():
        pairs = ([(p["step"], p[key]) for p in run["curve"]] if key.startswith("pass@")
                 else list(zip(*series(run["records"], key))))
        for step, value in pairs:
            by_step.setdefault(int(step), []).append(value)
    xs = [s for s in sorted(by_step) if len(by_step[s]) == len(per_seed)]
    stats = [mean_se(by_step[s]) for s in xs]
    return xs, [m for m, _ in stats], [0.0 if math.isnan(se) else se for _, se in stats]


def plot(results: dict[str, dict[int, dict]], k: int, out_png: Path, title: str) -> Path:
    """pass@1, pass@k and training entropy over steps: mean ± SE over seeds."""
    from erpo_verl.tools.plotting import plot_bands

    panels = [("pass@1", f"test pass@1 (avg@{k})"), (f"pass@{k}", f"test pass@{k} (unbiased)"),
              (ENTROPY, "training entropy (actor/entropy)")]
    return plot_bands([(label, {f"{m} (n={len(per_seed)})": seed_curve(per_seed, key)
                                for m, per_seed in results.items()}) for key, label in panels],
                      out_png, title)


# ---------------------------------------------------------------------------------------------- main


def _fmt_duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def _progress(log, index, runs, method, seed, result, protocol, started, eta) -> None:
    s = result["summary"]
    shared = f", step-0 validation from {result['step0_from']}" if result.get("step0_from") else ""
    log(f"[{index}/{len(runs)}] {method} seed {seed}: {'reused' if result['reused'] else 'trained'}{shared} "
        f"({result['seconds']:.0f}s, {s['step_seconds']:.1f}s/step, {s['validation_seconds']:.0f}s/validation)  "
        f"final pass@1 {s['final_pass@1']:.3f}  pass@{protocol.val_n} {s[f'final_pass@{protocol.val_n}']:.3f}  "
        f"AUC {s['auc_pass@1']:.3f}  entropy {s['entropy_final']:.3f}  | elapsed "
        f"{_fmt_duration(time.time() - started)}, ETA {'–' if math.isnan(eta) else _fmt_duration(eta)}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Entropy methods on a CPU-scale reasoning task (countdown), "
                                                 "through verl: pass@1 and pass@16 over seeds.")
    parser.add_argument("--out", default="outputs/bench_reasoning", help="output folder (default: %(default)s)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all nine)")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default: %(default)s)")
    parser.add_argument("--steps", type=int, help=f"training steps per run (default: {PROTOCOL.steps})")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke mode: grpo only, 2 steps, 4 test prompts, a 10-step SFT (numbers mean nothing)")
    parser.add_argument("--plan", action="store_true", help="print the runs and the overrides, run nothing")
    parser.add_argument("--jobs", type=int, default=2,
                        help="runs trained at once (default 2: each run is single-threaded, OMP_NUM_THREADS=1)")
    parser.add_argument("--allow-fewer-seeds", action="store_true",
                        help="accept fewer than 3 seeds (a pilot; the report says so)")
    args = parser.parse_args(argv)

    protocol = TINY if args.tiny else PROTOCOL
    if args.steps is not None:
        if args.steps < 1:
            parser.error("--steps must be >= 1")
        protocol = replace(protocol, steps=args.steps)
    methods = ["grpo"] if args.tiny else [m.strip() for m in args.methods.split(",") if m.strip()]
    for name in methods:
        method_overrides(name, protocol)  # exits with the valid names
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if args.tiny:
        seeds = seeds[:1]
    elif len(set(seeds)) < 3 and not args.allow_fewer_seeds:
        parser.error("the protocol needs at least 3 distinct seeds (--seeds 1,2,3); --allow-fewer-seeds for a pilot")
    pilot = args.tiny or len(set(seeds)) < 3 or args.steps is not None

    out = Path(args.out).resolve()
    runs = [(m, s) for s in seeds for m in methods]  # seed-major: an interrupted benchmark has every method on seed 1
    if args.plan:
        print(f"protocol {protocol.key()}: {json.dumps(asdict(protocol))}")
        for method, seed in runs:
            print(f"{method} seed {seed}: " + " ".join(method_overrides(method, protocol)))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    started = time.time()
    log(f"bench-reasoning: {len(methods)} methods x {len(seeds)} seeds = {len(runs)} runs of {protocol.steps} steps "
        f"(protocol {protocol.key()}) in {out}")
    assets = prepare(out, protocol, log=log)

    if args.jobs < 1:
        parser.error("--jobs must be >= 1")
    from concurrent.futures import ThreadPoolExecutor, as_completed

    results: dict[str, dict[int, dict]] = {m: {} for m in methods}
    trained = []

    def finished(index, method, seed, result):
        results[method][seed] = result
        if not result["reused"]:
            trained.append(result["seconds"])
        eta = statistics.fmean(trained) * (len(runs) - index) / args.jobs if trained else float("nan")
        _progress(log, index, runs, method, seed, result, protocol, started, eta)

    if args.jobs == 1:
        for index, (method, seed) in enumerate(runs, 1):
            finished(index, method, seed, run_once(out, assets, method, seed, protocol, log))
    else:
        pool = ThreadPoolExecutor(max_workers=args.jobs)  # each run is its own verl process tree
        try:
            futures = {pool.submit(run_once, out, assets, m, s, protocol, log): (m, s) for m, s in runs}
            for index, future in enumerate(as_completed(futures), 1):
                finished(index, *futures[future], future.result())
        finally:
            # Ctrl-C or a failed run: start nothing new (the terminal's SIGINT also stops the running verl drivers)
            pool.shutdown(wait=True, cancel_futures=True)
    results = {m: dict(sorted(results[m].items())) for m in methods}

    k = protocol.val_n
    table = summarize(results, k)
    command = "python -m erpo_verl.tools.bench_reasoning " + " ".join(argv if argv is not None else sys.argv[1:])
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    png = plot(results, k, out / "curves.png",
               f"countdown on CPU through verl: mean ± SE over seeds {','.join(map(str, seeds))}"
               + ("  [PILOT / SMOKE RUN]" if pilot else ""))
    base = assets["base"]
    text = "\n".join([
        f"# Reasoning benchmark: countdown ({date})" + ("  — PILOT, not the protocol's result" if pilot else ""), "",
        f"Command: `{command}`  ",
        f"Protocol {protocol.key()}: `{json.dumps(asdict(protocol))}`  ",
        f"Base policy (SFT {assets['sft']['key']}, {assets['sft']['seconds']:.0f}s): pass@1 {base['pass@1']:.3f}, "
        f"pass@{k} {base[f'pass@{k}']:.3f} (HF sampling on {base['prompts']} test prompts)  ",
        f"Training time of the runs made by this command: {sum(trained) / 60:.1f} min; this command: "
        f"{(time.time() - started) / 60:.1f} min", "",
        "Mean ± SE over seeds; Δ is the seed-paired difference to GRPO with a 95% Student-t interval.", "",
        markdown_table(table, k), "", *reading(table, k), "", f"Curves: {png.name}", ""])
    (out / "results.md").write_text(text)
    (out / "results.json").write_text(json.dumps({
        "command": command, "date": date, "pilot": pilot, "protocol": asdict(protocol),
        "protocol_key": protocol.key(), "task": assets["task"], "task_stats": assets["task_stats"],
        "sft": assets["sft"], "base": {k_: v for k_, v in base.items() if k_ != "correct_per_prompt"},
        "methods": {m: method_overrides(m, protocol) for m in methods}, "table": table,
        "runs": {m: {str(s): {"summary": r["summary"], "curve": r["curve"], "seconds": r["seconds"],
                              "step0_from": r.get("step0_from"),
                              "entropy": list(zip(*series(r["records"], ENTROPY))),
                              "response_length": list(zip(*series(r["records"], LENGTH))),
                              "step_time": list(zip(*series(r["records"], STEP_TIME)))}
                     for s, r in per_seed.items()} for m, per_seed in results.items()},
    }, indent=1))
    log("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
