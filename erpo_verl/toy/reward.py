"""Rule reward of the toy "digits" task: the share of digit characters in the response.

The prompt asks for a string of digits; the score of a response is the fraction of its characters (before
the end-of-turn marker) that are the digits 0-9, so a random character-level policy already earns a
non-zero, varying reward (about 10 of the ~45 symbols are digits) and improves smoothly as it learns.
``acc`` is ``score >= 0.5`` — the binary metric DAPO's dynamic sampling filters on.

It is a normal verl custom reward: ``reward.custom_reward_function.path=pkg://erpo_verl.toy.reward``.
"""

from __future__ import annotations

from typing import Any

END_MARKERS = ("<|im_end|>", "<|endoftext|>")


def digit_fraction(text: str) -> float:
    for marker in END_MARKERS:
        text = text.split(marker, 1)[0]
    if not text:
        return 0.0
    return sum(ch.isdigit() for ch in text) / len(text)


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """verl custom-reward signature; returns ``{"score", "acc", "pred"}``."""
    score = digit_fraction(solution_str)
    return {"score": score, "acc": score >= 0.5, "pred": solution_str[:32]}
