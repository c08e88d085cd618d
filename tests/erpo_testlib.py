"""Shared helpers of the erpo-verl tests (a uniquely named module: never ``import tests.…``, the verl wheel owns
a top-level ``tests`` package).

The centre piece is :func:`reference_advantages`, a plain-Python (loops, float64, exact fractions for the
cumulative-entropy buckets) transcription of ``shared/spec/algorithms.md`` §4. It deliberately shares no
code with ``erpo_verl.estimators``: the spec defaults are repeated here, not imported, so that a wrong
default in the implementation shows up as a test failure.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from fractions import Fraction
from typing import Any

import numpy as np
import torch
from hypothesis import HealthCheck, settings

# Hypothesis settings of the property tests (applied per test, not as a global profile, so that other test
# files are unaffected). Deterministic by default so that CI is reproducible and the suite's time predictable;
# ERPO_HYPOTHESIS_EXPLORE=1 searches fresh random examples, ten times as many.
_EXPLORE = os.environ.get("ERPO_HYPOTHESIS_EXPLORE", "") not in ("", "0")


def hypothesis_settings(max_examples: int = 40) -> settings:
    return settings(
        max_examples=max_examples * (10 if _EXPLORE else 1),
        deadline=None,
        derandomize=not _EXPLORE,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# Spec §5, copied by hand (not imported from the implementation).
SPEC_ERPO_DEFAULTS: dict[str, Any] = {
    "gate": True,
    "gate_gamma": 2.0,
    "gate_norm": "mean1",
    "entropy_stats_scope": "group",
    "progress_coef": 0.2,
    "logratio_scale": 0.1,
    "bucket_coord": "position",
    "num_buckets": 10,
    "bucket_norm": "zscore",
    "zero_var_fallback": False,
    "reward_threshold": 0.5,
    "anchor_gate": True,
    "adv_clip": None,
    "epsilon": 1e-6,
}
SPEC_EP_GRPO_DEFAULTS: dict[str, Any] = {**SPEC_ERPO_DEFAULTS, "bucket_coord": "cum_entropy", "zero_var_fallback": True}
SPEC_DEFAULTS = {"erpo": SPEC_ERPO_DEFAULTS, "ep_grpo": SPEC_EP_GRPO_DEFAULTS}

GRPO_EPS = 1e-6  # verl's epsilon of compute_grpo_outcome_advantage (spec §4.1: "same epsilon")


# -----------------------------------------------------------------------------------------------------------
# plain-Python reference of spec §4
# -----------------------------------------------------------------------------------------------------------
def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def sign(x: float) -> float:
    return 1.0 if x > 0 else (-1.0 if x < 0 else 0.0)


def mean_popstd(values: list[float]) -> tuple[float, float]:
    n = len(values)
    mu = sum(values) / n
    return mu, math.sqrt(sum((v - mu) ** 2 for v in values) / n)


def position_bucket(t: int, length: int, k: int) -> int:
    """Spec §4.3, integer form: b = floor((K (t+1) - 1) / |o|), clamped to [0, K-1]."""
    return min(max((k * (t + 1) - 1) // length, 0), k - 1)


def ceil_bucket(tau: Fraction, k: int) -> int:
    """Spec §4.3: b = clamp(ceil(K tau) - 1, 0, K-1), with tau an exact fraction."""
    return min(max(math.ceil(k * tau) - 1, 0), k - 1)


def outcome_reference(rewards, index, norm_adv_by_std_in_grpo=True):
    """Â_i exactly as verl's compute_grpo_outcome_advantage (unbiased std; single response: mean 0, std 1)."""
    R = [float(sum(row)) for row in rewards]
    groups: OrderedDict[Any, list[int]] = OrderedDict()
    for i, g in enumerate(index):
        groups.setdefault(g, []).append(i)
    adv = [0.0] * len(R)
    for members in groups.values():
        n = len(members)
        if n == 1:
            mu, sd = 0.0, 1.0
        else:
            mu = sum(R[i] for i in members) / n
            sd = math.sqrt(sum((R[i] - mu) ** 2 for i in members) / (n - 1))
        for i in members:
            adv[i] = (R[i] - mu) / (sd + GRPO_EPS) if norm_adv_by_std_in_grpo else R[i] - mu
    return R, adv, groups


def reference_advantages(
    rewards,
    mask,
    index,
    entropy=None,
    old_log_probs=None,
    ref_log_prob=None,
    cfg: dict | None = None,
    preset: str = "erpo",
    norm_adv_by_std_in_grpo: bool = True,
    details: dict | None = None,
) -> list[list[float]]:
    """Token advantages A (list of rows) per spec §4, with loops. ``cfg`` overrides the preset's defaults.

    ``details``, when given, receives the intermediate quantities (W, buckets, s_tilde, anchor, A_hat).
    """
    c = {**SPEC_DEFAULTS[preset], **(cfg or {})}
    bs = len(rewards)
    width = len(rewards[0]) if bs else 0
    eps = c["epsilon"]
    valid = [[float(mask[i][t]) != 0.0 for t in range(width)] for i in range(bs)]
    lengths = [sum(row) for row in valid]

    R, A_hat, groups = outcome_reference(rewards, index, norm_adv_by_std_in_grpo)

    # 2. gate
    W = [[1.0] * width for _ in range(bs)]
    z = [[0.0] * width for _ in range(bs)]
    if c["gate"]:
        scopes = list(groups.values()) if c["entropy_stats_scope"] == "group" else [list(range(bs))]
        for members in scopes:
            toks = [(i, t) for i in members for t in range(width) if valid[i][t]]
            if not toks:
                continue
            mu, sd = mean_popstd([float(entropy[i][t]) for i, t in toks])
            w = {}
            for i, t in toks:
                z[i][t] = (float(entropy[i][t]) - mu) / (sd + eps)
                w[i, t] = sigmoid(c["gate_gamma"] * z[i][t])
            if c["gate_norm"] == "mean1":
                m = sum(w.values()) / len(w)
                w = {key: v / m for key, v in w.items()}
            for (i, t), v in w.items():
                W[i][t] = v

    # 3-5. implicit progress term
    eta = c["progress_coef"]
    psi = [[0.0] * width for _ in range(bs)]
    buckets = [[None] * width for _ in range(bs)]
    s_tilde = [[0.0] * width for _ in range(bs)]
    anchor = [0.0] * bs
    if eta > 0:
        k = c["num_buckets"]
        s = [
            [c["logratio_scale"] * (float(old_log_probs[i][t]) - float(ref_log_prob[i][t])) if valid[i][t] else 0.0
             for t in range(width)]
            for i in range(bs)
        ]
        for i in range(bs):
            n = lengths[i]
            total = sum((Fraction(float(entropy[i][t])) for t in range(width) if valid[i][t]), Fraction(0)) \
                if c["bucket_coord"] == "cum_entropy" else Fraction(0)
            running = Fraction(0)
            for t in range(width):
                if not valid[i][t]:
                    continue
                if c["bucket_coord"] == "cum_entropy":
                    running += Fraction(float(entropy[i][t]))
                if c["bucket_coord"] == "cum_entropy" and total > 0:
                    buckets[i][t] = ceil_bucket(running / total, k)
                else:
                    buckets[i][t] = position_bucket(t, n, k)
        for g, members in groups.items():
            cells: dict[int, list[tuple[int, int]]] = {}
            for i in members:
                for t in range(width):
                    if valid[i][t]:
                        cells.setdefault(buckets[i][t], []).append((i, t))
            for toks in cells.values():
                if len(toks) < 2:
                    continue  # s_tilde stays 0
                mu, sd = mean_popstd([s[i][t] for i, t in toks])
                for i, t in toks:
                    s_tilde[i][t] = (s[i][t] - mu) / (sd + eps) if c["bucket_norm"] == "zscore" else s[i][t] - mu
            informative = len(members) >= 2 and len({R[i] for i in members}) > 1
            for i in members:
                if informative:
                    anchor[i] = sign(A_hat[i])
                elif c["zero_var_fallback"]:
                    anchor[i] = sign(R[i] - c["reward_threshold"])
                else:
                    anchor[i] = 0.0
        for i in range(bs):
            for t in range(width):
                if valid[i][t]:
                    psi[i][t] = (W[i][t] if c["anchor_gate"] else 1.0) * anchor[i] * s_tilde[i][t]

    # 6. synthesis
    out = [[0.0] * width for _ in range(bs)]
    for i in range(bs):
        for t in range(width):
            if not valid[i][t]:
                continue
            a = W[i][t] * A_hat[i] + eta * psi[i][t]
            if c["adv_clip"] is not None:
                a = min(max(a, -c["adv_clip"]), c["adv_clip"])
            out[i][t] = a
    if details is not None:
        details.update(W=W, z=z, buckets=buckets, s_tilde=s_tilde, anchor=anchor, A_hat=A_hat, R=R, psi=psi)
    return out


# -----------------------------------------------------------------------------------------------------------
# batches
# -----------------------------------------------------------------------------------------------------------
def pad_rows(rows: list[list[float]], width: int, fill: float = 0.0) -> list[list[float]]:
    return [list(r) + [fill] * (width - len(r)) for r in rows]


def make_batch(responses, width=None, reward_at_last=True):
    """Build list-of-rows inputs from ``responses``: dicts with ``uid``, ``reward``, ``entropy`` (list, its
    length is |o|), optional ``old`` and ``ref`` (lists of the same length). Rows are right-padded with 0.
    Returns a dict of Python lists (rewards, mask, entropy, old, ref) and ``index`` (numpy object array).
    """
    width = width or max(1, max(len(r["entropy"]) for r in responses))
    rewards, mask, ent, old, ref = [], [], [], [], []
    for r in responses:
        n = len(r["entropy"])
        row = [0.0] * width
        row[max(n - 1, 0) if reward_at_last else 0] = float(r["reward"])
        rewards.append(row)
        mask.append([1.0] * n + [0.0] * (width - n))
        ent.append(pad_rows([r["entropy"]], width)[0])
        old.append(pad_rows([r.get("old", [0.0] * n)], width)[0])
        ref.append(pad_rows([r.get("ref", [0.0] * n)], width)[0])
    index = np.array([r["uid"] for r in responses], dtype=object)
    return {"rewards": rewards, "mask": mask, "entropy": ent, "old": old, "ref": ref, "index": index}


def tensors(batch, dtype=torch.float32):
    """Tensors for the estimator call from a :func:`make_batch`-style dict."""
    return dict(
        token_level_rewards=torch.tensor(batch["rewards"], dtype=dtype),
        response_mask=torch.tensor(batch["mask"], dtype=dtype),
        index=batch["index"],
        old_entropy=torch.tensor(batch["entropy"], dtype=dtype),
        old_log_probs=torch.tensor(batch["old"], dtype=dtype),
        ref_log_prob=torch.tensor(batch["ref"], dtype=dtype),
    )


def run_estimator(preset, batch, cfg=None, norm_adv_by_std_in_grpo=True, dtype=torch.float32, metrics=None):
    """Call the registered-name estimator ``preset`` ('erpo' / 'ep_grpo') on a :func:`make_batch` batch."""
    from erpo_verl.estimators import compute_ep_grpo_advantage, compute_erpo_advantage

    fn = {"erpo": compute_erpo_advantage, "ep_grpo": compute_ep_grpo_advantage}[preset]
    config = {"norm_adv_by_std_in_grpo": norm_adv_by_std_in_grpo, preset: dict(cfg or {})}
    kw = tensors(batch, dtype)
    adv, ret = fn(**kw, config=config, metrics=metrics)
    return adv, ret


def reference_for(preset, batch, cfg=None, norm_adv_by_std_in_grpo=True, details=None):
    return reference_advantages(
        batch["rewards"], batch["mask"], list(batch["index"]), batch["entropy"], batch["old"], batch["ref"],
        cfg=cfg, preset=preset, norm_adv_by_std_in_grpo=norm_adv_by_std_in_grpo, details=details,
    )


def assert_matches_reference(actual: torch.Tensor, expected: list[list[float]], rtol=1e-4, atol=1e-4):
    assert actual.dtype == torch.float32
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float32).reshape(actual.shape),
                               rtol=rtol, atol=atol)
