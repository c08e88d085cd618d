"""From a dataset spec and options to verl parquet files: read, convert, deduplicate, sample, repeat, write.

Order of operations (the same for every dataset):

1. pick the source of each output split (local files or hub splits) and refuse early if an output exists
   and ``overwrite`` is off;
2. convert every row, skipping bad ones (and unreadable files) with a counted reason, or stopping at the
   first one under ``strict``;
3. drop repeated questions (DAPO-Math-17k holds each of its ~17k prompts ~100 times; DAPO's AIME-2024
   parquet holds each problem 32 times) - the first occurrence wins and conflicting answers are counted;
4. ``shuffle`` (seeded), then ``limit``;
5. ``repeat`` each prompt N times in a row for avg@N evaluation, all copies sharing one ``prompt_id``;
6. only after every split converted cleanly, write each file atomically (a failed run writes nothing).
"""

from __future__ import annotations

import random
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from data_prep.converters import DatasetSpec, Example, SkipRow, make_custom_converter
from data_prep.io import write_verl_parquet
from data_prep.schema import PROMPT_FORMATS, make_row
from data_prep.sources import (
    RawRecord,
    SourceError,
    count_rows,
    find_source_files,
    iter_file_records,
    iter_hub_records,
    split_of_file,
)

EXAMPLE_LOCATIONS_SHOWN = 5
UNREADABLE_FILE = "unreadable file"  # skip reason counted per file, not per row


class DataPrepError(ValueError):
    """Bad input or options: the message says what is wrong and where; the CLI exits with status 2."""


class StrictModeError(DataPrepError):
    """A row was skipped while ``--strict`` was given."""


@dataclass
class PrepareOptions:
    """What to prepare and how (mirrors the CLI flags; see ``python -m data_prep --help``)."""

    out: Path
    source: Path | None = None
    split: str | None = None
    prompt_format: str = "boxed"
    repeat: int = 1
    limit: int | None = None
    seed: int = 0
    shuffle: bool = False
    strict: bool = False
    overwrite: bool = False
    question_field: str | None = None
    answer_field: str | None = None
    data_source: str | None = None
    keep_duplicates: bool = False
    hub_id: str | None = None
    hub_config: str | None = None
    hub_split: str | None = None
    progress: bool | None = None  # None: show a progress bar only on a terminal


@dataclass
class SplitReport:
    """What happened to one output split; printed as the run summary."""

    split: str
    data_source: str = ""
    origins: list[str] = field(default_factory=list)
    rows_read: int = 0
    skipped: Counter = field(default_factory=Counter)
    skipped_at: dict[str, list[str]] = field(default_factory=dict)
    duplicates_removed: int = 0
    conflicting_duplicates: int = 0
    prompts: int = 0
    rows_written: int = 0
    output: Path | None = None

    def skip(self, reason: str, location: str) -> None:
        self.skipped[reason] += 1
        self.skipped_at.setdefault(reason, [])
        if len(self.skipped_at[reason]) < EXAMPLE_LOCATIONS_SHOWN:
            self.skipped_at[reason].append(location)


@dataclass
class _SplitSource:
    split: str
    files: list[Path] | None = None
    hub_split: str | None = None


def _validate_options(spec: DatasetSpec, options: PrepareOptions) -> None:
    if options.prompt_format not in PROMPT_FORMATS:
        raise DataPrepError(
            f"--prompt-format must be one of {', '.join(PROMPT_FORMATS)}, got {options.prompt_format!r}"
        )
    if options.repeat < 1:
        raise DataPrepError(f"--repeat must be >= 1, got {options.repeat}")
    if options.limit is not None and options.limit < 1:
        raise DataPrepError(f"--limit must be >= 1, got {options.limit}")
    if options.split is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", options.split):
        raise DataPrepError(f"--split must be a simple name (letters, digits, _ . -), got {options.split!r}")
    if spec.name == "custom" and options.source is None and options.hub_id is None:
        raise DataPrepError("custom needs --source PATH (a local file or directory) or --hub-id")


def _plan_local(spec: DatasetSpec, options: PrepareOptions) -> list[_SplitSource]:
    root = Path(options.source).expanduser()
    files = find_source_files(root)
    by_split: dict[str, list[Path]] = {}
    unlabelled: list[Path] = []
    for path in files:
        split = split_of_file(path, root if root.is_dir() else None)
        (by_split.setdefault(split, []) if split else unlabelled).append(path)

    if options.split is not None:
        chosen = by_split.get(options.split)
        if chosen is None:
            if root.is_file() or not by_split:
                chosen = files  # one file, or a directory whose files name no split: all of it is this split
            else:
                raise DataPrepError(
                    f"--source {root} has no files for split {options.split!r} (found: {', '.join(sorted(by_split))})"
                )
        return [_SplitSource(options.split, files=chosen)]

    if len(spec.default_splits) == 1:
        return [_SplitSource(spec.default_splits[0], files=files)]
    found = [split for split in spec.default_splits if split in by_split]
    if unlabelled or not found:
        names = ", ".join(str(path) for path in (unlabelled or files)[:3])
        raise DataPrepError(
            f"cannot tell which split of {spec.name} ({'/'.join(spec.default_splits)}) these files hold: {names}; "
            "name them after the split (train.parquet, test.jsonl, ...) or pass --split"
        )
    return [_SplitSource(split, files=by_split[split]) for split in found]


def _plan_hub(spec: DatasetSpec, options: PrepareOptions) -> list[_SplitSource]:
    if options.hub_split is not None:
        return [_SplitSource(options.split or spec.default_splits[0], hub_split=options.hub_split)]
    if options.split is not None:
        return [_SplitSource(options.split, hub_split=spec.hub_splits.get(options.split, options.split))]
    return [_SplitSource(split, hub_split=spec.hub_splits[split]) for split in spec.default_splits]


def _records(spec: DatasetSpec, options: PrepareOptions, plan: _SplitSource, report: SplitReport):
    if plan.files is not None:
        for path in plan.files:
            report.origins.append(str(path))
            try:
                yield from iter_file_records(path)
            except SourceError as error:  # rows read before the error are kept
                if options.strict:
                    raise StrictModeError(f"{error}; rerun without --strict to skip unreadable files") from error
                report.skip(UNREADABLE_FILE, str(error))
    else:
        hub_id = options.hub_id or spec.hub_id
        config = options.hub_config if options.hub_config is not None else spec.hub_config
        report.origins.append(f"hf://{hub_id}[{plan.hub_split}]")
        yield from iter_hub_records(hub_id, config, plan.hub_split)


def _progress(iterable, total, description: str, enabled: bool | None):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return iterable
    return tqdm(
        iterable,
        total=total,
        desc=description,
        unit=" rows",
        file=sys.stderr,
        disable=None if enabled is None else not enabled,
        mininterval=0.5,
    )


def _question_key(question: str) -> str:
    return " ".join(question.split())


def _convert_split(spec: DatasetSpec, options: PrepareOptions, plan: _SplitSource, report: SplitReport):
    converter = spec.convert
    if spec.name == "custom" or options.question_field or options.answer_field:
        converter = make_custom_converter(options.question_field or "question", options.answer_field or "answer")
    total = None
    if plan.files is not None:
        counts = [count_rows(path) for path in plan.files]
        total = sum(counts) if all(c is not None for c in counts) else None

    examples: list[tuple[RawRecord, Example]] = []
    first_seen: dict[str, int] = {}
    fields_seen: set[str] = set()
    records = _progress(_records(spec, options, plan, report), total, f"{spec.name}/{plan.split}", options.progress)
    for record in records:
        report.rows_read += 1
        try:
            if record.data is None:
                raise SkipRow(f"unparsable row: {record.error}")
            if len(fields_seen) < 200:
                fields_seen.update(record.data)
            example = converter(record.data)
        except SkipRow as skip:
            if options.strict:
                where = f" (field {skip.field!r})" if skip.field else ""
                raise StrictModeError(
                    f"{record.location}: {skip.reason}{where}; rerun without --strict to skip such rows"
                ) from None
            report.skip(skip.reason, record.location)
            continue
        key = _question_key(example.question)
        if not options.keep_duplicates and key in first_seen:
            report.duplicates_removed += 1
            if examples[first_seen[key]][1].answer != example.answer:
                report.conflicting_duplicates += 1
            continue
        first_seen[key] = len(examples)
        examples.append((record, example))

    if not examples:
        detail = "; ".join(
            f"{count} x {reason} (first at {report.skipped_at[reason][0]})"
            for reason, count in report.skipped.most_common(3)
        )
        fields = f"; fields present: {', '.join(sorted(map(str, fields_seen))[:20])}" if fields_seen else ""
        raise DataPrepError(
            f"{spec.name}/{plan.split}: no usable rows in {', '.join(report.origins) or 'the source'} "
            f"({report.rows_read} read{': ' + detail if detail else ''}{fields})"
        )
    return examples


def _build_rows(spec: DatasetSpec, options: PrepareOptions, split: str, examples, report: SplitReport) -> list[dict]:
    if options.shuffle:
        random.Random(options.seed).shuffle(examples)
    if options.limit is not None:
        examples = examples[: options.limit]
    data_source = options.data_source or spec.data_source
    rows = []
    for prompt_number, (record, example) in enumerate(examples):
        prompt_id = f"{spec.name}/{split}/{prompt_number}"
        for repeat_index in range(options.repeat):
            extra = dict(example.extra)
            extra.update(dataset=spec.name, prompt_id=prompt_id, repeat_index=repeat_index, source_row=record.location)
            rows.append(
                make_row(
                    example.question,
                    example.answer,
                    data_source=data_source,
                    split=split,
                    index=len(rows),
                    prompt_format=options.prompt_format,
                    extra=extra,
                )
            )
    report.prompts = len(examples)
    report.rows_written = len(rows)
    return rows


def prepare(spec: DatasetSpec, options: PrepareOptions) -> list[SplitReport]:
    """Convert ``spec``'s data per ``options`` and write ``OUT/<split>.parquet`` for each split.

    Raises:
        DataPrepError / StrictModeError: bad options or input (nothing is written).
        SourceError: a source cannot be read (nothing is written).
        FileExistsError: an output exists and ``overwrite`` is off (checked before any work).
    """
    _validate_options(spec, options)
    out = Path(options.out).expanduser()
    plans = _plan_local(spec, options) if options.source is not None else _plan_hub(spec, options)
    if not options.overwrite:
        for plan in plans:
            target = out / f"{plan.split}.parquet"
            if target.exists():
                raise FileExistsError(f"{target} already exists; pass --overwrite to replace it")

    reports, all_rows = [], []
    for plan in plans:
        report = SplitReport(plan.split, data_source=options.data_source or spec.data_source)
        examples = _convert_split(spec, options, plan, report)
        all_rows.append(_build_rows(spec, options, plan.split, examples, report))
        reports.append(report)
    for report, rows in zip(reports, all_rows):
        report.output = write_verl_parquet(rows, out / f"{report.split}.parquet", overwrite=options.overwrite)
    return reports


def format_summary(spec: DatasetSpec, reports: list[SplitReport]) -> str:
    """The end-of-run summary: counts per split, skip reasons with example locations, output paths."""
    origins = sorted({origin for report in reports for origin in report.origins})
    shown = ", ".join(origins[:3]) + (f" and {len(origins) - 3} more" if len(origins) > 3 else "")
    lines = [f"{spec.name}: data_source={reports[0].data_source}; read from {shown}"]
    header = f"  {'split':<12}{'read':>9}{'skipped':>9}{'dupes':>9}{'prompts':>9}{'rows':>9}  output"
    lines.append(header)
    for report in reports:
        lines.append(
            f"  {report.split:<12}{report.rows_read:>9}{sum(report.skipped.values()):>9}{report.duplicates_removed:>9}"
            f"{report.prompts:>9}{report.rows_written:>9}  {report.output}"
        )
    for report in reports:
        for reason, count in report.skipped.most_common():
            shown = ", ".join(report.skipped_at[reason])
            more = ", ..." if count > len(report.skipped_at[reason]) else ""
            unit = "file(s)" if reason == UNREADABLE_FILE else "row(s)"
            lines.append(f"  skipped {count} {unit} in {report.split}: {reason} (at {shown}{more})")
        if report.duplicates_removed:
            conflict = (
                f", {report.conflicting_duplicates} of them with a different answer (first one kept)"
                if report.conflicting_duplicates
                else ""
            )
            lines.append(f"  removed {report.duplicates_removed} duplicate question(s) in {report.split}{conflict}")
    return "\n".join(lines)
