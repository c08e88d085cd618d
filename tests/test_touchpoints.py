"""The touchpoint inventory (erpo_verl/integration/touchpoints.py) is complete and honest: every change we make
to verl is declared and applied through the inventory, each declared one is applied somewhere, nothing is active
outside CPU mode except the ``always`` ones, and in CPU mode every CPU touchpoint is active."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from erpo_testlib import run_python_together

from erpo_verl.integration import touchpoints
from erpo_verl.integration.touchpoints import INVENTORY, MARKER

PACKAGE = Path(touchpoints.__file__).resolve().parents[1]
APPLY_CALL = re.compile(r"""\b(?:mark_applied|replace_attribute)\(\s*["']([^"']+)["']""")

# Imports every module a touchpoint hooks into (as doctor does), then scans them for installed replacements.
PROBE = r"""
import inspect, json, sys
from erpo_verl.tools.doctor import TOUCHPOINT_MODULES, registration_report
from erpo_verl.integration.touchpoints import MARKER, applied
registration_report()
marked = {}
for name in TOUCHPOINT_MODULES:
    module = sys.modules.get(name)
    if module is None:
        continue
    for attr, value in vars(module).items():
        owners = [(attr, value)]
        if inspect.isclass(value):
            owners += [(f"{attr}.{a}", v) for a, v in vars(value).items()]
        for where, obj in owners:
            tag = getattr(obj, MARKER, None) if callable(obj) else None
            if tag is not None:
                marked[f"{name}.{where}"] = tag
print(json.dumps({"applied": sorted(applied()), "marked": marked}))
"""


def _env(cpu: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_PLATFORM", "VERL_ENGINE_DEVICE")}
    if cpu:
        env["VERL_PLATFORM"] = "cpu"
    return env


def _parsed(out) -> dict:
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _names(when: set[str]) -> set[str]:
    return {tp.name for tp in INVENTORY.values() if tp.when in when}


def test_every_touchpoint_applied_in_the_code_is_declared_and_every_declared_one_is_applied_somewhere():
    used: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for name in APPLY_CALL.findall(path.read_text(encoding="utf-8")):
            used.setdefault(name, []).append(str(path.relative_to(PACKAGE)))
    undeclared = {n: files for n, files in used.items() if n not in INVENTORY}
    assert undeclared == {}, f"applied but not declared in touchpoints.py: {undeclared}"
    assert set(INVENTORY) - set(used) == set(), "declared but never applied through mark_applied/replace_attribute"


def test_no_ad_hoc_markers_remain_in_the_package():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "_erpo_cpu_patch" not in text and "_erpo_preflight" not in text, path


@pytest.fixture(scope="module")
def both_modes():
    """The probe outside and inside CPU mode, two fresh interpreters started together."""
    return run_python_together({"default": (PROBE, _env(cpu=False)), "cpu": (PROBE, _env(cpu=True))})


@pytest.fixture(scope="module")
def default_mode(both_modes):
    return _parsed(both_modes["default"])


@pytest.fixture(scope="module")
def cpu_mode(both_modes):
    return _parsed(both_modes["cpu"])


def test_outside_cpu_mode_only_the_always_touchpoints_are_active(default_mode):
    assert set(default_mode["applied"]) == _names({"always"})
    assert set(default_mode["marked"].values()) == {"wrapper.validate_config"}


def test_in_cpu_mode_every_cpu_touchpoint_is_active(cpu_mode):
    assert _names({"always", "VERL_PLATFORM=cpu"}) <= set(cpu_mode["applied"])
    assert not _names({"erpo_* modes", "loss_mode=aer"}) & set(cpu_mode["applied"])  # those need a run


def test_every_installed_replacement_carries_a_declared_active_touchpoint(cpu_mode):
    marked = cpu_mode["marked"]
    assert {"verl.utils.config.validate_config": "wrapper.validate_config",
            "verl.utils.distributed.initialize_global_process_group_ray": "cpu.gloo_backend",
            "torch.distributed.fsdp.CPUOffloadPolicy.__init__": "cpu.no_pin_memory",
            "verl.trainer.ppo.v1.replay_buffer.ReplayBuffer.__init__": "cpu.replay_buffer_poll"}.items() <= marked.items()
    for where, name in marked.items():
        assert name in INVENTORY, where
        assert name in cpu_mode["applied"], where


def test_replace_attribute_is_idempotent_and_keeps_the_original():
    class Owner:
        @staticmethod
        def f(x):
            return x + 1

    original = Owner.f
    assert touchpoints.replace_attribute("cpu.gloo_backend", Owner, "f", lambda orig: (lambda x: orig(x) * 10))
    assert not touchpoints.replace_attribute("cpu.gloo_backend", Owner, "f", lambda orig: (lambda x: -1))
    assert Owner.f(1) == 20 and Owner.f.__wrapped__ is original and getattr(Owner.f, MARKER) == "cpu.gloo_backend"


def test_undeclared_touchpoints_and_bad_declarations_are_errors():
    with pytest.raises(KeyError, match="not declared"):
        touchpoints.mark_applied("no.such.touchpoint")
    with pytest.raises(ValueError, match="kind"):
        touchpoints.declare("x.y", kind="monkey", target="t", depends_on="d", when="always", why="w")
    with pytest.raises(ValueError, match="declared twice"):
        touchpoints.declare("cpu.gloo_backend", kind="patch", target="other", depends_on="d", when="always", why="w")


def test_preflight_records_its_config_rewrites():
    from hydra import compose, initialize_config_module

    from erpo_verl.integration.preflight import preflight

    with initialize_config_module(config_module="verl.trainer.config", version_base=None):
        config = compose(config_name="ppo_trainer", overrides=[
            "algorithm.adv_estimator=erpo", "trainer.v1.trainer_mode=erpo_sync",
            "actor_rollout_ref.actor.policy_loss.loss_mode=aer"])
    preflight(config)
    assert touchpoints.is_applied("config.reference_policy_no_kl")
    assert touchpoints.is_applied("config.aer_policy_loss_target")


def test_doctor_prints_the_inventory_with_active_flags():
    from erpo_verl.tools.doctor import inventory_lines

    lines = inventory_lines({"this process": {"touchpoints": ["cpu.platform"]}, "Ray worker": RuntimeError("x")})
    row = next(line for line in lines if line.split()[:1] == ["cpu.platform"])
    assert row.split()[-2:] == ["yes", "?"]
    other = next(line for line in lines if line.split()[:1] == ["cpu.gloo_backend"])
    assert other.split()[-2:] == ["no", "?"]
    assert sum(1 for line in lines if line.startswith("  ") and not line.startswith("      ")) == len(INVENTORY) + 1
