"""Tests for erpo_verl.eval: pass@k against brute-force enumeration, avg@k/maj@k by hand, and the CLI."""

from __future__ import annotations

import csv
import itertools
import json
from fractions import Fraction

import pytest

from erpo_verl.eval.cli import main
from erpo_verl.eval.metrics import (
    PromptSamples,
    avg_at_k,
    benchmark_results,
    format_table,
    group_samples,
    maj_at_k,
    majority_answer,
    pass_at_k,
)


def brute_force_pass_at_k(correct: list[bool], k: int) -> Fraction:
    """Fraction of all k-subsets (without replacement) that contain at least one correct sample."""
    subsets = list(itertools.combinations(range(len(correct)), k))
    hits = sum(any(correct[i] for i in subset) for subset in subsets)
    return Fraction(hits, len(subsets))


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_brute_force_enumeration(n):
    for c in range(n + 1):
        # Which samples are correct must not matter; use a scattered pattern to be sure.
        correct = [False] * n
        for position in range(c):
            correct[(position * 3) % n if n > 1 else 0] = True
        if sum(correct) != c:  # the scatter collided; fall back to the first c
            correct = [i < c for i in range(n)]
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(brute_force_pass_at_k(correct, k)), abs=1e-12)


def test_pass_at_k_known_values():
    assert pass_at_k(4, 1, 4) == 1.0  # verl's bootstrap best@4 reports 0.684 here
    assert pass_at_k(4, 1, 1) == 0.25
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - 21 / 45)
    assert pass_at_k(1000, 1, 1) == pytest.approx(0.001)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_avg_at_k_by_hand():
    samples = [True, False, True, True, False, False, False, True]
    assert avg_at_k(samples, 1) == 1.0
    assert avg_at_k(samples, 4) == 0.75
    assert avg_at_k(samples, 8) == 0.5
    with pytest.raises(ValueError):
        avg_at_k(samples, 9)


def test_maj_at_k_by_hand():
    answers = ["3", "5", "5", "3", "5", None, "7"]
    correct = [False, True, True, False, True, False, False]
    assert maj_at_k(answers, correct, 1) == 0.0  # only "3"
    assert maj_at_k(answers, correct, 2) == 0.0  # tie 3 vs 5: the earlier answer wins
    assert maj_at_k(answers, correct, 3) == 1.0  # 5 twice
    assert maj_at_k(answers, correct, 4) == 0.0  # tie 2-2: "3" appeared first
    assert maj_at_k(answers, correct, 7) == 1.0  # 5 three times; the missing answer does not vote
    assert maj_at_k([None, None], [False, False], 2) == 0.0
    assert majority_answer([None, "a", "b", "b"]) == 2


def test_group_samples_keeps_order_and_separates_benchmarks():
    groups = group_samples(
        [
            ("aime", "p1", True, "1"),
            ("math", "p1", False, "2"),
            ("aime", "p1", False, "3"),
            ("aime", "p2", True, "4"),
        ]
    )
    assert [(g.benchmark, g.prompt_id, g.correct, g.answers) for g in groups] == [
        ("aime", "p1", [True, False], ["1", "3"]),
        ("math", "p1", [False], ["2"]),
        ("aime", "p2", [True], ["4"]),
    ]


def test_benchmark_results_by_hand():
    prompts = [
        PromptSamples("aime", "a", [True, False, False, False], ["1", "2", "2", "3"]),
        PromptSamples("aime", "b", [True, True, False, True], ["9", "9", "8", "9"]),
        PromptSamples("math", "c", [False, True], ["x", "y"]),
    ]
    results = {r.benchmark: r for r in benchmark_results(prompts, ks=[1, 2, 4])}
    aime = results["aime"].metrics
    assert aime["avg@1"] == 1.0
    assert aime["avg@4"] == pytest.approx((0.25 + 0.75) / 2)
    assert aime["pass@1"] == pytest.approx((0.25 + 0.75) / 2)  # pass@1 estimate uses all n samples
    assert aime["pass@2"] == pytest.approx(((1 - 3 / 6) + 1.0) / 2)
    assert aime["pass@4"] == 1.0
    assert aime["maj@4"] == pytest.approx((0.0 + 1.0) / 2)  # prompt a votes "2" (wrong), b votes "9"
    assert results["aime"].prompts == 2 and results["aime"].min_samples == 4
    math_metrics = results["math"].metrics
    assert math_metrics["avg@2"] == 0.5 and math_metrics["pass@2"] == 1.0
    assert math_metrics["avg@4"] is None and math_metrics["pass@4"] is None  # only 2 samples per prompt
    table = format_table(list(results.values()))
    assert "aime" in table and "pass@4" in table and "-" in table.splitlines()[-1]


def test_default_ks_are_one_and_n():
    results = benchmark_results([PromptSamples("b", "p", [True, False, True], ["1", "2", "1"])])
    assert set(results[0].metrics) == {"avg@1", "pass@1", "maj@1", "avg@3", "pass@3", "maj@3"}


# ----------------------------------------------------------------------------------------------------- CLI


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_cli_metrics_on_our_generations_format(tmp_path, capsys):
    records = []
    # aime: prompt q1 answered 33, 33, 34, (nothing); prompt q2 answered 5 four times (truth 6)
    for response in ("\\boxed{33}", "Answer: 033", "\\boxed{34}", "I give up"):
        records.append({"prompt_id": "q1", "data_source": "erpo/aime24", "response": response, "ground_truth": "33"})
    for _ in range(4):
        records.append({"prompt_id": "q2", "data_source": "erpo/aime24", "response": "\\boxed{5}", "ground_truth": "6"})
    # math500: one prompt, two samples, one correct by symbolic equivalence
    records.append(
        {
            "prompt_id": "m1",
            "data_source": "erpo/math500",
            "response": "\\boxed{\\sqrt{8}}",
            "ground_truth": "2\\sqrt{2}",
        }
    )
    records.append(
        {"prompt_id": "m1", "data_source": "erpo/math500", "response": "\\boxed{3}", "ground_truth": "2\\sqrt{2}"}
    )
    generations = _write_jsonl(tmp_path / "gens.jsonl", records)

    assert main(["metrics", str(generations), "--k", "1,2,4", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "erpo/aime24" in printed and "erpo/math500" in printed and "10 responses" in printed

    document = json.loads((tmp_path / "out" / "metrics.json").read_text())
    aime = document["benchmarks"]["erpo/aime24"]
    assert aime["prompts"] == 2 and aime["min_samples"] == 4
    assert aime["avg@4"] == pytest.approx((0.5 + 0.0) / 2)
    assert aime["pass@1"] == pytest.approx((0.5 + 0.0) / 2)
    assert aime["pass@4"] == pytest.approx((1.0 + 0.0) / 2)
    assert aime["maj@4"] == pytest.approx((1.0 + 0.0) / 2)  # "33" twice beats "34" once
    math500 = document["benchmarks"]["erpo/math500"]
    assert math500["avg@2"] == 0.5 and math500["pass@2"] == 1.0 and math500["avg@4"] is None

    with open(tmp_path / "out" / "metrics.csv", newline="") as handle:
        rows = {row["benchmark"]: row for row in csv.DictReader(handle)}
    assert float(rows["erpo/aime24"]["pass@4"]) == pytest.approx(0.5)
    assert rows["erpo/math500"]["avg@4"] == ""


def test_cli_metrics_on_a_verl_validation_dump(tmp_path, capsys):
    # verl's dump: input/output/gts/score plus the reward's extra keys; no data_source column.
    records = [
        {"input": "user: q1", "output": "\\boxed{1}", "gts": "1", "score": 1.0, "acc": True, "pred": "1", "step": 3},
        {"input": "user: q1", "output": "\\boxed{2}", "gts": "1", "score": 0.0, "acc": False, "pred": "2", "step": 3},
        {"input": "user: q2", "output": "\\boxed{7}", "gts": "7", "score": 1.0, "step": 3},  # no acc: rescored
        {"input": "user: q2", "output": "\\boxed{8}", "gts": "7", "score": 0.0, "step": 3},
    ]
    dump = _write_jsonl(tmp_path / "3.jsonl", records)
    assert main(["metrics", str(dump), "--data-source", "erpo/aime24", "--out", str(tmp_path / "out")]) == 0
    document = json.loads((tmp_path / "out" / "metrics.json").read_text())
    result = document["benchmarks"]["erpo/aime24"]
    assert result["prompts"] == 2 and result["avg@2"] == 0.5 and result["pass@2"] == 1.0
    assert "2 scored now" in capsys.readouterr().out


def test_cli_rescore_overrides_recorded_accuracy(tmp_path):
    records = [
        {
            "prompt_id": "p",
            "data_source": "erpo/math",
            "response": "\\boxed{4}",
            "ground_truth": "4",
            "acc": False,
            "pred": "4",
        }
    ]
    generations = _write_jsonl(tmp_path / "g.jsonl", records)
    assert main(["metrics", str(generations), "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["benchmarks"]["erpo/math"]["avg@1"] == 0.0
    assert main(["metrics", str(generations), "--rescore", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["benchmarks"]["erpo/math"]["avg@1"] == 1.0


def test_cli_bad_inputs_exit_2(tmp_path, capsys):
    assert main(["metrics", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot open" in capsys.readouterr().err
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt_id": "p", "response": "x", "ground_truth": "1"}\n{oops\n', encoding="utf-8")
    assert main(["metrics", str(broken)]) == 2
    assert f"{broken}:2" in capsys.readouterr().err
    no_truth = _write_jsonl(tmp_path / "no_truth.jsonl", [{"prompt_id": "p", "response": "\\boxed{1}"}])
    assert main(["metrics", str(no_truth)]) == 2
    assert "no ground truth" in capsys.readouterr().err
    assert main(["metrics", str(no_truth), "--k", "0"]) == 2  # argparse usage error
    assert main(["nonsense"]) == 2


def test_cli_generate_without_vllm_explains(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:  # pragma: no cover - GPU machines
        pytest.skip("vLLM is installed here")
    code = main(["generate", "--model", "m", "--data", str(tmp_path / "x.parquet"), "--out", str(tmp_path / "g.jsonl")])
    assert code == 2
    assert "vLLM is not installed" in capsys.readouterr().err
