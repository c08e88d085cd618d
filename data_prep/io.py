"""Writing and reading verl parquet files safely.

:func:`write_verl_parquet` is the only way data_prep writes a dataset, and other parts of the project use it
for their own toy tasks. Its guarantees:

* every row is validated before anything touches the disk (:func:`data_prep.schema.validate_row`);
* the file is written to a hidden temporary file in the target directory and moved into place with
  ``os.replace`` (atomic on POSIX), so an interrupted or failed write never leaves a partial ``*.parquet``
  where verl would pick it up;
* the temporary file is read back and validated before the rename: what lands at ``path`` is known to load;
* an existing output is never overwritten unless asked for.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from data_prep.schema import SchemaError, validate_row


def _check_extra_info_types(rows: list[dict], path: Path) -> None:
    """Parquet stores ``extra_info`` as one struct column: each key must have one type across all rows."""
    first_seen: dict[str, tuple[type, int]] = {}
    for number, row in enumerate(rows):
        for key, value in row["extra_info"].items():
            if value is None:
                continue
            kind = type(value)
            if kind not in (str, int, float, bool):
                raise SchemaError(f"{path} row {number}: extra_info.{key} must be a scalar, got {kind.__name__}")
            seen = first_seen.setdefault(key, (kind, number))
            if seen[0] is not kind and not {seen[0], kind} <= {int, float}:
                raise SchemaError(
                    f"{path} row {number}: extra_info.{key} is {kind.__name__} but row {seen[1]} has "
                    f"{seen[0].__name__}; a parquet column needs one type"
                )


def _same_content(written: dict, read: dict) -> bool:
    return (
        written["data_source"] == read["data_source"]
        and written["reward_model"]["ground_truth"] == read["reward_model"]["ground_truth"]
        and [(m["role"], m["content"]) for m in written["prompt"]]
        == [(m["role"], m["content"]) for m in read["prompt"]]
        and written["extra_info"]["index"] == read["extra_info"]["index"]
        and written["extra_info"]["split"] == read["extra_info"]["split"]
    )


def _fsync(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def write_verl_parquet(rows: list[dict], path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Validate ``rows`` and write them atomically as a verl-readable parquet file at ``path``.

    Args:
        rows: verl rows, e.g. from :func:`data_prep.schema.make_row`.
        path: the output file; its directory is created if needed.
        overwrite: replace an existing file at ``path`` (otherwise that is an error).

    Returns:
        The resolved output path.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False (nothing is written).
        SchemaError (a ``ValueError``): a row is invalid (the message names the row number and field), the
            rows are empty, or the file read back does not match what was written. No file is left behind.
    """
    path = Path(path).expanduser().resolve()
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass overwrite=True (--overwrite) to replace it")
    if not isinstance(rows, list) or not rows:
        raise SchemaError(f"{path}: no rows to write")
    for number, row in enumerate(rows):
        validate_row(row, where=f"{path} row {number}")
    _check_extra_info_types(rows, path)
    indices = [row["extra_info"]["index"] for row in rows]
    if len(set(indices)) != len(indices):
        raise SchemaError(f"{path}: extra_info.index values are not unique")

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        try:
            table = pa.Table.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise SchemaError(f"{path}: rows cannot be stored as parquet: {exc}") from exc
        pq.write_table(table, temporary)
        _fsync(temporary)
        read_back = read_verl_parquet(temporary)
        if len(read_back) != len(rows):
            raise SchemaError(f"{path}: wrote {len(rows)} rows but read back {len(read_back)}")
        for number, (written, read) in enumerate(zip(rows, read_back)):
            if not _same_content(written, read):
                raise SchemaError(f"{path} row {number}: content read back differs from what was written")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def read_verl_parquet(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a verl parquet file into row dicts and validate each row (raises :class:`SchemaError`)."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SchemaError(f"{path}: not a readable parquet file: {exc}") from exc
    rows = table.to_pylist()
    for number, row in enumerate(rows):
        validate_row(row, where=f"{path} row {number}")
    return rows
