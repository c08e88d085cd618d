"""Throughput of ``erpo_verl.rewards.math.compute_score`` on a realistic batch.

Run: ``python -m data_prep.bench_reward [--responses 8192] [--threads 8]``.

The batch imitates one GRPO step on MATH-style data: prompts with 16 responses each, responses of 2-4 KB of
reasoning text ending in a final answer, and a mix of outcomes - exactly correct, correct but written
differently (``\\dfrac``, ``0.5`` for ``\\frac{1}{2}``, ``x = 3``, units), wrong (often the same wrong answer
several times in a group, as sampled groups do), the ``Answer:`` format, and truncated responses with no
answer. The ground truths mix integers, fractions, radicals, intervals, tuples and words like MATH's.

Scoring runs twice: serially in one thread and from a thread pool (verl's reward loop calls the reward from
``loop.run_in_executor``), after one warm-up call so the symbolic worker start is not counted.
"""

from __future__ import annotations

import argparse
import math
import random
import time
from concurrent.futures import ThreadPoolExecutor


def _random_answer(rng: random.Random) -> tuple[str, list[str], list[str]]:
    """A random (ground truth, equivalent rewritings, plausible wrong answers) triple in MATH/AIME style.

    Parameters are random so that, as in real data, almost every prompt has its own answer and the reward's
    verdict cache helps only within a group of responses to the same prompt.
    """
    a, b = rng.randint(2, 999), rng.randint(2, 60)
    kind = rng.random()
    if kind < 0.45:  # integer answers (AIME, AMC, DAPO-Math, GSM8K, many MATH problems)
        return str(a), [str(a), f"{a}.0", f"\\text{{{a}}}", f"x = {a}"], [str(a + 1), str(a - 1), str(2 * a)]
    if kind < 0.55:
        p, q = rng.randint(1, 40), rng.randint(2, 41)
        while math.gcd(p, q) != 1:
            p += 1
        return (
            f"\\frac{{{p}}}{{{q}}}",
            [f"\\dfrac{{{p}}}{{{q}}}", f"{p}/{q}"],
            [f"\\frac{{{q}}}{{{p}}}", f"\\frac{{{p + 1}}}{{{q}}}"],
        )
    if kind < 0.63:
        c = rng.choice([2, 3, 5, 6, 7, 10, 11])
        return (
            f"{b}\\sqrt{{{c}}}",
            [f"{b}\\sqrt{c}", f"\\sqrt{{{b * b * c}}}"],
            [f"{b + 1}\\sqrt{{{c}}}", f"\\sqrt{{{c}}}", f"{b}\\sqrt{{{c + 1}}}"],
        )
    if kind < 0.68:
        c = rng.choice([2, 3, 5, 7])
        return (
            f"\\frac{{\\sqrt{{{c}}}}}{{{b}}}",
            [f"\\dfrac{{\\sqrt{{{c}}}}}{{{b}}}", f"\\frac{{1}}{{{b}}}\\sqrt{{{c}}}"],
            [f"\\frac{{\\sqrt{{{c}}}}}{{{b + 1}}}", f"\\frac{{{c}}}{{{b}}}"],
        )
    if kind < 0.73:
        d = rng.randint(1, 179)
        return (
            f"{d}^\\circ",
            [str(d), f"{d}^{{\\circ}}", f"{d} \\text{{ degrees}}"],
            [f"{180 - d + 1}^\\circ", str(d + 10)],
        )
    if kind < 0.78:
        lo, hi = -b, a
        return (
            f"[{lo}, {hi}]",
            [f"[{lo},{hi}]", f"x \\in [{lo}, {hi}]", f"\\left[ {lo}, {hi} \\right]"],
            [f"({lo}, {hi})", f"[{lo}, {hi + 1}]"],
        )
    if kind < 0.82:
        return f"({b}, {a})", [f"\\left( {b}, {a} \\right)", f"({b},{a})"], [f"({a}, {b})", f"({b}, {a + 1})"]
    if kind < 0.86:
        return f"\\{{{b}, {a}\\}}", [f"\\{{{a}, {b}\\}}", f"\\{{{b},{a}\\}}"], [f"\\{{{b}\\}}", f"\\{{{b}, {a + 1}\\}}"]
    if kind < 0.90:
        return (
            f"x^2 + {2 * b}x + {b * b}",
            [f"(x+{b})^2", f"x^2+{2 * b}x+{b * b}", f"{b * b} + {2 * b}x + x^2"],
            [f"x^2 + {b * b}", f"(x-{b})^2"],
        )
    if kind < 0.91:
        return f"{b}\\%", [str(b), f"{b} \\%"], [f"{b + 5}\\%", f"0.{b:02d}"]
    if kind < 0.96:  # shapes only sympy settles: unions, bare lists, e^k, products with a variable factor
        shape = rng.randrange(4)
        if shape == 0:
            return (
                f"(-\\infty, -{b}) \\cup ({a}, \\infty)",
                [f"(-\\infty,-{b})\\cup({a},\\infty)"],
                [f"(-\\infty, -{b}] \\cup [{a}, \\infty)", f"(-{b}, {a})"],
            )
        if shape == 1:
            return f"{b}, {a}", [f"{a}, {b}", f"{b},{a}"], [f"{b}, {a + 1}", str(b)]
        if shape == 2:
            return f"e^{{{b}}}", [f"e^{{{b}}}"], [f"e^{{{b + 1}}}", f"{b}e"]
        return f"x(x+{b})", [f"x^2+{b}x", f"x(x + {b})"], [f"x(x-{b})", f"x^2+{b}"]
    if kind < 0.985:
        return f"{b}\\pi", [f"{b} \\pi", f"{b}\\pi"], [f"{b + 1}\\pi", f"\\frac{{{b}\\pi}}{{2}}"]
    letter = rng.choice("ABCDE")
    other = rng.choice([x for x in "ABCDE" if x != letter])
    return f"\\text{{({letter})}}", [letter, f"({letter})", f"\\textbf{{({letter})}}"], [f"({other})", other]


FILLER_SENTENCES = [
    "Let us denote the unknown quantity by $x$ and write down what the problem gives us.",
    "Substituting into the equation, we get $3x + 5 = 2(x - 1) + 7$, which simplifies nicely.",
    "We can check this by plugging the value back into the original expression.",
    "By the Pythagorean theorem, $a^2 + b^2 = c^2$, so $c = \\sqrt{a^2 + b^2}$.",
    "Consider the function $f(x) = x^2 - 4x + 3 = (x - 1)(x - 3)$, whose roots are $1$ and $3$.",
    "Wait, let me double-check the arithmetic in the previous step before continuing.",
    "The sum of the interior angles of a polygon with $n$ sides is $180(n-2)$ degrees.",
    "Using the formula $\\binom{n}{k} = \\frac{n!}{k!(n-k)!}$ we count the arrangements.",
    "Hmm, that does not look right; the denominator should be $\\left(1 + \\frac{1}{n}\\right)^n$ instead.",
    "So the probability is the number of favorable outcomes divided by the total, i.e. $\\frac{m}{n}$.",
    "Multiplying both sides by $2$ gives $\\frac{2a}{b} = \\frac{c}{d}$, so $2ad = bc$.",
    "Therefore the remaining case contributes nothing new, and we can finish the computation.",
]


def _reasoning(rng: random.Random, target_chars: int) -> str:
    parts, length, step = [], 0, 1
    while length < target_chars:
        sentence = f"Step {step}: " + " ".join(rng.choice(FILLER_SENTENCES) for _ in range(3))
        parts.append(sentence)
        length += len(sentence) + 2
        step += 1
    return "\n\n".join(parts)


def make_realistic_responses(count: int = 8192, group_size: int = 16, seed: int = 0) -> list[tuple[str, str, str]]:
    """``count`` (data_source, response, ground_truth) triples as described in the module docstring."""
    rng = random.Random(seed)
    triples = []
    while len(triples) < count:
        truth, rewritings, wrongs = _random_answer(rng)
        group_wrong = rng.choice(wrongs)  # groups tend to repeat one wrong answer
        for _ in range(min(group_size, count - len(triples))):
            body = _reasoning(rng, rng.randint(2000, 4000))
            outcome = rng.random()
            if outcome < 0.40:
                ending = f"\n\nTherefore, the final answer is $\\boxed{{{truth}}}$."
            elif outcome < 0.55:
                ending = f"\n\nSo the answer is $\\boxed{{{rng.choice(rewritings)}}}$."
            elif outcome < 0.80:
                ending = f"\n\nThe final answer is $\\boxed{{{group_wrong}}}$."
            elif outcome < 0.88:
                ending = f"\n\nThus we conclude.\nAnswer: {rng.choice([truth, group_wrong])}"
            elif outcome < 0.93:
                ending = f"\n\nHence the answer is $\\boxed{{{rng.choice(wrongs)}}}$."
            else:
                ending = "\n\nLet me reconsider the second case once more, since"  # truncated, no answer
            triples.append(("erpo/math", body + ending, truth))
    return triples


def run_benchmark(count: int = 8192, threads: int = 8, seed: int = 0) -> dict:
    """Score the batch serially and with ``threads`` threads; returns timings and the accuracy seen."""
    from erpo_verl.rewards import math as math_reward
    from erpo_verl.rewards.symbolic import shared_verifier

    triples = make_realistic_responses(count, seed=seed)
    shared_verifier().warm_up(shared_verifier().max_workers)
    math_reward.compute_score("erpo/math", "\\boxed{\\sqrt{4}}", "2")  # first symbolic call

    def score(triple):
        return math_reward.compute_score(*triple)

    math_reward._verdicts = math_reward._VerdictCache()  # noqa: SLF001 - measure without cached verdicts
    start = time.perf_counter()
    serial = [score(triple) for triple in triples]
    serial_s = time.perf_counter() - start

    math_reward._verdicts = math_reward._VerdictCache()  # noqa: SLF001
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        threaded = list(pool.map(score, triples))
    threaded_s = time.perf_counter() - start

    return {
        "responses": count,
        "mean_chars": sum(len(t[1]) for t in triples) / count,
        "serial_s": serial_s,
        "serial_per_s": count / serial_s,
        "threads": threads,
        "threaded_s": threaded_s,
        "threaded_per_s": count / threaded_s,
        "accuracy": sum(r["acc"] for r in serial) / count,
        "agree": all(a["acc"] == b["acc"] for a, b in zip(serial, threaded)),
        "symbolic_calls": shared_verifier().stats["calls"],
        "symbolic_workers": shared_verifier().max_workers,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--responses", type=int, default=8192)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = run_benchmark(args.responses, args.threads, args.seed)
    print(
        f"{result['responses']} responses (mean {result['mean_chars']:.0f} chars): "
        f"serial {result['serial_s']:.2f} s ({result['serial_per_s']:.0f}/s), "
        f"{result['threads']} threads {result['threaded_s']:.2f} s ({result['threaded_per_s']:.0f}/s); "
        f"accuracy {result['accuracy']:.3f}; symbolic calls {result['symbolic_calls']} "
        f"on {result['symbolic_workers']} worker(s); serial and threaded agree: {result['agree']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
