"""End-to-end runs of verl's real trainer entry point (``python -m verl.trainer.main_ppo``) on the CPU.

Each run starts Ray, TransferQueue, an FSDP2 actor over gloo, the CPU rollout server and (for ERPO/EP-GRPO)
the reference model, exactly as on a GPU node, with the tiny model and the toy task (~1 minute a run).

ERPO's and EP-GRPO's runs with the reference policy and the ``erpo/`` metrics, and AER's checkpoint and resume,
ride on the cluster-layout runs of tests/test_cpu_layouts.py (one run asserts several behaviours there; the
map of every end-to-end run and what it asserts is docs/testing.md); the checks they make are
``assert_entropy_aware_run`` and ``assert_aer_entered_the_loss`` in erpo_testlib.
"""

import math

import pytest
from erpo_testlib import DAPO_TOY_OVERRIDES

from erpo_verl.tools.demo import train_toy
from erpo_verl.tools.metrics_io import series

pytestmark = pytest.mark.slow


# Learning test: measured on the 2-core CI machine kind (see docs/cpu.md for the curves).
LEARNING_STEPS = 12
LEARNING_MARGIN = 0.08  # last-3 minus first-3 mean reward; measured +0.18 (GRPO) and +0.18 (ERPO), seed 1


def _run(tmp_path, estimator, steps=2, extra=(), **settings):
    run = train_toy(estimator, tmp_path / estimator, _run.assets, steps, seed=1, extra=list(extra), quiet=True, **settings)
    assert run.returncode == 0, f"{estimator} run failed:\n{run.log_tail(60)}"
    return run


@pytest.fixture(autouse=True)
def _assets(toy_assets):
    _run.assets = toy_assets


def _assert_healthy(run, steps):
    assert [int(r["step"]) for r in run.metrics] == list(range(1, steps + 1))
    _, grad_norms = series(run.metrics, "actor/grad_norm")
    assert len(grad_norms) == steps
    assert all(math.isfinite(g) and g > 0 for g in grad_norms), grad_norms


def test_dapo_runs_with_dynamic_sampling_clip_higher_token_mean_and_overlong_buffer(tmp_path):
    run = _run(
        tmp_path,
        "dapo",
        extra=DAPO_TOY_OVERRIDES,
    )
    _assert_healthy(run, 2)
    log = run.log_path.read_text()
    assert "'clip_ratio_high': 0.28" in log and "'name': 'dapo'" in log
    # the overlong buffer lowers rewards below the raw digits score of long responses
    assert any(r["critic/rewards/min"] < 0 for r in run.metrics), "overlong penalty never applied"
    # dynamic sampling evicted zero-variance groups and still filled each step's batch
    assert sum(r.get("training/filter_groups/evicted_samples", 0) for r in run.metrics) > 0


@pytest.mark.parametrize("estimator", ["grpo", "erpo"])
def test_estimator_raises_the_training_reward_on_the_toy_task(tmp_path, estimator):
    run = _run(tmp_path, estimator, steps=LEARNING_STEPS)
    _assert_healthy(run, LEARNING_STEPS)
    _, rewards = series(run.metrics, "critic/score/mean")
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last - first > LEARNING_MARGIN, f"{estimator}: reward {first:.3f} -> {last:.3f} ({rewards})"
