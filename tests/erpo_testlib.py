"""Shared helpers of the erpo-verl tests (a uniquely named module: never ``import tests.…``, the verl wheel owns
a top-level ``tests`` package).

The centre piece is :func:`reference_advantages`, a plain-Python (loops, float64, exact fractions for the
cumulative-entropy buckets) transcription of docs/algorithms.md ("The estimator": steps 1-6). It deliberately shares no
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
    "bucket_edges": "ceil",
    "bucket_std": "population",
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


def floor_bucket(tau_before: Fraction, k: int) -> int:
    """Spec §8 (bucket_edges: floor): b = min(floor(K tau_before), K-1), tau_before the progress before the token."""
    return min(max(math.floor(k * tau_before), 0), k - 1)


def sample_std(values: list[float], unbiased: bool) -> float:
    n = len(values)
    mu = sum(values) / n
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (n - 1 if unbiased else n))


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
        scopes = {"group": list(groups.values()), "batch": [list(range(bs))], "response": [[i] for i in range(bs)]}[
            c["entropy_stats_scope"]]
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
            floor = c["bucket_edges"] == "floor"
            rank = 0  # t of spec §3: the rank of the token among the valid tokens of its row
            for col in range(width):
                if not valid[i][col]:
                    continue
                before = running
                if c["bucket_coord"] == "cum_entropy":
                    running += Fraction(float(entropy[i][col]))
                if c["bucket_coord"] == "cum_entropy" and total > 0:
                    buckets[i][col] = floor_bucket(before / total, k) if floor else ceil_bucket(running / total, k)
                else:
                    buckets[i][col] = floor_bucket(Fraction(rank, n), k) if floor else position_bucket(rank, n, k)
                rank += 1
        for g, members in groups.items():
            cells: dict[int, list[tuple[int, int]]] = {}
            for i in members:
                for t in range(width):
                    if valid[i][t]:
                        cells.setdefault(buckets[i][t], []).append((i, t))
            for toks in cells.values():
                if len(toks) < 2:
                    continue  # s_tilde stays 0
                mu, _ = mean_popstd([s[i][t] for i, t in toks])
                sd = sample_std([s[i][t] for i, t in toks], unbiased=c["bucket_std"] == "unbiased")
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


# -----------------------------------------------------------------------------------------------------------
# random batches and the option grid of the equivalence tests
# -----------------------------------------------------------------------------------------------------------
def random_batch(seed: int, bs: int = 48, width: int = 40, group: int = 4, holes: bool = False,
                 shuffle: bool = False, singles: bool = False, negative_entropy: bool = False,
                 binary: bool = True, empty_rows: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    lengths = np.clip(np.exp(rng.normal(math.log(width / 3), 0.8, bs)).round(), 1, width).astype(int)
    lengths[rng.random(bs) < 0.15] = width
    if empty_rows:
        lengths[rng.random(bs) < 0.05] = 0
    mask = torch.arange(width).unsqueeze(0) < torch.as_tensor(lengths).unsqueeze(1)
    if holes:
        mask &= torch.rand(bs, width, generator=gen) < 0.75
    uids = [f"g{i // group}" for i in range(bs)]
    if singles:  # every fifth response is alone in its group
        uids = [f"single{i}" if i % 5 == 0 else u for i, u in enumerate(uids)]
    index = np.array(uids, dtype=object)
    if shuffle:
        index = index[rng.permutation(bs)]
    rewards = torch.zeros(bs, width)
    score = rng.integers(0, 2, bs).astype(np.float32) if binary else rng.normal(0, 1, bs).astype(np.float32)
    last = torch.as_tensor(np.maximum(lengths - 1, 0))
    rewards[torch.arange(bs), last] = torch.as_tensor(score)
    entropy = torch.randint(0, 64, (bs, width), generator=gen).float() / 16  # dyadic: exact running sums
    if negative_entropy:
        entropy -= 1.0
    old = -torch.rand(bs, width, generator=gen) * 4
    ref = old + torch.randn(bs, width, generator=gen) * 0.3
    return {"token_level_rewards": rewards, "response_mask": mask.float(), "index": index,
            "old_entropy": entropy, "old_log_probs": old, "ref_log_prob": ref}


CONFIGS = [
    {},
    {"bucket_coord": "position"},
    {"bucket_coord": "cum_entropy"},
    {"bucket_norm": "center"},
    {"entropy_stats_scope": "batch"},
    {"entropy_stats_scope": "batch", "gate_norm": "none"},
    {"gate_norm": "none", "gate_gamma": 5.0},
    {"gate_gamma": 0.0},
    {"zero_var_fallback": True, "reward_threshold": 0.25},
    {"zero_var_fallback": False},
    {"anchor_gate": False},
    {"adv_clip": 0.7},
    {"top_entropy_ratio": 0.2},
    {"top_entropy_ratio": 1.0, "bucket_coord": "cum_entropy"},
    {"gate": False},
    {"progress_coef": 0.0},
    {"gate": False, "progress_coef": 0.0},
    {"gate": False, "bucket_coord": "cum_entropy", "progress_coef": 1.0},
    {"num_buckets": 1},
    {"num_buckets": 13, "bucket_coord": "cum_entropy"},
    {"epsilon": 1e-3, "logratio_scale": 0.5},
    {"entropy_stats_scope": "batch", "bucket_norm": "center", "gate_norm": "none", "adv_clip": 1.5,
     "top_entropy_ratio": 0.5, "bucket_coord": "cum_entropy", "anchor_gate": False, "zero_var_fallback": True},
    # spec §8: the conventions of the third-party implementation, one at a time and together
    {"bucket_edges": "floor"},
    {"bucket_edges": "floor", "bucket_coord": "cum_entropy"},
    {"bucket_edges": "floor", "bucket_coord": "position", "num_buckets": 7},
    {"bucket_std": "unbiased"},
    {"entropy_stats_scope": "response"},
    {"entropy_stats_scope": "response", "gate_norm": "none"},
    {"bucket_edges": "floor", "bucket_std": "unbiased", "entropy_stats_scope": "response", "anchor_gate": False,
     "gate_gamma": 5.0},
]
BATCHES = {
    "right_padded": {},
    "holes": {"holes": True},
    "shuffled_groups": {"shuffle": True},
    "single_response_groups": {"singles": True, "shuffle": True},
    "continuous_rewards": {"binary": False, "group": 6},
    "odd_width": {"width": 37, "holes": True},  # no block size divides it: sequential segment sums
}


# Full DAPO on the toy task (tests/test_e2e_cpu.py and the vLLM lane): dynamic sampling, clip-higher, token-mean,
# the soft overlong punishment. The toy `acc` is exact match (all False for a random policy), so dynamic sampling
# filters on `overlong`, which really varies and is often equal within a group: groups are evicted and regenerated.
DAPO_TOY_OVERRIDES = [
    "algorithm.filter_groups.enable=True",
    # the toy `acc` is exact match (all False for a random policy): `overlong` really varies and is often
    # equal within a group, so dynamic sampling evicts groups and generates again
    "algorithm.filter_groups.metric=overlong",
    "actor_rollout_ref.actor.clip_ratio_low=0.2",
    "actor_rollout_ref.actor.clip_ratio_high=0.28",
    "actor_rollout_ref.actor.loss_agg_mode=token-mean",
    # DAPO's reward manager with the soft overlong punishment; it also logs the `overlong` metric filtered on
    "reward.reward_manager.name=dapo",
    "+reward.reward_kwargs.overlong_buffer_cfg.enable=True",
    "+reward.reward_kwargs.overlong_buffer_cfg.len=4",
    "+reward.reward_kwargs.overlong_buffer_cfg.penalty_factor=1.0",
    "+reward.reward_kwargs.overlong_buffer_cfg.log=True",
    "+reward.reward_kwargs.max_resp_len=16",
]


# ---------------------------------------------------------------------------------------------------------------
# the suite's ledger of end-to-end runs, and waiting without fixed deadlines
# ---------------------------------------------------------------------------------------------------------------
def undeclared_run_owners(runs: list[dict], doc_text: str) -> list[str]:
    """The owners (``tests/<file>.py::<test or fixture>``) of ledger runs that docs/testing.md does not name."""
    owners = sorted({str(run.get("owner", "?")) for run in runs})
    return [owner for owner in owners if f"`{owner}`" not in doc_text]


def wait_until(done, progress=None, stall_s: float = 180.0, poll_s: float = 0.5, what: str = "condition"):
    """Poll ``done()`` until it returns something truthy (returned). Fails only when nothing moves for ``stall_s``.

    ``progress()`` returns anything comparable that changes while the awaited thing advances (a process count,
    a log size): each change restarts the stall clock, so a slow, loaded machine gets as long as it keeps
    working, and a hung one fails after ``stall_s`` of silence instead of a fixed total deadline.
    """
    import time

    last_seen = progress() if progress else None
    last_change = time.monotonic()
    while True:
        result = done()
        if result:
            return result
        if progress is not None:
            now = progress()
            if now != last_seen:
                last_seen, last_change = now, time.monotonic()
        if time.monotonic() - last_change > stall_s:
            raise AssertionError(f"waiting for {what}: nothing moved for {stall_s:.0f}s (last progress {last_seen!r})")
        time.sleep(poll_s)


# ---------------------------------------------------------------------------------------------------------------
# checks of end-to-end runs shared by several test files (one run carries several behaviours: docs/testing.md)
# ---------------------------------------------------------------------------------------------------------------
# AER in the suite's end-to-end runs: switched on from step 1 (alpha_init > 0) with a target just below the initial
# entropy, so that its bonus is in the loss of every short run
AER_RUN_OVERRIDES = [
    "actor_rollout_ref.actor.policy_loss.loss_mode=aer",
    "+actor_rollout_ref.actor.policy_loss.aer_alpha_init=0.005",
    "+actor_rollout_ref.actor.policy_loss.aer_alpha_lr=0.001",
    "+actor_rollout_ref.actor.policy_loss.aer_target_ratio=0.99",
]


def construct_trainer_with_probe(monkeypatch, config, trainer_cls=None) -> tuple:
    """Build an erpo-verl trainer with verl's replay-buffer build replaced by a probe of what it would see
    (mode name, parameter_sync_step, the mode's settings); no Ray, no TransferQueue. Returns (trainer, seen)."""
    from verl.trainer.ppo.v1 import get_trainer_cls
    from verl.trainer.ppo.v1.trainer_base import PPOTrainer

    seen = {}

    def probe(self):
        seen.update(mode=self.trainer_mode, step=self.parameter_sync_step,
                    section=dict(self.config.trainer.v1.get(self.trainer_mode, {})))

    monkeypatch.setattr(PPOTrainer, "_build_replay_buffer", probe)
    cls = trainer_cls or get_trainer_cls(config.trainer.v1.trainer_mode)
    return cls(config), seen


ERPO_METRICS = [
    "erpo/gate_mean",
    "erpo/gate_std",
    "erpo/gate_max",
    "erpo/pivot_frac",
    "erpo/zero_var_group_frac",
    "erpo/progress_abs_mean",
    "erpo/adv_mean",
    "erpo/adv_std",
    "erpo/sign_flip_frac",
]


def assert_entropy_aware_run(run, sync: bool = True) -> None:
    """An ERPO / EP-GRPO run through an erpo-verl mode: every step logged the ``erpo/`` metrics from a gate that saw
    varying entropy, the reference policy ran without a KL term, the progress term was active at the last step,
    and (``sync``) verl's *sync* code paths were taken (not the async replay buffer's gen_batch_size=1)."""
    for record in run.metrics:
        missing = [k for k in ERPO_METRICS if k not in record]
        assert not missing, f"step {record['step']} lacks {missing}"
        assert record["erpo/gate_std"] > 0  # the gate really saw varying entropy
        assert "timing_s/ref" in record and "actor/kl_loss" in record  # the reference policy ran
        assert record["actor/kl_coef"] == 0.0  # ... with no KL term in the loss
    # after step 1 the policy has moved away from the reference: the implicit progress term is active
    assert run.metrics[-1]["erpo/progress_abs_mean"] > 0
    if sync:
        assert "gen_batch_size defaulted to 1" not in run.log_path.read_text()
    else:  # the async modes refill prompt by prompt (verl's exact refill): their code paths were taken
        assert "gen_batch_size defaulted to 1" in run.log_path.read_text()


def assert_aer_entered_the_loss(run) -> None:
    """AER really ran: its entropy bonus entered the loss with the coefficient of each step."""
    for record in run.metrics:
        assert record["aer/alpha"] > 0 and record["actor/aer_entropy_bonus"] > 0
        expected = record["aer/alpha"] * record["actor/entropy_loss"]
        assert record["actor/aer_entropy_bonus"] == _approx(expected, rel=0.05)


def _approx(*args, **kwargs):
    import pytest

    return pytest.approx(*args, **kwargs)


def run_python_together(jobs: dict[str, tuple[str, dict[str, str]]], timeout: float = 300) -> dict:
    """Run several ``python -c code`` probes at once (``name -> (code, env)``): each spends most of its seconds
    importing verl, so started together on two cores they cost about half of one after the other.
    Returns ``name -> subprocess.CompletedProcess`` (text mode)."""
    import subprocess
    import sys

    procs = {name: subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
             for name, (code, env) in jobs.items()}
    results = {}
    try:
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=timeout)
            results[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results
