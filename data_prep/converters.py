"""Per-dataset knowledge: where each dataset lives, which splits it has, and how a raw row becomes a
(question, answer) pair.

Each converter takes one raw row (a dict) and returns an :class:`Example`, or raises :class:`SkipRow` with a
short reason (``"missing answer"``) that the summary counts. Converters accept the column-name variants
found across the public copies of a benchmark (``problem``/``Problem``/``question``), because users
download whichever mirror still exists.

Ground truths are stored as strings: integer answers (AIME, AMC, GSM8K) become canonical integer text
(``"033"`` -> ``"33"``, ``27.0`` -> ``"27"``), MATH answers are the last ``\\boxed{}`` of the reference
solution, and GSM8K answers are what follows ``####`` with thousands separators removed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from erpo_verl.rewards.answer_extraction import last_boxed_content
from erpo_verl.rewards.data_sources import DATASET_DATA_SOURCES


class SkipRow(Exception):
    """This row cannot be converted; ``reason`` is the summary category, ``field`` the offending column."""

    def __init__(self, reason: str, field: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclass
class Example:
    """A converted row: the bare question text, the ground-truth string, and extra_info entries to keep."""

    question: str
    answer: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetSpec:
    """Everything data_prep knows about one dataset.

    ``hub_splits`` maps each output split to the split name on the hub (AIME-2024's only hub split is called
    ``train`` but it is an evaluation set, so it is written as ``test``). ``default_splits`` are written when
    ``--split`` is not given.
    """

    name: str
    description: str
    hub_id: str | None
    hub_config: str | None
    hub_splits: dict[str, str]
    default_splits: tuple[str, ...]
    convert: Callable[[dict], Example]
    extra_columns: tuple[str, ...] = ()

    @property
    def data_source(self) -> str:
        return DATASET_DATA_SOURCES[self.name]


# --------------------------------------------------------------------------------------------- field access


def get_field(data: dict, path: str) -> Any:
    """``data[path]``, following dots into nested dicts (``reward_model.ground_truth``); None if absent."""
    if path in data:
        return data[path]
    value: Any = data
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _first_present(data: dict, names: tuple[str, ...]) -> tuple[str, Any]:
    for name in names:
        value = get_field(data, name)
        if value is not None:
            return name, value
    return names[0], None


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def text_field(data: dict, names: tuple[str, ...], role: str) -> str:
    """The first of ``names`` present in ``data`` as a non-empty string; ``role`` names it in skip reasons."""
    name, value = _first_present(data, names)
    if value is None:
        raise SkipRow(f"missing {role}", name)
    if _is_nan(value):
        raise SkipRow(f"{role} is NaN", name)
    if not isinstance(value, str):
        raise SkipRow(f"{role} is not a string", name)
    if not value.strip():
        raise SkipRow(f"empty {role}", name)
    return value.strip()


def answer_text(value: Any, name: str) -> str:
    """A ground truth as text: strings stripped, integral numbers as integers, other finite numbers as decimals."""
    if value is None:
        raise SkipRow("missing answer", name)
    if isinstance(value, bool):
        raise SkipRow("answer is not a string or number", name)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SkipRow("answer is NaN" if math.isnan(value) else "answer is infinite", name)
        return str(int(value)) if value.is_integer() else repr(value)
    if not isinstance(value, str):
        raise SkipRow("answer is not a string or number", name)
    text = value.strip()
    if not text:
        raise SkipRow("empty answer", name)
    if text.lower() == "nan":
        raise SkipRow("answer is NaN", name)
    return text


def integer_answer(value: Any, name: str) -> str:
    """Canonical integer text for benchmarks whose answers are integers (``"033"`` -> ``"33"``).

    Non-integer answers are kept as text rather than rejected: some AMC mirrors store a few fractions.
    """
    text = answer_text(value, name)
    compact = text.replace(",", "").strip().strip("$")
    if re.fullmatch(r"[-+]?\d+", compact):
        return str(int(compact))
    if re.fullmatch(r"[-+]?\d+\.0*", compact):
        return str(int(float(compact)))
    return text


def _scalar_extras(data: dict, columns: tuple[str, ...]) -> dict[str, Any]:
    """Selected source columns to carry into ``extra_info`` (as strings, so parquet column types agree)."""
    extras = {}
    for column in columns:
        value = data.get(column)
        if value is None or _is_nan(value) or isinstance(value, (list, dict)):
            continue
        extras[column.lower()] = str(value)
    return extras


# ----------------------------------------------------------------------------------------------- converters

QUESTION_FIELDS = ("problem", "question", "Problem", "Question", "prompt")
ANSWER_FIELDS = ("answer", "Answer", "final_answer", "solution", "reward_model.ground_truth")

DAPO_PREFIX_RE = re.compile(
    r"^\s*Solve the following math problem step by step\..*?where \$Answer is the answer to the problem\.\s*", re.DOTALL
)
DAPO_SUFFIX_RE = re.compile(r"\s*Remember to put your answer on its own line after \"Answer:\"\.?\s*$")


def strip_dapo_template(content: str) -> str:
    """The bare problem inside DAPO's ``Solve the following ... Answer: $Answer`` prompt template."""
    return DAPO_SUFFIX_RE.sub("", DAPO_PREFIX_RE.sub("", content)).strip()


def chat_prompt_question(prompt: Any) -> str:
    """The last user message of a chat-list prompt (DAPO and verl files), with DAPO's template removed."""
    if hasattr(prompt, "tolist"):
        prompt = prompt.tolist()
    if not isinstance(prompt, (list, tuple)):
        raise SkipRow("prompt is not a chat message list", "prompt")
    for message in reversed(prompt):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if not isinstance(content, str) or not content.strip():
                break
            question = strip_dapo_template(content)
            if not question:
                raise SkipRow("empty question", "prompt")
            return question
    raise SkipRow("no user message in prompt", "prompt")


def _question_of(data: dict) -> str:
    """The question of a row from any of the usual shapes (plain column or verl/DAPO chat-list prompt)."""
    prompt = data.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        return chat_prompt_question(prompt)
    return text_field(data, QUESTION_FIELDS, "question")


def convert_math(data: dict) -> Example:
    """MATH (lighteval mirror): the answer is the last ``\\boxed{}`` of the reference solution."""
    question = _question_of(data)
    name, answer = _first_present(data, ("answer", "reward_model.ground_truth"))
    if answer is not None:
        truth = answer_text(answer, name)
    else:
        solution = text_field(data, ("solution",), "solution")
        truth = last_boxed_content(solution)
        if truth is None or not truth.strip():
            raise SkipRow("no \\boxed{} answer in solution", "solution")
        truth = truth.strip()
    return Example(question, truth, _scalar_extras(data, ("level", "type", "subject", "unique_id")))


def convert_with_answer_column(data: dict) -> Example:
    """Datasets with an explicit answer column (MATH-500, custom)."""
    question = _question_of(data)
    name, answer = _first_present(data, ANSWER_FIELDS)
    truth = answer_text(answer, name)
    if name == "solution":  # only a worked solution: take its boxed answer
        boxed = last_boxed_content(truth)
        if boxed is None or not boxed.strip():
            raise SkipRow("no \\boxed{} answer in solution", name)
        truth = boxed.strip()
    return Example(question, truth, _scalar_extras(data, ("subject", "level", "unique_id", "id")))


def convert_integer_answer(data: dict) -> Example:
    """AIME and AMC: integer answers (stored as ints, floats like ``27.0`` or zero-padded strings)."""
    question = _question_of(data)
    name, answer = _first_present(data, ("answer", "Answer", "reward_model.ground_truth", "solution"))
    if name == "solution" and isinstance(answer, str):
        boxed = last_boxed_content(answer)
        if boxed is None:
            raise SkipRow("missing answer", "answer")
        answer = boxed
    return Example(question, integer_answer(answer, name), _scalar_extras(data, ("id", "ID", "year", "url")))


def convert_dapo(data: dict) -> Example:
    """DAPO-Math-17k: chat-list prompt in DAPO's template + ``reward_model.ground_truth``, or the processed
    copy (``open-r1/DAPO-Math-17k-Processed``) with a plain ``prompt`` and ``solution``."""
    question = _question_of(data)
    name, answer = _first_present(data, ("reward_model.ground_truth", "solution", "answer"))
    return Example(question, integer_answer(answer, name))


def convert_gsm8k(data: dict) -> Example:
    """GSM8K: the answer follows ``####`` at the end of the reference solution (``1,000`` -> ``1000``)."""
    question = text_field(data, ("question", "problem"), "question")
    solution = text_field(data, ("answer",), "answer")
    if "####" not in solution:
        raise SkipRow("no #### answer in solution", "answer")
    final = solution.rsplit("####", 1)[1].strip().replace(",", "").rstrip(".")
    if not final:
        raise SkipRow("empty answer", "answer")
    return Example(question, integer_answer(final, "answer"))


def make_custom_converter(question_field: str, answer_field: str) -> Callable[[dict], Example]:
    """Converter for ``custom``: the user names the columns (dotted paths reach into nested dicts).

    A ``\\boxed{}`` in the answer column (a worked solution) is reduced to its content, and a ``####``
    solution to what follows it, so the ground truth is always the bare final answer.
    """

    def convert(data: dict) -> Example:
        raw_question = get_field(data, question_field)
        if isinstance(raw_question, (list, tuple)) or hasattr(raw_question, "tolist"):
            question = chat_prompt_question(raw_question)  # a chat-list prompt column (verl/DAPO files)
        else:
            question = text_field(data, (question_field,), "question")
        truth = answer_text(get_field(data, answer_field), answer_field)
        boxed = last_boxed_content(truth) if "\\boxed" in truth or "\\fbox" in truth else None
        if boxed is not None and boxed.strip():
            truth = boxed.strip()
        elif "####" in truth:
            truth = truth.rsplit("####", 1)[1].strip().replace(",", "") or truth
        return Example(question, truth)

    return convert


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="math",
            description="MATH (Hendrycks) via the DigitalLearningGmbH/MATH-lighteval mirror; train 7,500 / test 5,000",
            hub_id="DigitalLearningGmbH/MATH-lighteval",
            hub_config="default",
            hub_splits={"train": "train", "test": "test"},
            default_splits=("train", "test"),
            convert=convert_math,
        ),
        DatasetSpec(
            name="math500",
            description="MATH-500 (HuggingFaceH4/MATH-500), 500 test problems with an answer column",
            hub_id="HuggingFaceH4/MATH-500",
            hub_config=None,
            hub_splits={"test": "test"},
            default_splits=("test",),
            convert=convert_with_answer_column,
        ),
        DatasetSpec(
            name="aime24",
            description="AIME 2024 (HuggingFaceH4/aime_2024), 30 problems with integer answers",
            hub_id="HuggingFaceH4/aime_2024",
            hub_config=None,
            hub_splits={"test": "train"},
            default_splits=("test",),
            convert=convert_integer_answer,
        ),
        DatasetSpec(
            name="aime25",
            description="AIME 2025 (math-ai/aime25), 30 problems with integer answers",
            hub_id="math-ai/aime25",
            hub_config=None,
            hub_splits={"test": "test"},
            default_splits=("test",),
            convert=convert_integer_answer,
        ),
        DatasetSpec(
            name="amc23",
            description="AMC 2023 (math-ai/amc23), 40 problems with numeric answers",
            hub_id="math-ai/amc23",
            hub_config=None,
            hub_splits={"test": "test"},
            default_splits=("test",),
            convert=convert_integer_answer,
        ),
        DatasetSpec(
            name="dapo17k",
            description="DAPO-Math-17k (BytedTsinghua-SIA/DAPO-Math-17k): 1.79M rows, ~17k prompts x ~100; deduped",
            hub_id="BytedTsinghua-SIA/DAPO-Math-17k",
            hub_config=None,
            hub_splits={"train": "train"},
            default_splits=("train",),
            convert=convert_dapo,
        ),
        DatasetSpec(
            name="gsm8k",
            description="GSM8K (openai/gsm8k, config main); train 7,473 / test 1,319",
            hub_id="openai/gsm8k",
            hub_config="main",
            hub_splits={"train": "train", "test": "test"},
            default_splits=("train", "test"),
            convert=convert_gsm8k,
        ),
        DatasetSpec(
            name="custom",
            description="any local JSON/JSONL/CSV/Parquet file, with --question-field and --answer-field",
            hub_id=None,
            hub_config=None,
            hub_splits={"train": "train"},
            default_splits=("train",),
            convert=make_custom_converter("question", "answer"),
        ),
    )
}
