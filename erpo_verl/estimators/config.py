"""Configuration of the entropy-progress estimator family (ERPO, EP-GRPO).

The keys, defaults and ranges are those documented in ``docs/algorithms.md`` (Configuration). Hyper-parameters live in
verl's ``algorithm`` section under ``algorithm.erpo`` (for ``adv_estimator=erpo``) or ``algorithm.ep_grpo``
(for ``adv_estimator=ep_grpo``); on a stock verl command line add them with a leading ``+``, e.g.
``+algorithm.erpo.gate_gamma=3.0``.

Provenance of each default is documented field by field in ``docs/algorithms.md``: the method sections of
both papers are not public, so most values are secondary-source or our own choices.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# key -> its valid values; the first one is the default (spec §5 and §8)
_CHOICES = {
    "gate_norm": ("mean1", "none"),
    "entropy_stats_scope": ("group", "batch", "response"),
    "bucket_coord": ("position", "cum_entropy"),
    "bucket_norm": ("zscore", "center"),
    "bucket_edges": ("ceil", "floor"),
    "bucket_std": ("population", "unbiased"),
}


@dataclass(frozen=True)
class EntropyProgressConfig:
    """Hyper-parameters of the entropy-progress token advantage (spec §5); the defaults are ERPO's.

    Attributes:
        gate: multiply the outcome advantage by the entropy gate W (ERPO's "entropy-aware gating").
        gate_gamma: gate sharpness γ ≥ 0 in W = sigmoid(γ z); γ = 0 gives W ≡ 0.5 (≡ 1 after ``mean1``).
        gate_norm: ``mean1`` rescales W to mean 1 over the valid tokens of its scope (keeps GRPO's gradient
            scale); ``none`` leaves W in (0, 1).
        entropy_stats_scope: where the entropy z-score and the ``mean1`` mean are pooled: over the prompt
            ``group`` (the papers' Norm_G), the whole ``batch``, or each ``response`` alone (the third-party
            implementation, spec §8).
        progress_coef: η ≥ 0, weight of the implicit process term Ψ; 0 switches it off (and the reference
            log-probs are then not needed).
        logratio_scale: λ > 0 in s = λ (log π_old − log π_ref).
        bucket_coord: progress coordinate used to bucket tokens: relative ``position`` (ERPO) or
            ``cum_entropy``, the cumulative-entropy share (EP-GRPO).
        num_buckets: K ≥ 1 progress buckets.
        bucket_norm: ``zscore`` or ``center`` normalization of s inside each (group, bucket).
        bucket_edges: ``ceil``: b = clamp(⌈K τ⌉ − 1, 0, K−1), the last token in bucket K−1; ``floor`` (spec §8):
            b = min(⌊K τ⁻⌋, K−1) with τ⁻ the progress *before* the token, the first token in bucket 0.
        bucket_std: σ_{g,b} of the z-score with ``population`` (n) or ``unbiased`` (n − 1) denominator.
        zero_var_fallback: in groups whose rewards are all equal (or that have one response) anchor the
            progress term on sign(R − θ) instead of switching it off (EP-GRPO).
        reward_threshold: θ of the fallback; 0.5 for {0, 1} rewards, 0 for {−1, +1} rewards.
        anchor_gate: multiply Ψ by W as well (ERPO's E2: Ψ = W · sgn(Â) · s̃).
        adv_clip: clamp |A| to this value when set (None: no clamp).
        epsilon: ε of every normalization.
        top_entropy_ratio: ρ of the 80/20 forking-token mask (arXiv 2506.01939): keep the advantage only on
            the top-ρ old-entropy tokens of the batch (None: off; the paper uses 0.2).
    """

    gate: bool = True
    gate_gamma: float = 2.0
    gate_norm: str = "mean1"
    entropy_stats_scope: str = "group"
    progress_coef: float = 0.2
    logratio_scale: float = 0.1
    bucket_coord: str = "position"
    num_buckets: int = 10
    bucket_norm: str = "zscore"
    bucket_edges: str = "ceil"
    bucket_std: str = "population"
    zero_var_fallback: bool = False
    reward_threshold: float = 0.5
    anchor_gate: bool = True
    adv_clip: float | None = None
    epsilon: float = 1e-6
    top_entropy_ratio: float | None = None
    norm_adv_by_std_in_grpo: bool = field(default=True, metadata={"from_algorithm": True})

    def __post_init__(self) -> None:
        for key, choices in _CHOICES.items():
            value = getattr(self, key)
            if value not in choices:
                raise ValueError(f"{key}={value!r} is not valid; choose one of {list(choices)}")
        for key in ("gate", "zero_var_fallback", "anchor_gate", "norm_adv_by_std_in_grpo"):
            if not isinstance(getattr(self, key), bool):
                raise ValueError(f"{key} must be true or false, got {getattr(self, key)!r}")
        _check_number(self, "gate_gamma", low=0.0, low_inclusive=True)
        _check_number(self, "progress_coef", low=0.0, low_inclusive=True)
        _check_number(self, "logratio_scale", low=0.0, low_inclusive=False)
        _check_number(self, "epsilon", low=0.0, low_inclusive=False)
        _check_number(self, "reward_threshold")
        if self.adv_clip is not None:
            _check_number(self, "adv_clip", low=0.0, low_inclusive=False)
        check_ratio(self.top_entropy_ratio)
        if isinstance(self.num_buckets, bool) or not isinstance(self.num_buckets, int) or self.num_buckets < 1:
            raise ValueError(f"num_buckets must be an integer >= 1, got {self.num_buckets!r}")

    # -- what the configuration needs from the trainer ------------------------------------------------
    @property
    def needs_entropy(self) -> bool:
        """Whether the old-policy per-token entropy is an input (gate, or cumulative-entropy buckets)."""
        return (
            self.gate
            or (self.progress_coef > 0 and self.bucket_coord == "cum_entropy")
            or self.top_entropy_ratio is not None
        )

    @property
    def needs_ref_log_prob(self) -> bool:
        """Whether the reference policy's log-probs are an input (the implicit progress term is on)."""
        return self.progress_coef > 0

    @classmethod
    def from_algorithm_config(cls, config: Any, section: str, defaults: Mapping[str, Any]) -> EntropyProgressConfig:
        """Build from verl's ``algorithm`` config (DictConfig, dict or None) reading ``config[section]``.

        ``defaults`` are the preset's values (ERPO or EP-GRPO); keys given in the section override them.
        An unknown key is a ValueError naming it and listing the valid keys.
        """
        values = dict(defaults)
        norm_by_std = True
        if config is not None:
            norm_by_std = norm_adv_by_std(config)
            section_cfg = config_get(config, section, None)
            if section_cfg is not None:
                section_cfg = _to_plain_dict(section_cfg, section)
                valid = sorted(f.name for f in dataclasses.fields(cls) if not f.metadata.get("from_algorithm"))
                for key, value in section_cfg.items():
                    if key not in valid:
                        raise ValueError(
                            f"unknown key algorithm.{section}.{key}; valid keys are: {', '.join(valid)}"
                        )
                    values[key] = value
        values = {k: _coerce(k, v) for k, v in values.items()}
        return cls(**values, norm_adv_by_std_in_grpo=norm_by_std)


def norm_adv_by_std(config: Any) -> bool:
    """verl's ``algorithm.norm_adv_by_std_in_grpo`` (default true); a non-boolean value is an error."""
    value = True if config is None else config_get(config, "norm_adv_by_std_in_grpo", True)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        value = value.strip().lower() == "true"
    if not isinstance(value, bool):
        raise ValueError(f"algorithm.norm_adv_by_std_in_grpo must be true or false, got {value!r}")
    return value


def config_get(config: Any, key: str, default: Any) -> Any:
    """Read ``key`` from a DictConfig, a dict, a dataclass (verl's AlgoConfig) or return ``default``."""
    if isinstance(config, Mapping):
        return config.get(key, default)
    getter = getattr(config, "get", None)
    if callable(getter):  # OmegaConf DictConfig
        return getter(key, default)
    return getattr(config, key, default)  # a dataclass such as verl's AlgoConfig


def _to_plain_dict(section_cfg: Any, section: str) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(section_cfg, DictConfig):
            return OmegaConf.to_container(section_cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf always comes with verl
        pass
    if isinstance(section_cfg, Mapping):
        return dict(section_cfg)
    raise ValueError(f"algorithm.{section} must be a mapping of hyper-parameters, got {type(section_cfg).__name__}")


_FLOAT_KEYS = {
    "gate_gamma", "progress_coef", "logratio_scale", "reward_threshold", "epsilon", "adv_clip", "top_entropy_ratio"
}


def _coerce(key: str, value: Any) -> Any:
    # Hydra gives ints for "2" and strings for "null"-like typos; accept ints where floats are expected.
    if key in _FLOAT_KEYS and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _check_number(cfg: EntropyProgressConfig, key: str, low: float | None = None, low_inclusive: bool = True) -> None:
    value = getattr(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{key} must be a finite number, got {value!r}")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        bound = f">= {low}" if low_inclusive else f"> {low}"
        raise ValueError(f"{key} must be {bound}, got {value!r}")


def check_ratio(ratio: Any, key: str = "top_entropy_ratio") -> float | None:
    """Validate ρ: None (off) or a number in (0, 1]."""
    if ratio is None:
        return None
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not (0.0 < float(ratio) <= 1.0):
        raise ValueError(f"{key} must be null (off) or a number in (0, 1], got {ratio!r}")
    return float(ratio)


# The presets, written once: ERPO is the dataclass defaults above; EP-GRPO is ERPO with these changes.
ERPO_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(EntropyProgressConfig) if not f.metadata.get("from_algorithm")
}
EP_GRPO_CHANGES: dict[str, Any] = {"bucket_coord": "cum_entropy", "zero_var_fallback": True}
EP_GRPO_DEFAULTS: dict[str, Any] = {**ERPO_DEFAULTS, **EP_GRPO_CHANGES}
