"""Input checks shared by the estimators (spec §6): missing inputs, shapes, group ids and non-finite values."""

from __future__ import annotations

from typing import Any

import torch

# The per-token inputs beyond stock verl, by the estimator keyword that receives them (spec §2). Which verl field
# feeds each is the trainer's business (erpo_verl.integration).
EXTRA_INPUTS = ("old_entropy", "old_log_probs", "ref_log_prob")


def missing_input_message(name: str, reason: str) -> str:
    """The error for an input the trainer did not provide (spec §6): say how to enable it."""
    how = {
        "old_entropy": (
            "run verl with the erpo-verl trainer mode `trainer.v1.trainer_mode=erpo_sync`, which forwards "
            "the old-policy entropy of the old-log-prob pass"
        ),
        "ref_log_prob": (
            "run verl with `trainer.v1.trainer_mode=erpo_sync` (it turns the reference policy on for you), "
            "or enable the reference policy yourself with actor_rollout_ref.actor.use_kl_loss=True "
            "actor_rollout_ref.actor.kl_loss_coef=0"
        ),
        "old_log_probs": "run verl with `trainer.v1.trainer_mode=erpo_sync`",
    }[name]
    return f"{name} is required {reason} but was not provided: {how}. erpo-verl never falls back to GRPO silently."


def check_inputs(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any,
    **per_token: torch.Tensor | None,
) -> torch.Tensor:
    """Validate the estimator inputs and return the response mask as float32 0/1.

    ``per_token`` are optional (bs, L) tensors (old entropy, log-probs) checked for shape and for
    NaN/inf on valid positions; ``None`` entries are skipped. The rewards are checked on every position
    because verl's sequence reward is the sum of the whole row.
    """
    if not isinstance(token_level_rewards, torch.Tensor) or token_level_rewards.dim() != 2:
        raise ValueError(
            f"token_level_rewards must be a 2-D tensor (batch, response_length), got "
            f"{getattr(token_level_rewards, 'shape', type(token_level_rewards).__name__)}"
        )
    shape = tuple(token_level_rewards.shape)
    if not isinstance(response_mask, torch.Tensor) or tuple(response_mask.shape) != shape:
        raise ValueError(
            f"response_mask has shape {tuple(getattr(response_mask, 'shape', ()))}; expected {shape} like token_level_rewards"
        )
    if index is not None and hasattr(index, "__len__") and len(index) != shape[0]:
        raise ValueError(f"index has length {len(index)}; expected {shape[0]}, one group id per response")
    valid = response_mask.bool()
    _check_finite("token_level_rewards", token_level_rewards, None)
    for name, tensor in per_token.items():
        if tensor is None:
            continue
        if not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(getattr(tensor, 'shape', ()))}; expected {shape}")
        _check_finite(name, tensor, valid)
    return valid.float()


def _check_finite(name: str, tensor: torch.Tensor, valid: torch.Tensor | None) -> None:
    bad = ~torch.isfinite(tensor)
    if valid is not None:
        bad &= valid
    count = int(bad.sum().item())
    if count:
        where = "valid positions" if valid is not None else "positions"
        raise ValueError(f"{name} has {count} NaN or infinite values on {where}")


# ---------------------------------------------------------------------------------------------------------
# the estimators' fast path: shapes up front, finiteness from reductions they compute anyway
# ---------------------------------------------------------------------------------------------------------
def check_shapes(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: Any,
    **per_token: torch.Tensor | None,
) -> None:
    """The shape and length checks of :func:`check_inputs`, without its full-size finiteness scans.

    The estimators detect NaN/inf from row sums they compute anyway (a NaN or an infinity on a summed
    position makes the sum non-finite) and only then call :func:`check_inputs`, which raises the error with
    its count. When a shape is wrong this defers to :func:`check_inputs` as well, so that the error raised,
    and which of several problems is reported first, are exactly those of :func:`check_inputs`.
    """
    ok = isinstance(token_level_rewards, torch.Tensor) and token_level_rewards.dim() == 2
    if ok:
        shape = tuple(token_level_rewards.shape)
        ok = isinstance(response_mask, torch.Tensor) and tuple(response_mask.shape) == shape
        if ok and index is not None and hasattr(index, "__len__") and len(index) != shape[0]:
            ok = False
        for tensor in per_token.values():
            if tensor is not None and (not isinstance(tensor, torch.Tensor) or tuple(tensor.shape) != shape):
                ok = False
    if not ok:
        check_inputs(token_level_rewards, response_mask, index, **per_token)
        raise AssertionError("check_inputs accepted inputs that check_shapes rejected")  # pragma: no cover


def float_mask(mask: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``mask`` (any dtype, nonzero = valid) as float32 0/1, written into ``out`` when given (same shape).

    Integer masks already in {0, 1} (verl's int64 ``response_mask``) and bool masks convert in one pass; any
    other mask goes through ``mask != 0``.
    """
    if out is None:
        out = torch.empty(mask.shape, dtype=torch.float32, device=mask.device)
    if mask.dtype == torch.bool:
        return out.copy_(mask)
    if not mask.dtype.is_floating_point and not mask.dtype.is_complex:
        out.copy_(mask)
        if not out.numel():
            return out
        low, high = torch.aminmax(out)
        if bool((low >= 0) & (high <= 1)):  # integers in [0, 1]: exactly 0 and 1
            return out
    return torch.ne(mask, 0, out=out)
