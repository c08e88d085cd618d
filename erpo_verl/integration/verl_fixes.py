"""Fixes of verl 0.9.1 bugs that the plugin's modes run into (each a touchpoint, see touchpoints.py)."""

from __future__ import annotations

import logging

from erpo_verl.integration.touchpoints import mark_applied


class _DropFlush(logging.LoggerAdapter):
    """verl 0.9.1's ``PPOTrainerSeparateAsync._setup`` calls ``logger.info(..., flush=True)`` when
    ``actor_rollout_ref.hybrid_engine=False``; ``logging`` has no ``flush`` argument, so the run dies in its set-up.
    This adapter drops the argument and logs the message."""

    def process(self, msg, kwargs):
        kwargs.pop("flush", None)
        return msg, kwargs


def tolerate_flush_in_separate_async_logger(module) -> None:
    """Post-import hook of ``verl.trainer.ppo.v1.trainer_separate_async`` (idempotent)."""
    if not isinstance(module.logger, _DropFlush):
        module.logger = _DropFlush(module.logger, {})
    mark_applied("fix.separate_async_logger_flush")
