"""ERPO, EP-GRPO and AER in verl's asynchronous v1 modes, end to end on CPU through the real trainer (issue 20).

Four runs (docs/testing.md lists them with their cost):

* ``colocate`` — ``erpo_colocate_async`` + AER, 3 steps, checkpoint at step 3, started as the CPU launcher's
  Python API does; ``colocate_resumed`` continues it from the checkpoint for step 4;
* ``separate`` — ``TRAINER_MODE=separate_async PROFILE=cpu-tiny bash recipes/run_ep_grpo_qwen7b.sh``
  with AER: rollout on a device of its own (a standalone replica fed by the ``cpu_gloo`` checkpoint engine),
  two mini-batches per step, checkpoint at step 3; ``separate_resumed`` continues it with the same command.

Each asserts from the estimators' and AER's own diagnostics (not from log text) that they received their inputs,
that the staleness metrics ``erpo/old_policy/*`` are logged, and that nothing of the run is left behind.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from erpo_testlib import AER_RUN_OVERRIDES, assert_aer_entered_the_loss, assert_entropy_aware_run
from erpo_verl.tools.metrics_io import load_metrics

REPO = Path(__file__).resolve().parents[1]
AER = AER_RUN_OVERRIDES
# separate_async steps AER's controller once per mini-batch (2 per step): a smaller step keeps alpha > 0 for 4 steps
SEPARATE_ALPHA_LR = 0.0005
SEPARATE_AER = [*AER[:2], f"+actor_rollout_ref.actor.policy_loss.aer_alpha_lr={SEPARATE_ALPHA_LR}", AER[3]]
STALENESS = ["erpo/old_policy/lag_mean", "erpo/old_policy/lag_max", "erpo/old_policy/stale_fraction",
             "erpo/old_policy/local_updates", "erpo/old_policy/samples"]


class _Run:
    def __init__(self, metrics, log_text):
        self.metrics = metrics
        self._log = log_text

    @property
    def log_path(self):  # what assert_entropy_aware_run reads
        return self

    def read_text(self):
        return self._log


# ---------------------------------------------------------------------------------------------------------------
# colocate_async, through the launcher's Python API
# ---------------------------------------------------------------------------------------------------------------
def _colocate(toy_assets, out: Path, steps: int, extra=()):
    from erpo_verl.tools.demo import train_toy

    run = train_toy("erpo", out, toy_assets, steps, seed=1, quiet=True, train_batch_size=4,
                    extra=["trainer.v1.trainer_mode=erpo_colocate_async", *AER, "trainer.save_freq=3",
                           f"trainer.default_local_dir={out.parent / 'colocate_checkpoints'}", *extra])
    assert run.returncode == 0, f"run in {out} failed:\n{run.log_tail(80)}"
    return run


@pytest.fixture(scope="module")
def colocate(toy_assets, tmp_path_factory):
    return _colocate(toy_assets, tmp_path_factory.mktemp("async") / "colocate", 3)


@pytest.mark.slow
def test_erpo_with_aer_trains_in_colocate_async_with_its_inputs_and_staleness_logged(colocate):
    assert [int(r["step"]) for r in colocate.metrics] == [1, 2, 3]
    assert_entropy_aware_run(colocate, sync=False)  # erpo/ every step, reference on, async code paths
    assert_aer_entered_the_loss(colocate)
    for r in colocate.metrics:
        assert all(k in r for k in STALENESS), r.keys()
        assert r["erpo/old_policy/samples"] == 16  # 4 prompts x 4 responses: every trained sample counted
        assert r["erpo/old_policy/local_updates"] == 0  # one update per step in colocate_async
    # the async mode really ran: its warm-up batch is generated before step 1's update and trained on in step 2
    assert max(r["erpo/old_policy/lag_max"] for r in colocate.metrics) >= 1
    assert colocate.metrics[0]["erpo/old_policy/lag_max"] == 0
    assert "trainer.v1.trainer_mode=erpo_colocate_async" in colocate.log_path.read_text()


@pytest.mark.slow
def test_colocate_async_resumes_from_its_checkpoint_with_aers_controller_state(colocate, toy_assets, tmp_path):
    ckpt = Path(colocate.metrics_path).parent.parent / "colocate_checkpoints"
    assert (ckpt / "global_step_3" / "erpo_aer_state.json").exists()
    resumed = _colocate(toy_assets, tmp_path / "colocate_resumed", 4, extra=["trainer.resume_mode=auto",
                                                                             f"trainer.default_local_dir={ckpt}"])
    assert [int(r["step"]) for r in resumed.metrics] == [4]  # resumed at step 4, not from 0
    r = resumed.metrics[0]
    assert r["aer/initial_entropy"] == pytest.approx(colocate.metrics[0]["aer/initial_entropy"])
    assert r["aer/alpha"] == pytest.approx(colocate.metrics[-1]["aer/alpha_next"])
    assert_aer_entered_the_loss(resumed)
    assert "erpo/gate_std" in r and all(k in r for k in STALENESS)


# ---------------------------------------------------------------------------------------------------------------
# separate_async, through the recipe as a user starts it
# ---------------------------------------------------------------------------------------------------------------
def _recipe(toy_assets, out: Path, steps: int, *args: str):
    from test_recipes import recipe_env

    metrics = out / f"metrics_{steps}.jsonl"
    # the command as typed: no CPU_GPUS_PER_NODE (separate_async's CPU default is 2 logical devices)
    env = recipe_env(out, PROFILE="cpu-tiny", TRAINER_MODE="separate_async",
                     CPU_STEPS=str(steps), ASSETS_DIR=Path(toy_assets["model"]).parent, OUTPUT_DIR=out / "run",
                     VERL_FILE_LOGGER_PATH=metrics)
    result = subprocess.run(["bash", str(REPO / "recipes" / "run_ep_grpo_qwen7b.sh"), *SEPARATE_AER, "trainer.save_freq=3",
                             *args], env=env, capture_output=True, text=True, timeout=900)
    log = (out / "run" / "train.log").read_text() if (out / "run" / "train.log").exists() else ""
    assert result.returncode == 0, result.stderr[-4000:]
    return _Run(load_metrics(metrics), result.stderr + log)  # stderr: the recipe's "+ python -m ..." command line


@pytest.fixture(scope="module")
def separate(toy_assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("async") / "separate"
    return out, _recipe(toy_assets, out, 3)


@pytest.mark.slow
def test_the_ep_grpo_recipe_trains_in_separate_async_with_rollout_on_its_own_device(separate):
    _, run = separate
    assert [int(r["step"]) for r in run.metrics] == [1, 2, 3]
    assert_entropy_aware_run(run, sync=False)  # EP-GRPO got entropy and reference log-probs every step
    assert_aer_entered_the_loss(run)
    for r in run.metrics:
        # two mini-batches per step share one pi_old (local updates 0 and 1: mean 0.5), 8 samples each
        assert r["erpo/old_policy/local_updates"] == pytest.approx(0.5)
        assert r["erpo/old_policy/samples"] == 8
        # the weights went to the rollout device through the cpu_gloo engine: every tensor of the tiny model
        assert r["cpu_gloo/tensors"] > 0 and r["cpu_gloo/bytes"] > 0
    assert max(r["erpo/old_policy/lag_max"] for r in run.metrics) >= 1  # off-policy samples were trained on
    log = run.read_text()
    assert "trainer.v1.trainer_mode=erpo_separate_async" in log
    assert "actor_rollout_ref.rollout.checkpoint_engine.backend=cpu_gloo" in log
    assert "rollout served by 1 standalone replicas only" in log  # no hybrid replica on the training device


@pytest.mark.slow
def test_separate_async_resumes_from_its_checkpoint_with_aers_controller_state(separate, toy_assets):
    out, first = separate
    state = json.loads((out / "run" / "checkpoints" / "global_step_3" / "erpo_aer_state.json").read_text())
    assert state["alpha"] > SEPARATE_ALPHA_LR  # still positive after 6 controller steps
    resumed = _recipe(toy_assets, out, 4, "trainer.resume_mode=auto")
    assert [int(r["step"]) for r in resumed.metrics] == [4]
    r = resumed.metrics[0]
    assert r["aer/initial_entropy"] == pytest.approx(first.metrics[0]["aer/initial_entropy"]) == pytest.approx(
        state["initial_entropy"])
    # the step's two mini-batches used the saved alpha and one controller step later (entropy above target: -lr)
    assert r["aer/alpha"] == pytest.approx(state["alpha"] - SEPARATE_ALPHA_LR / 2, abs=1e-9)
    assert r["erpo/progress_abs_mean"] > 0 and all(k in r for k in STALENESS)
    assert_aer_entered_the_loss(resumed)


def test_recipe_variables_for_the_trainer_mode_are_reset_between_tests():
    from test_recipes import RECIPE_VARIABLES

    assert {"TRAINER_MODE", "ROLLOUT_GPUS", "CHECKPOINT_ENGINE", "CPU_GPUS_PER_NODE"} <= set(RECIPE_VARIABLES)
