"""A test-only execution trace: which process, Ray node and FSDP rank ran which of our registered pieces.

Off unless ``ERPO_TRACE_DIR`` names a directory (the multi-node test sets it; it reaches every Ray worker
through the raylets' environment). Each event is one JSON line in ``<dir>/<event>.<pid>.jsonl`` with the
process id, the Ray node id (None outside Ray), ``RANK`` and the event's own fields. When the variable is
unset, :func:`record` is one environment lookup. verl is not imported at module level.

Events:

* ``plugin.registered`` — the plugin's registration ran in this process (on ``import`` of verl's
  ``core_algos``): which of our estimators verl's registry resolves to our functions, and whether the ``aer``
  loss is registered.
* ``advantage`` — the ``erpo_sync`` trainer computed a step's advantages: the estimator name, the function
  verl's registry returned for it, and the ``erpo/`` metrics the estimator filled.
* ``loss.aer`` — the AER actor loss ran (in an actor worker, once per micro-batch).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

ENV = "ERPO_TRACE_DIR"


def _node_id() -> str | None:
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - a trace must never break a run
        pass
    return None


def record(event: str, **fields: Any) -> None:
    folder = os.environ.get(ENV)
    if not folder:
        return
    entry = {"event": event, "pid": os.getpid(), "node_id": _node_id(), "rank": os.environ.get("RANK"),
             "time": time.time(), **fields}
    try:
        path = Path(folder) / f"{event}.{os.getpid()}.jsonl"
        with path.open("a") as fh:
            fh.write(json.dumps(entry, default=str) + "\n")
    except OSError:
        pass


def _qualname(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def record_registration(core_algos) -> None:
    """After the plugin registered into ``core_algos``: what this process's registries resolve to."""
    if not os.environ.get(ENV):
        return
    from erpo_verl.estimators import ESTIMATORS

    ours = sorted(name for name, (fn, _) in ESTIMATORS.items() if core_algos.ADV_ESTIMATOR_REGISTRY.get(name) is fn)
    loss = core_algos.POLICY_LOSS_REGISTRY.get("aer")
    record("plugin.registered", estimators=ours, aer_loss=_qualname(loss) if loss is not None else None)


def record_advantage(config, metrics: dict) -> None:
    """After the ``erpo_sync`` trainer's advantage step (in the trainer process)."""
    if not os.environ.get(ENV):
        return
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn  # already imported in the trainer process

    name = str(config.algorithm.adv_estimator)
    try:
        fn = _qualname(get_adv_estimator_fn(name))
    except ValueError:
        fn = None
    trainer_mode = str(config.trainer.get("v1", {}).get("trainer_mode", ""))
    record("advantage", estimator=name, fn=fn, trainer_mode=trainer_mode,
           erpo_metrics=sorted(k for k in metrics if str(k).startswith("erpo/")))


def read(folder: str | Path) -> list[dict[str, Any]]:
    """Every event in ``folder``, oldest first."""
    events = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if line.strip():
                events.append(json.loads(line))
    return sorted(events, key=lambda e: e["time"])
