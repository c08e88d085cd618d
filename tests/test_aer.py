"""AER (adaptive entropy regularization): per-sample coefficients, controller, state, loss term."""

import math

import pytest
import torch

from erpo_verl.aer_controller import AERState, per_sample_coefficients
from erpo_verl.integration.aer_loss import AERPolicyLossConfig, aer_ppo_loss, compute_policy_loss_aer


def _cfg(**kw):
    return AERPolicyLossConfig(loss_mode="aer", **kw)


def test_smooth_coefficients_weight_hard_prompts_by_their_failure_rate():
    # group 0: 2/4 correct (acc .5), group 1: 4/4 (acc 1), group 2: 0/2 (acc 0)
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    group = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    coef = per_sample_coefficients(rewards, group, 3, "smooth", 0.5, 0.5)
    difficulty = torch.tensor([0.5] * 4 + [0.0] * 4 + [1.0] * 2)
    assert torch.allclose(coef, difficulty / difficulty.mean())
    assert coef.mean().item() == pytest.approx(1.0)


def test_threshold_coefficients_select_prompts_at_or_below_rho():
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    group = torch.tensor([0, 0, 1, 1, 2, 2])
    coef = per_sample_coefficients(rewards, group, 3, "threshold", 0.5, 0.5)
    assert coef.tolist() == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0]


def test_signed_rewards_count_as_correct_above_the_threshold_and_all_solved_spreads_evenly():
    rewards = torch.tensor([1.0, 1.0, 1.0, 1.0])  # ±1 rewards, all correct
    coef = per_sample_coefficients(rewards, torch.tensor([0, 0, 1, 1]), 2, "smooth", 0.5, 0.5)
    assert coef.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_controller_raises_alpha_below_target_and_lowers_it_above():
    cfg = _cfg(aer_target_ratio=0.5, aer_alpha_init=0.004, aer_alpha_lr=0.001, aer_alpha_max=0.01)
    state = AERState(alpha=cfg.aer_alpha_init)
    used = state.step(4.0, cfg)  # anchors H0 = 4, target 2; entropy above target -> alpha goes down
    assert used == 0.004 and state.initial_entropy == 4.0 and state.alpha == pytest.approx(0.003)
    state.step(1.0, cfg)  # below target -> up
    assert state.alpha == pytest.approx(0.004)
    state.step(2.0, cfg)  # at target -> unchanged
    assert state.alpha == pytest.approx(0.004)


def test_controller_respects_its_bounds():
    cfg = _cfg(aer_alpha_init=0.0, aer_alpha_lr=0.004, aer_alpha_max=0.01, aer_target_ratio=0.5)
    state = AERState(alpha=0.0)
    state.step(4.0, cfg)
    assert state.alpha == 0.0  # clipped at 0
    for _ in range(5):
        state.step(0.5, cfg)
    assert state.alpha == pytest.approx(0.01)  # clipped at alpha_max


def test_proportional_controller_moves_by_the_relative_gap():
    cfg = _cfg(aer_update="proportional", aer_alpha_init=0.005, aer_alpha_lr=0.01, aer_target_ratio=0.5)
    state = AERState(alpha=0.005)
    state.step(4.0, cfg)  # target 2, gap (2 - 4) / 2 = -1
    assert state.alpha == pytest.approx(0.005 - 0.01 * 1.0 if 0.005 - 0.01 > 0 else 0.0)
    state = AERState(alpha=0.005, initial_entropy=4.0)
    state.step(1.0, cfg)  # gap (2 - 1) / 2 = 0.5
    assert state.alpha == pytest.approx(min(0.005 + 0.005, cfg.aer_alpha_max))


def test_state_round_trips_through_a_checkpoint_folder(tmp_path):
    state = AERState(alpha=0.0031, initial_entropy=3.25)
    path = state.save(tmp_path / "global_step_7")
    assert path.name == "erpo_aer_state.json"
    restored = AERState.load(tmp_path / "global_step_7")
    assert (restored.alpha, restored.initial_entropy) == (0.0031, 3.25)
    assert AERState.load(tmp_path / "missing") is None


@pytest.mark.parametrize(
    "bad",
    [
        {"aer_difficulty_mode": "hard"},
        {"aer_update": "pid"},
        {"aer_target_ratio": 0.0},
        {"aer_alpha_lr": -1.0},
        {"aer_alpha_init": 0.5, "aer_alpha_max": 0.01},
        {"aer_acc_threshold": 1.5},
    ],
)
def test_bad_aer_options_name_the_knob(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        _cfg(**bad)


def test_registered_aer_policy_loss_is_the_vanilla_clipped_objective():
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.workers.config import FSDPActorConfig

    cfg = FSDPActorConfig(strategy="fsdp", rollout_n=2, ppo_micro_batch_size_per_gpu=1, use_dynamic_bsz=False)
    g = torch.Generator().manual_seed(0)
    old, new, adv = (torch.randn(3, 5, generator=g) for _ in range(3))
    mask = torch.ones(3, 5, dtype=torch.bool)
    ours, _ = compute_policy_loss_aer(old, new, adv, mask, "token-mean", cfg)
    ref, _ = get_policy_loss_fn("vanilla")(old_log_prob=old, log_prob=new, advantages=adv, response_mask=mask,
                                           loss_agg_mode="token-mean", config=cfg)
    assert torch.equal(ours, ref)


def test_aer_actor_loss_subtracts_the_coefficient_weighted_entropy():
    from tensordict import TensorDict

    from verl.utils import tensordict_utils as tu
    from verl.workers.config import FSDPActorConfig
    from verl.workers.utils.losses import ppo_loss

    cfg = FSDPActorConfig(strategy="fsdp", rollout_n=2, ppo_micro_batch_size_per_gpu=2, use_dynamic_bsz=False)
    lengths = [3, 2]
    g = torch.Generator().manual_seed(1)

    def nested(values):
        return torch.nested.nested_tensor([v for v in values], layout=torch.jagged)

    prompt_lengths = [2, 1]
    log_probs = [torch.randn(n, generator=g) for n in lengths]
    entropy = [torch.rand(n, generator=g) + 1.0 for n in lengths]
    coef = [torch.full((3,), 0.01), torch.full((2,), 0.03)]

    def full_sequence(values):
        # the engine's outputs cover prompt + response, shifted by one: response token t sits at p - 1 + t
        return nested([torch.cat([torch.zeros(p - 1), v, torch.zeros(1)]) for p, v in zip(prompt_lengths, values)])

    data = TensorDict(
        {
            "prompts": nested([torch.ones(p, dtype=torch.long) for p in prompt_lengths]),
            "responses": nested([torch.ones(n, dtype=torch.long) for n in lengths]),
            "response_mask": nested([torch.ones(n, dtype=torch.long) for n in lengths]),
            "old_log_probs": nested(log_probs),
            "advantages": nested([torch.randn(n, generator=g) for n in lengths]),
            "aer_coef": nested(coef),
        },
        batch_size=[2],
    )
    tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=None, global_batch_size=None)
    output = {"log_probs": full_sequence(log_probs), "entropy": full_sequence(entropy)}
    base, _ = ppo_loss(cfg, output, data)
    loss, metrics = aer_ppo_loss(cfg, output, data)
    expected_bonus = sum((c * e).sum() for c, e in zip(coef, entropy)) / sum(lengths)  # token-mean
    assert (base - loss).item() == pytest.approx(expected_bonus.item(), rel=1e-5)
    assert math.isclose(float(metrics["actor/aer_entropy_bonus"].values[0]), expected_bonus.item(), rel_tol=1e-5)
