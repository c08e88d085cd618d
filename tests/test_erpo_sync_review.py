"""Regression tests for the defects a review of the GPU path found (issue 11 §3): estimator routing, the AER
checkpoint order, AER with bypass mode or distillation, the verl version check, verl's padding rows, agent loops
with several outputs per session, and the one settings section of ``erpo_sync``. No Ray, no TransferQueue.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import verl  # noqa: F401  (loads the plugin)
from erpo_verl.aer_controller import STATE_FILE, AERState
from erpo_verl.integration import advantage_step, version
from erpo_verl.integration.advantage_step import aer_coefficients, compute_advantage_with_extras
from erpo_verl.integration.aer_loss import aer_options
from erpo_verl.integration.preflight import ERPOSetupError, preflight
from erpo_verl.integration.version import ALLOW_ENV, VerlVersionError
from verl import DataProto
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.ray_trainer import compute_advantage

ERPO_SYNC = ("trainer.v1.trainer_mode=erpo_sync",)
AER = ("actor_rollout_ref.actor.policy_loss.loss_mode=aer", *ERPO_SYNC)


def verl_config(*overrides: str, config_name: str = "ppo_trainer"):
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name=config_name, overrides=list(overrides))


def algo_config(estimator, n=2, **algo):
    return OmegaConf.create({"algorithm": {"adv_estimator": estimator, "gamma": 1.0, "lam": 1.0, **algo},
                             "actor_rollout_ref": {"rollout": {"n": n}}})


def batch(uids, rewards, lengths, width=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    bs = len(uids)
    mask = torch.zeros(bs, width)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    scores = torch.zeros(bs, width)
    for i, (r, n) in enumerate(zip(rewards, lengths)):
        if n:
            scores[i, n - 1] = r
    tensors = {
        "token_level_rewards": scores,
        "response_mask": mask,
        "entropy": torch.rand(bs, width, generator=g) * 2 * mask,
        "old_log_probs": -torch.rand(bs, width, generator=g) * 3 * mask,
        "ref_log_prob": -torch.rand(bs, width, generator=g) * 3 * mask,
    }
    return DataProto.from_dict(tensors=tensors, non_tensors={"uid": np.array(uids, dtype=object)})


def with_padding_rows(data: DataProto, k: int) -> DataProto:
    """Append k rows as verl's upsample_batch_to_divisible_size makes them: uid pad<hex>, zero masks and scores."""
    width = data.batch["response_mask"].shape[1]
    pad = {key: torch.zeros(k, width) for key in data.batch.keys()}
    tensors = {key: torch.cat([data.batch[key], pad[key]]) for key in data.batch.keys()}
    uids = np.concatenate([data.non_tensor_batch["uid"], np.array(["pad0123abcd"] * k, dtype=object)])
    return DataProto.from_dict(tensors=tensors, non_tensors={"uid": uids})


# -- 1. estimator routing: only opted-in estimators take the direct path -------------------------------------------
def test_verls_optimal_token_baseline_goes_through_verls_path_with_sum_pi_squared():
    data = batch(["a", "a", "b", "b"], [1.0, 0.0, 1.0, 1.0], [4, 2, 3, 4])
    data.batch["sum_pi_squared"] = torch.rand(4, 4, generator=torch.Generator().manual_seed(1)) * data.batch["response_mask"]
    config = algo_config("optimal_token_baseline")
    assert advantage_step.accepted_extra_inputs(core_algos.get_adv_estimator_fn("optimal_token_baseline")) == ()
    expected = compute_advantage(copy.deepcopy(data), adv_estimator="optimal_token_baseline", num_repeat=2,
                                 config=config.algorithm).batch["advantages"]
    keys = [f"{u}_{i}_0" for i, u in enumerate(data.non_tensor_batch["uid"])]
    out = compute_advantage_with_extras(data, config, {}, batch_keys=keys)
    torch.testing.assert_close(out.batch["advantages"], expected)


def test_an_estimator_that_names_old_log_probs_without_opting_in_gets_only_verls_arguments(monkeypatch):
    seen = {}

    def third_party(token_level_rewards, response_mask, index=None, config=None, old_log_probs=None, **kwargs):
        seen.update(old_log_probs=old_log_probs, kwargs=set(kwargs))
        return token_level_rewards, token_level_rewards

    monkeypatch.setitem(core_algos.ADV_ESTIMATOR_REGISTRY, "erpo_test_not_opted_in", third_party)
    compute_advantage_with_extras(batch(["a", "a"], [1.0, 0.0], [2, 3]), algo_config("erpo_test_not_opted_in"), {})
    assert seen["old_log_probs"] is None  # verl passes no old_log_probs to a generic estimator


# -- 2. AER state is in the checkpoint folder before verl marks the checkpoint complete ---------------------------
def test_aer_state_is_written_before_verl_marks_the_checkpoint_latest(tmp_path, monkeypatch):
    from erpo_verl.integration.trainer_mode import ERPOTrainerSync
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    seen = {}

    def verl_save(self):  # verl ends with latest_checkpointed_iteration.txt and the checkpoint callbacks
        folder = tmp_path / f"global_step_{self.global_steps}"
        seen["state_present_when_marked_latest"] = (folder / STATE_FILE).exists()
        (tmp_path / "latest_checkpointed_iteration.txt").write_text(str(self.global_steps))

    monkeypatch.setattr(PPOTrainerSync, "_save_checkpoint", verl_save)
    trainer = object.__new__(ERPOTrainerSync)
    trainer.config = OmegaConf.create({"trainer": {"default_local_dir": str(tmp_path)}})
    trainer.global_steps = 3
    trainer.aer = SimpleNamespace()
    trainer.aer_state = AERState(alpha=0.002, initial_entropy=1.5)
    trainer._save_checkpoint()
    assert seen == {"state_present_when_marked_latest": True}
    assert AERState.load(tmp_path / "global_step_3") == AERState(alpha=0.002, initial_entropy=1.5)


# -- 3. / 8. AER combinations that cannot work are rejected before Ray starts ---------------------------------------
def test_aer_with_rollout_correction_bypass_mode_is_rejected_naming_the_setting():
    config = verl_config(*AER, "algorithm.rollout_correction.bypass_mode=true")
    with pytest.raises(ERPOSetupError, match=r"loss_mode=aer.*algorithm\.rollout_correction\.bypass_mode=false"):
        preflight(config)


def test_aer_with_distillation_is_rejected():
    config = verl_config(*AER, "distillation.enabled=true")
    with pytest.raises(ERPOSetupError, match=r"distillation\.enabled=false"):
        preflight(config)


def test_vllm_full_determinism_on_the_cpu_backend_is_rejected_before_ray_starts(monkeypatch):
    config = verl_config("actor_rollout_ref.rollout.name=vllm", "actor_rollout_ref.rollout.full_determinism=True")
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    assert preflight(config) == []  # on GPUs vLLM's batch-invariant kernels exist
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    with pytest.raises(ERPOSetupError, match=r"full_determinism=False.*rollout\.name=hf"):
        preflight(config)
    for allowed in (("actor_rollout_ref.rollout.name=vllm", "actor_rollout_ref.rollout.full_determinism=False"),
                    ("actor_rollout_ref.rollout.name=hf", "actor_rollout_ref.rollout.full_determinism=True")):
        assert preflight(verl_config(*allowed)) == []


def test_aer_without_bypass_or_distillation_passes():
    assert "actor_rollout_ref.actor.calculate_entropy=True" in preflight(verl_config(*AER))


# -- 4. the runtime version check ----------------------------------------------------------------------------------
@pytest.fixture
def other_verl(monkeypatch):
    monkeypatch.setattr(version, "installed_verl_version", lambda: "0.9.2")
    monkeypatch.delenv(ALLOW_ENV, raising=False)


def test_required_verl_txt_setup_py_and_the_runtime_check_name_the_same_version():
    from pathlib import Path

    from erpo_verl import VERL_VERSION

    repo = Path(__file__).resolve().parents[1]
    assert (repo / "REQUIRED_VERL.txt").read_text().splitlines()[0].startswith(f"verl=={VERL_VERSION} ")
    assert "VERL_PIN = re.search" in (repo / "setup.py").read_text()  # setup.py reads erpo_verl.VERL_VERSION
    assert version.installed_verl_version() == VERL_VERSION  # this environment is the pinned one


def test_preflight_stops_when_verl_is_not_the_pinned_version(other_verl):
    with pytest.raises(VerlVersionError) as err:
        preflight(verl_config("algorithm.adv_estimator=erpo", *ERPO_SYNC))
    assert "0.9.2" in str(err.value) and "verl==0.9.1" in str(err.value) and "REQUIRED_VERL.txt" in str(err.value)
    assert ALLOW_ENV in str(err.value)


def test_preflight_ignores_the_version_for_configs_that_do_not_use_erpo_verl(other_verl):
    assert preflight(verl_config("algorithm.adv_estimator=grpo")) == []


def test_the_escape_variable_lets_a_run_go_on_with_a_warning(other_verl, monkeypatch):
    monkeypatch.setenv(ALLOW_ENV, "1")
    with pytest.warns(RuntimeWarning, match="0.9.2"):
        preflight(verl_config("algorithm.adv_estimator=erpo", *ERPO_SYNC))


def test_erpo_sync_trainer_stops_when_verl_is_not_the_pinned_version(other_verl):
    from erpo_verl.integration.trainer_mode import ERPOTrainerSync

    with pytest.raises(VerlVersionError, match="0.9.2"):
        ERPOTrainerSync(verl_config("algorithm.adv_estimator=erpo", *ERPO_SYNC))


def test_registration_is_skipped_with_an_error_when_verl_is_not_the_pinned_version(other_verl, caplog):
    from erpo_verl.integration import register

    registry = {}
    fake = SimpleNamespace(ADV_ESTIMATOR_REGISTRY=registry, POLICY_LOSS_REGISTRY={},
                           register_adv_est=lambda name: (lambda fn: registry.setdefault(name, fn)))
    register._register_estimators_and_losses(fake)
    assert registry == {}
    assert "not registering" in caplog.text and "0.9.2" in caplog.text


# -- 5. verl's padding rows are not a group --------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", ["erpo", "ep_grpo", "grpo_forking"])
def test_padding_rows_change_neither_advantages_nor_metrics(estimator):
    data = batch(["a", "a", "b", "b", "c", "c"], [1.0, 0.0, 1.0, 0.0, 0.0, 1.0], [4, 2, 3, 4, 1, 3])
    plain_metrics, padded_metrics = {}, {}
    plain = compute_advantage_with_extras(copy.deepcopy(data), algo_config(estimator), plain_metrics)
    padded = compute_advantage_with_extras(with_padding_rows(data, 2), algo_config(estimator), padded_metrics)
    torch.testing.assert_close(padded.batch["advantages"][:6], plain.batch["advantages"])
    assert torch.equal(padded.batch["advantages"][6:], torch.zeros(2, 4))
    assert padded_metrics == pytest.approx(plain_metrics)
    if "erpo/zero_var_group_frac" in plain_metrics:
        assert plain_metrics["erpo/zero_var_group_frac"] == 0.0


def test_padding_rows_are_found_by_their_tag_too():
    uids = np.array(["a", "b", "c"], dtype=object)
    mask = torch.ones(3, 2)
    tags = [{}, {"is_padding": True}, {"is_padding": False}]
    assert advantage_step.padding_rows(uids, mask, tags).tolist() == [False, True, False]


def test_padding_rows_are_left_out_of_aers_difficulty_statistics():
    data = batch(["a", "a", "b", "b"], [1.0, 0.0, 0.0, 0.0], [4, 2, 3, 4])
    options = aer_options(verl_config(*AER, "+actor_rollout_ref.actor.policy_loss.aer_alpha_init=0.001"))
    plain_metrics, padded_metrics = {}, {}
    plain = aer_coefficients(data, AERState(alpha=0.001), options, plain_metrics)
    padded = aer_coefficients(with_padding_rows(data, 3), AERState(alpha=0.001), options, padded_metrics)
    torch.testing.assert_close(padded[:4], plain)
    assert torch.equal(padded[4:], torch.zeros(3, 4))
    assert padded_metrics == pytest.approx(plain_metrics)
    # hand-computed: acc(a)=0.5, acc(b)=0 -> difficulty (0.5, 0.5, 1, 1) / 0.75
    assert plain_metrics["aer/sample_coef_mean"] == pytest.approx(1.0)
    torch.testing.assert_close(plain[:, 0], 0.001 * torch.tensor([2 / 3, 2 / 3, 4 / 3, 4 / 3]))


# -- 6. agent loops with several outputs per session are rejected for our estimators ----------------------------
def test_several_outputs_of_one_session_are_rejected_with_a_clear_error():
    data = batch(["a", "a", "a"], [1.0, 0.0, 1.0], [2, 3, 1])
    keys = ["a_0_0", "a_0_1", "a_1_0"]  # {uid}_{session}_{index}: session a_0 returned two outputs
    with pytest.raises(ValueError, match=r"several outputs of one agent-loop session \('a_0_0' and 'a_0_1'\)"):
        compute_advantage_with_extras(data, algo_config("erpo", n=3), {}, batch_keys=keys)


def test_one_output_per_session_is_accepted():
    data = batch(["a", "a", "a"], [1.0, 0.0, 1.0], [2, 3, 1])
    out = compute_advantage_with_extras(data, algo_config("erpo", n=3), {}, batch_keys=["a_0_0", "a_1_0", "a_2_0"])
    assert out.batch["advantages"].shape == (3, 4)


# -- 7. erpo_sync reads one set of settings (verl's trainer.v1.sync and trainer.v1.erpo_sync) -----------------------
def _build_seen(monkeypatch, config):
    from erpo_testlib import construct_trainer_with_probe
    from erpo_verl.integration.trainer_mode import ERPOTrainerSync

    return construct_trainer_with_probe(monkeypatch, config, ERPOTrainerSync)[1]


@pytest.mark.parametrize("section", ["erpo_sync", "sync"])
def test_parameter_sync_step_is_read_from_either_section_and_seen_by_rollout_skip(monkeypatch, section):
    config = verl_config(*ERPO_SYNC, f"+trainer.v1.{section}.parameter_sync_step=2")
    seen = _build_seen(monkeypatch, config)
    rollout_skip = OmegaConf.select(config, f"trainer.v1.{config.trainer.v1.trainer_mode}.parameter_sync_step", default=1)
    assert seen == {"mode": "sync", "step": 2, "section": {"parameter_sync_step": 2}}
    assert rollout_skip == 2


def test_a_setting_given_differently_in_both_sections_is_rejected():
    config = verl_config(*ERPO_SYNC, "+trainer.v1.sync.parameter_sync_step=2", "+trainer.v1.erpo_sync.parameter_sync_step=1")
    with pytest.raises(ERPOSetupError, match=r"trainer\.v1\.sync\.parameter_sync_step=2 and "
                                             r"trainer\.v1\.erpo_sync\.parameter_sync_step=1 differ"):
        preflight(config)


# -- §4: backends erpo_sync and AER were never run with are rejected before Ray ---------------------------------------
@pytest.mark.parametrize("config_name", ["ppo_megatron_trainer"])
@pytest.mark.parametrize("extra", [("algorithm.adv_estimator=erpo", *ERPO_SYNC), AER, ERPO_SYNC])
def test_megatron_with_erpo_sync_or_aer_is_rejected(config_name, extra):
    with pytest.raises(ERPOSetupError, match=r"actor_rollout_ref\.actor\.strategy=megatron"):
        preflight(verl_config(*extra, config_name=config_name))


@pytest.mark.parametrize("strategy", ["veomni", "torchtitan"])
def test_veomni_and_torchtitan_actors_with_erpo_sync_are_rejected(strategy):
    config = verl_config("algorithm.adv_estimator=erpo", *ERPO_SYNC)
    OmegaConf.update(config, "actor_rollout_ref.actor.strategy", strategy, force_add=True)
    with pytest.raises(ERPOSetupError, match=rf"actor_rollout_ref\.actor\.strategy={strategy}"):
        preflight(config)


def test_megatron_with_a_plain_estimator_is_left_to_verl():
    assert preflight(verl_config("algorithm.adv_estimator=dapo", config_name="ppo_megatron_trainer")) == []


def test_doctor_problems_is_empty_here_and_names_a_wrong_verl(monkeypatch, capsys):
    from erpo_verl.tools import doctor

    assert doctor.main(["--problems", "--no-registration"]) == 0
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(version, "installed_verl_version", lambda: "0.9.2")
    monkeypatch.delenv(ALLOW_ENV, raising=False)
    assert doctor.main(["--problems", "--no-registration"]) == 1
    out = capsys.readouterr().out
    assert "verl 0.9.2" in out and "REQUIRED_VERL.txt" in out


def test_the_input_contract_covers_exactly_the_estimators_extra_inputs():
    from erpo_verl.estimators import EXTRA_INPUTS

    assert set(advantage_step.FIELD_OF_INPUT) == set(EXTRA_INPUTS)
    assert set(advantage_step.VERL_ADVANTAGE_FIELDS) < set(advantage_step.ADVANTAGE_INPUT_FIELDS)
    assert "entropy" in advantage_step.ADVANTAGE_INPUT_FIELDS


@pytest.mark.parametrize("estimator,aer,expected", [("grpo", False, "verl"), ("optimal_token_baseline", False, "verl"),
                                                    ("erpo", False, "ours"), ("grpo", True, "ours")])
def test_the_trainer_takes_verls_own_advantage_step_unless_an_estimator_opted_in_or_aer_is_on(
        monkeypatch, estimator, aer, expected):
    from erpo_verl.integration.trainer_mode import ERPOTrainerSync
    from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync

    monkeypatch.setattr(PPOTrainerSync, "_compute_advantage", lambda self, b, m: "verl")
    monkeypatch.setattr("erpo_verl.integration.trainer_mode.tq.kv_batch_get",
                        lambda **kw: (_ for _ in ()).throw(LookupError("ours")))
    trainer = object.__new__(ERPOTrainerSync)
    trainer.config = OmegaConf.create({"algorithm": {"adv_estimator": estimator}})
    trainer.aer = SimpleNamespace() if aer else None
    try:
        taken = trainer._compute_advantage(SimpleNamespace(keys=[], partition_id="p"), {})
    except LookupError as exc:
        taken = str(exc).strip("'")
    assert taken == expected
