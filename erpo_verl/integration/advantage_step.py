"""The ``erpo_sync`` advantage step, without Ray or TransferQueue (the trainer in :mod:`.trainer_mode` fetches
the rows and writes the results back).

The input contract, written once here: an estimator that opts in (:func:`erpo_verl.estimators.inputs.accepts_extra_inputs`)
is called directly with the keyword arguments of :data:`FIELD_OF_INPUT` that its signature names, each filled
from the verl field given there, plus a ``metrics`` dict when it names one (logged under ``erpo/``). Every other
estimator goes through verl's own code with everything verl passes.

Batches are cleaned of what verl adds for its own purposes before an opted-in estimator or AER sees them:
verl's padding rows (``upsample_batch_to_divisible_size``: tag ``is_padding``, uid ``pad…``, zero masks) are left
out and get zero advantages; batches where an agent loop returned several outputs per session are rejected
(verl's GRPO scores only the session's final output and broadcasts; our estimators would treat every output
as a group member, which is not the same algorithm).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from erpo_verl.aer_controller import AERState, aer_metrics, per_sample_coefficients
from erpo_verl.estimators.inputs import opted_in

METRIC_PREFIX = "erpo/"
# estimator keyword -> verl field (TransferQueue / DataProto)
FIELD_OF_INPUT = {"old_entropy": "entropy", "old_log_probs": "old_log_probs", "ref_log_prob": "ref_log_prob"}
# verl 0.9.1's PPOTrainerSync._compute_advantage (verl/trainer/ppo/v1/trainer_base.py) fetches these fields ...
VERL_ADVANTAGE_FIELDS = ("uid", "response_mask", "rm_scores", "rollout_log_probs", "old_log_probs", "ref_log_prob", "values")
# ... and the erpo_sync step adds the ones of the contract verl does not fetch (its old-log-prob pass stores
# "entropy", then no estimator ever sees it)
ADVANTAGE_INPUT_FIELDS = VERL_ADVANTAGE_FIELDS + tuple(f for f in FIELD_OF_INPUT.values() if f not in VERL_ADVANTAGE_FIELDS)


def accepted_extra_inputs(fn: Any) -> tuple[str, ...]:
    """The contract's inputs (and ``metrics``) that ``fn`` receives: () unless it opted in.

    Only explicitly named parameters count: a bare ``**kwargs`` does not ask for anything.
    """
    if fn is None or not opted_in(fn):
        return ()
    import inspect

    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return ()
    return tuple(name for name in (*FIELD_OF_INPUT, "metrics") if name in params)


def takes_direct_path(name: str) -> bool:
    """Whether verl's registered estimator ``name`` is called directly by the erpo_sync step."""
    from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY

    return bool(accepted_extra_inputs(ADV_ESTIMATOR_REGISTRY.get(str(name))))


def padding_rows(uids: np.ndarray, response_mask: torch.Tensor, tags: list | None = None) -> np.ndarray:
    """Boolean (bs,) array of verl's synthetic padding rows.

    verl 0.9.1's ``upsample_batch_to_divisible_size`` (verl/trainer/ppo/padding_utils.py) tags them
    ``is_padding`` and gives them a ``pad<hex>`` uid and an all-zero response mask; without tags, the last two
    identify them.
    """
    if tags is not None:
        return padding_rows_from_tags(tags)
    empty = (response_mask.sum(dim=-1) == 0).cpu().numpy()
    named = np.array([str(u).startswith("pad") for u in uids], dtype=bool)
    return empty & named


def padding_rows_from_tags(tags) -> np.ndarray | None:
    """Boolean (bs,) array of the rows verl tagged ``is_padding`` (``None`` without tags)."""
    if not tags:
        return None
    return np.array([bool(t.get("is_padding", False)) if hasattr(t, "get") else False for t in tags], dtype=bool)


def check_one_output_per_session(batch_keys, padding: np.ndarray) -> None:
    """ValueError when an agent loop returned several outputs for one session (keys ``{uid}_{session}_{index}``)."""
    if batch_keys is None:
        return
    seen: dict[str, str] = {}
    for key, pad in zip(batch_keys, padding):
        if pad:
            continue
        parts = str(key).rsplit("_", 2)
        if len(parts) != 3:
            continue
        session = f"{parts[0]}_{parts[1]}"
        if session in seen:
            raise ValueError(
                f"the batch holds several outputs of one agent-loop session ({seen[session]!r} and {key!r}). verl's "
                "GRPO scores only each session's final output and broadcasts its advantage; erpo-verl's estimators "
                "would count every output as a group member, so they reject such batches. Use an agent loop that "
                "returns one output per session, or verl's grpo estimator."
            )
        seen[session] = str(key)


def compute_advantage_with_extras(data, config: Any, metrics: dict, batch_keys=None, padding=None):
    """Compute ``advantages``/``returns`` on a padded verl ``DataProto``, forwarding the extra inputs.

    ``data.batch`` must hold ``token_level_rewards`` and ``response_mask`` and may hold ``entropy``,
    ``old_log_probs`` and ``ref_log_prob``; ``data.non_tensor_batch['uid']`` holds the group ids; ``padding``
    (bool per row) marks verl's padding rows (default: :func:`padding_rows` without tags). Estimators that did
    not opt in go through verl's ``compute_advantage_for_multi_trajectories`` unchanged.
    """
    from verl.trainer.ppo.core_algos import AdvantageEstimator, get_adv_estimator_fn
    from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories

    algo = config.algorithm
    name = algo.adv_estimator
    fn = None if name in (AdvantageEstimator.GAE, AdvantageEstimator.GRPO) else get_adv_estimator_fn(name)
    accepted = accepted_extra_inputs(fn)
    if not accepted:
        return compute_advantage_for_multi_trajectories(
            data,
            batch_keys=batch_keys,
            adv_estimator=name,
            gamma=algo.gamma,
            lam=algo.lam,
            num_repeat=config.actor_rollout_ref.rollout.n,
            norm_adv_by_std_in_grpo=algo.get("norm_adv_by_std_in_grpo", True),
            config=algo,
        )
    uids = data.non_tensor_batch["uid"]
    mask = data.batch["response_mask"]
    if padding is None:
        padding = padding_rows(uids, mask)
    padding = np.asarray(padding, dtype=bool)
    check_one_output_per_session(batch_keys, padding)
    real = None if not padding.any() else torch.as_tensor(~padding)

    def rows(t):
        return t if real is None or t is None else t[real.to(t.device)]

    kwargs = {
        "token_level_rewards": rows(data.batch["token_level_rewards"]),
        "response_mask": rows(mask),
        "index": uids if real is None else uids[~padding],
        "config": algo,
    }
    for arg in accepted:
        if arg != "metrics":
            field = FIELD_OF_INPUT[arg]
            kwargs[arg] = rows(data.batch[field]) if field in data.batch.keys() else None
    estimator_metrics: dict = {}
    if "metrics" in accepted:
        kwargs["metrics"] = estimator_metrics
    advantages, returns = fn(**kwargs)
    if real is not None:  # padding rows: zero advantages, as verl's zero masks make them no-ops
        advantages = _scatter_rows(advantages, real, mask)
        returns = _scatter_rows(returns, real, mask)
    data.batch["advantages"] = advantages
    data.batch["returns"] = returns
    metrics.update({f"{METRIC_PREFIX}{k}": float(v) for k, v in estimator_metrics.items()})
    return data


def _scatter_rows(values: torch.Tensor, real: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(like.shape, dtype=values.dtype, device=values.device)
    out[real.to(values.device)] = values
    return out


def aer_coefficients(data, state: AERState, options: Any, metrics: dict, padding=None) -> torch.Tensor:
    """Per-token α_k · c_i for this batch (padding rows 0, left out of every statistic); advances the controller."""
    mask = data.batch["response_mask"].float()
    uids = np.asarray(data.non_tensor_batch["uid"], dtype=object)
    padding = padding_rows(uids, mask) if padding is None else np.asarray(padding, dtype=bool)
    real = torch.as_tensor(~padding)
    real_mask = mask[real]
    entropy = (data.batch["entropy"].float()[real] * real_mask).sum() / real_mask.sum().clamp_min(1.0)
    rewards = data.batch["token_level_rewards"].float()[real].sum(dim=-1)
    _, codes = np.unique(uids[~padding].astype(str), return_inverse=True)
    group = torch.as_tensor(codes.reshape(-1), dtype=torch.long)
    num_groups = int(group.max().item()) + 1 if group.numel() else 0
    coef_real = per_sample_coefficients(
        rewards, group, num_groups, options.aer_difficulty_mode, options.aer_acc_threshold, options.aer_correct_threshold
    )
    used_alpha = state.step(float(entropy), options)
    metrics.update(aer_metrics(state, options, float(entropy), coef_real, used_alpha))
    coef = torch.zeros(mask.shape[0], dtype=coef_real.dtype)
    coef[real] = coef_real
    return used_alpha * coef.unsqueeze(1) * mask


def old_policy_lag_metrics(tags, global_steps: int, padding=None, local_updates: int = 0) -> dict[str, float]:
    """``erpo/old_policy/*``: how far the policy whose entropy and log-probs the estimator sees (π_old) is from the
    weights that generated the samples it trains on.

    verl tags every trajectory with the weight versions it was generated with (``min_global_steps`` ..
    ``max_global_steps``; one version per global step) and, in every v1 mode, recomputes ``old_log_probs`` and
    the entropy at training time with the actor's weights of version ``global_steps - 1`` (separate_async restores
    them for each mini-batch of the step). So per real (non-padding) sample

        lag = (global_steps - 1) - min_global_steps     (0: π_old is the policy that sampled it; sync mode)

    and ``local_updates`` is how many actor updates of this step (separate_async's mini-batches) already moved the
    trained weights away from π_old. Empty when the tags carry no versions.
    """
    if not tags:
        return {}
    pad = np.zeros(len(tags), dtype=bool) if padding is None else np.asarray(padding, dtype=bool)
    versions = [t.get("min_global_steps") if hasattr(t, "get") else None for t, p in zip(tags, pad) if not p]
    newest = [t.get("max_global_steps") if hasattr(t, "get") else None for t, p in zip(tags, pad) if not p]
    if not versions or any(v is None for v in versions):
        return {}
    lag = (int(global_steps) - 1) - np.asarray(versions, dtype=np.int64)
    spans = np.asarray([b if b is not None else a for a, b in zip(versions, newest)], dtype=np.int64)
    spans = spans - np.asarray(versions, dtype=np.int64) + 1
    return {
        "erpo/old_policy/lag_mean": float(lag.mean()),
        "erpo/old_policy/lag_max": float(lag.max()),
        "erpo/old_policy/stale_fraction": float((lag > 0).mean()),
        "erpo/old_policy/versions_per_sample_max": float(spans.max()),
        "erpo/old_policy/local_updates": float(local_updates),
        "erpo/old_policy/samples": float(len(versions)),
    }
