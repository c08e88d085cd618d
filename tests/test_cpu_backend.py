"""The CPU backend: inactive unless VERL_PLATFORM=cpu, and correct pieces when active."""

import json
import math
import os

import pytest
import torch
from erpo_testlib import run_python_together

from erpo_verl.integration.cpu.sampling import SampleRequest, filter_logits, sample_batch

PROBE = r"""
import json, os, sys
import verl
import verl.utils.distributed as dist
from torch.distributed.fsdp import CPUOffloadPolicy
from verl.plugin.platform import PlatformRegistry
from verl.workers.rollout import base, replica
from verl.utils.device import get_device_name, get_nccl_backend
from verl.trainer.ppo.v1.replay_buffer import ReplayBuffer, ReplayBufferAsync
buffer_args = dict(trainer_mode="sync", trainer_config={}, max_off_policy_threshold=None,
                   max_off_policy_strategy="drop", sampler_kwargs={})
print(json.dumps({
    "cpu_module_loaded": "erpo_verl.integration.cpu" in sys.modules,
    "dist_patched": getattr(dist.initialize_global_process_group_ray, "__erpo_touchpoint__", None) == "cpu.gloo_backend",
    "pin_memory": CPUOffloadPolicy().pin_memory,
    "cpu_platform": "cpu" in PlatformRegistry.registered_names(),
    "hf_rollout": ("hf", "async") in base._ROLLOUT_REGISTRY,
    "hf_replica": "hf" in replica.RolloutReplicaRegistry._registry,
    "device": get_device_name() if os.environ.get("VERL_PLATFORM") == "cpu" else None,
    "backend": get_nccl_backend() if os.environ.get("VERL_PLATFORM") == "cpu" else None,
    "engine_device": os.environ.get("VERL_ENGINE_DEVICE"),
    "poll_interval": [ReplayBuffer(**buffer_args).poll_interval, ReplayBufferAsync(**buffer_args).poll_interval,
                      ReplayBuffer(**buffer_args, poll_interval=3.0).poll_interval],
}))
"""


def _env(extra_env):
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_PLATFORM", "VERL_ENGINE_DEVICE")}
    env.update(extra_env)
    return env


@pytest.fixture(scope="module")
def probed():
    """The probe with CPU mode off and on: two fresh interpreters, started together."""
    return run_python_together({"off": (PROBE, _env({})), "cpu": (PROBE, _env({"VERL_PLATFORM": "cpu"}))})


def _state(out) -> dict:
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cpu_backend_leaves_verl_untouched_when_cpu_mode_is_off(probed):
    state = _state(probed["off"])
    assert state == {
        "cpu_module_loaded": False,
        "dist_patched": False,
        "pin_memory": True,
        "cpu_platform": False,
        "hf_rollout": False,
        "hf_replica": False,
        "device": None,
        "backend": None,
        "engine_device": None,
        "poll_interval": [2.0, 2.0, 3.0],  # verl's default
    }


def test_cpu_mode_registers_platform_patches_and_rollout(probed):
    state = _state(probed["cpu"])
    assert state == {
        "cpu_module_loaded": True,
        "dist_patched": True,
        "pin_memory": False,
        "cpu_platform": True,
        "hf_rollout": True,
        "hf_replica": True,
        "device": "cpu",
        "backend": "gloo",
        "engine_device": "cuda",
        "poll_interval": [0.1, 0.1, 3.0],  # cpu.replay_buffer_poll; an explicit value is kept
    }


def test_top_k_keeps_exactly_the_k_largest_logits():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0, 0.0]])
    kept = torch.isfinite(filter_logits(logits, top_k=2, top_p=1.0))
    assert kept.tolist() == [[False, True, True, False, False]]


def test_top_p_keeps_the_smallest_nucleus_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    # cumulative 0.5, 0.8, 0.95, 1.0: top_p=0.8 keeps the first two, 0.81 the first three
    assert torch.isfinite(filter_logits(logits, -1, 0.8)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(filter_logits(logits, -1, 0.81)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(filter_logits(logits, -1, 1.0)).all()


class _Bigram(torch.nn.Module):
    """A causal 'LM' whose next-token logits depend only on the last token (for exact log-prob checks)."""

    def __init__(self, table):
        super().__init__()
        self.table = torch.nn.Parameter(table, requires_grad=False)

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=True):
        class Out:
            pass

        out = Out()
        out.logits = self.table[input_ids]
        out.past_key_values = None
        return out


def _sample_one(model, prompt, budget, temperature=1.0, eos=(), generator=None):
    return sample_batch(model, [SampleRequest(prompt, budget, temperature, generator=generator)], eos)[0]


def test_sampling_returns_temperature_scaled_log_probs_and_stops_at_eos():
    torch.manual_seed(0)
    table = torch.randn(6, 6)
    model = _Bigram(table)
    gen = torch.Generator().manual_seed(3)
    tokens, log_probs, finish = _sample_one(model, [1, 2], 12, temperature=0.7, eos=[5], generator=gen)
    prev = [2] + tokens[:-1]
    for tok, lp, p in zip(tokens, log_probs, prev):
        assert math.isclose(lp, torch.log_softmax(table[p] / 0.7, -1)[tok].item(), rel_tol=1e-5)
    if 5 in tokens:
        assert tokens[-1] == 5 and tokens.count(5) == 1 and finish == "stop"
    else:
        assert len(tokens) == 12 and finish == "length"


def test_greedy_sampling_is_deterministic_and_seeded_sampling_reproducible():
    table = torch.randn(8, 8, generator=torch.Generator().manual_seed(1))
    model = _Bigram(table)
    greedy = _sample_one(model, [0], 6, temperature=0.0)
    assert greedy[0] == [int(table[p].argmax()) for p in [0] + greedy[0][:-1]]
    a = _sample_one(model, [0], 6, generator=torch.Generator().manual_seed(7))
    b = _sample_one(model, [0], 6, generator=torch.Generator().manual_seed(7))
    assert a == b


def test_sampling_rejects_a_non_positive_budget():
    with pytest.raises(ValueError, match="max_new_tokens"):
        _sample_one(_Bigram(torch.zeros(3, 3)), [0], 0)
