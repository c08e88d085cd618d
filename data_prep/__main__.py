"""Command line: ``python -m data_prep DATASET [options]`` (installed as ``erpo-data``).

Examples::

    erpo-data math --out ~/data/math                         # MATH train+test from the hub mirror
    erpo-data math --source ~/dl/MATH-lighteval/data --out ~/data/math     # offline, from a local copy
    erpo-data aime24 --out ~/data/aime24 --repeat 32 --prompt-format answer_line   # avg@32 eval set
    erpo-data dapo17k --source dapo-math-17k.parquet --out ~/data/dapo --prompt-format answer_line
    erpo-data custom --source mine.jsonl --question-field q --answer-field a --out ~/data/mine
    erpo-data countdown --out ~/data/countdown --num-train 4000 --num-test 32     # generated, offline

Exit status: 0 on success, 2 for bad options or bad input (a message says what and where), 130 if interrupted.
Nothing is written unless every requested split converted cleanly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from data_prep.converters import DATASETS
from data_prep.pipeline import DataPrepError, PrepareOptions, format_summary, prepare
from data_prep.schema import PROMPT_FORMATS, SchemaError
from data_prep.sources import SourceError

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="erpo-data",
        description="Write math datasets as verl parquet files (OUT/<split>.parquet) scored by erpo_verl.rewards.math.",
        epilog="Offline use: pass --source with a local copy. See docs/data.md for every dataset.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--source", type=Path, help="local file or directory to read instead of the Hugging Face hub")
    common.add_argument(
        "--out", type=Path, required=True, help="output directory; files are written as OUT/<split>.parquet"
    )
    common.add_argument(
        "--split", help="write only this split (for one file or a split-less directory: name its output)"
    )
    common.add_argument(
        "--prompt-format",
        choices=PROMPT_FORMATS,
        default="boxed",
        help="boxed: ask for \\boxed{answer}; answer_line: DAPO's prompt asking for a final 'Answer: ...' line",
    )
    common.add_argument(
        "--repeat", type=_positive_int, default=1, help="write each prompt N times (avg@N evaluation sets)"
    )
    common.add_argument("--limit", type=_positive_int, help="keep at most N prompts per split (after --shuffle)")
    common.add_argument("--seed", type=int, default=0, help="seed for --shuffle (default 0)")
    common.add_argument("--shuffle", action="store_true", help="shuffle prompts before --limit")
    common.add_argument(
        "--strict", action="store_true", help="stop with exit status 2 at the first bad row instead of skipping it"
    )
    common.add_argument("--overwrite", action="store_true", help="replace existing output files")
    common.add_argument(
        "--data-source", help="override the data_source value (keep the erpo/ prefix to route to our reward)"
    )
    common.add_argument("--keep-duplicates", action="store_true", help="keep repeated questions (default: drop them)")
    common.add_argument("--hub-id", help="load this Hugging Face dataset instead of the default mirror")
    common.add_argument("--hub-config", help="dataset config name on the hub")
    common.add_argument("--hub-split", help="hub split to load (output is named by --split or the dataset default)")
    progress = common.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress", dest="progress", action="store_true", default=None, help="always show a progress bar"
    )
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show a progress bar")

    subparsers = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    for name, spec in DATASETS.items():
        sub = subparsers.add_parser(name, parents=[common], help=spec.description, description=spec.description)
        if name == "custom":
            sub.add_argument(
                "--question-field",
                default="question",
                help="column holding the question (dots reach into nested dicts)",
            )
            sub.add_argument(
                "--answer-field",
                default="answer",
                help="column holding the answer (a \\boxed{} or #### solution is reduced to its answer)",
            )
    _add_countdown(subparsers)
    return parser


def _add_countdown(subparsers) -> None:
    """``countdown``: generated arithmetic puzzles (erpo_verl.tasks.countdown), no source, scored by its own reward."""
    from erpo_verl.tasks.countdown import CountdownConfig

    d = CountdownConfig()
    sub = subparsers.add_parser(
        "countdown",
        help="generated countdown puzzles (train/test, seeded, disjoint); reward pkg://erpo_verl.tasks.countdown",
        description="Countdown puzzles: reach a target from a few numbers with + - * /, each number once.",
    )
    sub.add_argument("--out", type=Path, required=True, help="writes OUT/train.parquet and OUT/test.parquet")
    sub.add_argument("--num-train", type=_positive_int, default=4000)
    sub.add_argument("--num-test", type=_positive_int, default=32)
    sub.add_argument("--seed", type=int, default=0)
    sub.add_argument("--num-count", type=int, default=d.num_count, help="numbers per puzzle (difficulty)")
    sub.add_argument("--max-number", type=int, default=d.max_number, help="numbers are drawn from 1..N")
    sub.add_argument("--target-min", type=int, default=d.target_min)
    sub.add_argument("--target-max", type=int, default=d.target_max)
    sub.add_argument("--min-solutions", type=int, default=d.min_solutions,
                     help="keep only targets with at least this many distinct solutions")


def _countdown(args) -> int:
    from erpo_verl.tasks.countdown import CountdownConfig, write_parquet

    try:
        config = CountdownConfig(num_count=args.num_count, max_number=args.max_number, target_min=args.target_min,
                                 target_max=args.target_max, min_solutions=args.min_solutions)
        written = write_parquet(args.out, args.num_train, args.num_test, args.seed, config)
    except ValueError as exc:
        print(f"erpo-data countdown: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for split, path in written["paths"].items():
        stats = written["stats"][split]
        print(f"{split}: {path} ({stats['prompts']} prompts, {stats['distinct_solutions_mean']:.2f} distinct "
              f"solutions per prompt on average)")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:  # argparse: --help (0) or a usage error (2); return it, don't raise
        return int(exit_request.code or 0)
    if args.dataset == "countdown":
        return _countdown(args)
    spec = DATASETS[args.dataset]
    options = PrepareOptions(
        out=args.out,
        source=args.source,
        split=args.split,
        prompt_format=args.prompt_format,
        repeat=args.repeat,
        limit=args.limit,
        seed=args.seed,
        shuffle=args.shuffle,
        strict=args.strict,
        overwrite=args.overwrite,
        question_field=getattr(args, "question_field", None),
        answer_field=getattr(args, "answer_field", None),
        data_source=args.data_source,
        keep_duplicates=args.keep_duplicates,
        hub_id=args.hub_id,
        hub_config=args.hub_config,
        hub_split=args.hub_split,
        progress=args.progress,
    )
    try:
        reports = prepare(spec, options)
    except (DataPrepError, SourceError, SchemaError, FileExistsError) as exc:
        print(f"erpo-data {args.dataset}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"erpo-data {args.dataset}: interrupted; no partial output file was left", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(format_summary(spec, reports))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
