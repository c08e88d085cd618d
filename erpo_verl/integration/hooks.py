"""Run a callback right after a module is imported ("post-import hook").

verl loads our plugin on every ``import verl`` — in the driver, the TaskRunner and ~15 Ray worker processes.
Importing verl's trainer and algorithm modules there eagerly would add seconds to each process, so we
register into them at the moment (and in the process) where they are first imported. The callback runs
after the module body and before the importer receives the module, so nobody can look up a registry
before our names are in it. If the module is already imported, the callback runs at once.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable
from types import ModuleType

_lock = threading.RLock()
_pending: dict[str, list[Callable[[ModuleType], None]]] = {}


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """A meta-path finder that only wraps the loaders of modules with pending callbacks."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in _pending:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original_exec = loader.exec_module

        def exec_module(module: ModuleType) -> None:
            original_exec(module)
            _run_callbacks(fullname, module)

        # a per-spec shim: the loader object may be shared, so do not patch it in place
        spec.loader = _LoaderShim(loader, exec_module)
        return spec


class _LoaderShim(importlib.abc.Loader):
    def __init__(self, loader, exec_module):
        self._loader = loader
        self._exec_module = exec_module

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._exec_module(module)

    def __getattr__(self, name):  # get_source, is_package, get_filename, ... for tracebacks and inspect
        return getattr(self._loader, name)


_finder = _PostImportFinder()


def _run_callbacks(name: str, module: ModuleType) -> None:
    with _lock:
        callbacks = _pending.pop(name, [])
    for callback in callbacks:
        callback(module)


def after_import(module_name: str, callback: Callable[[ModuleType], None]) -> None:
    """Call ``callback(module)`` once ``module_name`` is imported (now, if it already is)."""
    with _lock:
        module = sys.modules.get(module_name)
        if module is None:
            _pending.setdefault(module_name, []).append(callback)
            if _finder not in sys.meta_path:
                sys.meta_path.insert(0, _finder)
                from erpo_verl.integration.touchpoints import mark_applied

                mark_applied("hook.post_import")
            return
    callback(module)
