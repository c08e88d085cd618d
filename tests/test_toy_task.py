"""The offline toy assets and the toy rule reward."""

import pandas as pd
import pytest

from erpo_verl.toy.reward import compute_score, digits_score


@pytest.mark.parametrize(
    "text,target,expected",
    [
        ("12345", 5, 1.0),  # exactly N digits
        ("123", 5, 3 / 5),  # too short: missing digits
        ("1234567", 5, 5 / 7),  # too long
        ("12a45", 5, 4 / 5),  # one non-digit
        ("abc", 3, 0.0),
        ("", 4, 0.0),
    ],
)
def test_digits_score_hand_cases(text, target, expected):
    assert digits_score(text, target) == pytest.approx(expected)


def test_compute_score_cuts_at_the_end_marker_and_reports_exact_accuracy():
    result = compute_score("erpo_toy/digits", "1234<|im_end|>999", "4")
    assert result == {"score": 1.0, "acc": True, "pred": "1234"}
    assert compute_score("erpo_toy/digits", "12x4", "4")["acc"] is False


def test_compute_score_rejects_a_non_integer_ground_truth():
    with pytest.raises(ValueError, match="ground_truth"):
        compute_score("erpo_toy/digits", "12", "twelve")


def test_assets_build_offline_and_tokenize_one_token_per_character(toy_assets):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(toy_assets["model"])
    text = "write 5 digits.\n 12"
    assert len(tok(text)["input_ids"]) == len(text)
    assert tok.decode(tok(text)["input_ids"]) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    model = AutoModelForCausalLM.from_pretrained(toy_assets["model"])
    assert model.config.model_type == "qwen2" and sum(p.numel() for p in model.parameters()) < 200_000
    train = pd.read_parquet(toy_assets["train"])
    assert set(train.columns) >= {"data_source", "prompt", "ability", "reward_model", "extra_info"}
    targets = train["reward_model"].map(lambda r: int(r["ground_truth"]))
    assert targets.between(3, 9).all() and targets.nunique() > 3
