"""The opt-in marker for the ``erpo_sync`` advantage step's extra inputs (pure: no verl).

verl calls a registered advantage estimator with its own arguments (``token_level_rewards``, ``response_mask``,
``index``, ``config`` and, for some estimators, more that only verl's code fills in). The ``erpo_sync`` trainer
mode can instead call an estimator *directly* with the per-token tensors stock verl keeps to itself:
``old_entropy``, ``old_log_probs``, ``ref_log_prob`` (and a ``metrics`` dict to fill). It does so only for
estimators marked with :func:`accepts_extra_inputs`; which of the inputs one receives follows the parameters
its signature names. Every other estimator, verl's own included, goes through verl's code unchanged::

    from erpo_verl.estimators.inputs import accepts_extra_inputs
    from verl.trainer.ppo.core_algos import register_adv_est

    @register_adv_est("my_estimator")
    @accepts_extra_inputs
    def my_estimator(token_level_rewards, response_mask, index=None, config=None, old_entropy=None, metrics=None):
        ...

The marker is an attribute, so the decorator order relative to ``register_adv_est`` does not matter as long as
the marked object is the one registered.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

OPT_IN_ATTRIBUTE = "__erpo_extra_inputs__"

F = TypeVar("F", bound=Callable)


def accepts_extra_inputs(fn: F) -> F:
    """Mark ``fn`` as an estimator that the ``erpo_sync`` advantage step calls with the extra inputs it names."""
    setattr(fn, OPT_IN_ATTRIBUTE, True)
    return fn


def opted_in(fn: object) -> bool:
    """Whether ``fn`` carries the :func:`accepts_extra_inputs` marker."""
    return getattr(fn, OPT_IN_ATTRIBUTE, False) is True
