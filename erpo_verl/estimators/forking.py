"""The 80/20 "forking token" mask — Beyond the 80/20 Rule (arXiv 2506.01939); TRL's ``top_entropy_quantile``.

Only the tokens whose old-policy entropy lies in the top ρ fraction of the batch's valid tokens keep their
advantage; every other token's advantage becomes 0, so it contributes no policy-gradient signal, while the
loss is still normalised by *all* valid tokens (the response mask is not changed), as in the paper:

    J = E[ (1 / Σ_i |o_i|) Σ_i Σ_t 1[H_{i,t} ≥ τ_ρ] · min(r Â, clip(r, 1−ε_low, 1+ε_high) Â) ]

τ_ρ is the ⌈ρ N⌉-th largest entropy among the N valid tokens of the batch; tokens tied with τ_ρ are all
kept, so with ties slightly more than ρ N tokens can be selected. Paper default: ρ = 0.2.

It is an option of every estimator of this package (``top_entropy_ratio``) and a registered GRPO variant,
:mod:`grpo_forking`.
"""

from __future__ import annotations

import math

import torch

DEFAULT_RATIO = 0.2


def top_entropy_mask(entropy: torch.Tensor, response_mask: torch.Tensor, ratio: float) -> torch.Tensor:
    """Bool (bs, L): valid tokens whose entropy is among the top ``ratio`` fraction of the batch's valid tokens."""
    valid = response_mask.bool()
    threshold = top_entropy_threshold(entropy[valid].float(), ratio)
    if threshold is None:
        return valid
    return valid & (entropy.float() >= threshold)


def top_entropy_threshold(values: torch.Tensor, ratio: float) -> torch.Tensor | None:
    """τ_ρ: the ⌈ρ N⌉-th largest of the N valid-token entropies ``values`` (1-D); None when N = 0."""
    n = values.numel()
    if n == 0:
        return None
    k = max(1, math.ceil(ratio * n))
    return torch.kthvalue(values, n - k + 1).values  # the k-th largest
