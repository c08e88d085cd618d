"""Property tests (hypothesis) of the estimators against the spec and against verl.

Random batches use values on coarse dyadic grids (entropies k/8, log-probs k/8, λ a power of two) so that
float32 sums are exact: the float64 plain-Python reference and the float32 implementation then agree to
~1e-6, and a disagreement is a real difference, not rounding. (With a non-dyadic λ such as the default 0.1,
a cell of *identical* non-zero log-ratios z-scores to ±(1 ulp)/(1 ulp + ε) instead of 0 in float32; that is
float noise of the ε = 1e-6 normalization, not a property of the estimator.)

Examples are deterministic (derandomized) by default; ``ERPO_HYPOTHESIS_EXPLORE=1`` draws fresh random examples,
ten times as many (see ``erpo_testlib.hypothesis_settings``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from erpo_testlib import hypothesis_settings, make_batch, reference_for, run_estimator, tensors
from hypothesis import given
from hypothesis import strategies as st

from erpo_verl.estimators import compute_dapo_outcome_advantage, compute_ep_grpo_advantage, compute_erpo_advantage
from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

FNS = {"erpo": compute_erpo_advantage, "ep_grpo": compute_ep_grpo_advantage}
ENTROPY = st.integers(0, 32).map(lambda x: x / 8)
LOGPROB = st.integers(-64, 0).map(lambda x: x / 8)
REWARDS = {
    "binary": st.sampled_from([0.0, 1.0]),
    "pm1": st.sampled_from([-1.0, 1.0]),
    "grid": st.integers(-4, 4).map(lambda x: x / 4),
}


@st.composite
def batches(draw, max_groups=4, max_size=4, max_width=8, min_len=0, entropy_kind=None, reward_kind=None):
    """A right-padded batch (see erpo_testlib.make_batch) with random groups, lengths 0..width, rewards and
    per-token values; responses of different groups are interleaved in random order."""
    width = draw(st.integers(1, max_width))
    reward_kind = reward_kind or draw(st.sampled_from(sorted(REWARDS)))
    entropy_kind = entropy_kind or draw(st.sampled_from(["random", "constant", "zero", "mixed"]))
    constant = draw(st.integers(1, 16)) / 8
    responses = []
    for g in range(draw(st.integers(1, max_groups))):
        for _ in range(draw(st.integers(1, max_size))):
            n = draw(st.integers(min_len, width))
            kind = draw(st.sampled_from(["random", "zero"])) if entropy_kind == "mixed" else entropy_kind
            if kind == "random":
                ent = draw(st.lists(ENTROPY, min_size=n, max_size=n))
            else:
                ent = [constant if kind == "constant" else 0.0] * n
            responses.append(dict(
                uid=f"prompt-{g}",
                reward=draw(REWARDS[reward_kind]),
                entropy=ent,
                old=draw(st.lists(LOGPROB, min_size=n, max_size=n)),
                ref=draw(st.lists(LOGPROB, min_size=n, max_size=n)),
            ))
    order = draw(st.permutations(range(len(responses))))
    return make_batch([responses[i] for i in order], width=width)


configs = st.fixed_dictionaries(
    {"logratio_scale": st.sampled_from([0.125, 0.5, 1.0])},
    optional={
        "gate": st.booleans(),
        "gate_gamma": st.sampled_from([0.0, 0.5, 2.0, 5.0]),
        "gate_norm": st.sampled_from(["mean1", "none"]),
        "entropy_stats_scope": st.sampled_from(["group", "batch"]),
        "progress_coef": st.sampled_from([0.0, 0.2, 1.0]),
        "bucket_coord": st.sampled_from(["position", "cum_entropy"]),
        "num_buckets": st.integers(1, 12),
        "bucket_norm": st.sampled_from(["zscore", "center"]),
        "zero_var_fallback": st.booleans(),
        "reward_threshold": st.sampled_from([0.0, 0.25, 0.5, -0.5]),
        "anchor_gate": st.booleans(),
        "adv_clip": st.sampled_from([None, 0.5, 2.0]),
        "epsilon": st.sampled_from([1e-6, 1e-3]),
    },
)
presets = st.sampled_from(["erpo", "ep_grpo"])


def masked_zero(adv: torch.Tensor, batch) -> bool:
    return torch.count_nonzero(adv[torch.tensor(batch["mask"]) == 0]).item() == 0


# ---------------------------------------------------------------------------------------------------------
# the vectorized implementation equals the plain-Python reference of the spec
# ---------------------------------------------------------------------------------------------------------
@given(batch=batches(), cfg=configs, preset=presets, norm=st.booleans())
@hypothesis_settings(max_examples=150)
def test_implementation_equals_reference(batch, cfg, preset, norm):
    adv, ret = run_estimator(preset, batch, cfg, norm_adv_by_std_in_grpo=norm)
    expected = reference_for(preset, batch, cfg, norm_adv_by_std_in_grpo=norm)
    assert adv.dtype == torch.float32 and torch.equal(adv, ret)
    torch.testing.assert_close(adv, torch.tensor(expected, dtype=torch.float32), rtol=1e-4, atol=1e-4)
    assert masked_zero(adv, batch)


# ---------------------------------------------------------------------------------------------------------
# reductions to verl's GRPO
# ---------------------------------------------------------------------------------------------------------
@st.composite
def float_batches(draw, max_bs=12, max_width=6):
    """Arbitrary float rewards (not on a grid), random 0/1 masks (holes and all-masked rows included)."""
    bs = draw(st.integers(1, max_bs))
    width = draw(st.integers(1, max_width))
    floats = st.floats(-10, 10, allow_nan=False, width=32)
    rewards = torch.tensor(draw(st.lists(st.lists(floats, min_size=width, max_size=width), min_size=bs, max_size=bs)))
    mask = torch.tensor(draw(st.lists(st.lists(st.sampled_from([0.0, 1.0]), min_size=width, max_size=width),
                                      min_size=bs, max_size=bs)))
    index = np.array(draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=bs, max_size=bs)), dtype=object)
    return rewards, mask, index


def assert_close_to_verl(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    # Same formula; the vectorized segment sums and verl's per-group torch.mean/torch.std round differently
    # in the last bit (observed ≤ 1 ulp), so "exactly" means equal up to float32 rounding.
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs.float(), rtol=1e-5, atol=1e-5)


@given(data=float_batches(), preset=presets, norm=st.booleans())
@hypothesis_settings()
def test_no_gate_no_progress_is_verl_grpo(data, preset, norm):
    rewards, mask, index = data
    expected, _ = compute_grpo_outcome_advantage(rewards, mask, index, norm_adv_by_std_in_grpo=norm)
    config = {"norm_adv_by_std_in_grpo": norm, preset: {"gate": False, "progress_coef": 0.0}}
    adv, ret = FNS[preset](rewards, mask, index, config=config)  # needs neither entropy nor log-probs
    assert_close_to_verl(adv, expected)
    assert torch.equal(adv, ret)
    assert torch.count_nonzero(adv[mask == 0]) == 0


@given(data=float_batches(), norm=st.booleans())
@hypothesis_settings()
def test_dapo_is_verl_grpo(data, norm):
    rewards, mask, index = data
    expected, _ = compute_grpo_outcome_advantage(rewards, mask, index, norm_adv_by_std_in_grpo=norm)
    adv, ret = compute_dapo_outcome_advantage(rewards, mask, index, config={"norm_adv_by_std_in_grpo": norm})
    assert_close_to_verl(adv, expected)
    assert torch.equal(adv, ret)


def test_dapo_without_config_normalizes_by_std():
    rewards = torch.tensor([[0.0, 1.0], [0.0, 0.0], [0.5, 0.0]])
    mask = torch.ones_like(rewards)
    index = np.array(["a", "a", "a"], dtype=object)
    expected, _ = compute_grpo_outcome_advantage(rewards, mask, index)
    assert_close_to_verl(compute_dapo_outcome_advantage(rewards, mask, index)[0], expected)


# ---------------------------------------------------------------------------------------------------------
# robustness: degenerate batches stay finite
# ---------------------------------------------------------------------------------------------------------
@given(
    batch=st.one_of(
        batches(max_size=1),  # single-response groups only
        batches(entropy_kind="constant"),
        batches(entropy_kind="zero"),
        batches(reward_kind="binary", max_size=2),  # often all-equal groups
        batches(max_width=3),  # many all-masked rows
    ),
    cfg=configs,
    preset=presets,
)
@hypothesis_settings()
def test_degenerate_batches_are_finite(batch, cfg, preset):
    adv, _ = run_estimator(preset, batch, cfg)
    assert bool(torch.isfinite(adv).all())
    assert masked_zero(adv, batch)


def test_everything_masked_is_finite_and_zero():
    batch = make_batch([dict(uid="a", reward=1.0, entropy=[]), dict(uid="a", reward=0.0, entropy=[]),
                        dict(uid="b", reward=1.0, entropy=[])], width=4)
    for preset in ("erpo", "ep_grpo"):
        adv, _ = run_estimator(preset, batch, {"zero_var_fallback": True})
        assert torch.equal(adv, torch.zeros(3, 4))


def test_all_equal_rewards_without_fallback_is_all_zero():
    """Every group all-equal, no fallback: GRPO's advantage is 0 and so is the implicit term."""
    batch = make_batch([dict(uid=u, reward=r, entropy=[0.5, 1.5, 2.0], old=[-1.0, -2.0, -0.5], ref=[-2.0, -1.0, -1.0])
                        for u, r in (("a", 1.0), ("a", 1.0), ("b", 0.0), ("b", 0.0))])
    adv, _ = run_estimator("erpo", batch, {"num_buckets": 1})
    assert torch.equal(adv, torch.zeros_like(adv))
    adv, _ = run_estimator("ep_grpo", batch, {"num_buckets": 1})  # fallback on: not zero
    assert torch.count_nonzero(adv) > 0


# ---------------------------------------------------------------------------------------------------------
# invariances
# ---------------------------------------------------------------------------------------------------------
def _call(preset, kw, cfg):
    return FNS[preset](**kw, config={preset: cfg})[0]


@given(batch=batches(), cfg=configs, preset=presets, extra=st.integers(1, 5), garbage=st.booleans())
@hypothesis_settings()
def test_extra_right_padding_columns_change_nothing(batch, cfg, preset, extra, garbage):
    kw = tensors(batch)
    base = _call(preset, kw, cfg)
    padded = {}
    for name, value in kw.items():
        if name == "index":
            padded[name] = value
            continue
        fill = float("nan") if garbage and name in ("old_entropy", "old_log_probs", "ref_log_prob") else 0.0
        padded[name] = torch.cat([value, torch.full((value.shape[0], extra), fill)], dim=1)
    out = _call(preset, padded, cfg)
    assert out.shape == (base.shape[0], base.shape[1] + extra)
    torch.testing.assert_close(out[:, : base.shape[1]], base, rtol=1e-6, atol=1e-6)
    assert torch.count_nonzero(out[:, base.shape[1]:]) == 0


@given(batch=batches(), cfg=configs, preset=presets, data=st.data())
@hypothesis_settings()
def test_permuting_responses_permutes_the_output(batch, cfg, preset, data):
    kw = tensors(batch)
    bs = kw["token_level_rewards"].shape[0]
    perm = data.draw(st.permutations(range(bs)))
    p = torch.tensor(perm, dtype=torch.long)
    permuted = {k: (v[perm] if k == "index" else v[p]) for k, v in kw.items()}
    torch.testing.assert_close(_call(preset, permuted, cfg), _call(preset, kw, cfg)[p], rtol=1e-6, atol=1e-6)


@given(batch=batches(max_groups=3), other=batches(max_groups=1), cfg=configs, preset=presets)
@hypothesis_settings()
def test_group_scope_other_groups_do_not_matter(batch, other, cfg, preset):
    """With entropy_stats_scope=group, a group's advantages depend only on that group's responses."""
    cfg = {**cfg, "entropy_stats_scope": "group"}
    first_uid = batch["index"][0]
    keep = [i for i, u in enumerate(batch["index"]) if u == first_uid]
    width = len(batch["rewards"][0])
    other_width = len(other["rewards"][0])
    if other_width > width:  # bring the other batch to this width (cropping right-padded rows)
        other = {k: (v if k == "index" else [r[:width] for r in v]) for k, v in other.items()}
    else:
        other = {k: (v if k == "index" else [list(r) + [0.0] * (width - other_width) for r in v])
                 for k, v in other.items()}
    alone = {k: ([v[i] for i in keep] if k != "index" else v[keep]) for k, v in batch.items()}
    other["index"] = np.array(["another-prompt"] * len(other["index"]), dtype=object)
    mixed = {k: (list(other[k]) + list(batch[k]) if k != "index" else np.concatenate([other[k], batch[k]]))
             for k in batch}
    a_alone = _call(preset, tensors(alone), cfg)
    a_full = _call(preset, tensors(batch), cfg)
    a_mixed = _call(preset, tensors(mixed), cfg)
    n_other = len(other["index"])
    torch.testing.assert_close(a_full[keep], a_alone, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a_mixed[[n_other + i for i in keep]], a_alone, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------
# dtypes and garbage on masked positions
# ---------------------------------------------------------------------------------------------------------
@given(batch=batches(), cfg=configs, preset=presets)
@hypothesis_settings()
def test_bfloat16_inputs_give_float32_results(batch, cfg, preset):
    """The grid values are exact in bfloat16, so bf16 inputs must give the float32 result (statistics are
    float32 whatever the input dtype)."""
    f32 = _call(preset, tensors(batch, torch.float32), cfg)
    bf16 = _call(preset, tensors(batch, torch.bfloat16), cfg)
    assert bf16.dtype == torch.float32
    torch.testing.assert_close(bf16, f32, rtol=1e-6, atol=1e-6)


@given(data=float_batches(), seed=st.integers(0, 2**16), preset=presets)
@hypothesis_settings()
def test_bfloat16_arbitrary_values_match_float32_of_the_rounded_values(data, seed, preset):
    rewards, mask, index = data
    g = torch.Generator().manual_seed(seed)
    entropy = torch.rand(rewards.shape, generator=g) * 3
    old = -torch.rand(rewards.shape, generator=g) * 5
    ref = -torch.rand(rewards.shape, generator=g) * 5
    kw = dict(token_level_rewards=rewards, response_mask=mask, index=index, old_entropy=entropy,
              old_log_probs=old, ref_log_prob=ref)
    bf = {k: (v.bfloat16() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    rounded = {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in bf.items()}
    out = _call(preset, bf, {})
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, _call(preset, rounded, {}), rtol=1e-5, atol=1e-5)


@given(batch=batches(), cfg=configs, preset=presets, value=st.sampled_from([float("nan"), float("inf"), -float("inf")]))
@hypothesis_settings()
def test_nonfinite_values_on_masked_positions_are_ignored(batch, cfg, preset, value):
    kw = tensors(batch)
    base = _call(preset, kw, cfg)
    masked = kw["response_mask"] == 0
    dirty = dict(kw)
    for name in ("old_entropy", "old_log_probs", "ref_log_prob"):
        dirty[name] = kw[name].masked_fill(masked, value)
    out = _call(preset, dirty, cfg)
    torch.testing.assert_close(out, base, rtol=0, atol=0)


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int64, torch.float32])
def test_mask_dtypes(mask_dtype):
    batch = make_batch([dict(uid="a", reward=1.0, entropy=[0.5, 1.0], old=[-1.0, -0.5], ref=[-2.0, -0.5]),
                        dict(uid="a", reward=0.0, entropy=[2.0], old=[-1.0], ref=[-1.5])])
    kw = tensors(batch)
    base = _call("erpo", kw, {})
    kw["response_mask"] = kw["response_mask"].to(mask_dtype)
    torch.testing.assert_close(_call("erpo", kw, {}), base, rtol=0, atol=0)


def test_index_types():
    """uids may be strings, ints, numpy arrays, lists or tensors; groups follow equality, not type."""
    batch = make_batch([dict(uid="x", reward=r, entropy=[0.5, 1.0, 2.0][: n], old=[-1.0] * n, ref=[-0.5] * n)
                        for r, n in ((1.0, 3), (0.0, 2), (0.0, 1), (1.0, 2))])
    kw = tensors(batch)
    results = []
    for index in (np.array(["u1", "u1", "u2", "u2"], dtype=object), ["u1", "u1", "u2", "u2"],
                  np.array([7, 7, 3, 3]), torch.tensor([7, 7, 3, 3])):
        results.append(_call("ep_grpo", {**kw, "index": index}, {}))
    for r in results[1:]:
        torch.testing.assert_close(r, results[0], rtol=0, atol=0)
