"""Why same-seed demo runs used to start from different step-1 rewards, and the setting that fixes it.

The ``hf`` rollout server draws tokens from one generator per replica unless verl's
``rollout.full_determinism`` is on; then each request gets its own generator keyed by (seed, step, prompt,
occurrence of that prompt in the step). verl's agent loop does not send requests in a fixed order, so only the
second is sample-for-sample reproducible across runs (docs/cpu.md, "Same seed, same step-1 samples").
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest


def _server(toy_assets, full_determinism: bool):
    from erpo_verl.integration.cpu.rollout import CPUHFServer

    config = SimpleNamespace(seed=1, full_determinism=full_determinism, prompt_length=64, response_length=16)
    server = CPUHFServer(config, SimpleNamespace(local_path=str(toy_assets["model"]), path=None), replica_rank=0)
    asyncio.run(server.set_global_steps(1))
    return server


def _serve(server, order: list[int]) -> dict[int, list[int]]:
    """Request i carries prompt [1, 2, 3, 4 + i] (distinct prompts, as in one step of the demo's data)."""
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1}
    return {
        i: asyncio.run(server.generate([1, 2, 3, 4 + i], dict(params), request_id="det-0")).token_ids for i in order
    }


@pytest.mark.parametrize("full_determinism", [False, True])
def test_request_order_changes_the_samples_only_without_full_determinism(toy_assets, full_determinism):
    forward = _serve(_server(toy_assets, full_determinism), [0, 1, 2, 3, 4, 5])
    backward = _serve(_server(toy_assets, full_determinism), [5, 4, 3, 2, 1, 0])
    same = [forward[i] == backward[i] for i in range(6)]
    if full_determinism:
        assert all(same)  # each request draws from its own (seed, step, id) stream
    else:
        assert not all(same)  # the shared stream hands the draws out in arrival order
    assert len({tuple(t) for t in forward.values()}) > 1  # the requests do differ from one another
