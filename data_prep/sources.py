"""Reading raw dataset rows from local files or directories, or from the Hugging Face hub.

A local ``--source`` may be one file or a directory (for example a ``huggingface-cli download`` snapshot).
Supported formats: Parquet, JSON Lines, JSON (a list of objects, or an object holding one such list) and CSV.
In a directory, a file's split is read from its name or its parent directory's name (``train-00000-of-00001
.parquet``, ``test.jsonl``, ``data/validation/part0.parquet``).

Every row is yielded as a :class:`RawRecord` that remembers where it came from, so that skipped rows can be
reported as ``file:row``. A JSON Lines line that is not valid JSON becomes a record with ``error`` set
instead of stopping the whole file; a file that cannot be read at all raises :class:`SourceError`.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SUPPORTED_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "test": "test",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
}
PARQUET_BATCH_ROWS = 4096


class SourceError(ValueError):
    """A source cannot be found or read (missing path, unreadable file, hub unreachable)."""


@dataclass
class RawRecord:
    """One source row: its data (None if unparsable), origin (file or hub id) and 1-based row number."""

    origin: str
    row_number: int
    data: dict[str, Any] | None
    error: str | None = None

    @property
    def location(self) -> str:
        return f"{self.origin}:{self.row_number}"


def split_of_file(path: Path, root: Path | None = None) -> str | None:
    """The split a file holds according to its name (or its directories below ``root``), or None.

    Only directories inside the ``--source`` directory count, so a file under ``/home/me/test_runs/`` is not
    mistaken for a test split.
    """
    names = [path.stem]
    if root is not None and root != path:
        names += reversed(path.relative_to(root).parent.parts)
    for name in names:
        for token in re.split(r"[^A-Za-z]+", name.lower()):
            if token in SPLIT_ALIASES:
                return SPLIT_ALIASES[token]
    return None


def find_source_files(source: Path) -> list[Path]:
    """The data files at ``source``: the file itself, or every supported file below a directory (sorted)."""
    source = Path(source).expanduser()
    if not source.exists():
        raise SourceError(f"--source {source} does not exist")
    if source.is_file():
        if source.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise SourceError(
                f"{source}: unsupported file type {source.suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}"
            )
        return [source]
    files = sorted(
        path
        for path in source.rglob("*")
        if path.is_file()
        and path.suffix.lower() in SUPPORTED_SUFFIXES
        and not any(part.startswith(".") for part in path.relative_to(source).parts)
    )
    if not files:
        raise SourceError(f"{source}: no {', '.join(SUPPORTED_SUFFIXES)} files found in this directory")
    return files


def count_rows(path: Path) -> int | None:
    """Row count when it is cheap to know (parquet metadata), for the progress bar; None otherwise."""
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
        except Exception:
            return None
    return None


def _iter_parquet(path: Path) -> Iterator[RawRecord]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        row_number = 0
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for data in batch.to_pylist():
                row_number += 1
                yield RawRecord(str(path), row_number, data)
    except (pa.ArrowException, OSError) as exc:
        raise SourceError(f"{path}: cannot read parquet: {exc}") from exc


def _iter_jsonl(path: Path) -> Iterator[RawRecord]:
    try:
        with open(path, encoding="utf-8", errors="strict") as handle:
            for row_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield RawRecord(str(path), row_number, None, f"invalid JSON ({exc.msg})")
                    continue
                if not isinstance(data, dict):
                    yield RawRecord(str(path), row_number, None, f"a JSON {type(data).__name__}, not an object")
                    continue
                yield RawRecord(str(path), row_number, data)
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not valid UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _rows_of_json_document(document: Any, path: Path) -> list:
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        lists = [value for value in document.values() if isinstance(value, list)]
        if len(lists) == 1:
            return lists[0]
    raise SourceError(f"{path}: expected a JSON list of objects (or an object holding one such list)")


def _iter_json(path: Path) -> Iterator[RawRecord]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not valid UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # a .json file that is really JSON Lines
            yield from _iter_jsonl(path)
            return
        raise SourceError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    for row_number, data in enumerate(_rows_of_json_document(document, path), start=1):
        if isinstance(data, dict):
            yield RawRecord(str(path), row_number, data)
        else:
            yield RawRecord(str(path), row_number, None, f"a JSON {type(data).__name__}, not an object")


def _iter_csv(path: Path) -> Iterator[RawRecord]:
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames:
                raise SourceError(f"{path}: CSV file has no header row")
            # Row numbers count the header as line 1, as a spreadsheet would show them.
            for row_number, data in enumerate(reader, start=2):
                if None in data:  # more cells than header columns
                    yield RawRecord(str(path), row_number, None, "more cells than header columns")
                    continue
                yield RawRecord(str(path), row_number, {k: (None if v == "" else v) for k, v in data.items()})
    except UnicodeDecodeError as exc:
        raise SourceError(f"{path}: not valid UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    except csv.Error as exc:
        raise SourceError(f"{path}: malformed CSV: {exc}") from exc


def iter_file_records(path: Path) -> Iterator[RawRecord]:
    """Every row of one local file, as :class:`RawRecord` objects."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _iter_parquet(path)
    if suffix == ".jsonl":
        return _iter_jsonl(path)
    if suffix == ".json":
        return _iter_json(path)
    if suffix == ".csv":
        return _iter_csv(path)
    raise SourceError(f"{path}: unsupported file type {suffix!r}")


def hub_is_offline() -> bool:
    """Whether the Hugging Face libraries were told not to use the network."""
    return any(
        os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def iter_hub_records(hub_id: str, config: str | None, split: str) -> Iterator[RawRecord]:
    """Rows of split ``split`` of a Hugging Face dataset (downloaded, or from the local cache when offline).

    Raises :class:`SourceError` that names ``--source`` when the dataset cannot be loaded - the usual cause
    is no network (``HF_HUB_OFFLINE=1`` or a firewalled cluster), and the fix is a local copy.
    """
    hint = (
        f"download it on a machine with network access (e.g. `huggingface-cli download {hub_id} "
        f"--repo-type dataset --local-dir DIR`) and pass --source DIR"
    )
    try:
        import datasets
    except ImportError as exc:
        raise SourceError(f"loading {hub_id} from the hub needs the `datasets` package; or {hint}") from exc
    try:
        dataset = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ValueError...)
        offline = " (offline mode: HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set)" if hub_is_offline() else ""
        raise SourceError(
            f"could not load {hub_id} (config {config!r}, split {split!r}) from the Hugging Face hub{offline}: "
            f"{type(exc).__name__}: {str(exc)[:300]}\n{hint}"
        ) from exc
    origin = f"hf://{hub_id}[{split}]"
    for row_number, data in enumerate(dataset, start=1):
        yield RawRecord(origin, row_number, dict(data))
