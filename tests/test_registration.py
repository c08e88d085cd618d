"""Registration with verl through the ``verl.plugins`` entry point, checked in fresh interpreters.

Each check runs ``python -c`` in a new process, so nothing this pytest process imported can make a name
resolve by accident: the registrations must come from ``import verl`` alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from erpo_verl.estimators import ESTIMATORS  # does not import verl

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TOKENIZERS_PARALLELISM": "false",
}

# Prints one JSON line: what each of our names resolves to after `import verl` (and nothing else of ours).
PROBE = """
import json, sys
import verl
result = {"register_loaded": "erpo_verl.integration.register" in sys.modules,
          "core_algos_imported_by_import_verl": "verl.trainer.ppo.core_algos" in sys.modules}
from verl.trainer.ppo import core_algos
def qual(obj):
    return obj.__module__ + "." + obj.__qualname__
for name in __NAMES__ + ["grpo"]:
    try:
        result[name] = qual(core_algos.get_adv_estimator_fn(name))
    except Exception as exc:
        result[name] = "error: " + str(exc)
from verl.trainer.ppo.v1 import get_trainer_cls
try:
    result["erpo_sync"] = qual(get_trainer_cls("erpo_sync"))
except Exception as exc:
    result["erpo_sync"] = "error: " + str(exc)
import verl.utils.config as vcfg
result["validate_config_wrapped"] = bool((getattr(vcfg.validate_config, "__erpo_touchpoint__", None) == "wrapper.validate_config"))
result["validate_config_wrapped_once"] = not (getattr(getattr(vcfg.validate_config, "__wrapped__", None), "__erpo_touchpoint__", None) == "wrapper.validate_config")
"""



def _qual(obj) -> str:
    return obj.__module__ + "." + obj.__qualname__


# every estimator the package registers (erpo, ep_grpo, dapo and any later addition), by where it is defined
OUR_NAMES = sorted(ESTIMATORS)
assert {"erpo", "ep_grpo", "dapo"} <= set(OUR_NAMES)
EXPECTED = {name: _qual(fn) for name, (fn, _) in ESTIMATORS.items()}
EXPECTED["grpo"] = "verl.trainer.ppo.core_algos.compute_grpo_outcome_advantage"  # verl's own, not re-registered
EXPECTED["erpo_sync"] = "erpo_verl.integration.trainer_mode.ERPOTrainerSync"
PROBE = PROBE.replace("__NAMES__", json.dumps(OUR_NAMES))


def start_python(code: str, **env) -> subprocess.Popen:
    """Start ``code`` in a fresh interpreter (offline, with only the given plugin policy)."""
    full_env = {**os.environ, **OFFLINE_ENV, **env}
    if "VERL_USE_EXTERNAL_PLUGINS" not in env:  # an outer setting must not leak into the check
        full_env.pop("VERL_USE_EXTERNAL_PLUGINS", None)
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=full_env,
                            cwd=os.path.dirname(os.path.abspath(__file__)))


def finish_python(proc: subprocess.Popen, timeout: float = 240) -> dict:
    """Wait for ``proc`` and return the JSON object of its last stdout line."""
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        pytest.fail(f"subprocess timed out after {timeout}s:\n{stdout[-3000:]}\n{stderr[-3000:]}")
    assert proc.returncode == 0, f"subprocess failed ({proc.returncode}):\n{stdout[-3000:]}\n{stderr[-5000:]}"
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, f"no JSON output:\n{stdout[-3000:]}\n{stderr[-3000:]}"
    return json.loads(lines[-1])


def run_python(code: str, timeout: float = 240, **env) -> dict:
    return finish_python(start_python(code, **env), timeout)


DEFAULT_PROBE = PROBE + """
import verl.trainer.main_ppo as main_ppo
import erpo_verl.estimators as est
from erpo_verl.integration.preflight import ERPOSetupError
from erpo_verl.integration.trainer_mode import ERPOTrainerSync
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
result["identity"] = {
    **{name: core_algos.get_adv_estimator_fn(name) is fn for name, (fn, _) in est.ESTIMATORS.items()},
    "erpo": core_algos.get_adv_estimator_fn("erpo") is est.compute_erpo_advantage,
    "ep_grpo": core_algos.get_adv_estimator_fn("ep_grpo") is est.compute_ep_grpo_advantage,
    "dapo": core_algos.get_adv_estimator_fn("dapo") is est.compute_dapo_outcome_advantage,
    "trainer": get_trainer_cls("erpo_sync") is ERPOTrainerSync,
    "trainer_subclass": issubclass(ERPOTrainerSync, PPOTrainerSync),
    # main_ppo binds validate_config at import time: it must have bound the wrapper (driver-side preflight)
    "main_ppo_wrapped": main_ppo.validate_config is vcfg.validate_config
                        and (getattr(main_ppo.validate_config, "__erpo_touchpoint__", None) == "wrapper.validate_config"),
    "setup_error_is_value_error": issubclass(ERPOSetupError, ValueError),
}
print(json.dumps(result))
"""

RELOAD_PROBE = """
import importlib, json
import erpo_verl.integration.register as reg           # before verl: callbacks are pending
importlib.reload(reg)                       # pending twice
import verl                                 # the entry point imports it again (cached)
import erpo_verl.integration.register
from verl.trainer.ppo import core_algos    # pending callbacks run (twice) here
importlib.reload(reg)                       # after: callbacks run at once, again
importlib.reload(reg)
from verl.trainer.ppo.v1 import get_trainer_cls
importlib.reload(reg)
import verl.utils.config as vcfg
import erpo_verl.estimators as est
import erpo_verl.integration.trainer_mode as ts
print(json.dumps({
    **{name: core_algos.get_adv_estimator_fn(name) is fn for name, (fn, _) in est.ESTIMATORS.items()},
    "trainer": get_trainer_cls("erpo_sync") is ts.ERPOTrainerSync,
    "wrapped_once": vcfg.validate_config.__erpo_touchpoint__ == "wrapper.validate_config"
                    and not (getattr(vcfg.validate_config.__wrapped__, "__erpo_touchpoint__", None) == "wrapper.validate_config"),
}))
"""

NO_PLUGINS_PROBE = PROBE + """
before = dict(result)
import erpo_verl.integration.register
after = {n: qual(core_algos.get_adv_estimator_fn(n)) for n in __NAMES__}
after["erpo_sync"] = qual(get_trainer_cls("erpo_sync"))
after["validate_config_wrapped"] = bool((getattr(vcfg.validate_config, "__erpo_touchpoint__", None) == "wrapper.validate_config"))
print(json.dumps({"before": before, "after": after}))
""".replace("__NAMES__", json.dumps(OUR_NAMES))


@pytest.fixture(scope="module")
def probes():
    """The fresh-interpreter checks below, started together (each spends ~10 s importing verl)."""
    started = {
        "default": start_python(DEFAULT_PROBE),
        "reload": start_python(RELOAD_PROBE),
        "no_plugins": start_python(NO_PLUGINS_PROBE, VERL_USE_EXTERNAL_PLUGINS="none"),
        "named": start_python(PROBE + "\nprint(json.dumps(result))", VERL_USE_EXTERNAL_PLUGINS="erpo_verl"),
    }
    yield {name: lambda proc=proc: finish_python(proc) for name, proc in started.items()}
    for proc in started.values():
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_import_verl_registers_everything(probes):
    result = probes["default"]()
    for name, qualname in EXPECTED.items():
        assert result[name] == qualname, (name, result[name])
    assert result["register_loaded"]
    assert result["validate_config_wrapped"] and result["validate_config_wrapped_once"]
    assert all(result["identity"].values()), result["identity"]
    # the registration is lazy: `import verl` alone does not import verl's algorithm module
    assert not result["core_algos_imported_by_import_verl"]


def test_register_imported_twice_and_reloaded(probes):
    result = probes["reload"]()
    assert all(result.values()), result


def test_without_the_entry_point_nothing_is_registered(probes):
    """VERL_USE_EXTERNAL_PLUGINS=none disables entry points: our names are absent, so the entry point is
    what registers them; importing erpo_verl.integration.register by hand then adds them."""
    result = probes["no_plugins"]()
    before, after = result["before"], result["after"]
    assert not before["register_loaded"]
    for name in OUR_NAMES:
        assert before[name].startswith("error: Unknown advantage estimator"), before[name]
        assert after[name] == EXPECTED[name]
    assert before["erpo_sync"].startswith("error: Unknown trainer 'erpo_sync'")
    assert before["grpo"] == EXPECTED["grpo"]
    assert after["erpo_sync"] == EXPECTED["erpo_sync"]
    assert not before["validate_config_wrapped"] and after["validate_config_wrapped"]


def test_named_plugin_policy_loads_us(probes):
    """VERL_USE_EXTERNAL_PLUGINS=<names> loads only the listed entry points; ours is named erpo_verl."""
    result = probes["named"]()
    assert result["erpo"] == EXPECTED["erpo"] and result["erpo_sync"] == EXPECTED["erpo_sync"]


@pytest.mark.slow
def test_registered_inside_a_ray_worker():
    """A Ray worker is a fresh process that only imports verl: the entry point must register there too.
    A worker started with VERL_USE_EXTERNAL_PLUGINS=none is the control."""
    result = run_python("""
        import json
        import ray
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)

        @ray.remote
        def probe():
            import os, sys
            import verl.trainer.ppo.core_algos as core_algos
            out = {"pid": os.getpid()}
            for name in __NAMES__:
                try:
                    fn = core_algos.get_adv_estimator_fn(name)
                    out[name] = fn.__module__ + "." + fn.__qualname__
                except Exception as exc:
                    out[name] = "error: " + str(exc)
            return out

        try:
            worker = ray.get(probe.remote(), timeout=240)
            control = ray.get(probe.options(runtime_env={"env_vars": {"VERL_USE_EXTERNAL_PLUGINS": "none"}}).remote(),
                              timeout=240)
        finally:
            ray.shutdown()
        print(json.dumps({"driver_pid": __import__("os").getpid(), "worker": worker, "control": control}))
    """.replace("__NAMES__", json.dumps(OUR_NAMES)), timeout=400)
    worker, control = result["worker"], result["control"]
    assert worker["pid"] != result["driver_pid"]
    for name in OUR_NAMES:
        assert worker[name] == EXPECTED[name], worker
        assert control[name].startswith("error:"), control
