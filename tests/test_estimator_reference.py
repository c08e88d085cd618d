"""The package's plain reference (:mod:`erpo_verl.estimators.reference`) equals the fast path.

Random batches of every kind (right-padded, holes, interleaved groups, single-response groups, continuous rewards,
an odd width, several chunks) with every option of spec §5 and §8, and bfloat16 inputs. The fast path computes in
float32, the reference in float64; they agree to ~1e-6.
"""

from __future__ import annotations

import pytest
import torch
from erpo_testlib import BATCHES, CONFIGS, random_batch

import erpo_verl.estimators.segments as segments
from erpo_verl.estimators import (
    compute_ep_grpo_advantage,
    compute_erpo_advantage,
    ep_grpo_config,
    erpo_config,
    reference_advantage,
)

FNS = {"erpo": (compute_erpo_advantage, erpo_config), "ep_grpo": (compute_ep_grpo_advantage, ep_grpo_config)}


def both(preset: str, batch: dict, cfg: dict, dtype=torch.float64):
    fn, build = FNS[preset]
    config = {preset: dict(cfg)}
    fast, _ = fn(**batch, config=config)
    plain = reference_advantage(batch["token_level_rewards"], batch["response_mask"], batch["index"],
                                build(config), batch["old_entropy"], batch["old_log_probs"], batch["ref_log_prob"],
                                dtype=dtype)
    assert plain.dtype == torch.float32 and plain.shape == fast.shape
    assert torch.count_nonzero(plain[batch["response_mask"] == 0]) == 0
    return fast, plain


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "defaults")
@pytest.mark.parametrize("preset", ["erpo", "ep_grpo"])
@pytest.mark.parametrize("kind", list(BATCHES))
def test_reference_equals_fast_path(kind, preset, cfg):
    fast, plain = both(preset, random_batch(sum(map(ord, kind + preset)) + 1, **BATCHES[kind]), cfg)
    torch.testing.assert_close(fast, plain, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("cfg", [{}, {"bucket_edges": "floor", "bucket_std": "unbiased", "entropy_stats_scope": "response"},
                                 {"entropy_stats_scope": "batch", "top_entropy_ratio": 0.3}])
@pytest.mark.parametrize("preset", ["erpo", "ep_grpo"])
def test_reference_equals_fast_path_over_many_chunks(monkeypatch, preset, cfg):
    monkeypatch.setattr(segments, "CPU_CHUNK_TOKENS", 64)
    fast, plain = both(preset, random_batch(41, bs=60, width=24, group=3, holes=True, shuffle=True, singles=True), cfg)
    torch.testing.assert_close(fast, plain, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("cfg", [{}, {"bucket_edges": "floor", "bucket_std": "unbiased", "entropy_stats_scope": "response"}])
@pytest.mark.parametrize("preset", ["erpo", "ep_grpo"])
def test_reference_equals_fast_path_on_bfloat16_inputs(preset, cfg):
    batch = random_batch(43, holes=True, singles=True, shuffle=True)
    bf16 = {k: (v.to(torch.bfloat16) if isinstance(v, torch.Tensor) and k != "response_mask" else v)
            for k, v in batch.items()}
    fast, plain = both(preset, bf16, cfg)
    torch.testing.assert_close(fast, plain, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("preset", ["erpo", "ep_grpo"])
def test_reference_in_float32_is_close_too(preset):
    """The float32 reference (the one ``make bench`` times) is the same estimator to float32 precision."""
    fast, plain = both(preset, random_batch(47, holes=True), {}, dtype=torch.float32)
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cfg", [{"bucket_coord": "cum_entropy"}, {"bucket_coord": "cum_entropy", "bucket_edges": "floor"}])
@pytest.mark.parametrize("preset", ["erpo", "ep_grpo"])
def test_reference_equals_fast_path_with_negative_entropies(preset, cfg):
    """Running sums that are not monotone: the fast path's per-token bucket ids."""
    fast, plain = both(preset, random_batch(53, holes=True, negative_entropy=True), cfg)
    torch.testing.assert_close(fast, plain, rtol=2e-5, atol=2e-5)
