"""Cluster layouts of the CPU profile: two FSDP ranks (``CPU_GPUS_PER_NODE=2``) and a local two-node Ray cluster
(``CPU_NNODES=2``), end to end through verl's trainer, plus the launcher's validation and teardown.

The slow runs are shared through module fixtures (tiny: the toy model, 2 steps each), and each carries several
behaviours (docs/testing.md maps them):

* ``one_rank`` / ``two_ranks``: ERPO + AER, same data and seeds, one vs two FSDP ranks. ``one_rank`` is also the
  suite's ERPO run (the ``erpo/`` metrics, the reference policy, AER in the loss); ``two_ranks`` saves a
  checkpoint at step 2 with AER's controller state, and ``resumed`` continues it with two ranks (the suite's
  checkpoint-and-resume run);
* ``two_nodes``: EP-GRPO + AER with one rank on each of two raylets, with the test-only trace
  (:mod:`erpo_verl.integration.trace`) recording where our registered code ran; also the suite's EP-GRPO run.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from erpo_testlib import AER_RUN_OVERRIDES, assert_aer_entered_the_loss, assert_entropy_aware_run, wait_until

from erpo_verl.integration.cpu.cluster import (
    LayoutError,
    Layout,
    cleanup_run,
    layout_of_overrides,
    parse_layout,
    processes_of,
)
from erpo_verl.estimators import ESTIMATORS
from erpo_verl.integration.cpu.profile import cpu_overrides
from erpo_verl.integration import trace

REPO = Path(__file__).resolve().parents[1]

AER = AER_RUN_OVERRIDES
# Step-1 agreement of one vs two FSDP ranks on identical samples (see test_two_fsdp_ranks_...): the actor computes
# in bf16 (verl's FSDP2 mixed precision, reductions in fp32); two ranks change the micro-batch padding and the
# order of the gradient sum (a reduce-scatter of two bf16-computed halves), nothing else. bf16 has a relative
# precision of 2^-8 = 0.4%; the tolerance allows a few such roundings to accumulate. Measured: docs/cpu.md.
REL_TOL = 0.02


# ---------------------------------------------------------------------------------------------------------------
# fast: layout validation, overrides, trace bookkeeping
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "nnodes, gpus, message",
    [
        ("0", None, "CPU_NNODES=0: must be >= 1"),
        (None, "-1", "CPU_GPUS_PER_NODE=-1: must be >= 1"),
        ("two", None, "CPU_NNODES='two' is not an integer"),
        (None, "1.5", "CPU_GPUS_PER_NODE='1.5' is not an integer"),
        ("2", "2", "= 4 FSDP ranks, but this machine has 2 usable CPU core(s)"),
    ],
)
def test_bad_layout_values_are_refused_with_the_variable_named(nnodes, gpus, message):
    with pytest.raises(LayoutError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_layout(nnodes, gpus, cores=2, mem_gib=64.0)


def test_layout_defaults_to_one_node_one_rank_and_checks_memory():
    assert parse_layout(None, "", cores=2, mem_gib=64.0) == Layout(1, 1)
    assert parse_layout("2", "1", cores=2, mem_gib=64.0) == Layout(2, 1)
    with pytest.raises(LayoutError, match="needs about 4.9 GiB of memory, but only 2.0 GiB is available"):
        parse_layout("2", "1", cores=2, mem_gib=2.0)


def test_profile_overrides_follow_the_layout():
    one = cpu_overrides("m", "t", "v", train_batch_size=4, n=4)
    assert layout_of_overrides(one) == Layout(1, 1)
    assert "+ray_kwargs.ray_init.num_gpus=1" in one and "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16" in one

    ranks = cpu_overrides("m", "t", "v", train_batch_size=4, n=4, gpus_per_node=2)
    assert layout_of_overrides(ranks) == Layout(1, 2)
    # two logical GPUs for one driver-started Ray node; each rank's micro-batch is its half of the mini-batch
    assert "+ray_kwargs.ray_init.num_gpus=2" in ranks and "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8" in ranks

    nodes = cpu_overrides("m", "t", "v", train_batch_size=4, n=4, nnodes=2)
    assert layout_of_overrides(nodes) == Layout(2, 1)
    # joining the launcher's cluster: no resource arguments for ray.init (it refuses them with an address)
    assert "ray_kwargs.ray_init.num_cpus=null" in nodes
    assert not any("ray_init.num_gpus" in o or "include_dashboard" in o for o in nodes)


def test_cluster_check_cli_and_recipe_refuse_a_bad_layout():
    env = {**os.environ, "CPU_NNODES": "0"}
    check = subprocess.run([sys.executable, "-m", "erpo_verl.integration.cpu.cluster", "check"], env=env,
                           capture_output=True, text=True)
    assert check.returncode == 2 and "CPU_NNODES=0: must be >= 1" in check.stderr
    recipe = subprocess.run(["bash", str(REPO / "recipes" / "run_erpo_qwen7b.sh")], capture_output=True, text=True,
                            env={**env, "PROFILE": "cpu-tiny", "PYTHON": sys.executable}, timeout=120)
    assert recipe.returncode == 2 and "CPU_NNODES=0: must be >= 1" in recipe.stderr


def test_trace_records_nothing_unless_its_directory_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv(trace.ENV, raising=False)
    trace.record("loss.aer")
    monkeypatch.setenv(trace.ENV, str(tmp_path))
    trace.record("loss.aer", extra=1)
    (event,) = trace.read(tmp_path)
    assert event["event"] == "loss.aer" and event["pid"] == os.getpid() and event["extra"] == 1


def two_node_evidence_problems(events: list[dict], node_ids: list[str], estimator: str = "erpo") -> list[str]:
    """What is missing from a two-node run's trace for 'the plugin works on both nodes' (empty: nothing)."""
    problems = []
    nodes = set(node_ids)
    if len(nodes) != 2:
        problems.append(f"expected two distinct node ids, got {node_ids}")
    registered = {e["node_id"] for e in events if e["event"] == "plugin.registered" and e["node_id"]
                  and {"erpo", "ep_grpo"} <= set(e["estimators"]) and e["aer_loss"]}
    if registered != nodes:
        problems.append(f"plugin registered (erpo estimator + aer loss) on nodes {sorted(registered)}, not on all of {sorted(nodes)}")
    aer = {(e["node_id"], e["rank"]) for e in events if e["event"] == "loss.aer"}
    if {n for n, _ in aer} != nodes or {r for _, r in aer} != {"0", "1"}:
        problems.append(f"AER loss ran as (node, rank) {sorted(aer)}: not rank 0 and rank 1 on both nodes")
    advantage = [e for e in events if e["event"] == "advantage"]
    our_fn = ESTIMATORS[estimator][0]
    if not advantage or not all(
        e["trainer_mode"] == "erpo_sync" and e["estimator"] == estimator
        and e["fn"] == f"{our_fn.__module__}.{our_fn.__qualname__}" and e["erpo_metrics"]
        and e["node_id"] in nodes for e in advantage
    ):
        problems.append(f"erpo_sync did not run the {estimator} estimator on a cluster node: {advantage}")
    return problems


def _event(event, node, rank=None, **kw):
    return {"event": event, "node_id": node, "rank": rank, "pid": 1, "time": 0.0, **kw}


def test_two_node_evidence_check_fails_when_the_second_node_lacks_the_plugin():
    good = [
        _event("plugin.registered", "A", "0", estimators=["erpo", "ep_grpo"], aer_loss="x.aer"),
        _event("plugin.registered", "B", "1", estimators=["erpo", "ep_grpo"], aer_loss="x.aer"),
        _event("loss.aer", "A", "0"),
        _event("loss.aer", "B", "1"),
        _event("advantage", "A", None, estimator="erpo", trainer_mode="erpo_sync", erpo_metrics=["erpo/gate_mean"],
               fn=f"{ESTIMATORS['erpo'][0].__module__}.{ESTIMATORS['erpo'][0].__qualname__}"),
    ]
    assert two_node_evidence_problems(good, ["A", "B"]) == []
    without_b = [e for e in good if not (e["event"] == "plugin.registered" and e["node_id"] == "B")]
    assert "not on all of" in two_node_evidence_problems(without_b, ["A", "B"])[0]
    one_node_only = [e for e in good if e["node_id"] != "B"]
    assert len(two_node_evidence_problems(one_node_only, ["A", "B"])) == 2
    # the advantage step must have run the estimator the run asked for, through our function
    assert "did not run the ep_grpo estimator" in two_node_evidence_problems(good, ["A", "B"], "ep_grpo")[0]
    ep = [dict(e, estimator="ep_grpo", fn=f"{ESTIMATORS['ep_grpo'][0].__module__}.{ESTIMATORS['ep_grpo'][0].__qualname__}")
          if e["event"] == "advantage" else e for e in good]
    assert two_node_evidence_problems(ep, ["A", "B"], "ep_grpo") == []


# ---------------------------------------------------------------------------------------------------------------
# leftovers of one run
# ---------------------------------------------------------------------------------------------------------------
def _shm_entries() -> set[str]:
    try:
        return set(os.listdir("/dev/shm"))
    except OSError:
        return set()


def _open_anywhere(paths: set[str]) -> set[str]:
    """Which of ``paths`` (under /dev/shm) some live process still has open or mapped."""
    held = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            maps = (proc / "maps").read_text()
            fds = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        for path in paths:
            if path in maps or path in fds:
                held.add(path)
    return held


def assert_nothing_left_behind(run, shm_before: set[str]) -> None:
    """No process of this run alive, its Ray temp root gone, no new /dev/shm entry that nobody holds.

    Other Ray instances may run on the machine at the same time: processes are told apart by the run's
    private RAY_TMPDIR, and a /dev/shm entry counts only if it appeared during the run and no live process
    (another run's included) has it open.
    """
    assert run.ray_tmpdir is not None and not run.ray_tmpdir.exists(), f"{run.ray_tmpdir} was not removed"
    assert processes_of(run.ray_tmpdir) == []
    new = {f"/dev/shm/{name}" for name in _shm_entries() - shm_before}
    orphans = new - _open_anywhere(new)
    assert not orphans, f"/dev/shm entries left by the run: {sorted(orphans)}"


# ---------------------------------------------------------------------------------------------------------------
# slow: the runs
# ---------------------------------------------------------------------------------------------------------------
def _unique_prompt_assets(toy_assets, folder: Path) -> dict:
    """The toy task with one row per distinct prompt text, so that a step never holds the same prompt twice
    (the deterministic CPU rollout keys samples by prompt and occurrence; see erpo_verl/integration/cpu/rollout.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.read_parquet(toy_assets["train"])
    unique = frame[~frame["prompt"].map(lambda p: p[0]["content"]).duplicated()].reset_index(drop=True)
    unique.to_parquet(folder / "train.parquet")
    return {**toy_assets, "train": folder / "train.parquet"}


def _train(toy_assets, out: Path, steps: int, extra=(), **settings):
    from erpo_verl.tools.demo import train_toy

    shm_before = _shm_entries()
    start = time.time()
    run = train_toy("erpo", out, toy_assets, steps, seed=1, extra=[*AER, *extra], quiet=True,
                    train_batch_size=4, **settings)
    run.wall_s = time.time() - start
    run.shm_before = shm_before
    assert run.returncode == 0, f"run in {out} failed:\n{run.log_tail(80)}"
    return run


DETERMINISTIC = ["actor_rollout_ref.rollout.full_determinism=True"]


@pytest.fixture(scope="module")
def layout_assets(toy_assets, tmp_path_factory):
    return _unique_prompt_assets(toy_assets, tmp_path_factory.mktemp("unique_prompts"))


@pytest.fixture(scope="module")
def one_rank(layout_assets, tmp_path_factory):
    return _train(layout_assets, tmp_path_factory.mktemp("one_rank"), 2, DETERMINISTIC)


@pytest.fixture(scope="module")
def two_ranks(layout_assets, tmp_path_factory):
    return _train(layout_assets, tmp_path_factory.mktemp("two_ranks"), 2, [*DETERMINISTIC, "trainer.save_freq=2"],
                  gpus_per_node=2)


def _first(run, key):
    return run.metrics[0][key]


@pytest.mark.slow
def test_two_fsdp_ranks_run_erpo_with_aer_and_match_the_one_rank_first_step(one_rank, two_ranks):
    for run in (one_rank, two_ranks):
        assert [int(r["step"]) for r in run.metrics] == [1, 2]
        assert all(r["aer/alpha"] > 0 and r["actor/aer_entropy_bonus"] > 0 for r in run.metrics)  # AER active
        assert all("erpo/gate_std" in r for r in run.metrics)  # the ERPO estimator ran
        assert_aer_entered_the_loss(run)
    assert "trainer.n_gpus_per_node=2" in two_ranks.log_path.read_text()
    # the same samples: the rollout drew identical responses in both layouts (same rewards and lengths)
    for key in ("critic/score/mean", "critic/score/max", "critic/score/min", "response_length/mean"):
        assert _first(two_ranks, key) == pytest.approx(_first(one_rank, key), abs=1e-6), key
    assert _first(one_rank, "erpo/zero_var_group_frac") < 1.0  # groups have reward variance: a real gradient
    # the same update, up to bf16 rounding (REL_TOL)
    for key in ("actor/pg_loss", "actor/entropy", "actor/grad_norm", "actor/aer_entropy_bonus"):
        one, two = _first(one_rank, key), _first(two_ranks, key)
        assert math.isfinite(one) and math.isfinite(two)
        assert two == pytest.approx(one, rel=REL_TOL, abs=1e-6), f"{key}: 1 rank {one} vs 2 ranks {two}"
    assert _first(one_rank, "actor/grad_norm") > 0


@pytest.mark.slow
def test_erpo_runs_with_the_reference_policy_and_logs_its_metrics_every_step(one_rank):
    """The suite's ERPO run (formerly its own run in test_e2e_cpu.py): the estimator got entropy and the
    reference log-probs through erpo_sync and logged every ``erpo/`` metric; AER's bonus entered the loss."""
    assert [int(r["step"]) for r in one_rank.metrics] == [1, 2]
    assert all(math.isfinite(r["actor/grad_norm"]) and r["actor/grad_norm"] > 0 for r in one_rank.metrics)
    assert_entropy_aware_run(one_rank)
    assert_aer_entered_the_loss(one_rank)


@pytest.mark.slow
def test_two_rank_actor_is_sharded_half_of_each_parameter_per_rank(two_ranks):
    import torch

    actor = two_ranks.out_dir / "checkpoints" / "global_step_2" / "actor"
    shards = [torch.load(actor / f"model_world_size_2_rank_{r}.pt", map_location="cpu", weights_only=False)
              for r in (0, 1)]
    total = 0
    for name in shards[0]:
        local = [s[name].to_local() if hasattr(s[name], "to_local") else s[name] for s in shards]
        full = shards[0][name].shape  # a DTensor reports the global shape
        assert local[0].shape[0] + local[1].shape[0] == full[0], name  # split along dim 0 across the two ranks
        assert local[0].numel() < math.prod(full) or math.prod(full) == 1, name
        total += math.prod(full)
    per_rank = [sum((s[n].to_local() if hasattr(s[n], "to_local") else s[n]).numel() for n in s) for s in shards]
    assert sum(per_rank) == total
    assert all(abs(p - total / 2) <= 0.01 * total for p in per_rank), (per_rank, total)


@pytest.mark.slow
def test_a_checkpoint_saved_with_two_ranks_resumes_with_two_ranks(two_ranks, layout_assets, tmp_path):
    """The suite's checkpoint-and-resume run (AER's controller state included)."""
    ckpt = two_ranks.out_dir / "checkpoints"
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "2"
    assert (ckpt / "global_step_2" / "actor").is_dir()
    assert (ckpt / "global_step_2" / "erpo_aer_state.json").exists()  # AER's controller state was saved
    resumed = _train(layout_assets, tmp_path / "resumed", 3, [f"trainer.default_local_dir={ckpt}",
                                                             "trainer.resume_mode=auto"], gpus_per_node=2)
    assert [int(r["step"]) for r in resumed.metrics] == [3]  # resumed at step 3, not from 0
    # the controller continued from the saved state: same anchor entropy, alpha picks up where it stopped
    assert resumed.metrics[0]["aer/initial_entropy"] == pytest.approx(two_ranks.metrics[0]["aer/initial_entropy"])
    assert resumed.metrics[0]["aer/alpha"] == pytest.approx(two_ranks.metrics[-1]["aer/alpha_next"])
    assert_aer_entered_the_loss(resumed)
    assert_nothing_left_behind(resumed, resumed.shm_before)


@pytest.mark.slow
def test_fsdp_rank_runs_leave_nothing_behind(one_rank, two_ranks):
    for run in (one_rank, two_ranks):
        assert_nothing_left_behind(run, run.shm_before)


@pytest.fixture(scope="module")
def two_nodes(toy_assets, tmp_path_factory):
    trace_dir = tmp_path_factory.mktemp("trace")
    from erpo_verl.tools.demo import train_toy

    shm_before = _shm_entries()
    out = tmp_path_factory.mktemp("two_nodes")
    run = train_toy("ep_grpo", out, toy_assets, 2, seed=1, extra=list(AER), quiet=True, train_batch_size=4, nnodes=2,
                    extra_env={trace.ENV: str(trace_dir)})
    run.shm_before = shm_before
    run.events = trace.read(trace_dir)
    assert run.returncode == 0, f"two-node run failed:\n{run.log_tail(80)}"
    return run


@pytest.mark.slow
def test_two_ray_nodes_run_ep_grpo_with_the_plugin_active_on_both(two_nodes):
    assert [int(r["step"]) for r in two_nodes.metrics] == [1, 2]
    assert two_nodes.layout == Layout(2, 1) and len(set(two_nodes.node_ids)) == 2
    log = two_nodes.log_path.read_text()
    assert "+ray_kwargs.ray_init.address=" in log and "trainer.nnodes=2" in log
    problems = two_node_evidence_problems(two_nodes.events, two_nodes.node_ids, "ep_grpo")
    assert not problems, "\n".join(problems)
    # the AER loss ran in two different worker processes, one per node
    aer_pids = {(e["node_id"], e["pid"]) for e in two_nodes.events if e["event"] == "loss.aer"}
    assert len({pid for _, pid in aer_pids}) == 2
    assert_nothing_left_behind(two_nodes, two_nodes.shm_before)


@pytest.mark.slow
def test_ep_grpo_runs_with_the_reference_policy_and_logs_its_metrics_every_step(two_nodes):
    """The suite's EP-GRPO run (formerly its own run in test_e2e_cpu.py), here across two Ray nodes."""
    assert_entropy_aware_run(two_nodes)
    assert_aer_entered_the_loss(two_nodes)


# The interrupt test waits on what it is waiting for, not on a clock: each wait fails only when nothing has moved
# (no new output line, no process started or ended) for this long, so a loaded machine gets the time it needs.
INTERRUPT_STALL_S = 240.0
RUN_PROCESSES = 16  # the two raylets' own processes plus verl's driver and its Ray workers


@pytest.mark.slow
def test_interrupting_the_launcher_tears_the_two_node_cluster_down(toy_assets, tmp_path):
    """Ctrl-C (SIGINT) to ``python -m erpo_verl.integration.cpu.launch`` while the two raylets and verl run.

    The run asks for far more steps than it gets to, so it is always interrupted mid-run, never after it ended."""
    overrides = cpu_overrides(str(toy_assets["model"]), str(toy_assets["train"]), str(toy_assets["val"]),
                              steps=500, train_batch_size=4, nnodes=2, output_dir=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-m", "erpo_verl.integration.cpu.launch", "--", *overrides,
                             "algorithm.adv_estimator=grpo"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    drain = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)  # keep the output flowing
    drain.start()
    root = None
    try:
        def output():
            return "".join(lines)[-3000:]

        def root_line():  # "[erpo launch] layout ...; Ray temp root /tmp/erpo-ray-..."
            if proc.poll() is not None:
                raise AssertionError(f"the launcher exited ({proc.returncode}) before reporting its Ray root:\n{output()}")
            return next((ln for ln in list(lines) if "Ray temp root" in ln), None)

        root = Path(wait_until(root_line, progress=lambda: len(lines), stall_s=INTERRUPT_STALL_S,
                               what="the launcher's Ray temp root").strip().rsplit(" ", 1)[1])

        def verl_running():
            if proc.poll() is not None:
                raise AssertionError(f"the run ended ({proc.returncode}) before it was interrupted:\n{output()}")
            return len(processes_of(root)) >= RUN_PROCESSES

        wait_until(verl_running, progress=lambda: (len(lines), len(processes_of(root))), stall_s=INTERRUPT_STALL_S,
                   what=f"{RUN_PROCESSES} processes of the run")
        running = len(processes_of(root))
        proc.send_signal(signal.SIGINT)
        # teardown: wait while processes keep ending or the launcher keeps talking
        wait_until(lambda: proc.poll() is not None, progress=lambda: (len(lines), len(processes_of(root))),
                   stall_s=INTERRUPT_STALL_S, what="the launcher to exit after SIGINT")
    finally:
        if proc.poll() is None:  # a failed wait: end the launcher and whatever of its run is left
            proc.kill()
            proc.wait()
            if root is not None:
                cleanup_run(root)
    drain.join(timeout=30)
    assert proc.returncode == 130, output()
    assert "interrupted: the run's Ray processes were ended" in output()
    assert running >= RUN_PROCESSES, f"only {running} processes were up when interrupted"
    assert processes_of(root) == [] and not root.exists()
