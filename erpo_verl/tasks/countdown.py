"""Countdown: reach a target from a few numbers with + - * /, each number used exactly once, step by step.

A prompt gives the numbers and the target (``from 3 7 25 make 46``); a response is a comma-separated list of
steps, each combining two available values into a new one (``7*3=21,21+25=46``). With ``c`` numbers a solution
has ``c - 1`` steps; every value must be a positive integer (division only when exact). The reward is binary
and checked by a small parser (never ``eval``): every step well formed, its operands available (the numbers of
the prompt and earlier results, each consumed once), its result the exact value, and the last value the target
with nothing left over.

Properties a benchmark of exploration needs:

* **multi-step**: ``c - 1`` dependent arithmetic steps, each of which a small model can get wrong;
* **several correct answers per prompt**: targets are drawn only among values reachable in at least
  ``min_solutions`` distinct ways (distinct up to the order of + and * operands and of independent steps), and every one of them is
  accepted (:func:`solution_stats` counts them);
* **a difficulty knob**: :class:`CountdownConfig` (how many numbers, their range, the target range, the
  minimum number of distinct solutions);
* **disjoint, seeded splits**: :func:`make_splits` draws the test prompts first and never reuses a
  (numbers, target) pair in the training split.

It is a normal verl custom reward: ``reward.custom_reward_function.path=pkg://erpo_verl.tasks.countdown``.
"""

from __future__ import annotations

import random
import re
import statistics
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

DATA_SOURCE = "countdown"
END_MARKERS = ("<|im_end|>", "<|endoftext|>")
MAX_RESPONSE_CHARS = 256  # longer responses score 0 without being parsed (no quadratic work on huge input)
# ASCII digits only (``\d`` would accept other scripts' digits); bounded lengths keep integers small.
_STEP = re.compile(r" *([0-9]{1,6}) *([-+*/]) *([0-9]{1,6}) *= *([0-9]{1,7}) *", re.ASCII)
_GROUND_TRUTH = re.compile(r"([0-9]{1,6}(?:,[0-9]{1,6})*):([0-9]{1,7})", re.ASCII)
OPS = "+-*/"


@dataclass(frozen=True)
class CountdownConfig:
    """The difficulty knob. Defaults: the benchmark's setting (docs/benchmarks.md)."""

    num_count: int = 3  # numbers per prompt (3 or 4); a solution has num_count - 1 steps
    max_number: int = 12  # numbers drawn uniformly from 1..max_number
    target_min: int = 10
    target_max: int = 80
    min_solutions: int = 2  # targets need at least this many distinct solutions
    max_value: int = 999  # intermediate values above this are not used by generated solutions

    def __post_init__(self):
        if not 2 <= self.num_count <= 5:
            raise ValueError(f"num_count must be 2..5, got {self.num_count}")
        if self.max_number < 2 or self.target_min < 1 or self.target_max < self.target_min:
            raise ValueError(f"bad ranges in {self}")
        if self.min_solutions < 1:
            raise ValueError(f"min_solutions must be >= 1, got {self.min_solutions}")


# ---------------------------------------------------------------------------------------------- solver


def _apply(x: int, op: str, y: int) -> int | None:
    """x op y as a positive integer, or None (negative, zero, or an inexact division)."""
    if op == "+":
        value = x + y
    elif op == "-":
        value = x - y
    elif op == "*":
        value = x * y
    else:
        if y == 0 or x % y:
            return None
        value = x // y
    return value if value > 0 else None


def solve(numbers: list[int] | tuple[int, ...], max_value: int = 999) -> dict[int, dict[str, set[str]]]:
    """Every final value reachable with all ``numbers`` used once.

    Returns ``{value: {canonical expression: {response strings}}}``: the canonical expression identifies a
    solution up to commutativity and step order; the response strings are every step sequence that writes it.
    """
    out: dict[int, dict[str, set[str]]] = {}

    def rec(pool: list[tuple[int, str]], steps: list[str]) -> None:
        if len(pool) == 1:
            value, expr = pool[0]
            out.setdefault(value, {}).setdefault(expr, set()).add(",".join(steps))
            return
        for i in range(len(pool)):
            for j in range(len(pool)):
                if i == j:
                    continue
                (x, ex), (y, ey) = pool[i], pool[j]
                for op in OPS:  # both operand orders of + and *: different responses, one solution
                    value = _apply(x, op, y)
                    if value is None or value > max_value:
                        continue
                    if op in "+*":
                        left, right = sorted((ex, ey))
                        expr = f"({left}{op}{right})"
                    else:
                        expr = f"({ex}{op}{ey})"
                    rest = [p for k, p in enumerate(pool) if k not in (i, j)]
                    rec(rest + [(value, expr)], steps + [f"{x}{op}{y}={value}"])

    rec([(n, str(n)) for n in numbers], [])
    return out


def solutions(numbers, target: int, max_value: int = 999) -> dict[str, set[str]]:
    return solve(numbers, max_value).get(target, {})


# ---------------------------------------------------------------------------------------------- reward


def response_text(solution_str: str) -> str:
    for marker in END_MARKERS:
        solution_str = solution_str.split(marker, 1)[0]
    return solution_str


def parse_ground_truth(ground_truth: Any) -> tuple[list[int], int]:
    """``"3,7,25:46"`` -> ([3, 7, 25], 46); a clear error for anything else."""
    text = str(ground_truth).strip()
    match = _GROUND_TRUTH.fullmatch(text)
    if not match:
        raise ValueError(f"countdown ground_truth must look like '3,7,25:46', got {text[:64]!r}")
    return [int(n) for n in match.group(1).split(",")], int(match.group(2))


def format_ground_truth(numbers, target: int) -> str:
    return ",".join(str(n) for n in numbers) + f":{target}"


def check(text: str, numbers, target: int) -> tuple[bool, str]:
    """Is ``text`` a correct solution? Returns (correct, reason) - reason is "ok" or what is wrong."""
    if len(text) > MAX_RESPONSE_CHARS:
        return False, "too long"
    text = text.strip()
    if not text:
        return False, "empty"
    parts = text.split(",")
    if len(parts) != len(numbers) - 1:
        return False, f"{len(parts)} steps, need {len(numbers) - 1}"
    pool = Counter(int(n) for n in numbers)
    value = None
    for part in parts:
        match = _STEP.fullmatch(part)
        if not match:
            return False, f"malformed step {part[:24]!r}"
        x, op, y, claimed = int(match.group(1)), match.group(2), int(match.group(3)), int(match.group(4))
        for operand in (x, y):
            if pool[operand] <= 0:
                return False, f"{operand} is not available"
            pool[operand] -= 1
        if op == "/" and y == 0:
            return False, "division by zero"
        value = _apply(x, op, y)
        if value is None or value != claimed:
            return False, f"wrong arithmetic {x}{op}{y}={claimed}"
        pool[value] += 1
    if value != target:
        return False, f"ends at {value}, target {target}"
    return True, "ok"


def compute_score(
    data_source: str, solution_str: str, ground_truth: str, extra_info: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """verl custom-reward signature; returns ``{"score", "acc", "format_ok", "pred"}`` (score is 0 or 1)."""
    numbers, target = parse_ground_truth(ground_truth)
    text = response_text(solution_str)
    correct, reason = check(text, numbers, target)
    well_formed = correct or not (reason.startswith("malformed") or reason in ("too long", "empty")
                                  or reason.endswith(f"need {len(numbers) - 1}"))
    return {"score": 1.0 if correct else 0.0, "acc": correct, "format_ok": well_formed, "pred": text[:48]}


def score_and_acc(
    data_source: str, solution_str: str, ground_truth: str, extra_info: Any = None, **kwargs: Any
) -> dict[str, Any]:
    """:func:`compute_score` reduced to ``{"score", "acc"}``: what training (DAPO filters on ``acc``) and the
    benchmark's pass@k need. verl's validation bootstraps every key a reward returns (1,000 resamples per prompt
    and subset size), which took 20-30 s per key per validation of 1,024 samples on 2 cores; the benchmark uses
    this one (``reward.custom_reward_function.name=score_and_acc``) and gets the same scores."""
    full = compute_score(data_source, solution_str, ground_truth, extra_info, **kwargs)
    return {"score": full["score"], "acc": full["acc"]}


# ---------------------------------------------------------------------------------------------- data


def prompt_text(numbers, target: int) -> str:
    return "from " + " ".join(str(n) for n in numbers) + f" make {target}"


def draw_problem(rng: random.Random, config: CountdownConfig) -> tuple[list[int], int, dict[str, set[str]]]:
    """Numbers and a target reachable in at least ``min_solutions`` distinct ways (uniform among such targets)."""
    for _ in range(1000):
        numbers = [rng.randint(1, config.max_number) for _ in range(config.num_count)]
        reachable = solve(numbers, config.max_value)
        targets = sorted(t for t, sols in reachable.items()
                         if config.target_min <= t <= config.target_max and len(sols) >= config.min_solutions)
        if targets:
            target = rng.choice(targets)
            return numbers, target, reachable[target]
    raise ValueError(f"no problem with >= {config.min_solutions} solutions found for {config}")


def make_splits(num_train: int, num_test: int, seed: int = 0, config: CountdownConfig = CountdownConfig()):
    """Disjoint train/test problems ``[(numbers, target, solutions)]``; the test split is drawn first."""
    splits: dict[str, list] = {}
    taken: set = set()
    for split, count in (("test", num_test), ("train", num_train)):
        rng = random.Random(f"countdown-{seed}-{split}")
        rows = []
        attempts = 0
        while len(rows) < count:
            attempts += 1
            if attempts > 50 * count + 1000:
                raise ValueError(f"could not draw {count} distinct {split} problems for {config}; widen the ranges")
            numbers, target, sols = draw_problem(rng, config)
            key = (tuple(sorted(numbers)), target)
            if key in taken:
                continue
            taken.add(key)
            rows.append((numbers, target, sols))
        splits[split] = rows
    return splits


def verl_rows(problems, split: str) -> list[dict]:
    """Rows in verl's parquet schema (prompt as a chat message, the ground truth as ``"3,7,25:46"``)."""
    return [
        {
            "data_source": DATA_SOURCE,
            "prompt": [{"role": "user", "content": prompt_text(numbers, target)}],
            "ability": "arithmetic",
            "reward_model": {"style": "rule", "ground_truth": format_ground_truth(numbers, target)},
            "extra_info": {"split": split, "index": index, "num_solutions": len(sols)},
        }
        for index, (numbers, target, sols) in enumerate(problems)
    ]


def solution_stats(problems) -> dict[str, float]:
    """How many correct answers each prompt has: distinct solutions and distinct response strings."""
    distinct = [len(sols) for _, _, sols in problems]
    strings = [sum(len(s) for s in sols.values()) for _, _, sols in problems]
    return {
        "prompts": len(problems),
        "distinct_solutions_mean": statistics.fmean(distinct),
        "distinct_solutions_median": statistics.median(distinct),
        "distinct_solutions_min": min(distinct),
        "response_strings_mean": statistics.fmean(strings),
        "response_strings_median": statistics.median(strings),
    }


def write_parquet(out_dir, num_train: int = 4000, num_test: int = 32, seed: int = 0,
                  config: CountdownConfig = CountdownConfig()) -> dict[str, Any]:
    """``train.parquet`` and ``test.parquet`` through the data-prep writer, plus the split statistics."""
    from pathlib import Path

    from data_prep.io import write_verl_parquet

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = make_splits(num_train, num_test, seed, config)
    paths = {split: write_verl_parquet(verl_rows(rows, split), out / f"{split}.parquet", overwrite=True)
             for split, rows in splits.items()}
    return {"paths": paths, "splits": splits, "config": asdict(config),
            "stats": {split: solution_stats(rows) for split, rows in splits.items()}}
