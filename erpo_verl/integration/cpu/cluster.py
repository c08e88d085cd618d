"""Cluster layouts of the CPU profile: FSDP ranks per node and a local multi-node Ray cluster on one machine.

Two environment variables choose the layout (both default to 1):

* ``CPU_GPUS_PER_NODE=G`` — G FSDP ranks per node (logical Ray GPUs; gloo collectives). The actor is really
  sharded: each rank holds 1/G of every parameter (FSDP2 shards on dim 0).
* ``CPU_NNODES=N`` — a local N-node Ray cluster on this host: N raylets, each with its own G logical GPUs and
  its own logical CPUs, started before the run and torn down after it (also on failure / Ctrl-C). The driver
  joins it with ``ray_kwargs.ray_init.address``; verl's resource pool then places one placement group per
  node, i.e. G ranks on each raylet, and every worker process loads the plugin through ``import verl``.

Isolation: every run gets its own Ray temp root (``RAY_TMPDIR``, a fresh ``/tmp/erpo-ray-*`` directory), so
its cluster address file, session folder and sockets never meet another Ray instance on the machine, and
:func:`leftovers` can tell exactly which processes belong to it.

The cluster itself runs in a small keeper process (``python -m erpo_verl.integration.cpu.cluster serve``)
that owns the raylets through ``ray.cluster_utils.Cluster`` and shuts them down when its stdin closes —
which also happens when the launcher dies without cleaning up.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

# Memory of one CPU run, measured with the tiny model on the 2-core machine (docs/cpu.md): the driver,
# TaskRunner, TransferQueue, reward and agent-loop workers and the rollout server (~3 GiB), plus per FSDP rank
# (actor + ref worker, ~0.8 GiB) and per extra raylet (~0.3 GiB). Used only to refuse layouts that cannot fit.
BASE_GIB = 3.0
PER_RANK_GIB = 0.8
PER_NODE_GIB = 0.3
# logical CPUs per raylet: TransferQueue's controller and storage unit, the TaskRunner, agent-loop and reward
# workers each reserve one (docs/cpu.md, failure #1); 16 is oversubscription, not real cores
NODE_CPUS = 16
NODE_OBJECT_STORE_BYTES = 256 * 1024 * 1024  # the tiny model's weights and batches are a few MB


class LayoutError(ValueError):
    """A CPU_NNODES / CPU_GPUS_PER_NODE value this machine cannot run; the message names the variable."""


@dataclass(frozen=True)
class Layout:
    nnodes: int = 1
    gpus_per_node: int = 1

    @property
    def ranks(self) -> int:
        return self.nnodes * self.gpus_per_node

    @property
    def multi_node(self) -> bool:
        return self.nnodes > 1

    def describe(self) -> str:
        return f"{self.nnodes} node(s) x {self.gpus_per_node} rank(s)"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def available_memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return None


def _parse_count(name: str, raw: str | int | None) -> int:
    if raw is None or (isinstance(raw, str) and raw.strip() == ""):
        return 1
    text = str(raw).strip()
    try:
        value = int(text)
    except ValueError:
        raise LayoutError(f"{name}={text!r} is not an integer; use a whole number >= 1 (default 1)") from None
    if value < 1:
        raise LayoutError(f"{name}={value}: must be >= 1 (1 is the default layout)")
    return value


def parse_layout(nnodes=None, gpus_per_node=None, *, cores: int | None = None, mem_gib: float | None = -1.0) -> Layout:
    """Validate a layout against this machine (``cores`` / ``mem_gib`` override the measured values)."""
    layout = Layout(_parse_count("CPU_NNODES", nnodes), _parse_count("CPU_GPUS_PER_NODE", gpus_per_node))
    cores = usable_cores() if cores is None else cores
    if layout.ranks > cores:
        raise LayoutError(
            f"CPU_NNODES={layout.nnodes} x CPU_GPUS_PER_NODE={layout.gpus_per_node} = {layout.ranks} FSDP ranks, "
            f"but this machine has {cores} usable CPU core(s): at most one rank per core "
            f"(each rank trains in its own process and gloo collectives wait for the slowest)"
        )
    mem = available_memory_gib() if mem_gib == -1.0 else mem_gib
    need = BASE_GIB + PER_RANK_GIB * layout.ranks + PER_NODE_GIB * (layout.nnodes - 1)
    if mem is not None and need > mem:
        raise LayoutError(
            f"CPU_NNODES={layout.nnodes} x CPU_GPUS_PER_NODE={layout.gpus_per_node} needs about {need:.1f} GiB "
            f"of memory, but only {mem:.1f} GiB is available"
        )
    return layout


def layout_from_env(env=None) -> Layout:
    env = os.environ if env is None else env
    return parse_layout(env.get("CPU_NNODES"), env.get("CPU_GPUS_PER_NODE"))


def ray_init_overrides(nnodes: int, gpus_per_node: int) -> list[str]:
    """The CPU profile's ``ray_kwargs.ray_init`` settings for a layout.

    One node: the driver's ``ray.init`` starts Ray with logical CPUs (TransferQueue's actors reserve them) and
    ``gpus_per_node`` logical GPUs (verl's resource pools only count GPUs). Several nodes: the launcher starts
    the cluster and appends ``+ray_kwargs.ray_init.address=...`` (:func:`join_overrides`); ``ray.init``
    refuses resource arguments when it joins a cluster.
    """
    if nnodes == 1:
        return [
            f"ray_kwargs.ray_init.num_cpus={NODE_CPUS}",
            f"+ray_kwargs.ray_init.num_gpus={gpus_per_node}",
            "+ray_kwargs.ray_init.include_dashboard=False",
        ]
    return ["ray_kwargs.ray_init.num_cpus=null"]


def join_overrides(address: str) -> list[str]:
    return [f"+ray_kwargs.ray_init.address={address}"]


def layout_of_overrides(overrides) -> Layout:
    """The layout a list of Hydra overrides asks for (``trainer.nnodes`` / ``trainer.n_gpus_per_node``, last wins)."""
    values = {"trainer.nnodes": None, "trainer.n_gpus_per_node": None}
    for item in overrides:
        key, sep, value = str(item).lstrip("+").partition("=")
        if sep and key in values:
            values[key] = value
    return parse_layout(values["trainer.nnodes"], values["trainer.n_gpus_per_node"])


# -----------------------------------------------------------------------------------------------------------
# a run's private Ray temp root and what is left of it
# -----------------------------------------------------------------------------------------------------------
def make_ray_tmpdir() -> Path:
    # short: Ray puts unix sockets under <root>/ray/session_<date>_<pid>/sockets/ (107-byte path limit)
    return Path(tempfile.mkdtemp(prefix="erpo-ray-", dir="/tmp"))


def _process_env_has(pid: int, needle: bytes) -> bool:
    try:
        return needle in Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False


def processes_of(ray_tmpdir: Path) -> list[int]:
    """PIDs of live processes started for the run with this Ray temp root (they all carry its RAY_TMPDIR)."""
    needle = f"RAY_TMPDIR={ray_tmpdir}\0".encode()
    me = os.getpid()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me and _process_env_has(int(entry.name), needle):
            try:
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z":  # a zombie has exited; its parent just has not reaped it
                pids.append(int(entry.name))
    return sorted(pids)


def terminate(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds, exactly these PIDs."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + grace
        while time.time() < deadline and any(_alive(p) for p in pids):
            time.sleep(0.1)
        if not any(_alive(p) for p in pids):
            return


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def cleanup_run(ray_tmpdir: Path) -> list[int]:
    """End whatever of the run is still alive and delete its Ray temp root; returns the PIDs it had to end."""
    stragglers = processes_of(ray_tmpdir)
    if stragglers:
        terminate(stragglers)
    shutil.rmtree(ray_tmpdir, ignore_errors=True)
    return stragglers


# -----------------------------------------------------------------------------------------------------------
# the local multi-node cluster
# -----------------------------------------------------------------------------------------------------------
class LocalCluster:
    """``with LocalCluster(layout, env) as c:`` starts ``layout.nnodes`` raylets; ``c.address`` joins them.

    ``env`` is the environment of the run (Ray workers inherit it from their raylet); ``node_env`` adds
    variables to single nodes (index 0 = head), e.g. for a test that takes the plugin away from one node.
    """

    def __init__(self, layout: Layout, env: dict[str, str], node_env: dict[int, dict[str, str]] | None = None,
                 start_timeout: float = 180.0):
        self.layout = layout
        self.env = dict(env)
        self.node_env = node_env or {}
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self.address: str | None = None
        self.node_ids: list[str] = []

    def __enter__(self) -> LocalCluster:
        cmd = [sys.executable, "-m", "erpo_verl.integration.cpu.cluster", "serve",
               "--nnodes", str(self.layout.nnodes), "--gpus-per-node", str(self.layout.gpus_per_node),
               "--node-env", json.dumps({str(k): v for k, v in self.node_env.items()})]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self.env, text=True)
        try:
            info = self._read_info()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self.address, self.node_ids = info["address"], info["node_ids"]
        return self

    def _read_info(self) -> dict:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.time() + self.start_timeout
        while time.time() < deadline:
            if sel.select(timeout=1.0):
                line = self.proc.stdout.readline()
                if not line:
                    break
                if line.startswith("ERPO_CLUSTER "):
                    return json.loads(line[len("ERPO_CLUSTER "):])
            elif self.proc.poll() is not None:
                break
        raise RuntimeError(
            f"the local {self.layout.nnodes}-node Ray cluster did not start within {self.start_timeout:.0f}s "
            f"(keeper exit code {self.proc.poll()}); see its messages above"
        )

    def __exit__(self, *exc) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()  # the keeper's signal to shut the raylets down
        except OSError:
            pass
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _serve(args) -> int:
    """Keeper: start the raylets, print their address, hold them until stdin closes (or SIGTERM/SIGINT)."""
    import ray
    from ray.cluster_utils import Cluster

    node_env = {int(k): v for k, v in json.loads(args.node_env or "{}").items()}
    stop = {"now": False}

    def _on_signal(signum, frame):
        stop["now"] = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _on_signal)
    cluster = Cluster()
    try:
        for index in range(args.nnodes):
            node_args = dict(
                num_cpus=NODE_CPUS,
                num_gpus=args.gpus_per_node,
                object_store_memory=NODE_OBJECT_STORE_BYTES,
                resources={f"erpo_node_{index}": 1},
                env_vars=node_env.get(index) or None,
            )
            if index == 0:
                node_args["include_dashboard"] = False
            cluster.add_node(**node_args)
        cluster.wait_for_nodes()
        nodes = [cluster.head_node, *sorted(cluster.worker_nodes, key=lambda n: n.node_id)]
        info = {"address": cluster.address, "node_ids": [n.node_id for n in nodes]}
        print("ERPO_CLUSTER " + json.dumps(info), flush=True)
        print(f"[erpo cluster] {args.nnodes} raylets x {args.gpus_per_node} logical GPU(s) at {cluster.address}",
              file=sys.stderr, flush=True)
        try:
            sys.stdin.read()  # returns at EOF: the launcher closed our stdin or died
        except KeyboardInterrupt:
            pass
    except KeyboardInterrupt:
        pass
    finally:
        cluster.shutdown()
        ray.shutdown()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="run the keeper of a local multi-node cluster (used by the launcher)")
    serve.add_argument("--nnodes", type=int, required=True)
    serve.add_argument("--gpus-per-node", type=int, required=True)
    serve.add_argument("--node-env", default="{}")
    check = sub.add_parser("check", help="validate CPU_NNODES / CPU_GPUS_PER_NODE and print the layout")
    check.add_argument("--nnodes", default=os.environ.get("CPU_NNODES"))
    check.add_argument("--gpus-per-node", default=os.environ.get("CPU_GPUS_PER_NODE"))
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        return _serve(args)
    try:
        layout = parse_layout(args.nnodes, args.gpus_per_node)
    except LayoutError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    print(f"{layout.nnodes} {layout.gpus_per_node}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
