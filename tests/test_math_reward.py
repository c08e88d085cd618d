"""Tests for erpo_verl.rewards.math: the answer table, adversarial inputs, threads/Ray, the symbolic worker's
deadline, agreement of the numeric screen with math-verify, and throughput."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from erpo_verl.rewards import math as math_reward
from erpo_verl.rewards import symbolic
from erpo_verl.rewards.answer_extraction import extract_final_answer, last_boxed_content, sanitize_text
from erpo_verl.rewards.answer_normalization import normalize_answer
from erpo_verl.rewards.math import compute_score
from erpo_verl.rewards.numeric_screen import screen
from erpo_verl.rewards.symbolic import SymbolicVerifier, Verdict, shared_verifier

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TIMEOUT_S = math_reward.MathRewardConfig().timeout_s
# Per-response bound asserted below: the symbolic deadline plus slack for a loaded CI machine.
TIME_BOUND_S = DEFAULT_TIMEOUT_S + 1.5


@pytest.fixture(scope="module", autouse=True)
def warm_symbolic_worker():
    """Start the shared worker once, so timings below measure scoring, not sympy's import."""
    assert shared_verifier().warm_up(1)


# (response, ground truth, expected correctness). Expectations are what a careful human grader would say.
CASES = [
    # fractions and decimals
    ("so the answer is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", True),
    ("\\boxed{0.5}", "\\frac{1}{2}", True),
    ("\\boxed{1/2}", "\\frac{1}{2}", True),
    ("\\boxed{\\dfrac{3}{4}}", "\\frac{3}{4}", True),
    ("\\boxed{\\tfrac34}", "0.75", True),
    ("\\boxed{0.333}", "\\frac{1}{3}", False),
    ("\\boxed{0.3333333}", "\\frac{1}{3}", True),
    ("\\boxed{\\frac{2}{4}}", "\\frac{1}{2}", True),
    ("\\boxed{\\frac{1}{3}}", "\\frac{1}{2}", False),
    ("\\boxed{2.50}", "\\frac{5}{2}", True),
    ("\\boxed{\\frac{5}{6}}", "\\frac{6}{5}", False),
    ("\\boxed{\\;\\frac{7}{2}\\!}", "3.5", True),
    # integers (AIME/AMC/GSM8K style)
    ("\\boxed{204}", "204", True),
    ("\\boxed{033}", "33", True),
    ("\\boxed{33.0}", "33", True),
    ("\\boxed{34}", "33", False),
    ("\\boxed{1,000}", "1000", True),
    ("\\boxed{1{,}000}", "1000", True),
    ("She sold 72 clips.\n#### 72", "72", True),
    ("\\boxed{10}", "100", False),
    ("\\boxed{2^{10}}", "1024", True),
    # negative numbers
    ("\\boxed{-7}", "-7", True),
    ("\\boxed{7}", "-7", False),
    ("\\boxed{-\\frac{1}{2}}", "-0.5", True),
    ("\\boxed{\\frac{-1}{2}}", "-\\frac{1}{2}", True),
    ("\\boxed{\u22123}", "-3", True),
    ("\\boxed{- 3}", "-3", True),
    # radicals, pi, LaTeX spacing
    ("\\boxed{\\dfrac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}", True),
    ("\\boxed{\\frac{\\sqrt3}{2}}", "\\frac{\\sqrt{3}}{2}", True),
    ("\\boxed{3\\,\\sqrt{2}}", "3\\sqrt{2}", True),
    ("\\boxed{\\sqrt{18}}", "3\\sqrt{2}", True),
    ("\\boxed{2\\sqrt{3}}", "3\\sqrt{2}", False),
    ("\\boxed{\\sqrt{2}/2}", "\\frac{\\sqrt{2}}{2}", True),
    ("\\boxed{\\frac{\\sqrt{\\frac{1}{2}}}{2}}", "\\frac{\\sqrt{2}}{4}", True),
    ("\\boxed{\\frac{\\pi}{3}}", "\\frac{\\pi}{2}", False),
    ("\\boxed{2 \\pi}", "2\\pi", True),
    ("\\boxed{3.14}", "\\pi", False),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("\\boxed{(3,\\frac{\\pi}{2})}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    # units and degrees
    ("\\boxed{150^\\circ}", "150", True),
    ("\\boxed{150}", "150^\\circ", True),
    ("\\boxed{150^{\\circ}}", "150^\\circ", True),
    ("\\boxed{30^\\circ}", "150^\\circ", False),
    ("\\boxed{27 \\text{ miles}}", "27", True),
    ("\\boxed{5\\text{ cm}^2}", "5", True),
    ("\\boxed{\\$12.50}", "12.5", True),
    ("\\boxed{12 \\text{ dollars}}", "12", True),
    ("\\boxed{2x}", "2", False),
    # percentages
    ("\\boxed{50\\%}", "50", True),
    ("\\boxed{50}", "50\\%", True),
    ("\\boxed{25\\%}", "50\\%", False),
    # intervals
    ("\\boxed{[-1, 3]}", "[-1,3]", True),
    ("\\boxed{(-1, 3)}", "[-1,3]", False),
    ("\\boxed{x \\in [-1, 3]}", "[-1, 3]", True),
    ("\\boxed{(-\\infty, 2) \\cup (3, \\infty)}", "(-\\infty,2)\\cup(3,\\infty)", True),
    ("\\boxed{(-\\infty, 2] \\cup (3, \\infty)}", "(-\\infty,2)\\cup(3,\\infty)", False),
    ("\\boxed{[2, 5)}", "[2,5)", True),
    ("\\boxed{[2, 5]}", "[2,5)", False),
    ("\\boxed{(-\\infty, 3]}", "(-\\infty,3]", True),
    # sets and tuples
    ("\\boxed{\\{1, 2\\}}", "\\{2, 1\\}", True),
    ("\\boxed{\\{1, 3\\}}", "\\{1, 2\\}", False),
    ("\\boxed{(1, 2)}", "(1,2)", True),
    ("\\boxed{(2, 1)}", "(1, 2)", False),
    ("\\boxed{\\{-1, 1\\}}", "\\{1,-1\\}", True),
    ("\\boxed{\\{\\frac{1}{2}, 3\\}}", "\\{3, 0.5\\}", True),
    # \text{} answers
    ("\\boxed{\\text{(C)}}", "C", True),
    ("\\boxed{C}", "\\text{(C)}", True),
    ("\\boxed{(B)}", "\\text{(C)}", False),
    ("\\boxed{\\text{Monday}}", "\\text{Monday}", True),
    ("\\boxed{monday}", "\\text{Monday}", True),
    ("\\boxed{\\text{Tuesday}}", "\\text{Monday}", False),
    ("\\boxed{\\textbf{odd}}", "\\text{odd}", True),
    # algebra
    ("\\boxed{x^2+2x+1}", "(x+1)^2", True),
    ("\\boxed{(x-1)^2}", "(x+1)^2", False),
    ("\\boxed{x = 5}", "5", True),
    ("\\boxed{y = 2x + 3}", "2x+3", True),
    ("\\boxed{2x+3}", "2x+4", False),
    ("\\boxed{x(x+1)}", "x^2+x", True),
    ("\\boxed{\\frac{x+1}{2}}", "\\frac{1}{2}(x+1)", True),
    ("\\boxed{e^{2}}", "e^2", True),
    ("\\boxed{5!}", "120", True),
    ("\\boxed{\\infty}", "\\infty", True),
    # where the answer is, and which one counts
    ("Reasoning first.\nAnswer: 42", "42", True),
    ("**Answer:** $\\frac{1}{2}$", "0.5", True),
    ("Final Answer: The final answer is $7$. I hope it is correct.", "7", True),
    ("Answer: 41", "42", False),
    ("First \\boxed{3}, then more thought.\nAnswer: 4", "4", True),
    ("Answer: 4, but I reconsider: \\boxed{3}", "3", True),
    ("\\boxed{2} and finally \\boxed{3}", "3", True),
    ("\\boxed{2} and finally \\boxed{3}", "2", False),
    ("\\fbox{6}", "6", True),
    ("Answer: \\boxed{\\frac{5}{6}}", "\\frac56", True),
    ("$\\boxed{12}$.", "12", True),
    ("\\boxed 7", "7", True),
    # no answer at all
    ("The answer is 5.", "5", False),
    ("", "5", False),
    ("\\boxed{}", "5", False),
    ("so it is \\boxed{5", "5", False),
    ("\\boxed{5} but wait, the real answer is \\boxed{", "5", False),
]


def test_table_is_large_enough():
    assert len(CASES) >= 60


@pytest.mark.parametrize("response, truth, expected", CASES)
def test_answer_table(response, truth, expected):
    result = compute_score("erpo/math", response, truth)
    assert result["acc"] is expected, result
    assert result["score"] == (1.0 if expected else 0.0)


def test_result_shape_and_signed_scores():
    correct = compute_score("erpo/aime24", "\\boxed{33}", "33", None, score_format="signed")
    wrong = compute_score("erpo/aime24", "\\boxed{34}", "33", None, score_format="signed")
    missing = compute_score("erpo/aime24", "no idea", "33", None, score_format="signed")
    assert correct == {"score": 1.0, "acc": True, "pred": "33"}
    assert wrong == {"score": -1.0, "acc": False, "pred": "34"}
    assert missing == {"score": -1.0, "acc": False, "pred": ""}
    assert set(compute_score("erpo/math", "\\boxed{1}", "1")) == {"score", "acc", "pred"}


def test_pred_is_a_voting_key_that_groups_equal_numbers():
    keys = {
        compute_score("erpo/math", f"\\boxed{{{form}}}", "7")["pred"]
        for form in ("0.5", "\\frac{1}{2}", "1/2", "\\dfrac12")
    }
    assert keys == {"1/2"}


def test_ground_truth_types_from_parquet_files():
    # AIME files sometimes store integers; some datasets list several accepted answers.
    assert compute_score("erpo/aime24", "\\boxed{33}", 33)["acc"]
    assert compute_score("erpo/amc23", "\\boxed{27}", 27.0)["acc"]
    assert compute_score("erpo/custom", "\\boxed{0.5}", ["\\frac{1}{2}", "1/2"])["acc"]
    assert not compute_score("erpo/custom", "\\boxed{5}", None)["acc"]


def test_answer_marker_modes():
    response = "\\boxed{3}\nAnswer: 4"
    assert compute_score("erpo/math", response, "4")["acc"]
    assert compute_score("erpo/math", response, "3", answer_markers="boxed")["acc"]
    assert compute_score("erpo/math", response, "4", answer_markers="answer_line")["acc"]
    assert not compute_score("erpo/math", "\\boxed{4}", "4", answer_markers="answer_line")["acc"]


def test_symbolic_off_still_uses_string_and_numeric_rules():
    assert compute_score("erpo/math", "\\boxed{0.5}", "\\frac{1}{2}", symbolic=False)["acc"]
    assert compute_score("erpo/math", "\\boxed{\\sqrt{18}}", "3\\sqrt{2}", symbolic="false")["acc"]  # numeric screen
    assert not compute_score("erpo/math", "\\boxed{x(x+1)}", "x^2+x", symbolic=False)["acc"]  # needs sympy


def test_only_the_tail_is_read():
    early_answer = "\\boxed{5}" + " filler" * 2000  # the box is more than tail_chars from the end
    assert not compute_score("erpo/math", early_answer, "5")["acc"]
    assert compute_score("erpo/math", early_answer, "5", tail_chars=20000)["acc"]


def test_invalid_reward_kwargs_fail_loudly():
    with pytest.raises(ValueError, match="score_format"):
        compute_score("erpo/math", "\\boxed{1}", "1", score_format="ternary")
    with pytest.raises(ValueError, match="answer_markers"):
        compute_score("erpo/math", "\\boxed{1}", "1", answer_markers="last")
    # keywords verl adds itself are ignored
    assert compute_score("erpo/math", "\\boxed{1}", "1", reward_router_address=None, foo=1)["acc"]


def test_unknown_data_source_is_scored_or_rejected(caplog):
    with caplog.at_level(logging.WARNING):
        assert compute_score("my_new_benchmark", "\\boxed{1}", "1")["acc"]
    assert "my_new_benchmark" in caplog.text
    with pytest.raises(ValueError, match="not a math data source"):
        compute_score("my_other_benchmark", "\\boxed{1}", "1", unknown_data_source="raise")
    for known in ("erpo/aime25", "math_dapo", "aime_2024", "HuggingFaceH4/MATH-500", "openai/gsm8k"):
        assert compute_score(known, "\\boxed{1}", "1", unknown_data_source="raise")["acc"]


# ------------------------------------------------------------------------------------------ extraction


def test_boxed_extraction_handles_nesting_and_escaped_braces():
    assert last_boxed_content("x \\boxed{\\frac{\\sqrt{3}}{2}} y") == "\\frac{\\sqrt{3}}{2}"
    assert last_boxed_content("\\boxed{\\{1, 2\\}}") == "\\{1, 2\\}"
    assert last_boxed_content("\\boxed{a} \\boxed{b{c}}") == "b{c}"
    assert last_boxed_content("\\boxed{unterminated {") is None
    assert last_boxed_content("\\boxedfoo{1}") is None  # a different command


def test_answer_line_extraction_variants():
    assert extract_final_answer("...\nANSWER: 12").text == "12"
    assert extract_final_answer("**Answer**: 12").text == "12"
    assert extract_final_answer("Answer:\n\n12\n").text == "12"  # answer on the following line
    assert extract_final_answer("Answer: 5 (since $x > 0$)").text == "5 (since $x > 0$)"
    assert extract_final_answer("nothing here") is None


def test_sanitize_replaces_lone_surrogates():
    text = sanitize_text("ok \ud800 end")
    assert text == "ok ? end"
    text.encode("utf-8")
    assert sanitize_text(b"\xff\xfe\\boxed{1}").endswith("\\boxed{1}")


def test_normalization_keeps_latex_valid():
    assert normalize_answer("\\pi r^2") == "\\pi r^2"  # the space after \pi is kept
    assert normalize_answer("\\left[ 1, 2 \\right)") == "[1,2)"
    assert normalize_answer("50, 645") == "50,645"  # a list, not a thousands separator
    assert normalize_answer("50,645") == "50645"


# --------------------------------------------------------------------------------------- adversarial inputs

ADVERSARIAL = {
    "1 MB response with an answer at the end": "x" * (1 << 20) + " so \\boxed{5}",
    "1 MB response without an answer": "The answer is " * 80000,
    "10k nested braces inside a box": "\\boxed{" + "{" * 10000 + "5" + "}" * 10000 + "}",
    "10k nested braces near the end": "Answer: \\boxed{" + "{" * 1500 + "5" + "}" * 1500 + "}",
    "unterminated box": "The answer is \\boxed{\\frac{1}{2" + " and more" * 500,
    "lone surrogates": "answer \ud800\udfff\ud83d \\boxed{5} \udc00",
    "power tower": "\\boxed{10^{10^{10^{10}}}}",
    "huge exponent": "\\boxed{2^{99999999}}",
    "huge factorial": "\\boxed{99999999!}",
    "200k boxes": "\\boxed{1}" * 200000,
    "deep parentheses in the box": "\\boxed{" + "(" * 1000 + "1" + ")" * 1000 + "}",
    "100k backslashes": "\\" * 100000 + "\\boxed{5}",
    "NUL bytes": "\x00" * 10000 + "\\boxed{5}",
    "many Answer: markers": "Answer: " * 100000,
    "huge integer": "\\boxed{" + "9" * 5000 + "}",
    "long nonsense answer": "\\boxed{" + "x^{y}" * 300 + "}",
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_inputs_are_scored_within_the_time_bound(name):
    start = time.perf_counter()
    result = compute_score("erpo/math", ADVERSARIAL[name], "5")
    elapsed = time.perf_counter() - start
    assert elapsed < TIME_BOUND_S, f"{name}: {elapsed:.2f} s"
    assert set(result) == {"score", "acc", "pred"} and isinstance(result["pred"], str)
    result["pred"].encode("utf-8")  # always valid text
    expected = name in {"1 MB response with an answer at the end", "lone surrogates", "100k backslashes", "NUL bytes"}
    assert result["acc"] is expected


# Pieces that matter to extraction and normalization; hypothesis strings them together in any order.
# fmt: off
FRAGMENTS = [
    "\\boxed{", "\\fbox{", "}", "{", "Answer:", "**Answer:**", "\n", "####", "\\frac", "\\sqrt", "\\pi", "1", "23",
    "0.5", "x", "^", "(", ")", "[", "]", ",", "\\{", "\\}", "$", " ", "-", "\\text{", "\\left(", "\\right)",
    "\\cup", "=", "\\infty", "%", "\\circ", "e", "!", "/", "\\", "\ud800", "\x00", "\u2212",
]
# fmt: on


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    response=st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join),
    truth=st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=8).map("".join),
)
def test_fuzzed_responses_never_raise_and_stay_within_the_bound(response, truth):
    start = time.perf_counter()
    first = compute_score("erpo/math", response, truth)
    assert time.perf_counter() - start < TIME_BOUND_S
    assert set(first) == {"score", "acc", "pred"} and first["score"] in (0.0, 1.0)
    assert first["score"] == float(first["acc"])
    first["pred"].encode("utf-8")
    assert compute_score("erpo/math", response, truth) == first  # deterministic (cached verdicts agree)


@pytest.mark.parametrize(
    "answer, rejected",
    [
        ("10^{10^{10}}", True),
        ("2^2^2", True),
        ("2^{99999}", True),
        ("99999!", True),
        ("(" * 30 + "1" + ")" * 30, True),
        ("x" * 401, True),
        ("e^{x^2}", False),  # a nested exponent with a variable is a normal answer
        ("2^{2023}", False),
        ("\\frac{\\sqrt{3}}{2}", False),
    ],
)
def test_complexity_screen_before_sympy(answer, rejected):
    assert math_reward.too_complex_for_symbolic(answer, max_chars=400) is rejected


def test_symbolic_deadline_kills_a_stuck_worker_and_recovers(monkeypatch):
    """A comparison that ignores the soft deadline (C-level bignum work) is killed at the hard deadline."""
    verifier = SymbolicVerifier(max_workers=1)
    try:
        assert verifier.warm_up(1)
        monkeypatch.setattr(symbolic, "SOFT_DEADLINE_FRACTION", 50.0)  # no soft stop: force the hard kill
        start = time.perf_counter()
        verdict = verifier.compare("10^{10^{10}}", "5", timeout_s=1.0)
        elapsed = time.perf_counter() - start
        assert verdict is Verdict.TIMEOUT
        assert elapsed < 2.0
        assert verifier.stats["restarts"] == 1
        monkeypatch.setattr(symbolic, "SOFT_DEADLINE_FRACTION", 0.8)
        start = time.perf_counter()
        assert verifier.compare("\\sqrt{16}", "4", timeout_s=5.0) is Verdict.EQUAL  # a fresh worker starts
        assert time.perf_counter() - start < 5.0
    finally:
        verifier.close()


def test_symbolic_soft_deadline_keeps_the_worker():
    verifier = SymbolicVerifier(max_workers=1)
    try:
        assert verifier.warm_up(1)
        start = time.perf_counter()
        assert verifier.compare("9^{9^{9}}", "1", timeout_s=1.0) is Verdict.TIMEOUT
        assert time.perf_counter() - start < 1.5
        assert verifier.stats["restarts"] == 0
        assert verifier.compare("x+1", "1+x", timeout_s=5.0) is Verdict.EQUAL
    finally:
        verifier.close()


def test_unavailable_workers_degrade_to_string_rules(monkeypatch):
    monkeypatch.setattr(symbolic.sys, "executable", "/nonexistent/python")
    verifier = SymbolicVerifier(max_workers=1, startup_timeout_s=5)
    try:
        start = time.perf_counter()
        assert verifier.compare("x(x+1)", "x^2+x", timeout_s=1.0) is Verdict.UNAVAILABLE
        assert verifier.compare("x(x+1)", "x^2+x", timeout_s=1.0) is Verdict.UNAVAILABLE  # no retry storm
        assert time.perf_counter() - start < 2.0
    finally:
        verifier.close()


# ------------------------------------------------------------------------------------- threads and Ray


def _needs_sympy():
    # Settled neither by string rules nor by the numeric screen: only the symbolic worker can say True.
    return "\\boxed{x(x+1)}", "x^2+x"


def test_math_verify_itself_fails_in_a_thread_with_its_default_timeout():
    """The trap this reward avoids (verl PR #5635): math-verify's signal-based timeout raises off the main thread."""
    from math_verify import parse

    errors = []

    def run():
        try:
            parse("\\boxed{1}")
        except ValueError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert errors and "thread" in errors[0]


def test_compute_score_from_threads():
    response, truth = _needs_sympy()
    math_reward._verdicts = math_reward._VerdictCache()  # no cached verdict: really use the worker
    results = []

    def run(answer):
        results.append((answer, compute_score("erpo/math", f"\\boxed{{{answer}}}", truth)["acc"]))

    threads = [threading.Thread(target=run, args=(answer,)) for answer in ("x(x+1)", "x(x-1)", "(x+1)x", "x^2+x")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert dict(results) == {"x(x+1)": True, "x(x-1)": False, "(x+1)x": True, "x^2+x": True}


@pytest.mark.slow
def test_compute_score_in_a_ray_task(monkeypatch):
    ray = pytest.importorskip("ray")
    # Ray workers inherit the driver's environment: make erpo_verl importable even when not pip-installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("ERPO_SYMBOLIC_WORKERS", "1")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:

        @ray.remote
        def score(response, truth):
            from erpo_verl.rewards.math import compute_score as remote_compute_score

            return remote_compute_score("erpo/math", response, truth)

        response, truth = _needs_sympy()
        results = ray.get([score.remote(response, truth), score.remote("\\boxed{x(x-1)}", truth)], timeout=60)
        assert [r["acc"] for r in results] == [True, False]
    finally:
        ray.shutdown()


# ------------------------------------------------------------------ numeric screen vs math-verify (brute force)


def _math_verify_says(pred: str, truth: str) -> bool:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    gold = parse("\\boxed{" + truth + "}", extraction_config=[LatexExtractionConfig()])
    answer = parse("\\boxed{" + pred + "}", extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()])
    return bool(gold and answer and verify(gold, answer))


SCREEN_EDGE_PAIRS = [
    ("\\sqrt{72}", "6\\sqrt{2}"),
    ("\\frac{\\sqrt{2}}{54}", "\\frac{\\sqrt{2}}{55}"),
    ("(x+3)^2", "x^2+6x+9"),
    ("[-13,262]", "(-13,262)"),
    ("\\{38,404\\}", "\\{38\\}"),
    ("\\{1,1,2\\}", "\\{1,2\\}"),
    ("\\sqrt[3]{-8}", "-2"),
    ("2^{-1}", "0.5"),
    ("\\frac{1}{0}", "1"),
    ("x^23", "x^{23}"),
    ("1/2x", "\\frac{x}{2}"),
    ("A", "B"),
    ("3\\pi", "\\pi3"),
    ("(-\\infty,5)", "(-\\infty,5]"),
]


def test_numeric_screen_agrees_with_math_verify_whenever_it_decides():
    from data_prep.bench_reward import _random_answer

    rng = random.Random(11)
    pairs = list(SCREEN_EDGE_PAIRS)
    for _ in range(40):
        truth, rewritings, wrongs = _random_answer(rng)
        pairs += [(normalize_answer(p), normalize_answer(truth)) for p in rewritings + wrongs]
    decided = 0
    for pred, truth in pairs:
        verdict = screen(pred, truth)
        if verdict is None:
            continue
        decided += 1
        assert verdict == _math_verify_says(pred, truth), (pred, truth, verdict)
    assert decided >= 0.6 * len(pairs)


def test_numeric_screen_refuses_what_it_cannot_settle():
    assert screen("x^23", "x^{23}") is None  # TeX reads x^23 as x^{2}3
    assert screen("1/2x", "\\frac{x}{2}") is None  # ambiguous precedence
    assert screen("f(x)", "x") is None
    assert screen("e^{2}", "7.389") is None
    assert screen("3.14159", "\\pi") is None  # close enough that only sympy's rounding rules decide
    assert screen("2^{60}", "2^{60}+1") is None  # beyond float precision
    assert screen("(1,2)", "\\{1,2\\}") is None  # tuple against set


# ------------------------------------------------------------------------------------------ throughput


def test_throughput_on_8192_realistic_responses(capsys):
    from data_prep.bench_reward import run_benchmark

    result = run_benchmark(count=8192, threads=8)
    with capsys.disabled():
        print(
            f"\n[reward throughput] {result['responses']} responses of ~{result['mean_chars']:.0f} chars: "
            f"serial {result['serial_s']:.2f} s ({result['serial_per_s']:.0f}/s), "
            f"{result['threads']} threads {result['threaded_s']:.2f} s ({result['threaded_per_s']:.0f}/s), "
            f"{result['symbolic_calls']} symbolic calls"
        )
    assert result["agree"]
    assert 0.45 < result["accuracy"] < 0.75  # the generator's mix: ~40% exact + ~15% rewritten + some Answer: lines
    assert result["serial_s"] < 30 and result["threaded_s"] < 30
