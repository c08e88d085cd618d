"""Reading generation files and scoring them with the math reward.

Two JSON Lines layouts are understood, line by line:

* **ours** (written by ``erpo-eval generate`` or by hand): ``prompt_id``, ``data_source``, ``response``,
  ``ground_truth``; optional ``acc`` and ``pred`` (then used as they are unless ``--rescore``);
* **verl's validation dump** (``trainer.validation_data_dir``, one ``<step>.jsonl`` per validation):
  ``input`` (the rendered prompt), ``output``, ``gts``, ``score`` plus the reward's extra keys (``acc``,
  ``pred``). It has no ``data_source`` column, so samples are labelled with ``--data-source`` (default
  ``verl_dump``) - dump one benchmark per validation file, or use our layout, to get one row per benchmark.

Samples of one prompt are grouped by ``prompt_id`` (ours) or by the prompt text (verl's dump).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROMPT_ID_KEYS = ("prompt_id", "input", "prompt", "uid", "id")
RESPONSE_KEYS = ("response", "output", "completion", "generation")
GROUND_TRUTH_KEYS = ("ground_truth", "gts", "answer")
DATA_SOURCE_KEYS = ("data_source", "benchmark")


class GenerationsError(ValueError):
    """A generations file is missing, unreadable, or lacks a needed field (the message names file and line)."""


@dataclass
class Generation:
    """One sampled response and (once scored) its correctness and extracted answer."""

    benchmark: str
    prompt_id: str
    response: str
    ground_truth: Any
    correct: bool | None = None
    answer: str | None = None
    location: str = ""


def _first(data: dict, keys: tuple[str, ...]) -> Any:
    for key in keys:
        if data.get(key) is not None:
            return data[key]
    return None


def _as_correct(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value > 0
    return None


def read_generations(path: Path, default_data_source: str = "verl_dump") -> Iterator[Generation]:
    """The samples of one JSON Lines file, in file order."""
    path = Path(path)
    try:
        handle = open(path, encoding="utf-8")
    except OSError as exc:
        raise GenerationsError(f"cannot open {path}: {exc.strerror}") from exc
    with handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            location = f"{path}:{line_number}"
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise GenerationsError(f"{location}: invalid JSON ({exc.msg})") from exc
            if not isinstance(data, dict):
                raise GenerationsError(f"{location}: expected a JSON object")
            response = _first(data, RESPONSE_KEYS)
            if not isinstance(response, str):
                raise GenerationsError(f"{location}: no response text (looked for {', '.join(RESPONSE_KEYS)})")
            prompt_id = _first(data, PROMPT_ID_KEYS)
            if prompt_id is None:
                raise GenerationsError(f"{location}: no prompt id (looked for {', '.join(PROMPT_ID_KEYS)})")
            if isinstance(prompt_id, (list, dict)):
                prompt_id = json.dumps(prompt_id, sort_keys=True)
            ground_truth = _first(data, GROUND_TRUTH_KEYS)
            if ground_truth is None and isinstance(data.get("reward_model"), dict):
                ground_truth = data["reward_model"].get("ground_truth")
            pred = data.get("pred")
            yield Generation(
                benchmark=str(_first(data, DATA_SOURCE_KEYS) or default_data_source),
                prompt_id=str(prompt_id),
                response=response,
                ground_truth=ground_truth,
                correct=_as_correct(data.get("acc")),
                answer=pred if isinstance(pred, str) else None,
                location=location,
            )


def score_generations(
    generations: list[Generation], rescore: bool = False, workers: int = 8, reward_kwargs: dict | None = None
) -> int:
    """Fill in ``correct`` and ``answer`` with ``erpo_verl.rewards.math.compute_score`` where needed.

    Samples that already carry ``acc`` and ``pred`` keep them unless ``rescore``. Scoring runs on a thread pool
    (the reward is thread-safe; symbolic checks run in its worker processes). Returns how many were scored.
    """
    from erpo_verl.rewards.math import compute_score

    todo = [g for g in generations if rescore or g.correct is None or g.answer is None]
    for generation in todo:
        if generation.ground_truth is None:
            raise GenerationsError(
                f"{generation.location}: no ground truth (looked for {', '.join(GROUND_TRUTH_KEYS)})"
            )
    kwargs = dict(reward_kwargs or {})

    def score(generation: Generation) -> dict:
        return compute_score(generation.benchmark, generation.response, generation.ground_truth, None, **kwargs)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for generation, result in zip(todo, pool.map(score, todo)):
            generation.correct = bool(result["acc"])
            generation.answer = result["pred"] or None
    return len(todo)
