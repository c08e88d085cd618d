"""The countdown task: generator, solver, splits and the binary reward (a parser, never eval)."""

import itertools

import pytest

from erpo_verl.tasks import countdown as cd


def score(response, numbers=(3, 7, 25), target=46):
    return cd.compute_score(cd.DATA_SOURCE, response, cd.format_ground_truth(numbers, target))


# ------------------------------------------------------------------ reward: correct answers


@pytest.mark.parametrize("response", [
    "7*3=21,21+25=46",
    "3*7=21,25+21=46",  # operands of + and * in either order
    " 7 * 3 = 21 , 21 + 25 = 46 ",  # spaces around tokens
    "7*3=21,21+25=46<|im_end|>garbage after the end marker",
])
def test_correct_solutions_score_one(response):
    result = score(response)
    assert result["score"] == 1.0 and result["acc"] is True and result["format_ok"]


def test_every_solution_the_solver_finds_is_accepted_and_they_differ():
    numbers, target = [14, 9, 3], 42
    sols = cd.solutions(numbers, target)
    assert len(sols) >= 2  # several distinct correct answers
    strings = set().union(*sols.values())
    assert len(strings) > len(sols)
    for response in strings:
        assert score(response, numbers, target)["acc"], response


def test_division_must_be_exact_and_results_positive():
    assert score("9/3=3,3*14=42", (14, 9, 3), 42)["acc"]
    assert not score("14/3=4,4*9=36", (14, 9, 3), 36)["acc"]  # 14/3 is not an integer
    assert not score("3-7=4,4+25=29", (3, 7, 25), 29)["acc"]  # 3-7 is negative; claimed 4 is wrong anyway
    assert not score("7-7=0,0+5=5", (7, 7, 5), 5)["acc"]  # zero results are not allowed either


# ------------------------------------------------------------------ reward: wrong and adversarial answers


@pytest.mark.parametrize("response,why", [
    ("7*3=21,21+25=47", "wrong arithmetic"),
    ("7*3=22,22+24=46", "wrong arithmetic and 24 not in the pool"),
    ("7*3=21,21+24=45", "a number not in the pool"),
    ("7*7=49,49-3=46", "a number used twice"),
    ("25+21=46", "skips a step: 21 is not available"),
    ("7*3=21", "too few steps"),
    ("7*3=21,21+25=46,46-0=46", "too many steps"),
    ("7*3=21,21*1=21,21+25=46", "1 is not in the pool"),
    ("25+21", "no result"),
    ("46", "just the target"),
    ("", "empty"),
    ("3/0=0,0+25=25", "division by zero"),
    ("((((((((((7*3))))))))))=21,21+25=46", "parentheses are not part of the format"),
    ("(" * 10_000 + "7*3=21,21+25=46" + ")" * 10_000, "deep nesting"),
    ("7*3=21,21+25=46" + " " * 300, "over the length cap"),
    ("9" * 100_000, "huge input"),
    ("7×3=21,21+25=46", "non-ASCII operator"),
    ("７*3=21,21+25=46", "full-width digit"),
    ("٧*3=21,21+25=46", "Arabic-Indic digit"),
    ("7*3=21,21+25=046\u200b", "zero-width space"),
    ("7*3=21;21+25=46", "wrong separator"),
    ("__import__('os').system('true')", "code is not evaluated"),
    ("7**3=343,343-25=318", "power is not an operation"),
    ("-7+3=4,4+25=29", "negative numbers are not written"),
    ("7*3=21,21+25=46,", "trailing empty step"),
    ("7*3=21\n21+25=46", "newline instead of the separator"),
])
def test_wrong_or_adversarial_responses_score_zero(response, why):
    result = score(response)
    assert result["score"] == 0.0 and result["acc"] is False, why


def test_huge_numbers_are_rejected_without_big_integer_work():
    assert not score("9999999*9999999=99980000000001,1+1=2", (3, 7, 25), 46)["acc"]


@pytest.mark.parametrize("ground_truth", ["", "46", "3,7,25", "3,7,a:46", "3 7 25:46", None, "3,7,25:-46"])
def test_bad_ground_truth_raises_a_clear_error(ground_truth):
    with pytest.raises(ValueError, match="ground_truth must look like"):
        cd.compute_score(cd.DATA_SOURCE, "7*3=21,21+25=46", ground_truth)


@pytest.mark.parametrize("response", ["9/3=3,14*3=42", "9/3=3,14*3=41", "14*3=42", "hello", ""])
def test_score_and_acc_is_compute_score_without_the_diagnostic_keys(response):
    full = cd.compute_score("countdown", response, cd.format_ground_truth([14, 9, 3], 42))
    lean = cd.score_and_acc("countdown", response, cd.format_ground_truth([14, 9, 3], 42))
    assert lean == {"score": full["score"], "acc": full["acc"]}


def test_format_ok_separates_malformed_from_wrong_answers():
    assert score("7*3=21,21+25=47")["format_ok"]  # well formed, wrong
    assert not score("7*3=21")["format_ok"]
    assert not score("hello")["format_ok"]


# ------------------------------------------------------------------ solver against brute force


def _brute_force_values(numbers):
    """Reachable final values by evaluating every binary tree over every permutation (independent oracle)."""
    def trees(seq):
        if len(seq) == 1:
            yield seq[0]
            return
        for cut in range(1, len(seq)):
            for left in trees(seq[:cut]):
                for right in trees(seq[cut:]):
                    for value in (left + right, left - right, left * right,
                                  left // right if right and left % right == 0 else None):
                        if value is not None and value > 0:
                            yield value
    values = set()
    for perm in itertools.permutations(numbers):
        values.update(trees(list(perm)))
    return values


@pytest.mark.parametrize("numbers", [(3, 7, 25), (2, 2, 9), (1, 5, 6, 8), (12, 4, 3)])
def test_solver_reaches_exactly_the_values_of_every_expression_tree(numbers):
    assert set(cd.solve(numbers, max_value=10**9)) == _brute_force_values(numbers)


# ------------------------------------------------------------------ generator and splits


def test_splits_are_seeded_disjoint_and_every_prompt_has_several_solutions():
    config = cd.CountdownConfig()
    a = cd.make_splits(300, 40, seed=3, config=config)
    b = cd.make_splits(300, 40, seed=3, config=config)
    assert [(n, t) for n, t, _ in a["train"]] == [(n, t) for n, t, _ in b["train"]]
    c = cd.make_splits(300, 40, seed=4, config=config)
    assert [(n, t) for n, t, _ in a["test"]] != [(n, t) for n, t, _ in c["test"]]
    keys = {split: {(tuple(sorted(n)), t) for n, t, _ in rows} for split, rows in a.items()}
    assert len(keys["train"]) == 300 and len(keys["test"]) == 40
    assert not keys["train"] & keys["test"]
    for numbers, target, sols in a["train"] + a["test"]:
        assert len(numbers) == 3 and all(1 <= n <= config.max_number for n in numbers)
        assert config.target_min <= target <= config.target_max
        assert len(sols) >= config.min_solutions
        assert sols == cd.solutions(numbers, target, config.max_value)


def test_difficulty_knob_changes_the_problems():
    hard = cd.CountdownConfig(num_count=4, max_number=30, target_min=50, target_max=300, min_solutions=3)
    rows = cd.make_splits(20, 5, seed=0, config=hard)["train"]
    assert all(len(n) == 4 and len(s) >= 3 for n, _, s in rows)
    response = sorted(next(iter(rows[0][2].values())))[0]
    assert response.count(",") == 2  # three steps
    assert score(response, rows[0][0], rows[0][1])["acc"]


@pytest.mark.parametrize("kwargs", [dict(num_count=1), dict(max_number=1), dict(target_min=9, target_max=3),
                                    dict(min_solutions=0)])
def test_bad_difficulty_settings_raise(kwargs):
    with pytest.raises(ValueError):
        cd.CountdownConfig(**kwargs)


def test_parquet_rows_follow_verls_schema_and_round_trip(tmp_path):
    import pandas as pd

    written = cd.write_parquet(tmp_path, num_train=30, num_test=8, seed=0)
    train = pd.read_parquet(written["paths"]["train"])
    assert len(train) == 30 and set(train["data_source"]) == {cd.DATA_SOURCE}
    row = train.iloc[0]
    numbers, target = cd.parse_ground_truth(row["reward_model"]["ground_truth"])
    assert row["prompt"][0]["content"] == cd.prompt_text(numbers, target)
    assert written["stats"]["train"]["distinct_solutions_min"] >= 2


def test_data_prep_cli_writes_countdown_splits_and_rejects_bad_settings(tmp_path, capsys):
    import pandas as pd

    from data_prep.__main__ import main

    assert main(["countdown", "--out", str(tmp_path), "--num-train", "40", "--num-test", "6", "--seed", "2"]) == 0
    train, test = pd.read_parquet(tmp_path / "train.parquet"), pd.read_parquet(tmp_path / "test.parquet")
    assert (len(train), len(test)) == (40, 6)
    gts = lambda df: {r["ground_truth"] for r in df["reward_model"]}  # noqa: E731
    assert not gts(train) & gts(test)
    assert main(["countdown", "--out", str(tmp_path / "bad"), "--target-min", "50", "--target-max", "5"]) == 2
    assert "bad ranges" in capsys.readouterr().err and not (tmp_path / "bad" / "train.parquet").exists()


def test_asking_for_more_problems_than_exist_is_an_error_not_a_hang():
    tiny = cd.CountdownConfig(max_number=3, target_min=10, target_max=12)
    with pytest.raises(ValueError, match="could not draw|no problem"):
        cd.make_splits(500, 5, seed=0, config=tiny)


# ------------------------------------------------------------------ the warm-start policy's pieces (no training)


def test_policy_tokenizer_is_one_token_per_character_and_round_trips(tmp_path):
    from erpo_verl.tasks.countdown_policy import ALPHABET, build_tokenizer

    tok = build_tokenizer(tmp_path)
    text = "from 14 9 3 make 42\n9/3=3,14*3=42"
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert set("".join(ALPHABET)) >= set("0123456789+-*/=, ")


def test_sft_batches_train_only_on_correct_responses_and_the_end_token(tmp_path):
    import random

    from erpo_verl.tasks.countdown_policy import _sft_batch, build_tokenizer

    tok = build_tokenizer(tmp_path)
    problems = cd.make_splits(20, 2, seed=0)["train"]
    input_ids, attention, labels = _sft_batch(tok, problems, random.Random(0), 8)
    seen = set()
    for row_ids, row_mask, row_labels in zip(input_ids.tolist(), attention.tolist(), labels.tolist()):
        trained = [t for t, lab in zip(row_ids, row_labels) if lab != -100]
        assert trained[-1] == tok.eos_token_id
        response = tok.decode(trained[:-1])
        prompt = tok.decode([t for t, m in zip(row_ids, row_mask) if m][: -len(trained)])
        numbers = [int(x) for x in prompt.split("from ")[1].split(" make")[0].split()]
        target = int(prompt.split("make ")[1].split("<")[0])
        assert cd.check(response, numbers, target) == (True, "ok")
        seen.add(response)
    assert len(seen) > 1


def test_policy_cache_key_changes_with_every_setting():
    from dataclasses import asdict

    from erpo_verl.tasks.countdown_policy import SFTConfig, policy_key

    task, sft = asdict(cd.CountdownConfig()), asdict(SFTConfig())
    base = policy_key(task, sft, "d0", 0)
    assert base == policy_key(task, sft, "d0", 0)
    assert len({base, policy_key({**task, "max_number": 9}, sft, "d0", 0), policy_key(task, {**sft, "steps": 1}, "d0", 0),
                policy_key(task, sft, "d1", 0), policy_key(task, sft, "d0", 1)}) == 5


def test_policy_cache_key_follows_the_training_problems_not_their_count():
    # a bigger test split (drawn first) changes which problems the same number of training prompts holds; a cached
    # policy trained on the old split could then have seen test problems
    from erpo_verl.tasks.countdown_policy import problems_digest

    narrow = cd.CountdownConfig(max_number=6, target_min=10, target_max=30)  # a small pool: draws collide
    small, big = cd.make_splits(30, 4, 0, narrow), cd.make_splits(30, 8, 0, narrow)
    assert [p[:2] for p in small["test"]] == [p[:2] for p in big["test"][:4]]  # the test split is drawn first
    assert len(small["train"]) == len(big["train"])
    assert problems_digest(small["train"]) != problems_digest(big["train"])
    assert problems_digest(small["train"]) == problems_digest(cd.make_splits(30, 4, 0, narrow)["train"])
    big_test = {(tuple(sorted(n)), t) for n, t, _ in big["test"]}
    assert not big_test & {(tuple(sorted(n)), t) for n, t, _ in big["train"]}
