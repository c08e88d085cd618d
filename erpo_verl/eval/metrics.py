"""Benchmark metrics from sampled answers: avg@k, unbiased pass@k, maj@k.

For one prompt with ``n`` sampled responses of which ``c`` are correct:

* **avg@k** - the mean accuracy of the first ``k`` samples. Averaged over prompts it estimates pass@1 with
  less variance than a single sample; DAPO's "avg@32" on AIME is this with k = 32.
* **pass@k** - the probability that at least one of ``k`` samples drawn without replacement from the ``n``
  is correct, ``1 - C(n-c, k) / C(n, k)`` (the unbiased estimator of Chen et al., 2021). It uses all ``n``
  samples whatever ``k`` is. verl's bootstrap ``best@k`` draws *with* replacement and under-reports it (one
  correct out of four gives 0.684 instead of 1.0 for k = 4).
* **maj@k** - majority vote over the first ``k`` samples: the most frequent extracted answer wins (ties go to
  the answer that appeared first; responses without an answer do not vote) and the prompt scores 1 if that
  answer is correct.

Each metric is averaged over the prompts of a benchmark. A metric with ``k`` larger than a prompt's sample
count is undefined for that prompt; the benchmark then reports None for it rather than a biased number.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for ``n`` samples with ``c`` correct: ``1 - C(n-c, k) / C(n, k)`` (exact arithmetic)."""
    if not (0 <= c <= n) or n < 1:
        raise ValueError(f"need 0 <= c <= n and n >= 1, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


def avg_at_k(correct: Sequence[bool], k: int) -> float:
    """Mean accuracy of the first ``k`` samples."""
    if not 1 <= k <= len(correct):
        raise ValueError(f"avg@k needs 1 <= k <= number of samples ({len(correct)}), got k={k}")
    return sum(bool(x) for x in correct[:k]) / k


def majority_answer(answers: Sequence[str | None]) -> int | None:
    """Index of the first sample carrying the most frequent non-empty answer (ties: earliest first), or None."""
    votes = Counter(answer for answer in answers if answer)
    if not votes:
        return None
    top = max(votes.values())
    for position, answer in enumerate(answers):
        if answer and votes[answer] == top:
            return position
    return None  # pragma: no cover - unreachable


def maj_at_k(answers: Sequence[str | None], correct: Sequence[bool], k: int) -> float:
    """1.0 if the majority answer among the first ``k`` samples is correct, else 0.0."""
    if len(answers) != len(correct):
        raise ValueError("answers and correct must have the same length")
    if not 1 <= k <= len(answers):
        raise ValueError(f"maj@k needs 1 <= k <= number of samples ({len(answers)}), got k={k}")
    winner = majority_answer(answers[:k])
    return 0.0 if winner is None else float(bool(correct[winner]))


@dataclass
class PromptSamples:
    """All scored samples of one prompt of one benchmark, in generation order."""

    benchmark: str
    prompt_id: str
    correct: list[bool] = field(default_factory=list)
    answers: list[str | None] = field(default_factory=list)

    def add(self, correct: bool, answer: str | None) -> None:
        self.correct.append(bool(correct))
        self.answers.append(answer or None)


@dataclass
class BenchmarkResult:
    """One row of the results table: a benchmark's prompt/sample counts and its metrics by name (``avg@32``)."""

    benchmark: str
    prompts: int
    min_samples: int
    max_samples: int
    metrics: dict[str, float | None]


def group_samples(records: Iterable[tuple[str, str, bool, str | None]]) -> list[PromptSamples]:
    """Group ``(benchmark, prompt_id, correct, answer)`` tuples into :class:`PromptSamples`, keeping order."""
    groups: dict[tuple[str, str], PromptSamples] = {}
    for benchmark, prompt_id, correct, answer in records:
        key = (benchmark, prompt_id)
        if key not in groups:
            groups[key] = PromptSamples(benchmark, prompt_id)
        groups[key].add(correct, answer)
    return list(groups.values())


def _mean_or_none(values: list[float | None]) -> float | None:
    if not values or any(value is None for value in values):
        return None
    return sum(values) / len(values)


def benchmark_results(prompts: Iterable[PromptSamples], ks: Sequence[int] | None = None) -> list[BenchmarkResult]:
    """avg@k, pass@k and maj@k per benchmark, for each ``k`` in ``ks`` (default: 1 and the samples per prompt).

    Benchmarks are sorted by name. A metric is None when some prompt of the benchmark has fewer than ``k``
    samples.
    """
    by_benchmark: dict[str, list[PromptSamples]] = {}
    for prompt in prompts:
        by_benchmark.setdefault(prompt.benchmark, []).append(prompt)
    results = []
    for benchmark in sorted(by_benchmark):
        group = by_benchmark[benchmark]
        counts = [len(prompt.correct) for prompt in group]
        chosen = sorted(set(ks)) if ks else sorted({1, min(counts)})
        metrics: dict[str, float | None] = {}
        for k in chosen:
            if k < 1:
                raise ValueError(f"k must be >= 1, got {k}")
            usable = min(counts) >= k
            metrics[f"avg@{k}"] = _mean_or_none([avg_at_k(p.correct, k) if usable else None for p in group])
            metrics[f"pass@{k}"] = _mean_or_none(
                [pass_at_k(len(p.correct), sum(p.correct), k) if usable else None for p in group]
            )
            metrics[f"maj@{k}"] = _mean_or_none([maj_at_k(p.answers, p.correct, k) if usable else None for p in group])
        results.append(BenchmarkResult(benchmark, len(group), min(counts), max(counts), metrics))
    return results


def format_table(results: Sequence[BenchmarkResult]) -> str:
    """A fixed-width text table, one row per benchmark, metrics as percentages ("-" when undefined)."""
    metric_names: list[str] = []
    for result in results:
        for name in result.metrics:
            if name not in metric_names:
                metric_names.append(name)
    metric_names.sort(key=lambda name: (int(name.split("@")[1]), ["avg", "pass", "maj"].index(name.split("@")[0])))
    width = max([len("benchmark")] + [len(result.benchmark) for result in results])
    header = f"{'benchmark':<{width}}  {'prompts':>7}  {'n':>7}" + "".join(f"  {name:>9}" for name in metric_names)
    lines = [header, "-" * len(header)]
    for result in results:
        n = (
            str(result.min_samples)
            if result.min_samples == result.max_samples
            else f"{result.min_samples}-{result.max_samples}"
        )
        cells = []
        for name in metric_names:
            value = result.metrics.get(name)
            cells.append(f"  {'-' if value is None else f'{100 * value:.2f}':>9}")
        lines.append(f"{result.benchmark:<{width}}  {result.prompts:>7}  {n:>7}" + "".join(cells))
    return "\n".join(lines)
