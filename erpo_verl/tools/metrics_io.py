"""Reading per-step training metrics written by verl (file logger) or by our demo, for plots and benchmarks.

verl's file logger (``trainer.logger=[...,file]``, path from ``VERL_FILE_LOGGER_PATH``) writes one JSON
object per step: ``{"step": 3, "data": {"critic/score/mean": 0.4, ...}}``. We read that, a flat JSONL of
``{"step": 3, "critic/score/mean": 0.4, ...}``, CSV files with a ``step`` column (and optionally a ``run``
column, as in the demo's ``metrics.csv``, which holds several runs), and TensorBoard event files as written by
verl's ``trainer.logger=[...,tensorboard]`` (a ``events.out.tfevents.*`` file or the folder holding them; read
with ``tensorboard``'s own event reader).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path


def is_tensorboard(path: str | Path) -> bool:
    """A TensorBoard event file, or a folder with one directly inside."""
    path = Path(path)
    if path.is_dir():
        return any(p.name.startswith("events.out.tfevents.") for p in path.iterdir())
    return path.name.startswith("events.out.tfevents.")


def load_runs(path: str | Path) -> dict[str, list[dict[str, float]]]:
    """Runs in one metrics file: ``{run name: records}``.

    A CSV with a ``run`` column yields one entry per distinct value (in order of first appearance); any other
    file yields one entry named ``""`` (the caller names it).
    """
    path = Path(path)
    if path.suffix == ".csv" and path.is_file():
        with path.open(newline="") as fh:
            records = list(csv.DictReader(fh))
        if records and "run" in records[0]:
            by_run: dict[str, list[dict]] = {}
            for lineno, record in enumerate(records, 2):
                name = (record.pop("run") or "").strip()
                if not name:
                    raise ValueError(f"{path}:{lineno}: empty 'run' value")
                by_run.setdefault(name, []).append(record)
            return {name: _to_steps(rows, path) for name, rows in by_run.items()}
        return {"": _to_steps(records, path)}
    return {"": load_metrics(path)}


def load_metrics(path: str | Path) -> list[dict[str, float]]:
    """Per-step records (each with ``step`` and numeric metrics), sorted by step; last write of a step wins.

    Raises ValueError for a CSV that holds several runs (a ``run`` column): use :func:`load_runs`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no metrics file at {path}")
    if is_tensorboard(path):
        return _load_tensorboard(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder without TensorBoard event files (events.out.tfevents.*)")
    if path.suffix == ".csv":
        with path.open(newline="") as fh:
            records = list(csv.DictReader(fh))
        if records and "run" in records[0]:
            names = sorted({r["run"] for r in records})
            if len(names) > 1:
                raise ValueError(f"{path} holds {len(names)} runs ({', '.join(names)}) in its 'run' column")
            for r in records:
                r.pop("run")
    else:
        records = []
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: not a JSON line ({exc.msg})") from None
    return _to_steps(records, path)


def _to_steps(records: list[dict], path: Path) -> list[dict[str, float]]:
    rows: dict[int, dict[str, float]] = {}
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


def _load_tensorboard(path: Path) -> list[dict[str, float]]:
    """Scalars of a TensorBoard event file or folder, through tensorboard's reader (every event kept)."""
    try:
        from tensorboard.backend.event_processing import event_accumulator
    except ImportError:
        raise ValueError(f"{path}: reading TensorBoard files needs the tensorboard package (pip install tensorboard)") from None
    accumulator = event_accumulator.EventAccumulator(
        str(path), size_guidance={event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0}
    )
    accumulator.Reload()
    rows: dict[int, dict[str, float]] = {}
    for tag in accumulator.Tags().get("scalars", []):
        for event in accumulator.Scalars(tag):
            rows.setdefault(int(event.step), {"step": int(event.step)})[tag] = float(event.value)
    # newer writers store scalars as rank-0 tensors
    for tag in accumulator.Tags().get("tensors", []):
        for event in accumulator.Tensors(tag):
            values = event.tensor_proto.float_val or event.tensor_proto.double_val
            if len(values) == 1:
                rows.setdefault(int(event.step), {"step": int(event.step)})[tag] = float(values[0])
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
