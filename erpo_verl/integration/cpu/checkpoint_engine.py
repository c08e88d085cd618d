"""``cpu_gloo``: a checkpoint engine that sends the trained weights to rollout workers of their own over gloo.

verl's separate_async mode (and ``erpo_separate_async``) runs rollout on devices of its own and syncs weights through
a checkpoint engine (``actor_rollout_ref.rollout.checkpoint_engine.backend``). verl 0.9.1 ships ``naive`` (actor and
rollout in one process, refused by separate_async) and engines over GPU interconnects (NCCL, HCCL, NIXL,
Mooncake); none runs on a CPU. This one, registered in verl's ``CheckpointEngineRegistry`` (its extension point),
does what they do with torch's gloo backend over TCP:

* topology: actor rank 0 is the sender (rank 0 of a private gloo group, not the FSDP group); every rollout worker
  is a receiver (ranks 1..R); the other actor ranks only walk the weight generator (it may gather shards
  collectively) and stay out of the group;
* per sync: rank 0 writes the tensor list (name, dtype, shape) into the group's TCP store, then broadcasts the
  weights as flat byte buckets of ``update_weights_bucket_megabytes``; receivers rebuild full tensors.

Only with ``VERL_PLATFORM=cpu`` (touchpoint ``cpu.checkpoint_engine``). It moves every weight through one TCP
connection per receiver: fine for the CPU backend's small models, not meant for a GPU cluster.
"""

from __future__ import annotations

import inspect
import pickle
import socket
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from verl.checkpoint_engine.base import CheckpointEngine, CheckpointEngineRegistry

BACKEND = "cpu_gloo"
TIMEOUT = timedelta(minutes=30)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def _host() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # outside Ray (unit tests)
        return "127.0.0.1"


async def _materialize(weights) -> list[tuple[str, torch.Tensor]]:
    """Walk verl's weight generator (sync or async) and return full CPU tensors."""
    out = []

    def full(tensor: torch.Tensor) -> torch.Tensor:
        if hasattr(tensor, "full_tensor"):  # DTensor (FSDP2 shard): a collective, every rank takes part
            tensor = tensor.full_tensor()
        return tensor.detach().to("cpu").contiguous()

    if inspect.isasyncgen(weights):
        async for name, tensor in weights:
            out.append((name, full(tensor)))
    else:
        for name, tensor in weights:
            out.append((name, full(tensor)))
    return out


@CheckpointEngineRegistry.register(BACKEND)
class CPUGlooCheckpointEngine(CheckpointEngine):
    """Actor rank 0 -> every rollout worker, over a private gloo group (see the module docstring)."""

    def __init__(self, bucket_size: int, is_master: bool = False, **kwargs: Any) -> None:
        if kwargs:
            raise ValueError(f"checkpoint engine {BACKEND} takes no engine_kwargs, got {sorted(kwargs)}")
        self.bucket_size = max(1 << 20, int(bucket_size))
        self.is_master = is_master
        self.rank = -1
        self.world_size = 0
        self.store: dist.TCPStore | None = None
        self.group = None
        self.syncs = 0

    # -- topology ------------------------------------------------------------------------------------------
    def prepare(self) -> dict[str, Any]:
        return {"host": _host(), "port": _free_port()}

    @classmethod
    def build_topology(cls, actor_wg_world_size: int, rollout_world_size: int, metadata: list[dict]):
        world = rollout_world_size + 1
        master = metadata[0]  # actor rank 0's address: it hosts the store
        actor = {
            "rank": [0] + [-1] * (actor_wg_world_size - 1),
            "world_size": [world] * actor_wg_world_size,
            "master": [master] * actor_wg_world_size,
        }
        rollout = {
            "rank": list(range(1, rollout_world_size + 1)),
            "world_size": [world] * rollout_world_size,
            "master": [master] * rollout_world_size,
        }
        return actor, rollout

    def init_process_group(self, rank: int, world_size: int, master: dict[str, Any]) -> None:
        self.rank, self.world_size = int(rank), int(world_size)
        if self.rank < 0:
            return
        self.store = dist.TCPStore(master["host"], int(master["port"]), self.world_size, is_master=self.rank == 0,
                                   timeout=TIMEOUT, wait_for_workers=False)
        self.group = dist.ProcessGroupGloo(self.store, self.rank, self.world_size, TIMEOUT)

    def finalize(self) -> None:
        if self.group is not None:
            # a last collective so the store's host (rank 0) is not closed while receivers still read from it
            self.group.barrier().wait()
        self.group, self.store, self.rank = None, None, -1

    # -- transfer ------------------------------------------------------------------------------------------
    async def send_weights(self, weights, global_steps: int | None = None):
        tensors = await _materialize(weights)  # every actor rank: the generator may be collective
        if self.rank != 0:
            return {}
        meta = [(name, t.dtype, tuple(t.shape)) for name, t in tensors]
        self.store.set("meta", pickle.dumps((global_steps, meta)))
        flat = torch.cat([t.reshape(-1).view(torch.uint8) for _, t in tensors]) if tensors else torch.empty(0, dtype=torch.uint8)
        for start in range(0, flat.numel(), self.bucket_size):
            chunk = flat[start:start + self.bucket_size].clone()
            self.group.broadcast(chunk, 0).wait()
        self.syncs += 1
        return {"cpu_gloo/bytes": float(flat.numel()), "cpu_gloo/tensors": float(len(tensors))}

    async def receive_weights(self, global_steps: int | None = None):
        if self.rank <= 0:
            raise RuntimeError(f"{BACKEND}: receive_weights on a worker that is not a receiver (rank {self.rank})")
        _, meta = pickle.loads(self.store.get("meta"))
        sizes = [torch.empty(shape, dtype=dtype).numel() * torch.empty((), dtype=dtype).element_size()
                 for _, dtype, shape in meta]
        flat = torch.empty(sum(sizes), dtype=torch.uint8)
        for start in range(0, flat.numel(), self.bucket_size):
            chunk = torch.empty(min(self.bucket_size, flat.numel() - start), dtype=torch.uint8)
            self.group.broadcast(chunk, 0).wait()
            flat[start:start + chunk.numel()] = chunk
        self.syncs += 1
        offset = 0
        for (name, dtype, shape), size in zip(meta, sizes):
            yield name, flat[offset:offset + size].view(dtype).reshape(shape).clone()
            offset += size
