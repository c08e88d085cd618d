"""AER — Adaptive Entropy Regularization (arXiv 2510.10959, "Rediscovering Entropy Regularization"): the
controller, without verl.

The paper's equations are not public (docs/entropy_methods.md). What is known: a per-sample ("difficulty-aware")
coefficient, a target entropy anchored to the initial policy's entropy, and a global coefficient adjusted each
step so that the policy entropy stays near the target, below its initial level. This module implements the
labelled reconstruction of that description; **every knob below is our choice**.

Objective (entropy bonus on the *current* policy's token entropy H_θ, inside the actor update):

    L = L_PG − α_k · agg_t( c_i · H_θ(· | q, o_{i,<t}) )          (agg = the actor's loss_agg_mode)

1. Difficulty-aware coefficient c_i from the accuracy of the prompt group, acc(q) = mean_i 1[R_i > θ_acc]:
       smooth:    c_i = (1 − acc(q)) / mean_batch(1 − acc)      (1 when every prompt is solved)
       threshold: c_i = 1[acc(q) ≤ ρ]
2. Initial-anchored target:  H* = τ · H_0, with H_0 the mean token entropy of the first training batch.
3. Global coefficient, after each step k with batch mean entropy H_k:
       sign:         α_{k+1} = clip(α_k + η_α · sign(H* − H_k), 0, α_max)
       proportional: α_{k+1} = clip(α_k + η_α · (H* − H_k) / H*, 0, α_max)

Switch it on with ``actor_rollout_ref.actor.policy_loss.loss_mode=aer`` (with ``trainer.v1.trainer_mode=erpo_sync``);
knobs are ``+actor_rollout_ref.actor.policy_loss.aer_<name>=...`` (:data:`AER_DEFAULTS`). The verl side — the
policy-loss config class, the registered loss and the actor loss with the entropy term — is
:mod:`erpo_verl.integration.aer_loss`. The controller state (α, H_0) lives in the trainer and is saved in and
restored from verl checkpoints (``global_step_<k>/erpo_aer_state.json``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

LOSS_MODE = "aer"
STATE_FILE = "erpo_aer_state.json"
COEF_FIELD = "aer_coef"  # per-token α_k · c_i, written to TransferQueue by the trainer, read by the loss

# The AER knobs and their defaults (all reconstruction choices, see the module docstring):
#   aer_target_ratio: τ in H* = τ · H_0 (0.4: the optimum a secondary summary of the paper mentions)
#   aer_difficulty_mode: ``smooth`` or ``threshold`` per-sample coefficient
#   aer_acc_threshold: ρ of the threshold mode: regularize prompts with accuracy ≤ ρ
#   aer_correct_threshold: θ_acc: a response counts as correct when its reward is > θ_acc (0.5 works for
#       {0, 1} and {−1, +1} rewards)
#   aer_alpha_init: α_0;  aer_alpha_lr: η_α, the step of α per training step;  aer_alpha_max: upper bound of α
#   aer_update: ``sign`` or ``proportional`` controller
AER_DEFAULTS: dict[str, Any] = {
    "aer_target_ratio": 0.4,
    "aer_difficulty_mode": "smooth",
    "aer_acc_threshold": 0.5,
    "aer_correct_threshold": 0.5,
    "aer_alpha_init": 0.0,
    "aer_alpha_lr": 1e-4,
    "aer_alpha_max": 1e-2,
    "aer_update": "sign",
}
AER_KEYS = tuple(AER_DEFAULTS)


def validate_aer_options(cfg: Any) -> None:
    """ValueError naming the knob for any out-of-range AER option (``cfg``: a mapping or an object)."""
    get = (lambda k: cfg.get(k)) if hasattr(cfg, "get") and not hasattr(cfg, "__dataclass_fields__") else (lambda k: getattr(cfg, k))
    if get("aer_difficulty_mode") not in ("smooth", "threshold"):
        raise ValueError(f"aer_difficulty_mode={get('aer_difficulty_mode')!r}; choose 'smooth' or 'threshold'")
    if get("aer_update") not in ("sign", "proportional"):
        raise ValueError(f"aer_update={get('aer_update')!r}; choose 'sign' or 'proportional'")
    for key in ("aer_target_ratio", "aer_alpha_lr", "aer_alpha_max"):
        value = get(key)
        if not isinstance(value, (int, float)) or not value > 0.0:
            raise ValueError(f"{key} must be a number > 0.0, got {value!r}")
    if not (0.0 <= get("aer_alpha_init") <= get("aer_alpha_max")):
        raise ValueError(f"aer_alpha_init must be in [0, aer_alpha_max], got {get('aer_alpha_init')!r}")
    if not (0.0 <= get("aer_acc_threshold") <= 1.0):
        raise ValueError(f"aer_acc_threshold must be in [0, 1], got {get('aer_acc_threshold')!r}")


def aer_enabled(config: Any) -> bool:
    """Whether verl's config selects ``actor_rollout_ref.actor.policy_loss.loss_mode=aer``."""
    policy_loss = config.actor_rollout_ref.actor.get("policy_loss", {}) or {}
    return policy_loss.get("loss_mode", "vanilla") == LOSS_MODE


def per_sample_coefficients(
    sequence_rewards: torch.Tensor, group: torch.Tensor, num_groups: int, mode: str, acc_threshold: float, correct_threshold: float
) -> torch.Tensor:
    """c_i (bs,) from the accuracy of each response's prompt group (module docstring, item 1)."""
    correct = (sequence_rewards > correct_threshold).float()
    size = torch.zeros(num_groups).index_add_(0, group, torch.ones_like(correct))
    acc = torch.zeros(num_groups).index_add_(0, group, correct) / size.clamp_min(1.0)
    acc_i = acc[group]
    if mode == "threshold":
        return (acc_i <= acc_threshold).float()
    difficulty = 1.0 - acc_i
    mean = difficulty.mean()
    if mean <= 0:
        return torch.ones_like(difficulty)  # every prompt solved: spread the bonus evenly
    return difficulty / mean


@dataclass
class AERState:
    """The controller's state: the global coefficient α and the anchor entropy H_0 (None before step 1)."""

    alpha: float
    initial_entropy: float | None = None

    def target(self, ratio: float) -> float | None:
        return None if self.initial_entropy is None else ratio * self.initial_entropy

    def step(self, entropy: float, cfg: Any) -> float:
        """Record this step's mean entropy H_k, anchor H_0 on the first call, update α; returns the α *used*."""
        if not math.isfinite(entropy):
            raise ValueError(f"AER received a non-finite batch entropy {entropy}")
        used = self.alpha
        if self.initial_entropy is None:
            self.initial_entropy = float(entropy)
        target = self.target(cfg.aer_target_ratio)
        if cfg.aer_update == "sign":
            delta = cfg.aer_alpha_lr * (1.0 if target > entropy else -1.0 if target < entropy else 0.0)
        else:
            delta = cfg.aer_alpha_lr * (target - entropy) / target
        self.alpha = min(max(self.alpha + delta, 0.0), cfg.aer_alpha_max)
        return used

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / STATE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"alpha": self.alpha, "initial_entropy": self.initial_entropy}))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, folder: str | Path) -> AERState | None:
        path = Path(folder) / STATE_FILE
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return cls(alpha=float(data["alpha"]), initial_entropy=data["initial_entropy"])


def aer_metrics(state: AERState, cfg: Any, entropy: float, coef: torch.Tensor, used_alpha: float) -> dict:
    """The per-step ``aer/`` metrics: coefficient used and next, target and anchor entropy, per-sample mean."""
    return {
        "aer/alpha": used_alpha,
        "aer/alpha_next": state.alpha,
        "aer/target_entropy": state.target(cfg.aer_target_ratio),
        "aer/initial_entropy": state.initial_entropy,
        "aer/entropy": entropy,
        "aer/sample_coef_mean": float(coef.mean().item()) if coef.numel() else 0.0,
    }
