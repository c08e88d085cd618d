"""Worker process for symbolic answer comparison (run as ``python -m erpo_verl.rewards._symbolic_worker``).

Protocol: one JSON object per line on stdin, one JSON reply per line on stdout.

* On start the worker imports math-verify and writes ``{"ready": true}`` (or ``{"ready": false, "error": ...}``).
* Request: ``{"id": int, "pred": str, "gold": str, "soft_timeout_s": float}``.
* Reply: ``{"id": int, "verdict": "equal" | "not_equal" | "timeout" | "error", "detail": str}``.

Why a separate process: math-verify's own timeout uses ``signal.alarm``, which works only in the main thread
of the main interpreter, and sympy can spend unbounded time (or memory) on hostile expressions such as
``10^{10^{10}}``. Here the worker runs in its own main thread, calls math-verify with its timeouts disabled,
and enforces two limits of its own:

* a soft deadline: ``signal.setitimer`` raises :class:`SoftDeadline` (a ``BaseException``, so the broad
  ``except Exception`` clauses inside math-verify and sympy cannot swallow it) - the worker survives;
* the hard deadline belongs to the parent, which kills this process if no reply arrives in time (a long
  C-level bignum operation does not see signals).

An address-space limit turns runaway memory use into a ``MemoryError`` instead of an OOM kill of the host.
The worker exits when its stdin closes, i.e. when the parent goes away.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from functools import lru_cache


class SoftDeadline(BaseException):
    """Raised by the interval timer when one comparison has used up its soft time budget."""


def _on_alarm(signum, frame):
    raise SoftDeadline()


def _current_address_space() -> int:
    """Bytes of virtual memory in use now (Linux), so the limit is headroom on top of the imports."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _limit_address_space(limit_mb: int) -> None:
    """Allow ``limit_mb`` MB of address space beyond what the worker uses after importing math-verify."""
    if limit_mb <= 0:
        return
    try:
        import resource

        limit = _current_address_space() + limit_mb * 1024 * 1024
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, ValueError, OSError):  # not fatal: the parent's hard deadline still applies
        pass


def _write(stream, message: dict) -> None:
    stream.write((json.dumps(message) + "\n").encode("ascii"))
    stream.flush()


def main() -> int:
    out = sys.stdout.buffer
    # Keep stdout for the protocol only: anything a library prints goes to stderr.
    sys.stdout = sys.stderr
    try:
        from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
    except Exception as exc:  # pragma: no cover - exercised only without math-verify installed
        _write(out, {"ready": False, "error": f"cannot import math_verify: {exc!r}"})
        return 1
    # math-verify warns once that its timeout is disabled; that is deliberate here.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    _limit_address_space(int(os.environ.get("ERPO_SYMBOLIC_MEMORY_MB", "4096")))
    signal.signal(signal.SIGALRM, _on_alarm)
    gold_config = [LatexExtractionConfig()]
    pred_config = [LatexExtractionConfig(), ExprExtractionConfig()]

    @lru_cache(maxsize=4096)
    def parse_gold(gold: str):
        return parse("\\boxed{" + gold + "}", extraction_config=gold_config, parsing_timeout=None)

    def compare(pred: str, gold: str) -> bool:
        gold_parsed = parse_gold(gold)
        if not gold_parsed:
            return False
        pred_parsed = parse("\\boxed{" + pred + "}", extraction_config=pred_config, parsing_timeout=None)
        if not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))

    _write(out, {"ready": True, "pid": os.getpid()})
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            return 0
        try:
            request = json.loads(line)
            request_id = request["id"]
        except (ValueError, KeyError, TypeError) as exc:
            _write(out, {"id": None, "verdict": "error", "detail": f"bad request: {exc!r}"})
            continue
        soft_timeout = float(request.get("soft_timeout_s") or 0)
        try:
            if soft_timeout > 0:
                signal.setitimer(signal.ITIMER_REAL, soft_timeout)
            try:
                verdict = "equal" if compare(str(request["pred"]), str(request["gold"])) else "not_equal"
                detail = ""
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except SoftDeadline:
            verdict, detail = "timeout", "soft deadline"
        except MemoryError:
            verdict, detail = "timeout", "memory limit"
        except RecursionError:
            verdict, detail = "error", "recursion limit"
        except Exception as exc:  # a parser bug must not take the worker down
            verdict, detail = "error", type(exc).__name__
        _write(out, {"id": request_id, "verdict": verdict, "detail": detail})


if __name__ == "__main__":
    sys.exit(main())
