"""The ``erpo_sync`` trainer mode's logic without Ray or TransferQueue: the advantage step's forwarding of the
extra per-token inputs (``compute_advantage_with_extras``), ``preflight`` on verl 0.9.1's real configuration
(composed with Hydra from ``pkg://verl.trainer.config``), and the driver-side wrapper of ``validate_config``.
"""

from __future__ import annotations

import logging
import math
import statistics as st

import numpy as np
import pytest
import torch
from erpo_testlib import make_batch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import verl  # noqa: F401  (loads the plugin through the entry point)
import verl.utils.config as vucfg
from erpo_verl.estimators import compute_ep_grpo_advantage, compute_erpo_advantage
from erpo_verl.estimators.inputs import accepts_extra_inputs
from erpo_verl.integration.advantage_step import accepted_extra_inputs, compute_advantage_with_extras
from erpo_verl.integration.preflight import ERPOSetupError, preflight, wrap_validate_config
from verl import DataProto
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage
from verl.trainer.ppo.utils import need_reference_policy

EPS = 1e-6
METRIC_NAMES = {"gate_mean", "gate_std", "gate_max", "pivot_frac", "zero_var_group_frac", "progress_abs_mean",
                "adv_mean", "adv_std", "sign_flip_frac"}

# group "g0": informative (rewards 1, 0, 1); group "g1": all-equal (0, 0); group "g2": one response
RESPONSES = [
    dict(uid="g0", reward=1.0, entropy=[0.5, 2.0, 0.25, 1.0, 3.0], old=[-0.5, -1.0, -2.0, -0.25, -3.0],
         ref=[-0.75, -0.5, -2.5, -0.25, -2.0]),
    dict(uid="g0", reward=0.0, entropy=[1.5, 0.75, 3.0], old=[-1.0, -0.125, -4.0], ref=[-1.5, -0.25, -3.0]),
    dict(uid="g1", reward=0.0, entropy=[2.0, 2.0, 0.5, 1.0], old=[-1.0, -1.0, -1.0, -1.0],
         ref=[-0.5, -2.0, -1.0, -0.75]),
    dict(uid="g0", reward=1.0, entropy=[0.25], old=[-2.0], ref=[-1.0]),
    dict(uid="g1", reward=0.0, entropy=[0.0, 1.0], old=[-0.25, -6.0], ref=[-0.5, -5.0]),
    dict(uid="g2", reward=1.0, entropy=[1.0, 0.5, 0.5], old=[-1.0, -1.0, -2.0], ref=[-2.0, -1.0, -1.0]),
]


def make_data(responses=RESPONSES, with_entropy=True, width=None) -> DataProto:
    b = make_batch(responses, width=width)
    tensors = {
        "token_level_rewards": torch.tensor(b["rewards"]),
        "response_mask": torch.tensor(b["mask"]),
        "old_log_probs": torch.tensor(b["old"]),
        "ref_log_prob": torch.tensor(b["ref"]),
    }
    if with_entropy:
        tensors["entropy"] = torch.tensor(b["entropy"])
    return DataProto.from_dict(tensors=tensors, non_tensors={"uid": b["index"]})


def algo_config(estimator="erpo", section=None, norm=True, n=3):
    algorithm = {"adv_estimator": estimator, "gamma": 1.0, "lam": 1.0, "norm_adv_by_std_in_grpo": norm}
    if section is not None:
        algorithm[estimator] = section
    return OmegaConf.create({"algorithm": algorithm, "actor_rollout_ref": {"rollout": {"n": n}}})


def batch_keys(data: DataProto) -> list[str]:
    # verl's TransferQueue keys: "{uid}_{session_id}_{index}"; one session per row here
    return [f"{uid}_{i}_0" for i, uid in enumerate(data.non_tensor_batch["uid"])]


def direct(fn, data: DataProto, config, **extra):
    return fn(
        token_level_rewards=data.batch["token_level_rewards"],
        response_mask=data.batch["response_mask"],
        index=data.non_tensor_batch["uid"],
        config=config.algorithm,
        old_entropy=data.batch["entropy"],
        old_log_probs=data.batch["old_log_probs"],
        ref_log_prob=data.batch["ref_log_prob"],
        **extra,
    )[0]


# ---------------------------------------------------------------------------------------------------------
# forwarding
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("estimator,fn", [("erpo", compute_erpo_advantage), ("ep_grpo", compute_ep_grpo_advantage)])
@pytest.mark.parametrize("section", [None, {"num_buckets": 2, "gate_gamma": 3.0, "entropy_stats_scope": "batch"}])
def test_forwarding_equals_direct_call(estimator, fn, section):
    data = make_data()
    config = algo_config(estimator, section)
    expected = direct(fn, data, config)
    metrics: dict = {}
    out = compute_advantage_with_extras(data, config, metrics, batch_keys=batch_keys(data))
    assert torch.equal(out.batch["advantages"], expected)
    assert torch.equal(out.batch["returns"], expected)
    assert set(metrics) == {f"erpo/{k}" for k in METRIC_NAMES}
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values())


def _gate_by_hand(data: DataProto, gamma=2.0):
    """W per spec §4.2, group scope, mean1 (plain Python)."""
    mask = data.batch["response_mask"].tolist()
    ent = data.batch["entropy"].tolist()
    uids = list(data.non_tensor_batch["uid"])
    W = [[0.0] * len(mask[0]) for _ in mask]
    Z = [[0.0] * len(mask[0]) for _ in mask]
    for g in dict.fromkeys(uids):
        toks = [(i, t) for i, u in enumerate(uids) if u == g for t in range(len(mask[0])) if mask[i][t]]
        hs = [ent[i][t] for i, t in toks]
        mu, sd = st.fmean(hs), st.pstdev(hs)
        w = {}
        for i, t in toks:
            Z[i][t] = (ent[i][t] - mu) / (sd + EPS)
            w[i, t] = 1 / (1 + math.exp(-gamma * Z[i][t]))
        m = st.fmean(w.values())
        for (i, t), v in w.items():
            W[i][t] = v / m
    return W, Z


def test_metrics_have_the_spec_names_and_sane_values():
    data = make_data()
    config = algo_config("erpo")
    metrics: dict = {}
    adv = compute_advantage_with_extras(data, config, metrics, batch_keys=batch_keys(data)).batch["advantages"]
    mask = data.batch["response_mask"].bool()
    valid = adv[mask]
    W, Z = _gate_by_hand(data)
    w_valid = [W[i][t] for i in range(len(W)) for t in range(len(W[0])) if mask[i, t]]
    z_valid = [Z[i][t] for i in range(len(Z)) for t in range(len(Z[0])) if mask[i, t]]

    assert metrics["erpo/gate_mean"] == pytest.approx(1.0, abs=1e-5)  # mean1 in every group → 1 overall
    assert metrics["erpo/gate_std"] == pytest.approx(st.pstdev(w_valid), abs=1e-5)
    assert metrics["erpo/gate_max"] == pytest.approx(max(w_valid), abs=1e-5)
    assert metrics["erpo/pivot_frac"] == pytest.approx(sum(z > 1 for z in z_valid) / len(z_valid))
    assert 0 < metrics["erpo/pivot_frac"] < 1
    assert metrics["erpo/zero_var_group_frac"] == pytest.approx(2 / 3)  # g1 all-equal, g2 single response
    assert metrics["erpo/adv_mean"] == pytest.approx(valid.mean().item(), abs=1e-6)
    assert metrics["erpo/adv_std"] == pytest.approx(valid.std(unbiased=False).item(), abs=1e-6)

    # |η Ψ| = |A − W Â|: the run with progress_coef = 0 gives W Â (W does not depend on the progress term)
    no_progress = direct(compute_erpo_advantage, data, algo_config("erpo", {"progress_coef": 0.0}))
    progress_abs = (adv - no_progress).abs()[mask]
    assert metrics["erpo/progress_abs_mean"] == pytest.approx(progress_abs.mean().item(), abs=1e-6)
    assert metrics["erpo/progress_abs_mean"] > 0

    a_hat, _ = compute_grpo_outcome_advantage(data.batch["token_level_rewards"], data.batch["response_mask"],
                                              data.non_tensor_batch["uid"])
    flips = (torch.sign(adv) != torch.sign(a_hat))[mask].float().mean().item()
    assert metrics["erpo/sign_flip_frac"] == pytest.approx(flips)
    assert 0 <= metrics["erpo/sign_flip_frac"] <= 1


def test_metrics_without_gate():
    data = make_data()
    metrics: dict = {}
    compute_advantage_with_extras(data, algo_config("ep_grpo", {"gate": False}), metrics)
    assert (metrics["erpo/gate_mean"], metrics["erpo/gate_std"], metrics["erpo/gate_max"]) == (1.0, 0.0, 1.0)
    assert "erpo/pivot_frac" not in metrics  # no entropy z-score without the gate
    # ep_grpo's fallback keeps a signal in the all-equal group: some tokens there get a non-zero advantage
    assert metrics["erpo/sign_flip_frac"] > 0


def test_metrics_are_merged_into_existing_dict():
    data = make_data()
    metrics = {"actor/entropy": 1.23}
    compute_advantage_with_extras(data, algo_config("erpo"), metrics)
    assert metrics["actor/entropy"] == 1.23 and "erpo/adv_mean" in metrics


def test_missing_entropy_in_the_batch_is_an_error_not_a_fallback():
    data = make_data(with_entropy=False)
    with pytest.raises(ValueError, match=r"old_entropy is required.*trainer\.v1\.trainer_mode=erpo_sync"):
        compute_advantage_with_extras(data, algo_config("erpo"), {})


@pytest.mark.parametrize("norm", [True, False])
def test_grpo_goes_through_verls_path(norm):
    data = make_data()
    expected, _ = compute_grpo_outcome_advantage(data.batch["token_level_rewards"], data.batch["response_mask"],
                                                 data.non_tensor_batch["uid"], norm_adv_by_std_in_grpo=norm)
    metrics: dict = {}
    out = compute_advantage_with_extras(data, algo_config("grpo", norm=norm), metrics, batch_keys=batch_keys(data))
    assert torch.equal(out.batch["advantages"], expected)
    assert not any(k.startswith("erpo/") for k in metrics)


@pytest.mark.parametrize("with_entropy", [True, False])
def test_dapo_is_grpo_through_the_advantage_step(with_entropy):
    """dapo without options is GRPO's advantage and needs no entropy, whichever path it takes."""
    data = make_data(with_entropy=with_entropy)
    expected, _ = compute_grpo_outcome_advantage(data.batch["token_level_rewards"], data.batch["response_mask"],
                                                 data.non_tensor_batch["uid"])
    metrics: dict = {}
    out = compute_advantage_with_extras(data, algo_config("dapo"), metrics)
    torch.testing.assert_close(out.batch["advantages"], expected, rtol=1e-5, atol=1e-6)
    assert metrics == {}


# ---------------------------------------------------------------------------------------------------------
# third-party estimators
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def registry():
    """Register test estimators under unique names and remove them afterwards."""
    names = []

    def register(name, fn):
        core_algos.register_adv_est(name)(fn)
        names.append(name)
        return fn

    yield register
    for name in names:
        core_algos.ADV_ESTIMATOR_REGISTRY.pop(name, None)


def test_third_party_estimator_declaring_old_entropy_receives_it(registry):
    seen = {}

    @accepts_extra_inputs
    def entropy_estimator(token_level_rewards, response_mask, index=None, config=None, old_entropy=None,
                          metrics=None, **kwargs):
        seen.update(old_entropy=old_entropy, kwargs=kwargs, index=index, config=config)
        metrics["entropy_sum"] = float((old_entropy * response_mask).sum())
        adv = old_entropy * response_mask
        return adv, adv

    registry("erpo_test_thirdparty_entropy", entropy_estimator)
    assert accepted_extra_inputs(entropy_estimator) == ("old_entropy", "metrics")
    data = make_data()
    metrics: dict = {}
    out = compute_advantage_with_extras(data, algo_config("erpo_test_thirdparty_entropy"), metrics)
    assert seen["old_entropy"] is data.batch["entropy"]
    assert seen["kwargs"] == {}  # only what it declares: no old_log_probs / ref_log_prob
    assert list(seen["index"]) == list(data.non_tensor_batch["uid"])
    assert seen["config"].adv_estimator == "erpo_test_thirdparty_entropy"
    assert torch.equal(out.batch["advantages"], data.batch["entropy"] * data.batch["response_mask"])
    entropy_sum = float((data.batch["entropy"] * data.batch["response_mask"]).sum())
    assert metrics == {"erpo/entropy_sum": pytest.approx(entropy_sum)}


def test_third_party_estimator_declaring_log_probs_receives_them(registry):
    seen = {}

    @accepts_extra_inputs
    def logprob_estimator(token_level_rewards, response_mask, index=None, config=None, *, old_log_probs=None,
                          ref_log_prob=None):
        seen.update(old=old_log_probs, ref=ref_log_prob)
        return token_level_rewards, token_level_rewards

    registry("erpo_test_thirdparty_logprobs", logprob_estimator)
    data = make_data()
    compute_advantage_with_extras(data, algo_config("erpo_test_thirdparty_logprobs"), {})
    assert seen["old"] is data.batch["old_log_probs"] and seen["ref"] is data.batch["ref_log_prob"]


def test_third_party_estimator_with_only_kwargs_gets_verls_arguments(registry):
    seen = {}

    @accepts_extra_inputs
    def kwargs_estimator(**kwargs):
        seen.update(kwargs)
        adv = kwargs["token_level_rewards"] * 0
        return adv, adv

    registry("erpo_test_thirdparty_kwargs", kwargs_estimator)
    assert accepted_extra_inputs(kwargs_estimator) == ()
    data = make_data()
    metrics: dict = {}
    compute_advantage_with_extras(data, algo_config("erpo_test_thirdparty_kwargs"), metrics)
    assert "old_entropy" not in seen and "old_log_probs" not in seen and "ref_log_prob" not in seen
    assert "metrics" not in seen
    assert {"token_level_rewards", "response_mask", "config", "index"} <= set(seen)
    assert metrics == {}


# ---------------------------------------------------------------------------------------------------------
# preflight on verl 0.9.1's real configuration
# ---------------------------------------------------------------------------------------------------------
def verl_config(*overrides: str):
    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        return compose(config_name="ppo_trainer", overrides=list(overrides))


ERPO_SYNC = ("trainer.v1.trainer_mode=erpo_sync",)


@pytest.mark.parametrize("estimator", ["erpo", "ep_grpo"])
def test_preflight_requires_the_erpo_sync_mode(estimator):
    config = verl_config(f"algorithm.adv_estimator={estimator}")
    assert config.trainer.v1.trainer_mode == "sync"  # verl's default
    with pytest.raises(ERPOSetupError, match=r"trainer\.v1\.trainer_mode=erpo_sync") as err:
        preflight(config)
    assert "'sync' trainer mode" in str(err.value)
    assert "old-policy token entropy" in str(err.value) and "reference log-probs" in str(err.value)


def test_preflight_requires_the_v1_trainer():
    config = verl_config("algorithm.adv_estimator=erpo", "trainer.use_v1=false", *ERPO_SYNC)
    with pytest.raises(ERPOSetupError, match=r"trainer\.use_v1=false") as err:
        preflight(config)
    assert "trainer.use_v1=true trainer.v1.trainer_mode=erpo_sync" in str(err.value)


def test_preflight_rejects_bypass_mode_when_entropy_is_needed():
    config = verl_config("algorithm.adv_estimator=erpo", "algorithm.rollout_correction.bypass_mode=true", *ERPO_SYNC)
    with pytest.raises(ERPOSetupError, match=r"algorithm\.rollout_correction\.bypass_mode=false"):
        preflight(config)
    # without the gate (and with position buckets) no entropy is needed: bypass mode is fine
    config = verl_config("algorithm.adv_estimator=erpo", "algorithm.rollout_correction.bypass_mode=true",
                         "+algorithm.erpo.gate=false", *ERPO_SYNC)
    preflight(config)


@pytest.mark.parametrize("estimator", ["grpo", "dapo", "gae"])
def test_preflight_leaves_other_estimators_untouched(estimator):
    config = verl_config(f"algorithm.adv_estimator={estimator}")  # trainer mode "sync" is fine for them
    before = OmegaConf.to_container(config)
    assert preflight(config) == []
    assert OmegaConf.to_container(config) == before


def test_preflight_turns_the_reference_policy_on_without_kl():
    config = verl_config("algorithm.adv_estimator=erpo", *ERPO_SYNC)
    actor, ref = config.actor_rollout_ref.actor, config.actor_rollout_ref.ref
    assert not actor.use_kl_loss and not need_reference_policy(config)
    assert ref.get("log_prob_micro_batch_size_per_gpu") is None
    changes = preflight(config)
    assert changes == ["actor_rollout_ref.actor.use_kl_loss=True", "actor_rollout_ref.actor.kl_loss_coef=0.0",
                       "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=1"]
    assert actor.use_kl_loss is True and actor.kl_loss_coef == 0.0
    assert ref.log_prob_micro_batch_size_per_gpu == 1
    assert need_reference_policy(config)
    assert preflight(config) == []  # idempotent


def test_preflight_copies_the_rollout_micro_batch_size_to_the_reference():
    config = verl_config("algorithm.adv_estimator=ep_grpo",
                         "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4", *ERPO_SYNC)
    preflight(config)
    assert config.actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu == 4
    # a reference micro batch size the user set, or dynamic batch sizes: left alone
    config = verl_config("algorithm.adv_estimator=erpo", "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2",
                         *ERPO_SYNC)
    assert "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=2" not in preflight(config)
    assert config.actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu == 2
    config = verl_config("algorithm.adv_estimator=erpo", "actor_rollout_ref.actor.use_dynamic_bsz=true", *ERPO_SYNC)
    assert len(preflight(config)) == 2
    assert config.actor_rollout_ref.ref.get("log_prob_micro_batch_size_per_gpu") is None


def test_preflight_keeps_a_user_set_kl_loss():
    config = verl_config("algorithm.adv_estimator=erpo", "actor_rollout_ref.actor.use_kl_loss=true",
                         "actor_rollout_ref.actor.kl_loss_coef=0.05", *ERPO_SYNC)
    before = OmegaConf.to_container(config)
    assert preflight(config) == []
    assert config.actor_rollout_ref.actor.kl_loss_coef == 0.05
    assert OmegaConf.to_container(config) == before
    # a KL penalty in the reward also runs the reference policy: nothing to change
    config = verl_config("algorithm.adv_estimator=erpo", "algorithm.use_kl_in_reward=true", *ERPO_SYNC)
    assert preflight(config) == [] and not config.actor_rollout_ref.actor.use_kl_loss


def test_preflight_with_progress_off_does_not_turn_the_reference_on():
    config = verl_config("algorithm.adv_estimator=erpo", "+algorithm.erpo.progress_coef=0", *ERPO_SYNC)
    assert preflight(config) == []
    assert not config.actor_rollout_ref.actor.use_kl_loss and not need_reference_policy(config)
    # the entropy is still needed (gate on): the mode is still required
    with pytest.raises(ERPOSetupError, match=r"trainer\.v1\.trainer_mode=erpo_sync"):
        preflight(verl_config("algorithm.adv_estimator=erpo", "+algorithm.erpo.progress_coef=0"))
    # neither gate nor progress: plain GRPO, any trainer mode
    config = verl_config("algorithm.adv_estimator=erpo", "+algorithm.erpo.progress_coef=0",
                         "+algorithm.erpo.gate=false")
    assert preflight(config) == []


def test_preflight_validates_hyper_parameters():
    with pytest.raises(ValueError, match=r"unknown key algorithm\.erpo\.gate_gama"):
        preflight(verl_config("algorithm.adv_estimator=erpo", "+algorithm.erpo.gate_gama=3", *ERPO_SYNC))
    with pytest.raises(ValueError, match=r"num_buckets must be an integer >= 1, got 0"):
        preflight(verl_config("algorithm.adv_estimator=ep_grpo", "+algorithm.ep_grpo.num_buckets=0", *ERPO_SYNC))


def test_preflight_warns_about_dynamic_sampling_with_ep_grpo(caplog):
    config = verl_config("algorithm.adv_estimator=ep_grpo", "algorithm.filter_groups.enable=true", *ERPO_SYNC)
    with caplog.at_level(logging.WARNING, logger="erpo_verl.integration.preflight"):
        preflight(config)
    assert any("filter_groups" in r.getMessage() for r in caplog.records)


def test_preflight_for_a_third_party_estimator_follows_its_signature(registry):
    @accepts_extra_inputs
    def needs_ref(token_level_rewards, response_mask, index=None, config=None, ref_log_prob=None, **kwargs):
        return token_level_rewards, token_level_rewards

    registry("erpo_test_thirdparty_ref", needs_ref)
    with pytest.raises(ERPOSetupError, match=r"trainer\.v1\.trainer_mode=erpo_sync"):
        preflight(verl_config("algorithm.adv_estimator=erpo_test_thirdparty_ref"))
    config = verl_config("algorithm.adv_estimator=erpo_test_thirdparty_ref", *ERPO_SYNC)
    assert "actor_rollout_ref.actor.use_kl_loss=True" in preflight(config)


# ---------------------------------------------------------------------------------------------------------
# the driver-side wrapper of verl's validate_config
# ---------------------------------------------------------------------------------------------------------
def test_validate_config_wrapper_raises_before_verls_checks():
    # verl's default config fails verl's own validation (no micro batch sizes set) ...
    config = verl_config("algorithm.adv_estimator=erpo")
    with pytest.raises(Exception) as verl_error:
        original_validate_config()(config, False, False)
    assert not isinstance(verl_error.value, ERPOSetupError)
    # ... but through the wrapper our ERPOSetupError comes first, and the config is left as it was
    config = verl_config("algorithm.adv_estimator=erpo")
    before = OmegaConf.to_container(config)
    with pytest.raises(ERPOSetupError, match=r"trainer\.v1\.trainer_mode=erpo_sync"):
        vucfg.validate_config(config, use_reference_policy=False, use_critic=False)
    assert OmegaConf.to_container(config) == before


def original_validate_config():
    wrapped = vucfg.validate_config
    assert (getattr(wrapped, "__erpo_touchpoint__", None) == "wrapper.validate_config"), "verl.utils.config.validate_config is not wrapped"
    return wrapped.__wrapped__


VALID_SMALL = (
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
    "critic.ppo_micro_batch_size_per_gpu=1",
    "trainer.n_gpus_per_node=1",
    "data.train_batch_size=8",
    "actor_rollout_ref.actor.ppo_mini_batch_size=8",
)


def test_validate_config_wrapper_prepares_the_reference_policy():
    config = verl_config("algorithm.adv_estimator=erpo", *ERPO_SYNC, *VALID_SMALL)
    vucfg.validate_config(config, use_reference_policy=False, use_critic=False)  # verl's checks pass too
    assert config.actor_rollout_ref.actor.use_kl_loss and config.actor_rollout_ref.actor.kl_loss_coef == 0.0


def test_validate_config_wrapper_passes_the_updated_reference_flag():
    calls = []

    class FakeModule:
        @staticmethod
        def validate_config(config, use_reference_policy, use_critic):
            calls.append((use_reference_policy, use_critic))

    wrap_validate_config(FakeModule)
    wrap_validate_config(FakeModule)  # idempotent: not wrapped twice
    assert not (getattr(FakeModule.validate_config.__wrapped__, "__erpo_touchpoint__", None) == "wrapper.validate_config")
    FakeModule.validate_config(verl_config("algorithm.adv_estimator=erpo", *ERPO_SYNC), False, False)
    FakeModule.validate_config(verl_config("algorithm.adv_estimator=grpo"), False, True)
    assert calls == [(True, False), (False, True)]


def test_erpo_sync_trainer_runs_preflight_in_its_constructor():
    from erpo_verl.integration.trainer_mode import ERPOTrainerSync

    with pytest.raises(ERPOSetupError):  # the mode is erpo_sync here, but the legacy trainer is selected
        ERPOTrainerSync(verl_config("algorithm.adv_estimator=erpo", "trainer.use_v1=false", *ERPO_SYNC))


def test_extra_inputs_do_not_depend_on_row_order():
    """Forwarding keeps rows aligned: permuting the DataProto permutes the advantages."""
    data = make_data()
    perm = np.array([3, 0, 5, 1, 4, 2])
    shuffled = make_data([RESPONSES[i] for i in perm])
    a = compute_advantage_with_extras(data, algo_config("erpo"), {}).batch["advantages"]
    b = compute_advantage_with_extras(shuffled, algo_config("erpo"), {}).batch["advantages"]
    torch.testing.assert_close(b, a[torch.tensor(perm)], rtol=1e-6, atol=1e-6)
