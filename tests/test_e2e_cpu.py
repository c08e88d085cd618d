"""End-to-end runs of verl's real trainer entry point (``python -m verl.trainer.main_ppo``) on the CPU.

Each run starts Ray, TransferQueue, an FSDP2 actor over gloo, the CPU rollout server and (for ERPO/EP-GRPO)
the reference model, exactly as on a GPU node, with the tiny model and the toy task (~1 minute a run).
"""

import math

import pytest
from erpo_testlib import DAPO_TOY_OVERRIDES

from erpo_verl.tools.demo import train_toy
from erpo_verl.tools.metrics_io import series

pytestmark = pytest.mark.slow

ERPO_METRICS = [
    "erpo/gate_mean",
    "erpo/gate_std",
    "erpo/gate_max",
    "erpo/pivot_frac",
    "erpo/zero_var_group_frac",
    "erpo/progress_abs_mean",
    "erpo/adv_mean",
    "erpo/adv_std",
    "erpo/sign_flip_frac",
]

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


@pytest.mark.parametrize("estimator", ["erpo", "ep_grpo"])
def test_entropy_aware_estimators_run_with_the_reference_policy_and_log_erpo_metrics(tmp_path, estimator):
    run = _run(tmp_path, estimator)
    _assert_healthy(run, 2)
    for record in run.metrics:
        missing = [k for k in ERPO_METRICS if k not in record]
        assert not missing, f"step {record['step']} lacks {missing}"
        assert record["erpo/gate_std"] > 0  # the gate really saw varying entropy
        assert "timing_s/ref" in record and "actor/kl_loss" in record  # the reference policy ran
        assert record["actor/kl_coef"] == 0.0  # ... with no KL term in the loss
    # at step 2 the policy has moved away from the reference: the implicit progress term is active
    assert run.metrics[-1]["erpo/progress_abs_mean"] > 0
    # erpo_sync takes verl's *sync* code paths (not the async replay buffer / gen_batch_size=1), like grpo
    assert "gen_batch_size defaulted to 1" not in run.log_path.read_text()


AER = [
    "actor_rollout_ref.actor.policy_loss.loss_mode=aer",
    "+actor_rollout_ref.actor.policy_loss.aer_alpha_init=0.005",
    "+actor_rollout_ref.actor.policy_loss.aer_alpha_lr=0.001",
    "+actor_rollout_ref.actor.policy_loss.aer_target_ratio=0.99",
]


def test_erpo_with_aer_checkpoints_and_resumes_from_the_saved_step_with_its_controller_state(tmp_path):
    first = _run(tmp_path / "a", "erpo", steps=2, extra=["trainer.save_freq=2", *AER])
    _assert_healthy(first, 2)
    ckpt = first.out_dir / "checkpoints"
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    assert (ckpt / "global_step_2" / "actor").is_dir()
    assert (ckpt / "global_step_2" / "erpo_aer_state.json").exists()
    # AER really ran: its entropy bonus entered the loss with the coefficient of each step
    for record in first.metrics:
        assert record["aer/alpha"] > 0 and record["actor/aer_entropy_bonus"] > 0
        assert record["actor/aer_entropy_bonus"] == pytest.approx(record["aer/alpha"] * record["actor/entropy_loss"], rel=0.05)

    second = _run(tmp_path / "b", "erpo", steps=4, extra=[f"trainer.default_local_dir={ckpt}", "trainer.resume_mode=auto", *AER])
    assert [int(r["step"]) for r in second.metrics] == [3, 4]  # resumed at step 3, not from 0
    # the controller continued from the saved state: same anchor entropy, alpha picks up where it stopped
    assert second.metrics[0]["aer/initial_entropy"] == pytest.approx(first.metrics[0]["aer/initial_entropy"])
    assert second.metrics[0]["aer/alpha"] == pytest.approx(first.metrics[-1]["aer/alpha_next"])


@pytest.mark.parametrize("estimator", ["grpo", "erpo"])
def test_estimator_raises_the_training_reward_on_the_toy_task(tmp_path, estimator):
    run = _run(tmp_path, estimator, steps=LEARNING_STEPS)
    _assert_healthy(run, LEARNING_STEPS)
    _, rewards = series(run.metrics, "critic/score/mean")
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last - first > LEARNING_MARGIN, f"{estimator}: reward {first:.3f} -> {last:.3f} ({rewards})"
