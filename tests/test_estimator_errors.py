"""Every error of spec §5–§6, with its message, and the two accepted forms of the configuration."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from erpo_testlib import SPEC_ERPO_DEFAULTS, make_batch, tensors
from omegaconf import OmegaConf

from erpo_verl.estimators import (
    compute_dapo_outcome_advantage,
    compute_ep_grpo_advantage,
    compute_erpo_advantage,
    ep_grpo_config,
    erpo_config,
)

FNS = {"erpo": compute_erpo_advantage, "ep_grpo": compute_ep_grpo_advantage}
VALID_KEYS = sorted(SPEC_ERPO_DEFAULTS)


@pytest.fixture
def kw():
    batch = make_batch([
        dict(uid="a", reward=1.0, entropy=[0.5, 1.0, 2.0], old=[-1.0, -0.5, -0.25], ref=[-1.5, -0.5, -1.0]),
        dict(uid="a", reward=0.0, entropy=[1.0, 0.25], old=[-2.0, -1.0], ref=[-1.0, -1.0]),
        dict(uid="b", reward=1.0, entropy=[0.75], old=[-0.5], ref=[-0.75]),
        dict(uid="b", reward=1.0, entropy=[1.5, 1.5, 0.5, 2.0], old=[-1.0] * 4, ref=[-0.5] * 4),
    ])
    return tensors(batch)


def call(preset, kw, section=None, **extra):
    return FNS[preset](**{**kw, **extra}, config={preset: section or {}})


# ---------------------------------------------------------------------------------------------------------
# configuration (spec §5)
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["erpo", "ep_grpo"])
def test_unknown_key_names_it_and_lists_valid_keys(kw, preset):
    with pytest.raises(ValueError, match=rf"unknown key algorithm\.{preset}\.gate_gama") as err:
        call(preset, kw, {"gate_gama": 3.0})
    listed = str(err.value).split("valid keys are: ", 1)[1].split(", ")
    assert listed == sorted(listed)
    assert set(VALID_KEYS) <= set(listed)  # every key of spec §5 (the package may add options of its own)
    # norm_adv_by_std_in_grpo is read from the algorithm section, not the estimator's sub-section
    with pytest.raises(ValueError, match=rf"unknown key algorithm\.{preset}\.norm_adv_by_std_in_grpo"):
        call(preset, kw, {"norm_adv_by_std_in_grpo": False})


CHOICE_ERRORS = [
    ("gate_norm", "mean2", ["mean1", "none"]),
    ("entropy_stats_scope", "global", ["group", "batch", "response"]),
    ("bucket_coord", "token", ["position", "cum_entropy"]),
    ("bucket_norm", "minmax", ["zscore", "center"]),
    ("bucket_edges", "round", ["ceil", "floor"]),
    ("bucket_std", "sample", ["population", "unbiased"]),
]


@pytest.mark.parametrize("key,value,choices", CHOICE_ERRORS)
def test_invalid_choice(kw, key, value, choices):
    expected = f"{key}={value!r} is not valid; choose one of {choices}"
    with pytest.raises(ValueError, match=re.escape(expected)):
        call("erpo", kw, {key: value})


RANGE_ERRORS = [
    ("num_buckets", 0, "num_buckets must be an integer >= 1, got 0"),
    ("num_buckets", -3, "num_buckets must be an integer >= 1, got -3"),
    ("num_buckets", 2.5, "num_buckets must be an integer >= 1, got 2.5"),
    ("num_buckets", True, "num_buckets must be an integer >= 1, got True"),
    ("num_buckets", "10", "num_buckets must be an integer >= 1, got '10'"),
    ("gate_gamma", -0.5, "gate_gamma must be >= 0.0, got -0.5"),
    ("gate_gamma", "sharp", "gate_gamma must be a finite number, got 'sharp'"),
    ("gate_gamma", float("inf"), "gate_gamma must be a finite number, got inf"),
    ("progress_coef", -0.1, "progress_coef must be >= 0.0, got -0.1"),
    ("logratio_scale", 0.0, "logratio_scale must be > 0.0, got 0.0"),
    ("logratio_scale", -1.0, "logratio_scale must be > 0.0, got -1.0"),
    ("epsilon", 0.0, "epsilon must be > 0.0, got 0.0"),
    ("epsilon", -1e-6, "epsilon must be > 0.0, got -1e-06"),
    ("adv_clip", 0.0, "adv_clip must be > 0.0, got 0.0"),
    ("adv_clip", -2.0, "adv_clip must be > 0.0, got -2.0"),
    ("reward_threshold", float("nan"), "reward_threshold must be a finite number, got nan"),
    ("gate", "yes", "gate must be true or false, got 'yes'"),
    ("gate", 1, "gate must be true or false, got 1"),
    ("zero_var_fallback", 0, "zero_var_fallback must be true or false, got 0"),
    ("anchor_gate", "false", "anchor_gate must be true or false, got 'false'"),
]


@pytest.mark.parametrize("key,value,message", RANGE_ERRORS, ids=lambda x: repr(x)[:20])
@pytest.mark.parametrize("preset", ["erpo", "ep_grpo"])
def test_out_of_range_values(kw, preset, key, value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call(preset, kw, {key: value})
    with pytest.raises(ValueError, match=re.escape(message)):  # the config builders raise the same
        (erpo_config if preset == "erpo" else ep_grpo_config)({preset: {key: value}})


def test_boundary_values_are_accepted(kw):
    for section in ({"gate_gamma": 0.0}, {"progress_coef": 0.0}, {"num_buckets": 1}, {"adv_clip": 1e-3},
                    {"gate_gamma": 3}, {"reward_threshold": -1}, {"adv_clip": None}):
        adv, _ = call("erpo", kw, section)
        assert torch.isfinite(adv).all()


def test_section_must_be_a_mapping(kw):
    with pytest.raises(ValueError, match=r"algorithm\.erpo must be a mapping of hyper-parameters, got int"):
        compute_erpo_advantage(**kw, config={"erpo": 3})


# ---------------------------------------------------------------------------------------------------------
# missing inputs (spec §6)
# ---------------------------------------------------------------------------------------------------------
def test_missing_entropy_for_the_gate(kw):
    with pytest.raises(ValueError, match=r"old_entropy is required by the entropy gate but was not provided") as err:
        call("erpo", kw, {"progress_coef": 0.0}, old_entropy=None)
    assert "trainer.v1.trainer_mode=erpo_sync" in str(err.value)
    assert "never falls back to GRPO silently" in str(err.value)


def test_missing_entropy_for_cum_entropy_buckets(kw):
    with pytest.raises(ValueError, match=r"old_entropy is required by bucket_coord=cum_entropy") as err:
        call("ep_grpo", kw, {"gate": False}, old_entropy=None)
    assert "trainer.v1.trainer_mode=erpo_sync" in str(err.value)


@pytest.mark.parametrize("preset", ["erpo", "ep_grpo"])
def test_missing_ref_log_prob_when_progress_is_on(kw, preset):
    with pytest.raises(ValueError, match=r"ref_log_prob is required by the implicit progress term") as err:
        call(preset, kw, ref_log_prob=None)
    message = str(err.value)
    assert "trainer.v1.trainer_mode=erpo_sync" in message
    assert "use_kl_loss=True" in message and "kl_loss_coef=0" in message


def test_missing_old_log_probs_when_progress_is_on(kw):
    with pytest.raises(ValueError, match=r"old_log_probs is required by the implicit progress term"):
        call("erpo", kw, old_log_probs=None)


def test_no_error_for_inputs_that_are_not_needed(kw):
    # progress_coef = 0: no reference (nor old) log-probs needed
    call("erpo", kw, {"progress_coef": 0.0}, ref_log_prob=None, old_log_probs=None)
    call("ep_grpo", kw, {"progress_coef": 0.0}, ref_log_prob=None, old_log_probs=None)
    # gate off with position buckets: no entropy needed
    call("erpo", kw, {"gate": False}, old_entropy=None)
    call("ep_grpo", kw, {"gate": False, "bucket_coord": "position"}, old_entropy=None)
    # gate off, cum_entropy but progress off: nothing needed
    call("ep_grpo", kw, {"gate": False, "progress_coef": 0.0}, old_entropy=None, ref_log_prob=None,
         old_log_probs=None)
    # unused inputs are not validated either (wrong shape, NaN)
    call("erpo", kw, {"progress_coef": 0.0}, ref_log_prob=torch.full((1, 1), float("nan")))


def test_dapo_needs_no_extra_inputs(kw):
    adv, _ = compute_dapo_outcome_advantage(kw["token_level_rewards"], kw["response_mask"], kw["index"])
    assert adv.shape == kw["token_level_rewards"].shape


# ---------------------------------------------------------------------------------------------------------
# non-finite values (spec §6)
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["old_entropy", "old_log_probs", "ref_log_prob"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_on_valid_positions(kw, name, bad):
    kw = dict(kw)
    kw[name] = kw[name].clone()
    kw[name][0, 1] = bad
    with pytest.raises(ValueError, match=rf"{name} has 1 NaN or infinite values on valid positions"):
        call("erpo", kw)
    kw[name][3, 0] = float("nan")
    kw[name][3, 3] = float("inf")
    with pytest.raises(ValueError, match=rf"{name} has 3 NaN or infinite values on valid positions"):
        call("ep_grpo", kw)


@pytest.mark.parametrize("fn", ["erpo", "ep_grpo", "dapo"])
def test_nonfinite_rewards_anywhere(kw, fn):
    """Rewards are checked on every position: verl's sequence reward is the sum of the whole row."""
    kw = dict(kw)
    kw["token_level_rewards"] = kw["token_level_rewards"].clone()
    kw["token_level_rewards"][2, 3] = float("nan")  # a padded position of row 2
    with pytest.raises(ValueError, match=r"token_level_rewards has 1 NaN or infinite values on positions"):
        if fn == "dapo":
            compute_dapo_outcome_advantage(kw["token_level_rewards"], kw["response_mask"], kw["index"])
        else:
            call(fn, kw)


# ---------------------------------------------------------------------------------------------------------
# shapes and index (spec §6)
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["old_entropy", "old_log_probs", "ref_log_prob"])
def test_per_token_shape_mismatch(kw, name):
    kw = dict(kw)
    kw[name] = kw[name][:, :-1]
    with pytest.raises(ValueError, match=re.escape(f"{name} has shape (4, 3); expected (4, 4)")):
        call("erpo", kw)


def test_mask_shape_mismatch(kw):
    with pytest.raises(ValueError, match=re.escape("response_mask has shape (3, 4); expected (4, 4)")):
        call("erpo", kw, response_mask=kw["response_mask"][:3])
    with pytest.raises(ValueError, match=re.escape("response_mask has shape (3, 4); expected (4, 4)")):
        compute_dapo_outcome_advantage(kw["token_level_rewards"], kw["response_mask"][:3], kw["index"])


def test_rewards_must_be_2d(kw):
    with pytest.raises(ValueError, match=r"token_level_rewards must be a 2-D tensor \(batch, response_length\)"):
        call("erpo", kw, token_level_rewards=kw["token_level_rewards"].sum(-1))


@pytest.mark.parametrize("index", [
    np.array(["a", "a", "b"], dtype=object),
    ["a", "a", "b", "b", "c"],
    torch.tensor([0, 0, 1]),
])
@pytest.mark.parametrize("fn", ["erpo", "ep_grpo", "dapo"])
def test_index_of_wrong_length(kw, index, fn):
    with pytest.raises(ValueError, match=rf"index has length {len(index)}; expected 4"):
        if fn == "dapo":
            compute_dapo_outcome_advantage(kw["token_level_rewards"], kw["response_mask"], index)
        else:
            call(fn, kw, index=index)


def test_index_is_required(kw):
    with pytest.raises(ValueError, match=r"index \(the prompt-group id of each response, verl's "
                                         r"non_tensor_batch\['uid'\]\) is required"):
        call("erpo", kw, index=None)


# ---------------------------------------------------------------------------------------------------------
# the configuration's forms
# ---------------------------------------------------------------------------------------------------------
SECTION = {"gate_gamma": 3.0, "num_buckets": 4, "bucket_norm": "center", "zero_var_fallback": True}


@pytest.mark.parametrize("preset", ["erpo", "ep_grpo"])
def test_dictconfig_and_plain_dict_agree(kw, preset):
    """verl passes its ``algorithm`` section (an OmegaConf DictConfig); a plain dict must act the same."""
    fn = FNS[preset]
    plain = {"adv_estimator": preset, "gamma": 1.0, "lam": 1.0, "norm_adv_by_std_in_grpo": False, preset: SECTION}
    dict_result, _ = fn(**kw, config=plain)
    omega = OmegaConf.create(plain)
    omega_result, _ = fn(**kw, config=omega)
    torch.testing.assert_close(omega_result, dict_result, rtol=0, atol=0)
    # the section and norm_adv_by_std_in_grpo were honoured: differs from the defaults
    default_result, _ = fn(**kw, config=None)
    assert not torch.allclose(default_result, dict_result)
    # an interpolation inside the section is resolved
    omega_interp = OmegaConf.create({**plain, "k": 4, preset: {**SECTION, "num_buckets": "${k}"}})
    torch.testing.assert_close(fn(**kw, config=omega_interp)[0], dict_result, rtol=0, atol=0)


@pytest.mark.parametrize("make", [dict, OmegaConf.create], ids=["dict", "DictConfig"])
def test_errors_are_the_same_for_both_forms(kw, make):
    with pytest.raises(ValueError, match=r"unknown key algorithm\.erpo\.bucket"):
        compute_erpo_advantage(**kw, config=make({"erpo": {"bucket": 3}}))
    with pytest.raises(ValueError, match=r"num_buckets must be an integer >= 1, got 0"):
        compute_erpo_advantage(**kw, config=make({"erpo": {"num_buckets": 0}}))


def test_none_config_and_missing_section_mean_defaults(kw):
    a, _ = compute_erpo_advantage(**kw)
    b, _ = compute_erpo_advantage(**kw, config={"norm_adv_by_std_in_grpo": True})
    c, _ = compute_erpo_advantage(**kw, config=OmegaConf.create({"erpo": {**SPEC_ERPO_DEFAULTS}}))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a, c, rtol=0, atol=0)


def test_section_of_the_other_estimator_is_ignored(kw):
    """algorithm.ep_grpo.* does not configure erpo (and is not an unknown key for it)."""
    a, _ = compute_erpo_advantage(**kw, config={"ep_grpo": {"num_buckets": 2}})
    b, _ = compute_erpo_advantage(**kw)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
