"""The optimized estimators equal a straightforward implementation of the spec on random batches.

``straightforward`` below is written from docs/algorithms.md (the estimator's steps and the logged metrics) with loops over groups and
buckets, boolean masks and float64 arithmetic, and shares no code with ``erpo_verl.estimators`` (whose blocked,
segment-sum implementation it checks). Entropies are drawn on a dyadic grid (multiples of 1/16) so that running
sums are exact in float32 and float64 alike and the cumulative-entropy buckets cannot differ by rounding; every
other input is an arbitrary float. The estimator works in float32, the reference in float64: they agree to
~1e-6, so a failure is a real difference.

Positions are ranks among the valid tokens of a row (spec §3), so masks with holes are covered too.
Batches cover right padding and masks with holes, all-masked rows, single-response groups, groups whose rows
are not adjacent, several chunks (the chunk size is lowered), bfloat16 inputs, bool/int64/float masks, NaN on
masked positions and negative entropies (the per-token bucket fallback); configurations cover every option.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from erpo_testlib import BATCHES, CONFIGS, random_batch

import erpo_verl.estimators.segments as segments
from erpo_verl.estimators import (
    compute_dapo_outcome_advantage,
    compute_ep_grpo_advantage,
    compute_erpo_advantage,
    compute_grpo_forking_advantage,
)

FNS = {"erpo": compute_erpo_advantage, "ep_grpo": compute_ep_grpo_advantage}
# spec §5, written out again here
DEFAULTS = {
    "gate": True, "gate_gamma": 2.0, "gate_norm": "mean1", "entropy_stats_scope": "group", "progress_coef": 0.2,
    "logratio_scale": 0.1, "bucket_coord": "position", "num_buckets": 10, "bucket_norm": "zscore",
    "zero_var_fallback": False, "reward_threshold": 0.5, "anchor_gate": True, "adv_clip": None, "epsilon": 1e-6,
    "top_entropy_ratio": None, "bucket_edges": "ceil", "bucket_std": "population",
}
PRESETS = {"erpo": DEFAULTS, "ep_grpo": {**DEFAULTS, "bucket_coord": "cum_entropy", "zero_var_fallback": True}}
GRPO_EPS = 1e-6


# ---------------------------------------------------------------------------------------------------------
# the straightforward reference
# ---------------------------------------------------------------------------------------------------------
def _groups(index) -> list[list[int]]:
    order: dict = {}
    for i, uid in enumerate(index.tolist() if isinstance(index, torch.Tensor) else list(index)):
        order.setdefault(uid, []).append(i)
    return list(order.values())


def straightforward(rewards, mask, index, entropy, old, ref, cfg: dict, preset: str, norm: bool = True):
    """(advantages float64 (bs, L), metrics) per spec §4 and §7."""
    c = {**PRESETS[preset], **cfg}
    valid = mask != 0
    bs, width = valid.shape
    groups = _groups(index)
    eps = c["epsilon"]
    R = rewards.double().sum(dim=1)

    # 1. outcome advantage (verl's GRPO)
    a_hat = torch.zeros(bs, dtype=torch.float64)
    all_equal = []
    for rows in groups:
        r = R[rows]
        mean, std = (torch.tensor(0.0), torch.tensor(1.0)) if len(rows) == 1 else (r.mean(), r.std())
        a_hat[rows] = (r - mean) / (std + GRPO_EPS) if norm else r - mean
        all_equal.append(bool((r == r[0]).all()))

    needs_entropy = c["gate"] or (c["progress_coef"] > 0 and c["bucket_coord"] == "cum_entropy") \
        or c["top_entropy_ratio"] is not None
    H = torch.where(valid, entropy.double(), torch.zeros((), dtype=torch.float64)) if needs_entropy else None

    # 2. entropy gate
    W = torch.ones(bs, width, dtype=torch.float64)
    z = torch.zeros(bs, width, dtype=torch.float64)
    if c["gate"]:
        scopes = {"group": groups, "batch": [list(range(bs))], "response": [[i] for i in range(bs)]}[
            c["entropy_stats_scope"]]
        for rows in scopes:
            v = valid[rows]
            if not v.any():
                continue
            h = H[rows]
            values = h[v]
            mu, sd = values.mean(), values.std(unbiased=False)
            zz = (h - mu) / (sd + eps)
            w = torch.sigmoid(c["gate_gamma"] * zz)
            if c["gate_norm"] == "mean1":
                w = w / max(w[v].mean().item(), eps)
            W[rows] = torch.where(v, w, W[rows])
            z[rows] = torch.where(v, zz, torch.zeros_like(zz))

    # 3–6. implicit progress term
    eta = c["progress_coef"]
    psi = torch.zeros(bs, width, dtype=torch.float64)
    if eta > 0:
        k = c["num_buckets"]
        s = torch.where(valid, c["logratio_scale"] * (old.double() - ref.double()), torch.zeros((), dtype=torch.float64))
        bucket = torch.zeros(bs, width, dtype=torch.long)
        floor = c["bucket_edges"] == "floor"
        for i in range(bs):
            length = max(int(valid[i].sum()), 1)
            t = torch.cumsum(valid[i].long(), 0) - 1  # rank among the valid tokens of the row (spec §3)
            if floor:  # spec §8: b = min(⌊K t/|o|⌋, K−1)
                position = torch.clamp(torch.div(k * t, length, rounding_mode="floor"), 0, k - 1)
            else:
                position = torch.clamp(torch.div(k * (t + 1) - 1, length, rounding_mode="floor"), 0, k - 1)
            bucket[i] = position
            if c["bucket_coord"] == "cum_entropy":
                running, total = torch.cumsum(H[i], 0), H[i].sum()  # dyadic entropies: exact sums
                if total > 0 and floor:  # τ⁻ = S_{t−1}/S
                    bucket[i] = torch.clamp(torch.floor(k * (running - H[i]) / total).long(), 0, k - 1)
                elif total > 0:
                    bucket[i] = torch.clamp(torch.ceil(k * running / total).long() - 1, 0, k - 1)
        s_tilde = torch.zeros(bs, width, dtype=torch.float64)
        anchor = torch.zeros(bs, dtype=torch.float64)
        for rows, equal in zip(groups, all_equal):
            for b in range(k):
                cell = valid[rows] & (bucket[rows] == b)
                if int(cell.sum()) < 2:
                    continue
                values = s[rows][cell]
                mu, sd = values.mean(), values.std(unbiased=c["bucket_std"] == "unbiased")
                block = s_tilde[rows]
                block[cell] = (values - mu) / (sd + eps) if c["bucket_norm"] == "zscore" else values - mu
                s_tilde[rows] = block
            informative = len(rows) >= 2 and not equal
            for i in rows:
                if informative:
                    anchor[i] = float(np.sign(a_hat[i].item()))
                elif c["zero_var_fallback"]:
                    anchor[i] = float(np.sign(R[i].item() - c["reward_threshold"]))
        psi = (W if c["anchor_gate"] else 1.0) * anchor.unsqueeze(1) * s_tilde * valid

    adv = valid * (W * a_hat.unsqueeze(1) + eta * psi)
    if c["adv_clip"] is not None:
        adv = adv.clamp(-c["adv_clip"], c["adv_clip"])
    keep = None
    if c["top_entropy_ratio"] is not None:
        values = H[valid]
        keep = valid.clone()
        if values.numel():
            kth = max(1, math.ceil(c["top_entropy_ratio"] * values.numel()))
            threshold = torch.sort(values, descending=True).values[kth - 1]
            keep = valid & (H >= threshold)
        adv = adv * keep

    # spec §7 metrics over the valid tokens
    n = max(int(valid.sum()), 1)
    metrics = {}
    if c["gate"]:
        gv = W[valid]
        metrics.update(gate_mean=gv.mean().item() if gv.numel() else 0.0,
                       gate_std=gv.std(unbiased=False).item() if gv.numel() else 0.0,
                       gate_max=gv.max().item() if gv.numel() else 0.0,
                       pivot_frac=int(((z > 1) & valid).sum()) / n)
    else:
        metrics.update(gate_mean=1.0, gate_std=0.0, gate_max=1.0)
    metrics["zero_var_group_frac"] = sum(all_equal) / len(groups) if groups else 0.0
    metrics["progress_abs_mean"] = float((eta * psi).abs()[valid].sum()) / n if eta > 0 else 0.0
    av = adv[valid]
    metrics["adv_mean"] = av.mean().item() if av.numel() else 0.0
    metrics["adv_std"] = av.std(unbiased=False).item() if av.numel() else 0.0
    metrics["sign_flip_frac"] = int(((torch.sign(adv) != torch.sign(a_hat).unsqueeze(1)) & valid).sum()) / n
    if keep is not None:
        metrics["forking_kept_frac"] = int(keep.sum()) / n
    return adv, metrics


# ---------------------------------------------------------------------------------------------------------
# the fast path against it (random batches and the option grid: erpo_testlib)
# ---------------------------------------------------------------------------------------------------------
def check(preset, batch, cfg, norm=True, atol=2e-5, rtol=2e-5, **call):
    config = {"norm_adv_by_std_in_grpo": norm, preset: dict(cfg)}
    kw = {**batch, **call}
    metrics: dict = {}
    adv, ret = FNS[preset](**kw, config=config, metrics=metrics)
    expected, expected_metrics = straightforward(
        batch["token_level_rewards"], batch["response_mask"], batch["index"], batch["old_entropy"],
        batch["old_log_probs"], batch["ref_log_prob"], cfg, preset, norm)
    assert adv.dtype == torch.float32 and adv.shape == expected.shape and torch.equal(adv, ret)
    torch.testing.assert_close(adv.double(), expected, atol=atol, rtol=rtol)
    assert torch.count_nonzero(adv[batch["response_mask"] == 0]) == 0
    assert metrics.keys() == expected_metrics.keys()
    for key, value in expected_metrics.items():
        assert metrics[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    return adv


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "defaults")
@pytest.mark.parametrize("preset", ["erpo", "ep_grpo"])
@pytest.mark.parametrize("kind", list(BATCHES))
def test_equals_straightforward_implementation(kind, preset, cfg):
    batch = random_batch(sum(map(ord, kind + preset)), **BATCHES[kind])
    check(preset, batch, cfg)


@pytest.mark.parametrize("preset", ["erpo", "ep_grpo"])
@pytest.mark.parametrize("norm", [True, False])
def test_norm_adv_by_std_false(preset, norm):
    check(preset, random_batch(3, holes=True), {"zero_var_fallback": True}, norm=norm)


@pytest.mark.parametrize("cfg", [{}, {"entropy_stats_scope": "batch"}, {"top_entropy_ratio": 0.3},
                                 {"bucket_coord": "cum_entropy", "bucket_norm": "center"},
                                 {"bucket_edges": "floor", "bucket_std": "unbiased", "entropy_stats_scope": "response"}])
@pytest.mark.parametrize("preset", ["erpo", "ep_grpo"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_many_chunks(monkeypatch, preset, cfg, shuffle):
    """Chunks of one or two groups: statistics never cross a chunk boundary wrongly."""
    monkeypatch.setattr(segments, "CPU_CHUNK_TOKENS", 64)
    check(preset, random_batch(11, bs=60, width=24, group=3, holes=shuffle, shuffle=shuffle), cfg)


@pytest.mark.parametrize("preset", ["erpo", "ep_grpo"])
def test_large_batch_real_blocks(monkeypatch, preset):
    """A batch of several chunks of a realistic size (1/4 of the default), jagged lengths up to 4096."""
    monkeypatch.setattr(segments, "CPU_CHUNK_TOKENS", segments.CPU_CHUNK_TOKENS // 4)
    batch = random_batch(5, bs=320, width=4096, group=16, empty_rows=False)
    assert batch["response_mask"].numel() > 4 * segments.CPU_CHUNK_TOKENS
    check(preset, batch, {})


@pytest.mark.parametrize("cfg", [{"bucket_coord": "cum_entropy"}, {"bucket_coord": "cum_entropy", "num_buckets": 3},
                                 {"bucket_coord": "cum_entropy", "entropy_stats_scope": "batch"},
                                 {"bucket_coord": "cum_entropy", "bucket_edges": "floor"}])
@pytest.mark.parametrize("preset", ["erpo", "ep_grpo"])
def test_negative_entropies_use_per_token_buckets(preset, cfg):
    """Running sums of negative entropies are not monotone: the per-token bucket path, same result."""
    check(preset, random_batch(7, negative_entropy=True, holes=True), cfg)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("preset", ["erpo", "ep_grpo"])
def test_low_and_high_precision_inputs(preset, dtype):
    """bf16/fp16/fp64 inputs: statistics in float32, same as the float32 result on the rounded values."""
    batch = random_batch(13, holes=True)
    cast = {k: (v.to(dtype) if isinstance(v, torch.Tensor) and k != "response_mask" else v) for k, v in batch.items()}
    rounded = {k: (v.float() if isinstance(v, torch.Tensor) else v) for k, v in cast.items()}
    adv = check(preset, rounded, {"top_entropy_ratio": 0.25})
    got, _ = FNS[preset](**cast, config={preset: {"top_entropy_ratio": 0.25}})
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, adv, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.int64, torch.int32, torch.float32])
def test_mask_dtypes_are_bitwise_equal(mask_dtype):
    batch = random_batch(17, holes=True)
    base, _ = compute_erpo_advantage(**batch)
    other = {**batch, "response_mask": batch["response_mask"].to(mask_dtype)}
    assert torch.equal(compute_erpo_advantage(**other)[0], base)


def test_nonzero_mask_values_count_as_valid():
    """A mask is 'nonzero = valid' whatever its values (the int fast path checks for {0, 1})."""
    batch = random_batch(19)
    base, _ = compute_erpo_advantage(**batch)
    for scaled in (batch["response_mask"].long() * 3, batch["response_mask"] * -0.5):
        torch.testing.assert_close(compute_erpo_advantage(**{**batch, "response_mask": scaled})[0], base, rtol=0, atol=0)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("cfg", [{}, {"entropy_stats_scope": "batch", "top_entropy_ratio": 0.2}])
@pytest.mark.parametrize("preset", ["erpo", "ep_grpo"])
def test_garbage_on_masked_positions(monkeypatch, preset, cfg, value):
    """NaN/inf on masked positions are allowed: the same advantages, bit for bit, over several chunks."""
    monkeypatch.setattr(segments, "CPU_CHUNK_TOKENS", 200)
    batch = random_batch(23, holes=True)
    base = check(preset, batch, cfg)
    masked = batch["response_mask"] == 0
    dirty = dict(batch)
    for name in ("old_entropy", "old_log_probs", "ref_log_prob"):
        dirty[name] = batch[name].masked_fill(masked, value)
    got, _ = FNS[preset](**dirty, config={preset: cfg})
    torch.testing.assert_close(got, base, rtol=0, atol=0)


def test_index_as_tensor_with_non_adjacent_groups():
    batch = random_batch(29, shuffle=True)
    codes = {u: i for i, u in enumerate(dict.fromkeys(batch["index"].tolist()))}
    as_tensor = torch.tensor([codes[u] * 7 % 11 for u in batch["index"].tolist()])
    check("ep_grpo", {**batch, "index": as_tensor}, {})


def test_empty_batch_and_zero_width():
    for bs, width in ((0, 5), (3, 0)):
        batch = {k: (torch.zeros(bs, width) if isinstance(v, torch.Tensor) else np.array(["a"] * bs, dtype=object))
                 for k, v in random_batch(1).items()}
        for preset in FNS:
            metrics: dict = {}
            adv, _ = FNS[preset](**batch, metrics=metrics)
            assert adv.shape == (bs, width) and adv.dtype == torch.float32
            assert metrics["adv_mean"] == 0.0 and metrics["sign_flip_frac"] == 0.0


# ---------------------------------------------------------------------------------------------------------
# the outcome-only estimators
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", list(BATCHES))
@pytest.mark.parametrize("ratio", [None, 0.2, 1.0])
@pytest.mark.parametrize("chunk", [None, 100])
def test_dapo_and_grpo_forking(monkeypatch, kind, ratio, chunk):
    if chunk:
        monkeypatch.setattr(segments, "CPU_CHUNK_TOKENS", chunk)
    batch = random_batch(31, **BATCHES[kind])
    cfg = {"gate": False, "progress_coef": 0.0, "top_entropy_ratio": ratio}
    expected, expected_metrics = straightforward(
        batch["token_level_rewards"], batch["response_mask"], batch["index"], batch["old_entropy"], None, None,
        cfg, "erpo")
    args = (batch["token_level_rewards"], batch["response_mask"], batch["index"])
    for fn, section in ((compute_dapo_outcome_advantage, "dapo"), (compute_grpo_forking_advantage, "grpo_forking")):
        if ratio is None and section == "grpo_forking":
            continue
        metrics: dict = {}
        adv, ret = fn(*args, config={section: {"top_entropy_ratio": ratio}}, old_entropy=batch["old_entropy"],
                      metrics=metrics)
        assert adv.dtype == torch.float32 and torch.equal(adv, ret)
        torch.testing.assert_close(adv.double(), expected, atol=2e-6, rtol=2e-6)
        if ratio is not None:
            assert metrics["forking_kept_frac"] == pytest.approx(expected_metrics["forking_kept_frac"])


# ---------------------------------------------------------------------------------------------------------
# the blocked range sums are at least as precise as float32 summation of the range
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("width", [64, 256, 4096, 40, 37])
@pytest.mark.parametrize("k", [1, 3, 10, 50])
def test_bucket_range_sums(width, k):
    from erpo_verl.estimators.buckets import RangeBuckets, position_starts
    from erpo_verl.estimators.workspace import Workspace

    gen = torch.Generator().manual_seed(width * 100 + k)
    rows = 24
    n = torch.randint(0, width + 1, (rows,), generator=gen).float()
    n[:3] = torch.tensor([0.0, 1.0, float(width)])
    mf = (torch.arange(width).unsqueeze(0) < n.unsqueeze(1)).float()
    # large values with small differences: a short range next to large ones is where cancellation would show
    x = (1000.0 + torch.randn(rows, width, generator=gen)) * torch.where(torch.rand(rows, width, generator=gen) < 0.5, 1.0, -1.0)
    starts = position_starts(k, n, mf, right_padded=True, floor=False)
    buckets = RangeBuckets(starts, mf, n, Workspace(rows, width, "cpu"), right_padded=True)
    got = buckets.segment_sum(x).double()
    x64 = x.double()
    for i in range(rows):
        for b in range(k):
            a, e = int(starts[i, b]), int(starts[i, b + 1])
            exact = x64[i, a:e].sum()
            bound = 8 * torch.finfo(torch.float32).eps * x64[i, a:e].abs().sum() + 1e-30
            assert abs(got[i, b] - exact) <= bound, (i, b, a, e)
    counts = torch.stack([mf[i].view(-1)[int(starts[i, b]):int(starts[i, b + 1])].sum() for i in range(rows)
                          for b in range(k)]).view(rows, k)
    assert torch.equal(buckets.counts, counts)
    ids = torch.stack([torch.searchsorted(starts[i, 1:k], torch.arange(width), right=True) for i in range(rows)])
    assert torch.equal(buckets.expand(torch.arange(rows * k, dtype=torch.float32).view(rows, k),
                                      torch.empty(rows, width)), (ids + torch.arange(rows).unsqueeze(1) * k).float())


@pytest.mark.parametrize("floor", [False, True])
@pytest.mark.parametrize("width", [64, 512, 40, 37])
@pytest.mark.parametrize("k", [1, 2, 7, 10, 13])
def test_cum_entropy_edges_are_the_exact_buckets(width, k, floor):
    """The blocked search for the cumulative-entropy bucket edges equals ⌈K S_t / S⌉ − 1 (ceil) or
    min(⌊K S_{t−1} / S⌋, K − 1) (floor, spec §8) in exact arithmetic."""
    from fractions import Fraction

    from erpo_verl.estimators.buckets import block_size as _block_size
    from erpo_verl.estimators.buckets import cum_entropy_edges as _cum_entropy_edges

    gen = torch.Generator().manual_seed(width + k)
    rows = 16
    n = torch.randint(1, width + 1, (rows,), generator=gen)
    mask = torch.arange(width).unsqueeze(0) < n.unsqueeze(1)
    h = torch.randint(0, 40, (rows, width), generator=gen).float() / 16 * mask
    h[0, :] = 0.0
    h[0, 0] = 1.0  # all the entropy on the first token
    h[1] = mask[1] * 0.5  # constant entropy
    edges = _cum_entropy_edges(h, k, _block_size(width) or 1, floor)
    for i in range(rows):
        values = [Fraction(v) for v in h[i].tolist()]
        total, running, expected = sum(values), Fraction(0), []
        for t in range(width):
            before = running
            running += values[t]
            if floor:
                expected.append(min(math.floor(k * before / total), k - 1))
            else:
                expected.append(min(max(math.ceil(k * running / total) - 1, 0), k - 1))
        got = torch.searchsorted(edges[i].contiguous(), torch.arange(width), right=True).tolist()
        assert got == expected, i


@pytest.mark.parametrize("preset", ["erpo", "ep_grpo"])
def test_non_contiguous_inputs(preset):
    """Inputs that are views into wider tensors (non-contiguous rows) give the same advantages."""
    batch = random_batch(37, width=64)
    wide = {k: (torch.cat([v, torch.full_like(v, 7.0)], dim=1)[:, :64] if isinstance(v, torch.Tensor) else v)
            for k, v in batch.items()}
    assert not wide["old_entropy"].is_contiguous()
    base = check(preset, batch, {"top_entropy_ratio": 0.3})
    got, _ = FNS[preset](**wide, config={preset: {"top_entropy_ratio": 0.3}})
    torch.testing.assert_close(got, base, rtol=0, atol=0)
