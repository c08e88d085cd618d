"""Shorten a verl run's console output for a terminal; keep every line in a log file.

    <verl command> 2>&1 | python -m erpo_verl.tools.logfilter --log OUT/train.log

Used by the recipes' ``PROFILE=cpu-tiny``. On the terminal it drops, and counts:

* verl's dump of the whole resolved config (``pprint`` of ~700 indented dict lines from the TaskRunner);
* a line seen before (same text once Ray's ``(Actor pid=N)`` prefix is removed): repeated warnings;
* progress-bar redraws (``Loading weights``, ``Generating ... split``) and verl's empty final validation line;
* verl's "engine is not available" warnings about optional engines (torchtitan, megatron, ...) and the
  libnuma notice, which say nothing about the run.

Everything else - steps, errors, tracebacks, our own messages - passes unchanged, and the file gets all of it.
The last line says how many lines were left out and where the full log is.
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;]*m")
RAY_PREFIX = re.compile(r"^\((?P<actor>[A-Za-z0-9_]+)(?: pid=\d+)?(?:, ip=[^)]*)?\)\s?")
CONFIG_DUMP = re.compile(r"^\s*(\{'|'[^']*'(:|,|\]|\}|$))")
NOISE = [
    re.compile(r"engine is not available: "),
    re.compile(r"warnings\.warn\(f\"\w+ engine is not available"),
    re.compile(r"Failed to set NUMA affinity: libnuma"),
    re.compile(r"^(Loading weights|Generating \w+ split|Map|Filter)\b.*(it/s|examples/s)"),
    re.compile(r"^'Final validation metrics: None'$"),
]


class LogFilter:
    """Decides line by line what reaches the terminal; counts what does not."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.last_hidden_dump = False
        self.hidden = 0
        self.total = 0

    def keep(self, line: str) -> bool:
        self.total += 1
        plain = ANSI.sub("", line.rstrip("\n"))
        match = RAY_PREFIX.match(plain)
        body = plain[match.end() :] if match else plain
        from_task_runner = bool(match and match.group("actor").startswith("TaskRunner"))
        # verl's pprint of the config: "{'actor_rollout_ref': ...", then "'key': value," / "'list item'," lines
        # (other actors' lines can come in between, so each line is judged on its own)
        if from_task_runner and (CONFIG_DUMP.match(body) or (not body.strip() and self.last_hidden_dump)):
            self.hidden += 1
            self.last_hidden_dump = True
            return False
        self.last_hidden_dump = False
        stripped = body.strip()
        if not stripped:
            return True
        if any(pattern.search(stripped) for pattern in NOISE):
            self.hidden += 1
            return False
        if "warn" in stripped.lower() or stripped.startswith("warnings.warn("):
            if stripped in self.seen:
                self.hidden += 1
                return False
            self.seen.add(stripped)
        return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m erpo_verl.tools.logfilter", description=__doc__.splitlines()[0])
    parser.add_argument("--log", required=True, type=Path, help="file that receives every line")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the run; we keep draining its last lines
    args.log.parent.mkdir(parents=True, exist_ok=True)
    kept = LogFilter()
    with open(args.log, "w", encoding="utf-8", errors="replace") as log:
        for line in sys.stdin:
            log.write(line)
            log.flush()
            if kept.keep(line):
                sys.stdout.write(line)
                sys.stdout.flush()
    if kept.hidden:
        print(f"[erpo] {kept.hidden} of {kept.total} lines not shown (verl's config dump, repeated warnings, "
              f"progress bars); full log: {args.log}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
