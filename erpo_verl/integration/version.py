"""The runtime check of verl's version against the pin (``erpo_verl.VERL_VERSION``, REQUIRED_VERL.txt).

The ``erpo_sync`` trainer mode copies verl internals (``_compute_advantage``, TransferQueue field names); after
``pip install -U verl`` it could import fine and silently diverge from verl. So when the installed verl is not the
pinned one, registration is skipped (with an error in the log) and preflight / the trainer stop with
:class:`VerlVersionError`. ``ERPO_VERL_ALLOW_UNPINNED_VERL=1`` lets a person who has checked the touchpoints
(``erpo-verl doctor``) against the new verl go on, with a warning.
"""

from __future__ import annotations

import importlib.metadata as md
import logging
import os
import warnings

from erpo_verl import VERL_VERSION

ALLOW_ENV = "ERPO_VERL_ALLOW_UNPINNED_VERL"
logger = logging.getLogger(__name__)


class VerlVersionError(RuntimeError):
    """The installed verl is not the version erpo-verl is pinned to."""


def installed_verl_version() -> str | None:
    try:
        return md.version("verl")
    except md.PackageNotFoundError:
        return None


def unpinned_allowed() -> bool:
    return os.environ.get(ALLOW_ENV, "").strip().lower() in ("1", "true", "yes")


def version_message(installed: str | None) -> str:
    return (
        f"erpo-verl requires verl=={VERL_VERSION} (see REQUIRED_VERL.txt), but verl {installed or '(not installed)'} "
        f"is installed: erpo-verl copies verl internals that change between releases. Install the pinned version: "
        f'pip install "verl[verl-core]=={VERL_VERSION}", or, after checking every touchpoint listed by '
        f"`erpo-verl doctor` against the new verl, set {ALLOW_ENV}=1 to go on."
    )


def check_verl_version() -> bool:
    """True when the pinned verl is installed or the override is set (then warns); raises otherwise."""
    installed = installed_verl_version()
    if installed == VERL_VERSION:
        return True
    if unpinned_allowed():
        warnings.warn(f"{ALLOW_ENV}=1: running with verl {installed} instead of {VERL_VERSION}; results may "
                      "silently differ from the tested integration", RuntimeWarning, stacklevel=2)
        return True
    raise VerlVersionError(version_message(installed))


def version_ok_for_registration() -> bool:
    """The check for registration hooks: log (not raise, verl would swallow it) and skip on a mismatch."""
    try:
        return check_verl_version()
    except VerlVersionError as exc:
        logger.error("erpo-verl: not registering with verl: %s", exc)
        return False
