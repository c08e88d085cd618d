"""Each component of spec §4 on tiny hand-built batches with expected numbers written out in the test.

Every expectation below is computed with explicit formulas (``statistics``, ``math``) from the spec's
equations, never by calling the implementation. Each hand-computed case is checked against both the
implementation and the plain-Python reference of ``erpo_testlib`` (so the reference, used by the property
tests, is itself pinned to hand-computed numbers).
"""

from __future__ import annotations

import math
import statistics as st
from fractions import Fraction

import pytest
import torch
from erpo_testlib import (
    assert_matches_reference,
    make_batch,
    reference_for,
    run_estimator,
)

from erpo_verl.estimators.config import EntropyProgressConfig
from erpo_verl.estimators.buckets import progress_bucket as _progress_bucket

EPS = 1e-6


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def check(batch, cfg, expected, preset="erpo", norm=True, atol=1e-5, rtol=1e-5):
    """Implementation and reference both equal the hand-computed ``expected`` rows (padded with 0)."""
    width = len(batch["rewards"][0])
    expected = [list(r) + [0.0] * (width - len(r)) for r in expected]
    adv, ret = run_estimator(preset, batch, cfg, norm_adv_by_std_in_grpo=norm)
    assert adv.dtype == torch.float32 and adv.shape == (len(expected), width)
    assert torch.equal(adv, ret)
    assert_matches_reference(adv, expected, rtol=rtol, atol=atol)
    ref = reference_for(preset, batch, cfg, norm_adv_by_std_in_grpo=norm)
    torch.testing.assert_close(torch.tensor(ref, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64),
                               rtol=1e-9, atol=1e-9)
    return adv


# Group "a": two responses, rewards 1 / 0, entropies {0, 2, 2, 0}: μ = 1, σ = 1, so z = ±1/(1+ε).
# Group "b": two responses, rewards 0 / 1, entropies {5, 5, 8, 8} (|o| = 1 and 3): μ = 6.5, σ = 1.5.
GATE_BATCH = [
    dict(uid="a", reward=1.0, entropy=[0.0, 2.0]),
    dict(uid="a", reward=0.0, entropy=[2.0, 0.0]),
    dict(uid="b", reward=0.0, entropy=[5.0]),
    dict(uid="b", reward=1.0, entropy=[5.0, 8.0, 8.0]),
]
A_HAT_PAIR = 0.5 / (math.sqrt(0.5) + EPS)  # rewards {1, 0}: mean 0.5, unbiased std sqrt(0.5)
A_HAT = [A_HAT_PAIR, -A_HAT_PAIR, -A_HAT_PAIR, A_HAT_PAIR]


# ---------------------------------------------------------------------------------------------------------
# outcome advantage
# ---------------------------------------------------------------------------------------------------------
def test_outcome_only_is_grpo_with_row_sum_rewards():
    """gate=false, progress_coef=0: Â_i broadcast to valid tokens; R_i is the row sum (reward spread on tokens)."""
    batch = make_batch(GATE_BATCH)
    batch["rewards"][0] = [0.25, 0.75, 0.0]  # still sums to 1
    cfg = {"gate": False, "progress_coef": 0.0}
    check(batch, cfg, [[A_HAT[0]] * 2, [A_HAT[1]] * 2, [A_HAT[2]], [A_HAT[3]] * 3])


def test_norm_adv_by_std_false_and_single_response_group():
    """Dr.GRPO form Â = R − mean; a single-response group has mean 0 and std 1 as in verl."""
    batch = make_batch([
        dict(uid="a", reward=1.0, entropy=[1.0, 1.0]),
        dict(uid="a", reward=0.0, entropy=[1.0]),
        dict(uid="a", reward=0.5, entropy=[1.0, 1.0, 1.0]),
        dict(uid="s", reward=0.75, entropy=[1.0, 2.0]),
    ])
    cfg = {"gate": False, "progress_coef": 0.0}
    check(batch, cfg, [[0.5] * 2, [-0.5], [0.0] * 3, [0.75] * 2], norm=False)
    sd = st.stdev([1.0, 0.0, 0.5])  # unbiased
    check(batch, cfg, [[0.5 / (sd + EPS)] * 2, [-0.5 / (sd + EPS)], [0.0] * 3, [0.75 / (1.0 + EPS)] * 2], norm=True)


# ---------------------------------------------------------------------------------------------------------
# entropy gate
# ---------------------------------------------------------------------------------------------------------
def _gate(entropies: list[list[float]], gamma: float, mean1: bool) -> list[list[float]]:
    """W over one scope (a list of token-entropy rows), spec §4.2."""
    flat = [h for row in entropies for h in row]
    mu, sd = st.fmean(flat), st.pstdev(flat)
    w = [[sig(gamma * (h - mu) / (sd + EPS)) for h in row] for row in entropies]
    if mean1:
        m = st.fmean([x for row in w for x in row])
        w = [[x / m for x in row] for row in w]
    return w


@pytest.mark.parametrize("gate_norm", ["mean1", "none"])
@pytest.mark.parametrize("gamma", [2.0, 5.0])
def test_gate_group_scope(gate_norm, gamma):
    batch = make_batch(GATE_BATCH)
    cfg = {"progress_coef": 0.0, "gate_gamma": gamma, "gate_norm": gate_norm}
    # written out for group a, gamma 2 and mean1 (mean of W is exactly 0.5 there by symmetry)
    if gate_norm == "mean1" and gamma == 2.0:
        hi, lo = sig(2 / (1 + EPS)) / 0.5, sig(-2 / (1 + EPS)) / 0.5
        w = _gate([[0.0, 2.0], [2.0, 0.0]], 2.0, True)
        assert w[0] == pytest.approx([lo, hi]) and w[1] == pytest.approx([hi, lo])
        # ≈ 2·sigmoid(±2) (z is ±1/(1+ε), not exactly ±1)
        assert hi == pytest.approx(1.7615941559557646, abs=1e-5) and lo == pytest.approx(0.2384058440442351, abs=1e-5)
    wa = _gate([[0.0, 2.0], [2.0, 0.0]], gamma, gate_norm == "mean1")
    wb = _gate([[5.0], [5.0, 8.0, 8.0]], gamma, gate_norm == "mean1")
    w = wa + wb
    expected = [[x * A_HAT[i] for x in row] for i, row in enumerate(w)]
    adv = check(batch, cfg, expected)
    if gate_norm == "none":
        ratio = adv[adv != 0] / torch.tensor([A_HAT[i] for i, row in enumerate(w) for _ in row])
        assert bool(((ratio > 0) & (ratio < 1)).all())


def test_gate_batch_scope():
    """μ^H, σ^H and the mean1 mean are pooled over every valid token of the batch."""
    batch = make_batch(GATE_BATCH)
    cfg = {"progress_coef": 0.0, "entropy_stats_scope": "batch"}
    rows = [r["entropy"] for r in GATE_BATCH]
    flat = [h for row in rows for h in row]
    assert st.fmean(flat) == 3.75 and st.pstdev(flat) == pytest.approx(math.sqrt(73.5 / 8))
    w = _gate(rows, 2.0, True)
    assert st.fmean([x for row in w for x in row]) == pytest.approx(1.0)
    check(batch, cfg, [[x * A_HAT[i] for x in row] for i, row in enumerate(w)])


def test_gate_batch_scope_differs_from_group_scope():
    batch = make_batch(GATE_BATCH)
    group, _ = run_estimator("erpo", batch, {"progress_coef": 0.0})
    whole, _ = run_estimator("erpo", batch, {"progress_coef": 0.0, "entropy_stats_scope": "batch"})
    assert not torch.allclose(group, whole)


def test_gate_gamma_zero():
    """γ = 0: W ≡ 0.5; mean1 makes it exactly 1 (plain GRPO), none leaves 0.5·Â."""
    batch = make_batch(GATE_BATCH)
    check(batch, {"progress_coef": 0.0, "gate_gamma": 0.0},
          [[A_HAT[0]] * 2, [A_HAT[1]] * 2, [A_HAT[2]], [A_HAT[3]] * 3])
    check(batch, {"progress_coef": 0.0, "gate_gamma": 0.0, "gate_norm": "none"},
          [[0.5 * A_HAT[0]] * 2, [0.5 * A_HAT[1]] * 2, [0.5 * A_HAT[2]], [0.5 * A_HAT[3]] * 3])


def test_gate_constant_entropy_group_is_neutral():
    """All entropies of a group equal: z = 0, W = 0.5, mean1 → 1."""
    batch = make_batch([dict(uid="a", reward=1.0, entropy=[0.7, 0.7]), dict(uid="a", reward=0.0, entropy=[0.7])])
    check(batch, {"progress_coef": 0.0}, [[A_HAT_PAIR] * 2, [-A_HAT_PAIR]])


# ---------------------------------------------------------------------------------------------------------
# progress buckets
# ---------------------------------------------------------------------------------------------------------
def _buckets(coord: str, k: int, entropy_rows: list[list[float]]) -> list[list[int]]:
    width = max(len(r) for r in entropy_rows)
    mask = torch.tensor([[1.0] * len(r) + [0.0] * (width - len(r)) for r in entropy_rows])
    ent = torch.tensor([list(r) + [0.0] * (width - len(r)) for r in entropy_rows])
    cfg = EntropyProgressConfig(bucket_coord=coord, num_buckets=k)
    b = _progress_bucket(cfg, mask, mask.sum(dim=1), ent)
    return [b[i, : len(r)].tolist() for i, r in enumerate(entropy_rows)]


@pytest.mark.parametrize(
    "length,k,expected",
    [
        (3, 10, [3, 6, 9]),  # τ = 1/3, 2/3, 1 → ⌈3.33⌉−1, ⌈6.67⌉−1, ⌈10⌉−1
        (10, 4, [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]),  # τ = 0.5 → Kτ = 2 exactly → bucket 1, not 2
        (1, 10, [9]),  # a one-token response sits in the last bucket
        (1, 1, [0]),
        (5, 5, [0, 1, 2, 3, 4]),
        (7, 3, [0, 0, 1, 1, 2, 2, 2]),
        (4, 2, [0, 0, 1, 1]),
        (2, 10, [4, 9]),
    ],
)
def test_position_buckets_integer_edges(length, k, expected):
    assert _buckets("position", k, [[1.0] * length]) == [expected]


def test_position_buckets_match_exact_formula_exhaustively():
    """b = clamp(⌈K (t+1)/|o|⌉ − 1, 0, K−1) with exact fractions, for every |o| ≤ 64 and K ≤ 16."""
    rows = [[1.0] * n for n in range(1, 65)]
    for k in range(1, 17):
        got = _buckets("position", k, rows)
        want = [[min(max(math.ceil(Fraction(k * (t + 1), n)) - 1, 0), k - 1) for t in range(n)] for n in range(1, 65)]
        assert got == want, k


@pytest.mark.parametrize(
    "entropy,k,expected",
    [
        ([1.0, 1.0, 2.0], 4, [0, 1, 3]),  # S = 1, 2, 4 → τ = 1/4, 1/2, 1
        ([0.0, 0.0, 2.0, 2.0], 2, [0, 0, 0, 1]),  # τ = 0, 0, 1/2, 1; τ = 0 clamps to bucket 0
        ([3.0, 0.0, 1.0], 4, [2, 2, 3]),  # τ = 3/4, 3/4, 1
        ([0.0, 0.0, 0.0], 4, [1, 2, 3]),  # zero total entropy: falls back to position ⌊(4(t+1)−1)/3⌋
        ([0.5], 3, [2]),
    ],
)
def test_cum_entropy_buckets(entropy, k, expected):
    assert _buckets("cum_entropy", k, [entropy]) == [expected]


def test_cum_entropy_with_constant_entropy_equals_position():
    """Constant entropy makes τ = (t+1)/|o| exactly, so the buckets must be the position buckets — including
    the edges where K τ is an integer (e.g. |o| = K = 13, t = 6: τ = 7/13, K τ = 7 → bucket 6)."""
    rows = [[1.0] * n for n in range(1, 65)]
    for h in (1.0, 0.5, 0.25, 3.0):
        rows = [[h] * n for n in range(1, 65)]
        for k in range(1, 17):
            assert _buckets("cum_entropy", k, rows) == _buckets("position", k, rows), (h, k)
    assert _buckets("cum_entropy", 13, [[1.0] * 13]) == [list(range(13))]


# ---------------------------------------------------------------------------------------------------------
# bucket-normalized implicit signal
# ---------------------------------------------------------------------------------------------------------
# Group "a" (|o| = 2 each, K = 2 → bucket 0 = column 0, bucket 1 = column 1), λ = 0.5:
#   r0: s = 0.5·([-1, -2] − [-1.5, -2]) = [0.25, 0];   r1: s = 0.5·([-3, -1] − [-3, -2]) = [0, 0.5]
#   cell 0 = {0.25, 0}: μ 0.125, σ 0.125;  cell 1 = {0, 0.5}: μ 0.25, σ 0.25
# Group "b" (K = 2): r2 has |o| = 1 → its token is in bucket 1; r3 has |o| = 2 → buckets 0, 1.
#   cell (b, 0) = {r3 t0} has one token → s̃ = 0;  cell (b, 1) = {r2 t0, r3 t1} = {0.1, −0.3}: μ −0.1, σ 0.2
BUCKET_BATCH = [
    dict(uid="a", reward=1.0, entropy=[1.0, 1.0], old=[-1.0, -2.0], ref=[-1.5, -2.0]),
    dict(uid="a", reward=0.0, entropy=[1.0, 1.0], old=[-3.0, -1.0], ref=[-3.0, -2.0]),
    dict(uid="b", reward=1.0, entropy=[1.0], old=[-0.8], ref=[-1.0]),
    dict(uid="b", reward=0.0, entropy=[1.0, 1.0], old=[-5.0, -1.6], ref=[-4.0, -1.0]),
]
BUCKET_CFG = {"gate": False, "num_buckets": 2, "logratio_scale": 0.5, "progress_coef": 0.5}


@pytest.mark.parametrize("bucket_norm", ["zscore", "center"])
def test_bucket_normalization(bucket_norm):
    batch = make_batch(BUCKET_BATCH)
    cfg = {**BUCKET_CFG, "bucket_norm": bucket_norm}
    eta = 0.5

    def norm(x, mu, sd):
        return (x - mu) / (sd + EPS) if bucket_norm == "zscore" else x - mu

    s_a = [[0.25, 0.0], [0.0, 0.5]]
    cell_a = [(st.fmean([0.25, 0.0]), st.pstdev([0.25, 0.0])), (st.fmean([0.0, 0.5]), st.pstdev([0.0, 0.5]))]
    st_a = [[norm(s_a[i][t], *cell_a[t]) for t in range(2)] for i in range(2)]
    s_b_cell1 = [0.5 * (-0.8 + 1.0), 0.5 * (-1.6 + 1.0)]  # r2 t0, r3 t1
    mu_b, sd_b = st.fmean(s_b_cell1), st.pstdev(s_b_cell1)
    d = [1.0, -1.0, 1.0, -1.0]  # sign(Â)
    expected = [
        [A_HAT[0] + eta * d[0] * st_a[0][0], A_HAT[0] + eta * d[0] * st_a[0][1]],
        [A_HAT[1] + eta * d[1] * st_a[1][0], A_HAT[1] + eta * d[1] * st_a[1][1]],
        [A_HAT_PAIR + eta * d[2] * norm(s_b_cell1[0], mu_b, sd_b)],
        [-A_HAT_PAIR, -A_HAT_PAIR + eta * d[3] * norm(s_b_cell1[1], mu_b, sd_b)],  # t0: one-token cell → s̃ = 0
    ]
    if bucket_norm == "zscore":  # two-token cells z-score to ±σ/(σ+ε) ≈ ±1
        assert st_a[0][0] == pytest.approx(1.0, abs=1e-4) and st_a[1][1] == pytest.approx(1.0, abs=1e-4)
    adv = check(batch, cfg, expected)
    assert adv[3, 0].item() == pytest.approx(-A_HAT_PAIR, abs=1e-6)


def test_cells_with_fewer_than_two_tokens_give_zero():
    """K = 10, one response of length 1 per group next to a longer one: most cells hold a single token."""
    batch = make_batch([
        dict(uid="a", reward=1.0, entropy=[1.0], old=[-1.0], ref=[-3.0]),
        dict(uid="a", reward=0.0, entropy=[1.0] * 3, old=[-1.0, -2.0, -4.0], ref=[-2.0, -2.0, -1.0]),
    ])
    # |o|=1 → bucket 9; |o|=3 → buckets 3, 6, 9. Only cell 9 = {r0 t0, r1 t2} has two tokens.
    s = [0.1 * 2.0, 0.1 * (-3.0)]
    mu, sd = st.fmean(s), st.pstdev(s)
    eta = 0.2
    expected = [
        [A_HAT_PAIR + eta * 1.0 * (s[0] - mu) / (sd + EPS)],
        [-A_HAT_PAIR, -A_HAT_PAIR, -A_HAT_PAIR + eta * -1.0 * (s[1] - mu) / (sd + EPS)],
    ]
    check(batch, {"gate": False}, expected)


def test_cum_entropy_buckets_end_to_end():
    """ep_grpo preset: the cells follow cumulative entropy, not position."""
    # r0 entropies [3, 0, 1] → τ = 3/4, 3/4, 1 → K=2: buckets 1, 1, 1
    # r1 entropies [1, 1] → τ = 1/2, 1 → buckets 0, 1
    batch = make_batch([
        dict(uid="a", reward=1.0, entropy=[3.0, 0.0, 1.0], old=[-1.0, -2.0, -3.0], ref=[-1.0, -1.0, -1.0]),
        dict(uid="a", reward=0.0, entropy=[1.0, 1.0], old=[-2.0, -2.0], ref=[-1.0, -3.0]),
    ])
    cfg = {"gate": False, "num_buckets": 2, "logratio_scale": 1.0, "progress_coef": 1.0}
    cell1 = [0.0, -1.0, -2.0, 1.0]  # r0 t0..t2 and r1 t1; cell 0 = {r1 t0} alone → 0
    mu, sd = st.fmean(cell1), st.pstdev(cell1)
    z = [(x - mu) / (sd + EPS) for x in cell1]
    expected = [
        [A_HAT_PAIR + z[0], A_HAT_PAIR + z[1], A_HAT_PAIR + z[2]],
        [-A_HAT_PAIR, -A_HAT_PAIR - z[3]],
    ]
    check(batch, cfg, expected, preset="ep_grpo")
    # with position buckets the same batch gives other numbers
    adv_pos, _ = run_estimator("ep_grpo", batch, {**cfg, "bucket_coord": "position"})
    assert not torch.allclose(adv_pos, torch.tensor([r + [0.0] * (3 - len(r)) for r in expected]))


# ---------------------------------------------------------------------------------------------------------
# result anchor
# ---------------------------------------------------------------------------------------------------------
# Group "eq": rewards all 1 (Â = 0); group "one": a single response. K = 1: one cell per group.
ANCHOR_BATCH = [
    dict(uid="eq", reward=1.0, entropy=[1.0, 1.0], old=[-1.0, -2.0], ref=[-2.0, -2.0]),
    dict(uid="eq", reward=1.0, entropy=[1.0], old=[-1.0], ref=[-1.5]),
    dict(uid="one", reward=1.0, entropy=[1.0, 1.0], old=[-1.0, -1.0], ref=[-1.0, -3.0]),
]
ANCHOR_CFG = {"gate": False, "num_buckets": 1, "logratio_scale": 1.0, "progress_coef": 0.5}


def _anchor_expected(d_eq: float, d_one: float) -> list[list[float]]:
    eta = 0.5
    s_eq = [1.0, 0.0, 0.5]
    mu, sd = st.fmean(s_eq), st.pstdev(s_eq)
    z_eq = [(x - mu) / (sd + EPS) for x in s_eq]
    s_one = [0.0, 2.0]
    z_one = [(x - 1.0) / (1.0 + EPS) for x in s_one]  # μ 1, σ 1
    a_one = 1.0 / (1.0 + EPS)  # single-response group: (R − 0)/(1 + ε)
    return [
        [eta * d_eq * z_eq[0], eta * d_eq * z_eq[1]],
        [eta * d_eq * z_eq[2]],
        [a_one + eta * d_one * z_one[0], a_one + eta * d_one * z_one[1]],
    ]


def test_anchor_without_fallback_silences_uninformative_groups():
    """All-equal and single-response groups get d = 0: the all-equal group's advantages are exactly 0."""
    batch = make_batch(ANCHOR_BATCH)
    adv = check(batch, {**ANCHOR_CFG, "zero_var_fallback": False}, _anchor_expected(0.0, 0.0))
    assert torch.count_nonzero(adv[:2]) == 0


def test_anchor_with_fallback_uses_reward_threshold():
    batch = make_batch(ANCHOR_BATCH)
    # d = sign(1 − 0.5) = +1 in both uninformative groups
    check(batch, {**ANCHOR_CFG, "zero_var_fallback": True}, _anchor_expected(1.0, 1.0))
    # θ = 1: sign(R − θ) = 0 → same as no fallback
    check(batch, {**ANCHOR_CFG, "zero_var_fallback": True, "reward_threshold": 1.0}, _anchor_expected(0.0, 0.0))
    # θ = 2: d = −1
    check(batch, {**ANCHOR_CFG, "zero_var_fallback": True, "reward_threshold": 2.0}, _anchor_expected(-1.0, -1.0))


def test_anchor_pm1_rewards_with_threshold_zero():
    """±1 rewards: θ = 0 gives d = ±1 in all-equal groups; {0, 0} rewards with θ = 0 give d = 0."""
    rows = [
        dict(uid="neg", reward=-1.0, entropy=[1.0], old=[-1.0], ref=[-2.0]),
        dict(uid="neg", reward=-1.0, entropy=[1.0], old=[-1.0], ref=[-1.0]),
        dict(uid="pos", reward=1.0, entropy=[1.0], old=[-1.0], ref=[-2.0]),
        dict(uid="pos", reward=1.0, entropy=[1.0], old=[-1.0], ref=[-1.0]),
        dict(uid="zero", reward=0.0, entropy=[1.0], old=[-1.0], ref=[-2.0]),
        dict(uid="zero", reward=0.0, entropy=[1.0], old=[-1.0], ref=[-1.0]),
    ]
    batch = make_batch(rows)
    cfg = {**ANCHOR_CFG, "zero_var_fallback": True, "reward_threshold": 0.0}
    q = 0.5 / (0.5 + EPS)  # s = {1, 0} in each group's single cell: z = ±q
    eta = 0.5
    check(batch, cfg, [[-eta * q], [eta * q], [eta * q], [-eta * q], [0.0], [0.0]], preset="ep_grpo")
    # the ep_grpo default θ = 0.5 treats the {0, 0} group as failed: d = −1
    check(batch, {**cfg, "reward_threshold": 0.5},
          [[-eta * q], [eta * q], [eta * q], [-eta * q], [-eta * q], [eta * q]], preset="ep_grpo")


def test_anchor_is_sign_of_outcome_in_informative_groups():
    """In an informative group d = sign(Â), also for a response whose reward equals the group mean (d = 0)."""
    batch = make_batch([
        dict(uid="a", reward=1.0, entropy=[1.0], old=[-1.0], ref=[-2.0]),
        dict(uid="a", reward=0.5, entropy=[1.0], old=[-1.0], ref=[-1.0]),
        dict(uid="a", reward=0.0, entropy=[1.0], old=[-1.0], ref=[-1.5]),
    ])
    cfg = {"gate": False, "num_buckets": 1, "logratio_scale": 1.0, "progress_coef": 1.0}
    s = [1.0, 0.0, 0.5]
    mu, sd = st.fmean(s), st.pstdev(s)
    z = [(x - mu) / (sd + EPS) for x in s]
    a = 0.5 / (st.stdev([1.0, 0.5, 0.0]) + EPS)
    check(batch, cfg, [[a + z[0]], [0.0], [-a - z[2]]])


# ---------------------------------------------------------------------------------------------------------
# synthesis
# ---------------------------------------------------------------------------------------------------------
# Gate and progress together on group "a" of GATE_BATCH with the cells of BUCKET_BATCH's group "a".
SYN_BATCH = [
    dict(uid="a", reward=1.0, entropy=[0.0, 2.0], old=[-1.0, -2.0], ref=[-1.5, -2.0]),
    dict(uid="a", reward=0.0, entropy=[2.0, 0.0], old=[-3.0, -1.0], ref=[-3.0, -2.0]),
]


@pytest.mark.parametrize("anchor_gate", [True, False])
def test_synthesis_with_and_without_anchor_gate(anchor_gate):
    batch = make_batch(SYN_BATCH)
    eta = 0.5
    cfg = {"num_buckets": 2, "logratio_scale": 0.5, "progress_coef": eta, "anchor_gate": anchor_gate}
    w = _gate([[0.0, 2.0], [2.0, 0.0]], 2.0, True)
    q1, q2 = 0.125 / (0.125 + EPS), 0.25 / (0.25 + EPS)
    s_t = [[q1, -q2], [-q1, q2]]
    d = [1.0, -1.0]
    expected = [
        [w[i][t] * A_HAT[i] + eta * (w[i][t] if anchor_gate else 1.0) * d[i] * s_t[i][t] for t in range(2)]
        for i in range(2)
    ]
    check(batch, cfg, expected)


def test_adv_clip():
    batch = make_batch(SYN_BATCH)
    w = _gate([[0.0, 2.0], [2.0, 0.0]], 2.0, True)
    unclipped = [[w[i][t] * A_HAT[i] for t in range(2)] for i in range(2)]
    assert max(abs(x) for r in unclipped for x in r) > 0.5 > min(abs(x) for r in unclipped for x in r)
    expected = [[min(max(x, -0.5), 0.5) for x in r] for r in unclipped]
    adv = check(batch, {"progress_coef": 0.0, "adv_clip": 0.5}, expected)
    assert adv.abs().max().item() == pytest.approx(0.5)


def test_progress_with_gate_off_and_ep_grpo_defaults():
    """gate=false: W ≡ 1 in both terms; the ep_grpo preset's defaults otherwise (θ = 0.5, K = 10, λ = 0.1)."""
    batch = make_batch(BUCKET_BATCH)
    adv = run_estimator("ep_grpo", batch, {"gate": False})[0]
    assert_matches_reference(adv, reference_for("ep_grpo", batch, {"gate": False}), atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# a tiny batch under many configurations, implementation vs the reference
# ---------------------------------------------------------------------------------------------------------
TINY = [
    dict(uid="p", reward=1.0, entropy=[0.5, 2.0, 0.25, 1.0, 0.0], old=[-0.5, -1.0, -2.0, -0.25, -3.0],
         ref=[-0.75, -0.5, -2.5, -0.25, -2.0]),
    dict(uid="p", reward=0.0, entropy=[1.5, 0.75, 3.0], old=[-1.0, -0.125, -4.0], ref=[-1.5, -0.25, -3.0]),
    dict(uid="p", reward=1.0, entropy=[0.25], old=[-2.0], ref=[-1.0]),
    dict(uid="q", reward=0.0, entropy=[2.0, 2.0, 0.5, 1.0], old=[-1.0, -1.0, -1.0, -1.0],
         ref=[-0.5, -2.0, -1.0, -0.75]),
    dict(uid="q", reward=0.0, entropy=[0.0, 1.0], old=[-0.25, -6.0], ref=[-0.5, -5.0]),
]
TINY_CONFIGS = [
    {},
    {"entropy_stats_scope": "batch"},
    {"gate_norm": "none", "gate_gamma": 5.0},
    {"gate": False},
    {"bucket_coord": "cum_entropy", "num_buckets": 3},
    {"bucket_norm": "center", "num_buckets": 2},
    {"zero_var_fallback": True},
    {"zero_var_fallback": True, "reward_threshold": 0.0},
    {"anchor_gate": False, "progress_coef": 1.0},
    {"adv_clip": 0.8, "progress_coef": 1.0},
    {"num_buckets": 1, "logratio_scale": 1.0},
    {"progress_coef": 0.0},
    {"gate_gamma": 0.0},
]


@pytest.mark.parametrize("preset", ["erpo", "ep_grpo"])
@pytest.mark.parametrize("norm", [True, False])
@pytest.mark.parametrize("cfg", TINY_CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "defaults")
def test_tiny_batch_matches_reference(preset, norm, cfg):
    batch = make_batch(TINY)
    adv, _ = run_estimator(preset, batch, cfg, norm_adv_by_std_in_grpo=norm)
    assert_matches_reference(adv, reference_for(preset, batch, cfg, norm_adv_by_std_in_grpo=norm),
                             rtol=1e-5, atol=1e-5)
    assert torch.count_nonzero(adv[torch.tensor(batch["mask"]) == 0]) == 0
