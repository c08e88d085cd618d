"""The 80/20 forking-token mask: exact selection, padding, ties, and unchanged loss normalization."""

import numpy as np
import pytest
import torch

from erpo_verl.estimators import compute_dapo_outcome_advantage, compute_erpo_advantage, compute_grpo_forking_advantage
from erpo_verl.estimators.forking import top_entropy_mask


def test_keeps_the_top_ratio_of_valid_tokens_and_ignores_padding():
    entropy = torch.tensor([[0.1, 0.9, 0.5, 9.0], [0.7, 0.3, 8.0, 8.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])  # padding holds the largest values on purpose
    # 5 valid tokens, ratio 0.4 -> ceil(2.0) = 2 tokens: 0.9 and 0.7
    kept = top_entropy_mask(entropy, mask, 0.4)
    assert kept.tolist() == [[False, True, False, False], [True, False, False, False]]


def test_ties_at_the_threshold_are_all_kept():
    entropy = torch.tensor([[0.5, 0.5, 0.5, 0.1]])
    kept = top_entropy_mask(entropy, torch.ones(1, 4), 0.25)  # k = 1, threshold 0.5, three tokens tie
    assert kept.tolist() == [[True, True, True, False]]


def test_ratio_one_keeps_every_valid_token_and_an_empty_batch_keeps_none():
    entropy = torch.rand(3, 4)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert torch.equal(top_entropy_mask(entropy, mask, 1.0), mask.bool())
    assert not top_entropy_mask(entropy, torch.zeros(3, 4), 0.2).any()


def _batch():
    g = torch.Generator().manual_seed(0)
    rewards = torch.zeros(4, 5)
    rewards[[0, 2], 0] = 1.0
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    entropy = torch.rand(4, 5, generator=g)
    return rewards, mask, np.array(["a", "a", "b", "b"], dtype=object), entropy


def test_grpo_forking_zeroes_the_advantage_outside_the_top_tokens():
    rewards, mask, index, entropy = _batch()
    full, _ = compute_dapo_outcome_advantage(rewards, mask, index)
    masked, _ = compute_grpo_forking_advantage(rewards, mask, index, old_entropy=entropy)
    keep = top_entropy_mask(entropy, mask, 0.2)
    assert keep.sum().item() == 3  # ceil(0.2 * 14)
    assert torch.equal(masked, full * keep)


def test_every_estimator_takes_the_mask_as_an_option():
    rewards, mask, index, entropy = _batch()
    keep = top_entropy_mask(entropy, mask, 0.5)
    log_probs = torch.randn(4, 5)
    for fn, section, kwargs in (
        (compute_dapo_outcome_advantage, "dapo", {}),
        (compute_erpo_advantage, "erpo", {"old_log_probs": log_probs, "ref_log_prob": log_probs * 0.9}),
    ):
        plain, _ = fn(rewards, mask, index, {}, old_entropy=entropy, **kwargs)
        masked, _ = fn(rewards, mask, index, {section: {"top_entropy_ratio": 0.5}}, old_entropy=entropy, **kwargs)
        assert torch.equal(masked, plain * keep)


def test_the_loss_is_still_normalized_by_all_valid_tokens():
    from verl.trainer.ppo.core_algos import get_policy_loss_fn
    from verl.workers.config import FSDPActorConfig

    rewards, mask, index, entropy = _batch()
    advantages, _ = compute_grpo_forking_advantage(rewards, mask, index, old_entropy=entropy)
    cfg = FSDPActorConfig(strategy="fsdp", rollout_n=2, ppo_micro_batch_size_per_gpu=1, use_dynamic_bsz=False)
    log_prob = torch.zeros(4, 5)  # ratio 1: per-token loss is exactly -A
    loss, _ = get_policy_loss_fn("vanilla")(
        old_log_prob=log_prob, log_prob=log_prob, advantages=advantages, response_mask=mask.bool(),
        loss_agg_mode="token-mean", config=cfg,
    )
    assert loss.item() == pytest.approx((-advantages * mask).sum().item() / mask.sum().item())


def test_a_ratio_out_of_range_is_an_error_naming_the_key():
    rewards, mask, index, entropy = _batch()
    with pytest.raises(ValueError, match="top_entropy_ratio"):
        compute_grpo_forking_advantage(rewards, mask, index, {"grpo_forking": {"top_entropy_ratio": 0}}, old_entropy=entropy)
    with pytest.raises(ValueError, match="erpo_sync"):
        compute_grpo_forking_advantage(rewards, mask, index)
