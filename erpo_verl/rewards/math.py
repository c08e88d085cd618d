"""Rule-based math reward for verl: final answer extraction, normalization, then symbolic equivalence.

Use it as verl's custom reward function::

    reward.custom_reward_function.path=pkg://erpo_verl.rewards.math
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.score_format=signed   # optional, DAPO's +-1

How a response is scored (see docs/data.md for the full list of rules):

1. Only the last ``tail_chars`` characters are read (a 1 MB degenerate response costs as much as a short one),
   after replacing invalid Unicode (lone surrogates from bad UTF-8) - model output is never evaluated.
2. The final answer is the last ``\\boxed{}`` or ``Answer:``/``####`` line, whichever comes last
   (:mod:`erpo_verl.rewards.answer_extraction`). No answer scores as wrong.
3. Fast path: exact text match, then normalized text match, then exact numeric comparison of plain numbers
   (:mod:`erpo_verl.rewards.answer_normalization`), then a conservative numeric evaluation of both answers
   that settles only clear-cut pairs (:mod:`erpo_verl.rewards.numeric_screen`). This decides most responses
   in microseconds.
4. Otherwise math-verify decides symbolic equivalence in a worker subprocess with a hard deadline
   (:mod:`erpo_verl.rewards.symbolic`), which works from threads and Ray workers. Answers longer than
   ``max_answer_chars`` or shaped like power towers skip this step and count as not equal; so does a comparison
   that times out. Verdicts are cached, since a group of rollouts often repeats the same wrong answer.

Knobs (``reward_kwargs``): ``score_format`` (``binary`` -> {0, 1}, ``signed`` -> {-1, +1}), ``timeout_s``
(alias ``timeout``; symbolic-stage bound per response, default 3 s), ``tail_chars`` (default 4000),
``answer_markers`` (``auto``/``boxed``/``answer_line``), ``symbolic`` (False: string and number rules only),
``max_answer_chars`` (default 400), ``unknown_data_source`` (``score`` warns once and scores; ``raise``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any

from erpo_verl.rewards.answer_extraction import MARKER_MODES, extract_final_answer, response_tail, sanitize_text
from erpo_verl.rewards.answer_normalization import (
    answer_key,
    decimal_places,
    normalize_answer,
    numbers_match,
    parse_number,
)
from erpo_verl.rewards.data_sources import is_routed_to_math_reward
from erpo_verl.rewards.numeric_screen import screen
from erpo_verl.rewards.symbolic import Verdict, shared_verifier

logger = logging.getLogger(__name__)

SCORE_FORMATS = {"binary": (1.0, 0.0), "signed": (1.0, -1.0)}


@dataclass(frozen=True)
class MathRewardConfig:
    """The reward's knobs, read from verl's ``reward_kwargs`` (unknown keys are verl's own and are ignored)."""

    score_format: str = "binary"
    timeout_s: float = 3.0
    tail_chars: int = 4000
    answer_markers: str = "auto"
    symbolic: bool = True
    max_answer_chars: int = 400
    unknown_data_source: str = "score"

    def __post_init__(self):
        if self.score_format not in SCORE_FORMATS:
            raise ValueError(f"score_format must be one of {sorted(SCORE_FORMATS)}, got {self.score_format!r}")
        if self.answer_markers not in MARKER_MODES:
            raise ValueError(f"answer_markers must be one of {MARKER_MODES}, got {self.answer_markers!r}")
        if self.unknown_data_source not in ("score", "raise"):
            raise ValueError(f"unknown_data_source must be 'score' or 'raise', got {self.unknown_data_source!r}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s!r}")
        if self.tail_chars < 16 or self.max_answer_chars < 1:
            raise ValueError("tail_chars must be >= 16 and max_answer_chars >= 1")


_CONFIG_FIELDS = frozenset(f.name for f in fields(MathRewardConfig))
_config_cache: dict[tuple, MathRewardConfig] = {}


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("0", "false", "no", "off", "")
    return bool(value)


def config_from_kwargs(kwargs: dict) -> MathRewardConfig:
    """Build (and cache) the config from the keyword arguments verl passes to ``compute_score``."""
    chosen = {}
    for name, value in kwargs.items():
        name = "timeout_s" if name == "timeout" else name
        if name in _CONFIG_FIELDS and value is not None:
            chosen[name] = value
    key = tuple(sorted((k, repr(v)) for k, v in chosen.items()))
    config = _config_cache.get(key)
    if config is None:
        converted = {}
        for name, value in chosen.items():
            if name == "symbolic":
                converted[name] = _as_bool(value)
            elif name in ("timeout_s",):
                converted[name] = float(value)
            elif name in ("tail_chars", "max_answer_chars"):
                converted[name] = int(value)
            else:
                converted[name] = str(value)
        config = MathRewardConfig(**converted)
        _config_cache[key] = config
    return config


# ---------------------------------------------------------------------------------------------- symbolic stage

# A numeric exponent that is itself raised to a power: 10^{10^{10}}, 2^2^2 (but not e^{x^2}).
_POWER_TOWER_RE = re.compile(r"\^\s*\{?\s*[-+]?\d+\s*\^")
_HUGE_EXPONENT_RE = re.compile(r"\^\s*\{?\s*[-+]?\d{5,}")
_HUGE_FACTORIAL_RE = re.compile(r"\d{5,}\s*!")
MAX_BRACE_DEPTH = 24
MAX_POWERS = 12


def too_complex_for_symbolic(answer: str, max_chars: int) -> bool:
    """Cheap screen for answers that could make sympy run for minutes or exhaust memory.

    Power towers (``10^{10^{10}}``), exponents or factorials of 5+ digit numbers, deep nesting and long
    answers are rejected up front: a real MATH/AIME answer is short (MATH-500's longest has 159 characters),
    and the hard deadline behind this screen costs a worker restart each time it fires.
    """
    if len(answer) > max_chars or answer.count("^") > MAX_POWERS:
        return True
    if _POWER_TOWER_RE.search(answer) or _HUGE_EXPONENT_RE.search(answer) or _HUGE_FACTORIAL_RE.search(answer):
        return True
    depth = deepest = 0
    for ch in answer:
        if ch == "{" or ch == "(" or ch == "[":
            depth += 1
            deepest = max(deepest, depth)
        elif ch == "}" or ch == ")" or ch == "]":
            depth -= 1
    return deepest > MAX_BRACE_DEPTH


class _VerdictCache:
    """Thread-safe LRU of symbolic verdicts keyed by (normalized prediction, normalized truth)."""

    def __init__(self, capacity: int = 65536):
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, str], Verdict] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            verdict = self._items.get(key)
            if verdict is not None:
                self._items.move_to_end(key)
            return verdict

    def put(self, key, verdict: Verdict) -> None:
        with self._lock:
            self._items[key] = verdict
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)


_verdicts = _VerdictCache()


def symbolic_verdict(pred: str, truth: str, timeout_s: float) -> Verdict:
    """math-verify's verdict for two normalized answers, within ``timeout_s`` (cached)."""
    key = (pred, truth)
    verdict = _verdicts.get(key)
    if verdict is None:
        verdict = shared_verifier().compare(pred, truth, timeout_s)
        if verdict is not Verdict.UNAVAILABLE:  # retry later: the workers may come back
            _verdicts.put(key, verdict)
    return verdict


# ------------------------------------------------------------------------------------------------- comparison

# A normalized answer that is one plain word of 4+ letters ("even", "monday" after lowercasing): no algebra can
# make it equal to a different answer. Shorter letter runs may be products of variables ("ab" = "ba").
_WORD_ANSWER_RE = re.compile(r"^[a-z]{4,}$")


def answers_match(pred: str, truth: str, config: MathRewardConfig) -> bool:
    """Whether an extracted answer equals a ground truth: exact, normalized, numeric, then symbolic."""
    pred, truth = pred.strip(), truth.strip()
    if not pred or not truth:
        return False
    if pred == truth:
        return True
    if len(pred) > config.max_answer_chars:
        return False
    pred_norm, truth_norm = normalize_answer(pred), normalize_answer(truth)
    if not pred_norm:
        return False
    if pred_norm == truth_norm:
        return True
    pred_value, truth_value = parse_number(pred_norm), parse_number(truth_norm)
    if pred_value is not None and truth_value is not None:
        return numbers_match(pred_value, truth_value, decimal_places(pred_norm))
    # Plain words were already compared case-insensitively by the normalized match.
    if _WORD_ANSWER_RE.match(pred_norm) or _WORD_ANSWER_RE.match(truth_norm):
        return False
    settled = screen(pred_norm, truth_norm)
    if settled is not None:
        return settled
    if not config.symbolic:
        return False
    if too_complex_for_symbolic(pred_norm, config.max_answer_chars) or too_complex_for_symbolic(
        truth_norm, config.max_answer_chars
    ):
        return False
    return symbolic_verdict(pred_norm, truth_norm, config.timeout_s) is Verdict.EQUAL


def ground_truth_answers(ground_truth: Any) -> list[str]:
    """The accepted answers: a string, a number (AIME files store integers), or a list of alternatives."""
    if ground_truth is None:
        return []
    if isinstance(ground_truth, (str, bytes)):
        return [sanitize_text(ground_truth)]
    if isinstance(ground_truth, bool):
        return [str(ground_truth)]
    if isinstance(ground_truth, int):
        return [str(ground_truth)]
    if isinstance(ground_truth, float):
        return [str(int(ground_truth))] if ground_truth.is_integer() else [repr(ground_truth)]
    if hasattr(ground_truth, "tolist"):  # numpy arrays and scalars from the batch
        return ground_truth_answers(ground_truth.tolist())
    if isinstance(ground_truth, (list, tuple)):
        return [answer for item in ground_truth for answer in ground_truth_answers(item)]
    return [sanitize_text(ground_truth)]


_warned_sources: set[str] = set()


def _check_data_source(data_source: Any, config: MathRewardConfig) -> None:
    if is_routed_to_math_reward(data_source):
        return
    if config.unknown_data_source == "raise":
        raise ValueError(
            f"data_source {data_source!r} is not a math data source known to erpo_verl.rewards.math "
            "(expected an 'erpo/...' value written by data_prep, or one of verl's math sources)"
        )
    if data_source not in _warned_sources:
        _warned_sources.add(str(data_source))
        logger.warning("scoring unknown data_source %r with the math reward rules", data_source)


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> dict:
    """Score one response against its ground truth (verl's custom reward signature).

    Returns ``{"score": float, "acc": bool, "pred": str}``: ``score`` is 1 for a correct answer and 0
    (``score_format="binary"``, default) or -1 (``"signed"``) otherwise; ``acc`` is the correctness that verl
    averages into ``acc/mean@N``; ``pred`` is the normalized extracted answer ("" when there is none), with
    plain numbers in a canonical form (``0.5`` and ``\\frac{1}{2}`` both give ``1/2``) so majority voting
    groups equal answers.

    Never raises because of the response; raises ``ValueError`` only for an invalid ``reward_kwargs`` value or
    an unknown ``data_source`` under ``unknown_data_source="raise"``.
    """
    config = config_from_kwargs(kwargs)
    _check_data_source(data_source, config)
    correct_score, wrong_score = SCORE_FORMATS[config.score_format]

    if isinstance(solution_str, bytes):
        solution_str = sanitize_text(solution_str)
    elif not isinstance(solution_str, str):
        solution_str = "" if solution_str is None else str(solution_str)
    text = sanitize_text(response_tail(solution_str, config.tail_chars))
    extracted = extract_final_answer(text, config.answer_markers)
    if extracted is None:
        return {"score": wrong_score, "acc": False, "pred": ""}

    pred = extracted.text
    correct = any(answers_match(pred, truth, config) for truth in ground_truth_answers(ground_truth))
    key = answer_key(pred) if len(pred) <= config.max_answer_chars else pred[: config.max_answer_chars]
    return {"score": correct_score if correct else wrong_score, "acc": bool(correct), "pred": key}
