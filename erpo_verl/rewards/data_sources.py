"""The ``data_source`` strings that our math reward answers for.

verl copies each parquet row's ``data_source`` into the batch and hands it to the reward function. Its
built-in router (``verl.utils.reward_score.default_compute_score``) picks a scorer from that string and
raises ``NotImplementedError`` for anything it does not know, and some of its scorers only understand one
answer format (``math_dapo`` reads only an ``Answer:`` line, ``math_reward`` only ``\\boxed{}``), so a
prompt format and a scorer that disagree score silently 0.

To avoid both traps, every row written by ``data_prep`` carries a value in the ``erpo/`` namespace
(``erpo/math``, ``erpo/aime24``, ...). verl's default router does not know these, so forgetting to set
``reward.custom_reward_function.path=pkg://erpo_verl.rewards.math`` fails loudly instead of scoring
silently with the wrong rules; our reward accepts every ``erpo/`` value and reads both answer formats.
The values also become verl's validation metric names (``val-core/erpo/aime24/acc/mean@32``).

This module is pure data and imports nothing heavy, so ``data_prep`` can use it too.
"""

from __future__ import annotations

DATA_SOURCE_PREFIX = "erpo/"

#: data_prep dataset name -> the data_source value written into its rows.
DATASET_DATA_SOURCES: dict[str, str] = {
    "math": "erpo/math",
    "math500": "erpo/math500",
    "aime24": "erpo/aime24",
    "aime25": "erpo/aime25",
    "amc23": "erpo/amc23",
    "dapo17k": "erpo/dapo17k",
    "gsm8k": "erpo/gsm8k",
    "custom": "erpo/custom",
}

#: data_source values of parquet files made by verl's own preprocessors or shipped by DAPO. Our reward
#: scores them with the same rules, so existing files (e.g. DAPO's AIME-2024 parquet) work unchanged.
VERL_MATH_DATA_SOURCES: frozenset[str] = frozenset(
    {
        "lighteval/MATH",
        "DigitalLearningGmbH/MATH-lighteval",
        "HuggingFaceH4/MATH-500",
        "math",
        "math_dapo",
        "math_dapo_reasoning",
        "openai/gsm8k",
    }
)


def is_routed_to_math_reward(data_source: object) -> bool:
    """True if our math reward knows ``data_source`` (an ``erpo/`` value, a verl math value, or ``aime*``)."""
    if not isinstance(data_source, str) or not data_source:
        return False
    return (
        data_source.startswith(DATA_SOURCE_PREFIX)
        or data_source in VERL_MATH_DATA_SOURCES
        or data_source.startswith("aime")  # verl routes every aime* value to its math scorer; so do we
    )
