"""The ``erpo-verl`` command line (its help text is :data:`HELP`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = """\
usage: erpo-verl COMMAND [options]      (erpo-verl COMMAND --help for a command's options)

commands:
  demo    train ERPO and GRPO through verl's real trainer on CPU with a tiny model; plot them
          erpo-verl demo [--out DIR] [--steps N] [--estimators erpo,grpo] [--seed S]
  plot    draw per-step metrics of runs side by side (verl JSONL, CSV, TensorBoard event files)
          erpo-verl plot [NAME=]PATH [[NAME=]PATH ...] [--out runs.png]
  assets  build the offline tiny model, tokenizer and toy data set
          erpo-verl assets [--out DIR]
  doctor  check versions against the pins, plugin registration (driver and Ray worker), GPU and vLLM
          erpo-verl doctor [--no-ray] [--require-gpu]

Related commands: erpo-data (prepare data sets), erpo-eval (benchmark tables from generations)."""


def _plot(argv) -> int:
    from erpo_verl.tools.metrics_io import load_runs
    from erpo_verl.tools.plotting import plot_runs

    parser = argparse.ArgumentParser(
        prog="erpo-verl plot",
        description="Plot per-step metrics of one or more runs side by side (one colour per run in every panel).",
        epilog="Formats: verl's file logger JSONL (trainer.logger=[...,file]), flat JSONL, CSV with a 'step' column "
        "(a 'run' column splits it into runs, as in the demo's metrics.csv), and TensorBoard event files "
        "(trainer.logger=[...,tensorboard]: an events.out.tfevents.* file or its folder). "
        "Example: erpo-verl plot a=runA/metrics.jsonl b=tensorboard_log/proj/b --out runs.png",
    )
    parser.add_argument("files", nargs="+", metavar="[NAME=]PATH", help="metrics file or TensorBoard folder; NAME= names the run")
    parser.add_argument("--out", default="runs.png", help="PNG to write (default: %(default)s)")
    parser.add_argument("--svg", action="store_true", help="also write an SVG next to the PNG")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    runs = {}
    for spec in args.files:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path = Path(path)
        default = path.name if path.is_dir() else (path.parent.name if path.stem in ("metrics", "train") or path.name.startswith("events.out.tfevents.") else path.stem)
        try:
            found = load_runs(path) if path.exists() else None
        except ValueError as exc:
            print(f"erpo-verl plot: {exc}", file=sys.stderr)
            return 2
        if found is None:
            print(f"erpo-verl plot: no metrics file at {path}", file=sys.stderr)
            return 2
        for run_name, records in found.items():
            # a file with a 'run' column: its runs keep their names (prefixed with NAME/ if given)
            key = (f"{name}/{run_name}" if name else run_name) if run_name else (name or default)
            if not records:
                print(f"erpo-verl plot: {path} holds no step records" + (f" for run {run_name}" if run_name else ""), file=sys.stderr)
                return 2
            if key in runs:
                print(f"erpo-verl plot: two runs are named {key!r}; name them with NAME=PATH", file=sys.stderr)
                return 2
            runs[key] = records
    try:
        out = plot_runs(runs, args.out, title=args.title, svg=args.svg)
    except ValueError as exc:
        print(f"erpo-verl plot: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({len(runs)} runs: {', '.join(runs)})")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"demo", "plot", "assets", "doctor"}
    if not argv or argv[0] in ("-h", "--help"):
        print(HELP)
        return 0 if argv else 2
    if argv[0] not in commands:
        print(f"erpo-verl: unknown command {argv[0]!r}; choose from {', '.join(sorted(commands))}\n\n{HELP}",
              file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "demo":
        from erpo_verl.tools.demo import main as demo_main

        return demo_main(rest)
    if command == "doctor":
        from erpo_verl.tools.doctor import main as doctor_main

        return doctor_main(rest)
    if command == "assets":
        from erpo_verl.toy.assets import main as assets_main

        return assets_main(rest)
    return _plot(rest)


if __name__ == "__main__":
    raise SystemExit(main())
