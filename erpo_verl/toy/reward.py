"""Rule reward of the toy "digits" task: write exactly N digits.

The prompt asks for N digits (3 ≤ N ≤ 9, the ground truth). With d the number of digit characters in the
response (before the end-of-turn marker) and L its length,

    score = min(d, N) / max(L, N)

so 1.0 means exactly N characters, all digits. A random character-level policy already earns a non-zero,
varying score (about 10 of the ~45 symbols are digits: ≈ 0.2), so GRPO groups have variance from the first
step; the score rises quickly while the policy learns to emit digits and more slowly while it learns to stop
after N of them — headroom for comparing estimators. ``acc`` is ``score == 1`` (exact), the binary metric
DAPO's dynamic sampling filters on.

It is a normal verl custom reward: ``reward.custom_reward_function.path=pkg://erpo_verl.toy.reward``.
"""

from __future__ import annotations

from typing import Any

END_MARKERS = ("<|im_end|>", "<|endoftext|>")


def response_text(solution_str: str) -> str:
    for marker in END_MARKERS:
        solution_str = solution_str.split(marker, 1)[0]
    return solution_str


def digits_score(text: str, target: int) -> float:
    if target < 1:
        raise ValueError(f"the toy task's ground truth must be a positive digit count, got {target}")
    digits = sum(ch.isdigit() for ch in text)
    return min(digits, target) / max(len(text), target)


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """verl custom-reward signature; returns ``{"score", "acc", "pred"}``."""
    try:
        target = int(str(ground_truth).strip())
    except ValueError:
        raise ValueError(f"toy digits task: ground_truth must be an integer digit count, got {ground_truth!r}") from None
    text = response_text(solution_str)
    score = digits_score(text, target)
    return {"score": score, "acc": score == 1.0, "pred": text[:32]}
