"""``erpo-verl``: the project's command line.

    erpo-verl demo   [--out DIR] [--steps N] [--estimators erpo,grpo]   train on CPU through verl, plot
    erpo-verl plot   RUN.jsonl [RUN2.jsonl ...] --out runs.png          compare runs side by side
    erpo-verl assets [--out DIR]                                        build the offline tiny model and toy data
    erpo-verl doctor [--no-ray] [--require-gpu]                         check versions, registration, hardware
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _plot(argv) -> int:
    from erpo_verl.tools.metrics_io import load_metrics
    from erpo_verl.tools.plotting import plot_runs

    parser = argparse.ArgumentParser(prog="erpo-verl plot", description="Plot metrics files of several runs.")
    parser.add_argument("files", nargs="+", help="metrics files: verl file-logger JSONL, flat JSONL or CSV; NAME=PATH to name a run")
    parser.add_argument("--out", default="runs.png", help="PNG to write (default: %(default)s)")
    parser.add_argument("--svg", action="store_true", help="also write an SVG next to the PNG")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    runs = {}
    for spec in args.files:
        name, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        path = Path(path)
        name = name or (path.parent.name if path.stem in ("metrics", "train") else path.stem)
        try:
            runs[name] = load_metrics(path)
        except (FileNotFoundError, ValueError) as exc:
            print(f"erpo-verl plot: {exc}", file=sys.stderr)
            return 2
        if not runs[name]:
            print(f"erpo-verl plot: {path} holds no step records", file=sys.stderr)
            return 2
    try:
        out = plot_runs(runs, args.out, title=args.title, svg=args.svg)
    except ValueError as exc:
        print(f"erpo-verl plot: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"demo", "plot", "assets", "doctor"}
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in commands:
        print(__doc__.strip())
        return 0 if argv and argv[0] in ("-h", "--help") else 2
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
