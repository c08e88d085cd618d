"""verl's parquet row schema: building rows (:func:`make_row`) and checking them (:func:`validate_row`).

verl's ``RLHFDataset`` reads one row per prompt with these columns (verl 0.9.1,
``verl/utils/dataset/rl_dataset.py`` and the reward managers):

==================  ==========================================================================================
``data_source``     str; chooses the reward function and names the validation metrics
``prompt``          non-empty list of chat messages ``{"role": ..., "content": ...}``, rendered with the
                    model's chat template
``ability``         str, informational (``"math"``)
``reward_model``    ``{"style": "rule", "ground_truth": str}``; every reward manager reads ``ground_truth``
``extra_info``      dict passed to ``compute_score(extra_info=...)``; ``index`` becomes the row index, and we
                    always store ``split`` too
==================  ==========================================================================================

A row that breaks this shape fails deep inside a Ray worker, often after model loading; checking it when the
file is written turns that into an error naming the row and field.
"""

from __future__ import annotations

import math
from typing import Any

PROMPT_FORMATS = ("boxed", "answer_line")
CHAT_ROLES = ("system", "user", "assistant")

BOXED_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
# DAPO's prompt (BytedTsinghua-SIA/DAPO README), kept word for word so that reproductions see the same text.
ANSWER_LINE_PREFIX = (
    "Solve the following math problem step by step. The last line of your response should be of the form "
    "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\n"
)
ANSWER_LINE_SUFFIX = '\n\nRemember to put your answer on its own line after "Answer:".'

EXTRA_VALUE_TYPES = (str, int, float, bool, type(None))


class SchemaError(ValueError):
    """A row (or file) does not match verl's parquet schema; the message names the row and the field."""


def render_prompt(question: str, prompt_format: str = "boxed") -> str:
    """The user message for ``question``.

    ``boxed`` appends an instruction to put the final answer in ``\\boxed{}`` (the Qwen2.5-Math convention);
    ``answer_line`` wraps the question in DAPO's template asking for a final ``Answer: ...`` line. Our reward
    reads both formats, so the choice only changes what the model is asked to do.
    """
    question = question.strip()
    if prompt_format == "boxed":
        return f"{question}\n\n{BOXED_INSTRUCTION}"
    if prompt_format == "answer_line":
        return f"{ANSWER_LINE_PREFIX}{question}{ANSWER_LINE_SUFFIX}"
    raise SchemaError(f"unknown prompt format {prompt_format!r}; expected one of {PROMPT_FORMATS}")


def make_row(
    question: str,
    answer: str,
    data_source: str,
    split: str,
    index: int,
    prompt_format: str = "boxed",
    ability: str = "math",
    extra: dict[str, Any] | None = None,
) -> dict:
    """One verl parquet row for a question/answer pair.

    Args:
        question: the problem text (without any answer-format instruction; :func:`render_prompt` adds it).
        answer: the ground truth as a string (``"33"``, ``"\\frac{1}{2}"``); stored in
            ``reward_model.ground_truth``.
        data_source: routes the row to a reward function; use an ``erpo/...`` value for our math reward
            (see ``erpo_verl.rewards.data_sources``).
        split: stored in ``extra_info.split`` (``train``/``test``/...).
        index: stored in ``extra_info.index``; verl uses it as the row id, so make it unique within a file.
        prompt_format: ``"boxed"`` or ``"answer_line"``.
        ability: verl's informational task tag.
        extra: more ``extra_info`` entries (scalars only: str, int, float, bool or None). Reserved keys
            (``split``, ``index``, ``question``, ``answer``, ``prompt_format``) cannot be overridden.

    Returns:
        ``{"data_source", "prompt": [{"role": "user", "content": ...}], "ability",
        "reward_model": {"style": "rule", "ground_truth": answer}, "extra_info": {...}}``

    Raises:
        SchemaError: when an argument would produce an invalid row (empty question or answer, bad format...).
    """
    for name, value in (("question", question), ("answer", answer), ("data_source", data_source), ("split", split)):
        if not isinstance(value, str) or not value.strip():
            raise SchemaError(f"make_row: {name} must be a non-empty string, got {value!r}")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise SchemaError(f"make_row: index must be a non-negative int, got {index!r}")
    extra_info: dict[str, Any] = {}
    for key, value in (extra or {}).items():
        if not isinstance(key, str):
            raise SchemaError(f"make_row: extra keys must be strings, got {key!r}")
        if not isinstance(value, EXTRA_VALUE_TYPES):
            raise SchemaError(f"make_row: extra[{key!r}] must be a scalar, got {type(value).__name__}")
        extra_info[key] = value
    extra_info.update(
        split=split,
        index=index,
        question=question.strip(),
        answer=answer.strip(),
        prompt_format=prompt_format,
    )
    return {
        "data_source": data_source,
        "prompt": [{"role": "user", "content": render_prompt(question, prompt_format)}],
        "ability": ability,
        "reward_model": {"style": "rule", "ground_truth": answer.strip()},
        "extra_info": extra_info,
    }


REQUIRED_COLUMNS = ("data_source", "prompt", "ability", "reward_model", "extra_info")


def _is_blank(value: Any) -> bool:
    return not isinstance(value, str) or not value.strip()


def validate_row(row: Any, where: str = "row") -> None:
    """Raise :class:`SchemaError` naming ``where`` and the field if ``row`` is not a valid verl row.

    ``where`` is a location for the message, e.g. ``"out/train.parquet row 17"``.
    """
    if not isinstance(row, dict):
        raise SchemaError(f"{where}: expected a dict, got {type(row).__name__}")
    missing = [column for column in REQUIRED_COLUMNS if column not in row]
    if missing:
        raise SchemaError(f"{where}: missing column(s) {', '.join(missing)}")
    if _is_blank(row["data_source"]):
        raise SchemaError(f"{where}: data_source must be a non-empty string, got {row['data_source']!r}")
    prompt = row["prompt"]
    if hasattr(prompt, "tolist"):
        prompt = prompt.tolist()
    if not isinstance(prompt, (list, tuple)) or len(prompt) == 0:
        raise SchemaError(f"{where}: prompt must be a non-empty list of chat messages, got {type(prompt).__name__}")
    for position, message in enumerate(prompt):
        if not isinstance(message, dict):
            raise SchemaError(f"{where}: prompt[{position}] must be a dict with role and content")
        if message.get("role") not in CHAT_ROLES:
            raise SchemaError(
                f"{where}: prompt[{position}].role must be one of {CHAT_ROLES}, got {message.get('role')!r}"
            )
        if _is_blank(message.get("content")):
            raise SchemaError(f"{where}: prompt[{position}].content must be a non-empty string")
    if not isinstance(row["ability"], str):
        raise SchemaError(f"{where}: ability must be a string, got {type(row['ability']).__name__}")
    reward_model = row["reward_model"]
    if not isinstance(reward_model, dict):
        raise SchemaError(f"{where}: reward_model must be a dict, got {type(reward_model).__name__}")
    if not isinstance(reward_model.get("style"), str):
        raise SchemaError(f"{where}: reward_model.style must be a string")
    if _is_blank(reward_model.get("ground_truth")):
        raise SchemaError(
            f"{where}: reward_model.ground_truth must be a non-empty string, got {reward_model.get('ground_truth')!r}"
        )
    extra_info = row["extra_info"]
    if not isinstance(extra_info, dict):
        raise SchemaError(f"{where}: extra_info must be a dict, got {type(extra_info).__name__}")
    if _is_blank(extra_info.get("split")):
        raise SchemaError(f"{where}: extra_info.split must be a non-empty string")
    index = extra_info.get("index")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise SchemaError(f"{where}: extra_info.index must be a non-negative int, got {index!r}")
    for key, value in extra_info.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise SchemaError(f"{where}: extra_info.{key} is {value!r}; NaN/inf values are not allowed")
