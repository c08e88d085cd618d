"""Reading per-step training metrics written by verl (file logger) or by our demo, for plots and benchmarks.

verl's file logger (``trainer.logger=[...,file]``, path from ``VERL_FILE_LOGGER_PATH``) writes one JSON
object per step: ``{"step": 3, "data": {"critic/score/mean": 0.4, ...}}``. We read that, a flat JSONL of
``{"step": 3, "critic/score/mean": 0.4, ...}``, and CSV files with a ``step`` column.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path


def load_metrics(path: str | Path) -> list[dict[str, float]]:
    """Per-step records (each with ``step`` and numeric metrics), sorted by step; last write of a step wins."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no metrics file at {path}")
    rows: dict[int, dict[str, float]] = {}
    if path.suffix == ".csv":
        with path.open(newline="") as fh:
            records = list(csv.DictReader(fh))
    else:
        records = []
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not a JSON line ({exc.msg})") from None
    for record in records:
        data = record.get("data", record)
        step = record.get("step", data.get("step"))
        if step is None:
            raise ValueError(f"{path}: a record has no 'step' field")
        clean = {"step": int(float(step))}
        for key, value in data.items():
            number = _as_number(value)
            if key != "step" and number is not None:
                clean[key] = number
        rows[clean["step"]] = {**rows.get(clean["step"], {}), **clean}
    return [rows[s] for s in sorted(rows)]


def _as_number(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if not math.isnan(number) else None
    return None


def series(records: list[dict[str, float]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` over the records that have it."""
    steps = [int(r["step"]) for r in records if key in r]
    return steps, [r[key] for r in records if key in r]


def write_csv(runs: dict[str, list[dict[str, float]]], path: str | Path) -> Path:
    """One CSV with a ``run`` and a ``step`` column and every metric seen in any run."""
    path = Path(path)
    keys = sorted({k for records in runs.values() for r in records for k in r if k != "step"})
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["run", "step", *keys])
        for name, records in runs.items():
            for r in records:
                writer.writerow([name, int(r["step"]), *[r.get(k, "") for k in keys]])
    return path
