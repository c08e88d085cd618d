"""A CPU rollout for verl's v1 trainer: Hugging Face forward passes behind verl's rollout-server interface.

verl 0.9.1 only accepts server rollouts (vLLM, SGLang, TensorRT-LLM); its old ``hf`` rollout is not wired
into the trainer (docs/cpu.md, failure #9). Three pieces plug a CPU one in, under the
rollout name ``hf`` (``actor_rollout_ref.rollout.name=hf``):

* :class:`CPUHFServer` — a Ray actor per replica holding a float32 copy of the policy. ``generate`` is
  token-in/token-out like vLLM's server (temperature, top-p, top-k, response-length cap, log-probs).
* :class:`CPUHFServerAdapter` — the ``BaseRollout`` living in each actor worker. After every step verl's
  colocated ("naive") weight sync hands it the trained weights; the replica leader pushes them to its
  server, so the next rollout samples from the updated policy.
* :class:`CPUHFReplica` — the ``RolloutReplica`` that launches the server: in hybrid mode (the actor workers'
  replicas: sync and colocate_async) or standalone (separate_async: rollout workers of their own, which receive
  the weights through the ``cpu_gloo`` checkpoint engine, :mod:`.checkpoint_engine`).

Partial rollouts (the async modes): ``abort_all_requests`` pauses the server — requests not yet started wait,
the batch being generated finishes (a CPU forward pass cannot be preempted) — and ``resume_generation`` serves
the waiting ones with whatever weights arrived in between. So on CPU every trajectory is generated with one
weight version (``training/off_policy/trajectory_spans`` is 1); staleness comes from samples generated before
a weight update and trained on after it.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import os
import time
from typing import Any

import ray
import torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from erpo_verl.integration.cpu.sampling import SampleRequest, sample_batch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutMode, RolloutReplica, TokenOutput

logger = logging.getLogger(__name__)



def server_actor_name(replica_rank: int, suffix: str = "") -> str:
    return f"erpo_cpu_hf_server_{replica_rank}{suffix}"


class CPUHFServer:
    """One rollout replica's generation server (a Ray actor, no GPU, no CPU reservation)."""

    def __init__(self, config: Any, model_config: Any, replica_rank: int) -> None:
        from transformers import AutoModelForCausalLM

        self.config = config
        self.replica_rank = replica_rank
        path = getattr(model_config, "local_path", None) or model_config.path
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="sdpa")
        self.model.eval()
        eos = self.model.generation_config.eos_token_id
        self.eos_token_ids = [eos] if isinstance(eos, int) else list(eos or [])
        self.seed = int(getattr(config, "seed", 0) or 0)
        self.generator = torch.Generator().manual_seed(self.seed + replica_rank)
        # verl's rollout.full_determinism: each request draws from its own generator seeded by (seed, step,
        # prompt, k) where k counts earlier requests with the same prompt in this step, so a group's samples do
        # not depend on the order in which its requests arrive. (verl's own key, request id "det-<priority>",
        # is the same for every sample in the v1 trainer, whose agent loop sets no priority.) verl then routes
        # all requests to one replica (hash of that id), so any FSDP layout samples the same groups as long
        # as a step's prompts are distinct (tests/test_cpu_layouts.py); prompts that repeat within a step may
        # swap samples between their groups.
        self.full_determinism = bool(getattr(config, "full_determinism", False))
        self._occurrences: dict[tuple[int, ...], int] = {}
        self._occurrence_step: int | None = None
        self.global_steps: int | None = None
        self.weight_version = 0
        # Requests in flight together are served as one batch (one forward pass per token for all of them), up to
        # verl's rollout.max_num_seqs rows, the same cap vLLM applies; max_num_seqs=1 serves them one at a time.
        # Each row still draws from its own stream, so batching changes the speed, not the samples.
        self.max_batch = max(1, int(getattr(config, "max_num_seqs", 256) or 256))
        self.pad_token_id = int(getattr(self.model.config, "pad_token_id", None) or 0)
        self._queue: list[tuple[SampleRequest, asyncio.Future]] = []
        self._drainer: asyncio.Task | None = None
        self.batch_sizes: list[int] = []  # served batch sizes, for tests and diagnostics
        self.paused = False  # abort_all_requests .. resume_generation (partial rollouts of the async modes)
        self.pauses = 0
        torch.set_num_threads(max(1, int(os.environ.get("ERPO_CPU_ROLLOUT_THREADS", "1"))))

    # -- generation -------------------------------------------------------------------------------------
    async def generate(
        self, prompt_ids: list[int], sampling_params: dict[str, Any], request_id: str, **kwargs: Any
    ) -> TokenOutput:
        params = dict(sampling_params)
        prompt_len, response_len = int(self.config.prompt_length), int(self.config.response_length)
        max_tokens = params.pop("max_tokens", params.pop("max_new_tokens", None))
        if max_tokens is None:
            max_tokens = min(response_len, prompt_len + response_len - len(prompt_ids))
        max_tokens = max(1, min(int(max_tokens), response_len))
        request = SampleRequest(
            prompt_ids=list(prompt_ids),
            max_new_tokens=max_tokens,
            temperature=float(params.get("temperature", 1.0)),
            top_p=float(params.get("top_p", 1.0)),
            top_k=int(params.get("top_k", -1) or -1),
            generator=self._generator_for(prompt_ids),  # before any await: occurrences count in arrival order
        )
        future = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        self._start_drainer()
        token_ids, log_probs, finish = await future
        return TokenOutput(
            token_ids=token_ids,
            log_probs=log_probs if params.get("logprobs") else None,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps, "finish_reason": finish},
        )

    def _start_drainer(self) -> None:
        if not self.paused and (self._drainer is None or self._drainer.done()):
            self._drainer = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        """Serve the queue in batches until it is empty or the server is paused."""
        while self._queue and not self.paused:
            # yield once so that the requests verl sends together (a step's whole batch) join this one
            await asyncio.sleep(0.005)
            batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch:]
            try:
                results = sample_batch(self.model, [request for request, _ in batch], self.eos_token_ids,
                                       pad_token_id=self.pad_token_id)
            except Exception as error:  # every waiting request gets the error, none hangs
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.batch_sizes.append(len(batch))
            for (_, future), result in zip(batch, results):
                if not future.done():
                    future.set_result(result)

    def _generator_for(self, prompt_ids: list[int]) -> torch.Generator:
        if not self.full_determinism:
            return self.generator
        if self._occurrence_step != self.global_steps:
            self._occurrences, self._occurrence_step = {}, self.global_steps
        prompt = tuple(int(t) for t in prompt_ids)
        k = self._occurrences.get(prompt, 0)
        self._occurrences[prompt] = k + 1  # no await before this: requests are counted in arrival order
        key = f"{self.seed}:{self.global_steps}:{k}:{','.join(map(str, prompt))}".encode()
        return torch.Generator().manual_seed(int.from_bytes(hashlib.sha256(key).digest()[:8], "little") >> 1)

    # -- weights ----------------------------------------------------------------------------------------
    async def load_weights(self, state_dict: dict[str, torch.Tensor]) -> int:
        """Copy the trained weights into the server's model; returns how many tensors were loaded."""
        own = self.model.state_dict()
        unknown = sorted(set(state_dict) - set(own))
        if unknown:
            raise ValueError(f"CPU rollout received weights the model does not have: {unknown[:5]}")
        with torch.no_grad():
            for name, tensor in state_dict.items():
                own[name].copy_(tensor.to(own[name].dtype))
        self.weight_version += 1
        return len(state_dict)

    async def get_weight_version(self) -> int:
        return self.weight_version

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = global_steps

    async def get_server_address(self) -> tuple[str, int]:
        return "127.0.0.1", 0

    # -- lifecycle calls verl makes on every rollout server; nothing to free on a CPU --------------------
    async def wake_up(self, tags: list[str] | None = None) -> None:
        return None

    async def sleep(self) -> None:
        return None

    async def clear_kv_cache(self) -> None:
        return None

    async def release_kv_cache(self) -> None:
        return None

    async def resume_kv_cache(self) -> None:
        return None

    async def wait_for_requests_to_drain(self) -> None:
        return None

    async def abort_all_requests(self, reject_request: bool = False, **kwargs: Any) -> dict[str, Any]:
        # Pause: nothing is aborted half-way (see the module docstring); requests arriving now wait too
        # (reject_request is not implemented: they are parked, as verl does for backends that cannot reject).
        self.paused = True
        self.pauses += 1
        return {"aborted_count": 0, "request_ids": []}

    async def abort_request(self, request_id: str, **kwargs: Any) -> dict[str, Any]:
        return {"aborted": False, "request_id": request_id}

    async def resume_generation(self) -> None:
        self.paused = False
        self._start_drainer()

    async def get_pauses(self) -> int:
        return self.pauses

    async def start_profile(self, **kwargs: Any) -> None:
        return None

    async def stop_profile(self) -> None:
        return None


class CPUHFServerAdapter(BaseRollout):
    """The rollout object inside each actor worker: forwards the trained weights to the replica's server."""

    def __init__(self, config, model_config, device_mesh, replica_rank: int = -1, **kwargs: Any):
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        world = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // world if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % world
        self.is_leader_rank = self.rollout_rank == 0
        self._server = None

    def _server_handle(self):
        if self._server is None:
            self._server = ray.get_actor(server_actor_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    @torch.no_grad()
    async def update_weights(self, weights, global_steps: int | None = None, wire_format: str = "named_tensors", **kwargs):
        if wire_format != "named_tensors":
            raise ValueError(f"the CPU rollout receives full tensors only, not wire_format={wire_format!r}")
        start = time.time()
        state: dict[str, torch.Tensor] = {}
        # every rank must walk the generator: it may gather sharded parameters collectively
        if inspect.isasyncgen(weights):
            async for name, tensor in weights:
                state[name] = _to_full_cpu(tensor)
        else:
            for name, tensor in weights:
                state[name] = _to_full_cpu(tensor)
        if self.is_leader_rank:
            server = self._server_handle()
            await server.load_weights.remote(state)
            if global_steps is not None:
                await server.set_global_steps.remote(global_steps)
            logger.info("[cpu-hf] pushed %d tensors to replica %d in %.2fs", len(state), self.replica_rank, time.time() - start)


def _to_full_cpu(tensor: torch.Tensor) -> torch.Tensor:
    if hasattr(tensor, "full_tensor"):  # DTensor (FSDP2 shard)
        tensor = tensor.full_tensor()
    return tensor.detach().to("cpu", copy=True)


class CPUHFReplica(RolloutReplica):
    """A rollout replica whose server is a :class:`CPUHFServer` actor (hybrid or standalone mode)."""

    async def launch_servers(self) -> None:
        if self.rollout_mode not in (RolloutMode.HYBRID, RolloutMode.STANDALONE):
            raise ValueError(
                "the CPU rollout (rollout.name=hf) runs in verl's hybrid mode (sync, colocate_async) or standalone "
                f"mode (separate_async), not {self.rollout_mode}"
            )
        server_cls = ray.remote(CPUHFServer)
        # on the node of the replica's first worker, as verl's vLLM replica places its servers (multi-node layouts)
        node_id = await self.workers[0].__ray_call__.remote(lambda worker: ray.get_runtime_context().get_node_id())
        server = server_cls.options(
            name=server_actor_name(self.replica_rank, self.name_suffix),
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
            num_cpus=0,
            num_gpus=0,
            max_concurrency=self.max_concurrency,
        ).remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        self.servers = [server]
        self._server_handle = server
        host, _ = await server.get_server_address.remote()
        self._server_address = f"{host}:cpu-hf-{self.replica_rank}{self.name_suffix}"
