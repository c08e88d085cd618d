"""Masks with holes (spec §1, §3) and the §8 options, on hand-computed cases and on invariances.

* Holes: the position coordinate is the rank t of a token among the valid tokens of its row, so a row whose valid
  tokens are spread over columns with masked gaps (multi-turn tool output) is bucketed like the same tokens
  packed to the left; right-padded rows are unchanged.
* ``bucket_edges: floor``, ``bucket_std: unbiased``, ``entropy_stats_scope: response``: the three conventions of
  the third-party implementation, each written out by hand here.

The expected numbers are computed in the test from the spec's formulas, never by calling the implementation; each
case is checked against the fast path and against the package's plain reference (:mod:`reference`).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from erpo_testlib import reference_advantages

from erpo_verl.estimators import (
    compute_ep_grpo_advantage,
    compute_erpo_advantage,
    ep_grpo_config,
    erpo_config,
    reference_advantage,
)
from erpo_verl.estimators.buckets import progress_bucket
from erpo_verl.estimators.config import EntropyProgressConfig

EPS = 1e-6
A_HAT = 0.5 / (math.sqrt(0.5) + EPS)  # rewards {1, 0}: mean 0.5, unbiased std sqrt(0.5)
FNS = {"erpo": (compute_erpo_advantage, erpo_config), "ep_grpo": (compute_ep_grpo_advantage, ep_grpo_config)}


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def call_both(kw: dict, cfg: dict, preset: str = "erpo") -> torch.Tensor:
    """The fast path's advantages, after checking that the package reference gives the same."""
    fn, build = FNS[preset]
    config = {preset: cfg}
    adv, ret = fn(**kw, config=config)
    assert adv.dtype == torch.float32 and torch.equal(adv, ret)
    ref = reference_advantage(kw["token_level_rewards"], kw["response_mask"], kw["index"], build(config),
                              kw.get("old_entropy"), kw.get("old_log_probs"), kw.get("ref_log_prob"))
    torch.testing.assert_close(adv, ref, rtol=1e-6, atol=1e-6)
    return adv


# ---------------------------------------------------------------------------------------------------------
# masks with holes
# ---------------------------------------------------------------------------------------------------------
# Group "a", K = 3, gate off, η = λ = 1, bucket_norm center, s = old − ref (ref = 0):
#   r0 (reward 1): mask [1, 0, 1, 1] (|o| = 3, a hole at column 1), s = [0.4, ×, 0.2, 0.6]
#   r1 (reward 0): mask [1, 1, 0, 0] (|o| = 2),                     s = [0.0, 0.1]
# ceil, by rank:  r0 t = 0, 1, 2 → ⌊(3(t+1) − 1)/3⌋ = 0, 1, 2;  r1 t = 0, 1 → ⌊(3(t+1) − 1)/2⌋ = 1, 2
#   cells: b0 {r0: 0.4} (one token → 0); b1 {r0: 0.2, r1: 0.0} mean 0.1; b2 {r0: 0.6, r1: 0.1} mean 0.35
#   (by column, r0's tokens at columns 2 and 3 would both be in bucket 2: the old reading of holes)
# floor, by rank: r0 → ⌊3t/3⌋ = 0, 1, 2;  r1 → ⌊3t/2⌋ = 0, 1
#   cells: b0 {0.4, 0.0} mean 0.2; b1 {0.2, 0.1} mean 0.15; b2 {r0: 0.6} (one token → 0)
# anchor: d = sign(Â) = +1 for r0, −1 for r1; A = Â + η d s̃
HOLE_CFG = {"gate": False, "num_buckets": 3, "progress_coef": 1.0, "logratio_scale": 1.0, "bucket_norm": "center"}
NAN = float("nan")


def hole_batch() -> dict:
    return {
        "token_level_rewards": torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]]),
        "response_mask": torch.tensor([[1, 0, 1, 1], [1, 1, 0, 0]]),
        "index": np.array(["a", "a"], dtype=object),
        "old_entropy": torch.ones(2, 4),
        "old_log_probs": torch.tensor([[0.4, NAN, 0.2, 0.6], [0.0, 0.1, 7.0, 7.0]]),  # garbage where masked
        "ref_log_prob": torch.zeros(2, 4),
    }


@pytest.mark.parametrize("edges,expected", [
    ("ceil", [[A_HAT, 0.0, A_HAT + 0.1, A_HAT + 0.25], [-A_HAT + 0.1, -A_HAT + 0.25, 0.0, 0.0]]),
    ("floor", [[A_HAT + 0.2, 0.0, A_HAT + 0.05, A_HAT], [-A_HAT + 0.2, -A_HAT + 0.05, 0.0, 0.0]]),
])
def test_holes_position_is_the_rank_among_valid_tokens(edges, expected):
    adv = call_both(hole_batch(), {**HOLE_CFG, "bucket_edges": edges})
    torch.testing.assert_close(adv, torch.tensor(expected), rtol=1e-5, atol=1e-5)


def test_holes_bucket_ids_by_rank_not_by_column():
    mask = torch.tensor([[1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]])
    for coord in ("position", "cum_entropy"):  # constant entropy: both coordinates agree
        cfg = EntropyProgressConfig(bucket_coord=coord, num_buckets=4)
        b = progress_bucket(cfg, mask, mask.sum(dim=1), torch.ones_like(mask))
        # |o| = 4, ranks 0..3 at columns 0, 2, 3, 6 → ⌊(4(t+1) − 1)/4⌋ = t
        assert b[0, mask[0] == 1].tolist() == [0, 1, 2, 3], coord
        floor = EntropyProgressConfig(bucket_coord=coord, num_buckets=4, bucket_edges="floor")
        assert progress_bucket(floor, mask, mask.sum(dim=1), torch.ones_like(mask))[0, mask[0] == 1].tolist() == \
            [0, 1, 2, 3], coord


def spread(batch: dict, seed: int, width: int) -> dict:
    """The same responses with their valid tokens moved, in order, to random columns of a wider row: masked
    columns (holding garbage) open up between them."""
    gen = torch.Generator().manual_seed(seed)
    bs, old_width = batch["response_mask"].shape
    out = {k: (torch.full((bs, width), 9.0) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    out["response_mask"] = torch.zeros(bs, width)
    out["token_level_rewards"] = torch.zeros(bs, width)
    for i in range(bs):
        n = int(batch["response_mask"][i].sum())
        cols = torch.sort(torch.randperm(width, generator=gen)[:n]).values
        for name in ("response_mask", "token_level_rewards", "old_entropy", "old_log_probs", "ref_log_prob"):
            out[name][i, cols] = batch[name][i, :n]
    return out


@pytest.mark.parametrize("cfg", [{}, {"bucket_edges": "floor"}, {"bucket_std": "unbiased"},
                                 {"entropy_stats_scope": "response"}, {"top_entropy_ratio": 0.3},
                                 {"bucket_edges": "floor", "bucket_std": "unbiased", "entropy_stats_scope": "response"}])
@pytest.mark.parametrize("preset", ["erpo", "ep_grpo"])
def test_holes_give_the_advantages_of_the_packed_rows(preset, cfg):
    """Spreading each row's valid tokens over a wider row with masked gaps moves the advantages with them."""
    rng = np.random.default_rng(5)
    gen = torch.Generator().manual_seed(5)
    bs, width = 24, 12
    lengths = torch.as_tensor(rng.integers(0, width + 1, bs))
    mask = (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).float()
    rewards = torch.zeros(bs, width)
    rewards[:, 0] = torch.as_tensor(rng.integers(0, 2, bs), dtype=torch.float32) * (lengths > 0)
    packed = {"token_level_rewards": rewards, "response_mask": mask,
              "index": np.array([f"g{i // 4}" for i in range(bs)], dtype=object),
              "old_entropy": torch.randint(0, 32, (bs, width), generator=gen).float() / 8,
              "old_log_probs": -torch.rand(bs, width, generator=gen), "ref_log_prob": -torch.rand(bs, width, generator=gen)}
    holes = spread(packed, 7, 3 * width)
    assert not bool((holes["response_mask"].cumsum(1) == torch.arange(1, 3 * width + 1)).all())
    a_packed = call_both(packed, cfg, preset)
    a_holes = call_both(holes, cfg, preset)
    for i in range(bs):
        got = a_holes[i][holes["response_mask"][i] == 1]
        torch.testing.assert_close(got, a_packed[i, : int(lengths[i])], rtol=1e-5, atol=1e-6)
        assert torch.count_nonzero(a_holes[i][holes["response_mask"][i] == 0]) == 0


def test_right_padded_rows_are_unchanged_by_the_rank_reading():
    """Right-padded without holes, rank = column: the advantages equal those of the column formula (spec §4.3
    before revision 2), written out here with the column index."""
    kw = hole_batch()
    kw["response_mask"] = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    kw["old_log_probs"] = torch.tensor([[0.4, 0.2, 0.6, 5.0], [0.0, 0.1, 5.0, 5.0]])
    # by column = rank: r0 (|o| = 3) t = 0, 1, 2 → 0, 1, 2;  r1 (|o| = 2) → 1, 2 (as in the hole case)
    expected = [[A_HAT, A_HAT + 0.1, A_HAT + 0.25, 0.0], [-A_HAT + 0.1, -A_HAT + 0.25, 0.0, 0.0]]
    adv = call_both(kw, HOLE_CFG)
    torch.testing.assert_close(adv, torch.tensor(expected), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# the §8 options, by hand
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("length,k,expected", [
    (3, 10, [0, 3, 6]),  # τ⁻ = 0, 1/3, 2/3 → ⌊10 τ⁻⌋
    (10, 4, [0, 0, 0, 1, 1, 2, 2, 2, 3, 3]),  # t = 5: K t/|o| = 2 exactly → bucket 2 (ceil: 1)
    (1, 10, [0]),  # the first token is always in bucket 0 (ceil: the last token is in K − 1)
    (5, 5, [0, 1, 2, 3, 4]),
])
def test_floor_position_buckets(length, k, expected):
    mask = torch.ones(1, length)
    cfg = EntropyProgressConfig(num_buckets=k, bucket_edges="floor")
    assert progress_bucket(cfg, mask, mask.sum(dim=1), None)[0].tolist() == expected


@pytest.mark.parametrize("entropy,k,expected", [
    ([1.0, 1.0, 2.0], 4, [0, 1, 2]),  # S_{t−1} = 0, 1, 2 of S = 4 → ⌊4 · 0⌋, ⌊4/4⌋, ⌊8/4⌋
    ([3.0, 0.0, 1.0], 4, [0, 3, 3]),  # S_{t−1} = 0, 3, 3 → 0, 3, 3
    ([0.0, 0.0, 2.0, 2.0], 2, [0, 0, 0, 1]),
    ([0.0, 0.0, 0.0], 4, [0, 1, 2]),  # zero total: position with floor edges, ⌊4t/3⌋
])
def test_floor_cum_entropy_buckets(entropy, k, expected):
    mask = torch.ones(1, len(entropy))
    cfg = EntropyProgressConfig(bucket_coord="cum_entropy", num_buckets=k, bucket_edges="floor")
    assert progress_bucket(cfg, mask, mask.sum(dim=1), torch.tensor([entropy]))[0].tolist() == expected


def test_unbiased_bucket_std():
    """The hole batch right-padded, floor edges, zscore: cells b0 = {0.4, 0.0}, b1 = {0.2, 0.1}, b2 = {0.6}.
    For two values x, y: x − μ = ±|x − y|/2, population σ = |x − y|/2 (s̃ = ±1), unbiased σ = |x − y|/√2
    (s̃ = ±1/√2)."""
    kw = hole_batch()
    kw["response_mask"] = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    kw["old_log_probs"] = torch.tensor([[0.4, 0.2, 0.6, 5.0], [0.0, 0.1, 5.0, 5.0]])
    cfg = {**HOLE_CFG, "bucket_norm": "zscore", "bucket_edges": "floor"}

    def z(x, y, unbiased):
        sd = abs(x - y) / (math.sqrt(2) if unbiased else 2)
        return (x - (x + y) / 2) / (sd + EPS)

    for unbiased in (False, True):
        z0, z1 = z(0.4, 0.0, unbiased), z(0.2, 0.1, unbiased)
        assert abs(z0) == pytest.approx(1 / math.sqrt(2) if unbiased else 1.0, rel=1e-4)
        expected = [[A_HAT + z0, A_HAT + z1, A_HAT + 0.0, 0.0], [-A_HAT + z0, -A_HAT + z1, 0.0, 0.0]]
        adv = call_both(kw, {**cfg, "bucket_std": "unbiased" if unbiased else "population"})
        torch.testing.assert_close(adv, torch.tensor(expected), rtol=1e-5, atol=1e-5)


def test_response_scope_gate():
    """entropy_stats_scope: response: z over the response's own tokens, W rescaled to mean 1 per response.
    r0 entropies [1, 3]: μ 2, σ 1 → W ∝ σ(∓γ/(1+ε)), mean1 → 2σ(∓2/(1+ε)) (the two sigmoids sum to 1).
    r1 entropies [5, 5, 5]: σ = 0 → z = 0 → W = 1. (The group scope would pool all five tokens.)"""
    kw = {
        "token_level_rewards": torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]),
        "response_mask": torch.tensor([[1, 1, 0], [1, 1, 1]]),
        "index": np.array(["a", "a"], dtype=object),
        "old_entropy": torch.tensor([[1.0, 3.0, 0.0], [5.0, 5.0, 5.0]]),
    }
    lo, hi = 2 * sig(-2 / (1 + EPS)), 2 * sig(2 / (1 + EPS))
    expected = torch.tensor([[lo * A_HAT, hi * A_HAT, 0.0], [-A_HAT] * 3])
    adv = call_both(kw, {"progress_coef": 0.0, "entropy_stats_scope": "response"})
    torch.testing.assert_close(adv, expected, rtol=1e-5, atol=1e-6)
    group = call_both(kw, {"progress_coef": 0.0})
    assert not torch.allclose(group, expected, atol=1e-3)


@pytest.mark.parametrize("cfg", [{}, {"bucket_edges": "floor"}, {"bucket_std": "unbiased"},
                                 {"entropy_stats_scope": "response"},
                                 {"bucket_edges": "floor", "bucket_std": "unbiased", "entropy_stats_scope": "response"}])
@pytest.mark.parametrize("preset", ["erpo", "ep_grpo"])
def test_options_match_the_loop_reference_with_exact_fractions(preset, cfg):
    """The loop-based, exact-fraction reference of ``erpo_testlib`` (holes included) agrees with both paths."""
    gen = torch.Generator().manual_seed(3)
    bs, width = 12, 9
    mask = (torch.rand(bs, width, generator=gen) < 0.7).float()
    mask[0] = 0.0
    kw = {"token_level_rewards": torch.randint(0, 2, (bs, width), generator=gen).float() * mask * 0.25,
          "response_mask": mask, "index": np.array([f"g{i % 4}" for i in range(bs)], dtype=object),
          "old_entropy": torch.randint(0, 16, (bs, width), generator=gen).float() / 4,
          "old_log_probs": -torch.rand(bs, width, generator=gen), "ref_log_prob": -torch.rand(bs, width, generator=gen)}
    adv = call_both(kw, cfg, preset)
    expected = reference_advantages(kw["token_level_rewards"].tolist(), mask.tolist(), list(kw["index"]),
                                    kw["old_entropy"].tolist(), kw["old_log_probs"].tolist(),
                                    kw["ref_log_prob"].tolist(), cfg=cfg, preset=preset)
    torch.testing.assert_close(adv.double(), torch.tensor(expected, dtype=torch.float64), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("edges", ["ceil", "floor"])
@pytest.mark.parametrize("value", [0.1, 0.3, 1 / 3])
def test_constant_entropy_cum_entropy_buckets_are_the_position_buckets(edges, value):
    """Spec §8: running entropies are summed in float64, so constant, non-dyadic entropy (exact ties at every
    edge) gives exactly the position buckets, in the fast path's blocked edge search as in the per-token form.
    (Float32 block sums, as before revision 2, misplaced tens of tokens per 64 rows of this batch.)"""
    from erpo_verl.estimators.buckets import cum_entropy_edges

    rows, width = 64, 4096
    n = torch.randint(1, width + 1, (rows,), generator=torch.Generator().manual_seed(0))
    mask = (torch.arange(width) < n.unsqueeze(1)).float()
    h = mask * value
    for k in (7, 10, 13):
        position = progress_bucket(EntropyProgressConfig(num_buckets=k, bucket_edges=edges), mask, n, h)
        cfg = EntropyProgressConfig(bucket_coord="cum_entropy", num_buckets=k, bucket_edges=edges)
        per_token = progress_bucket(cfg, mask, n, h)
        starts = cum_entropy_edges(h, k, 64, floor=edges == "floor")
        blocked = torch.stack([torch.searchsorted(starts[i].contiguous(), torch.arange(width), right=True)
                               for i in range(rows)])
        valid = mask == 1
        assert torch.equal(per_token[valid], position[valid]), k
        assert torch.equal(blocked[valid], position[valid]), k
