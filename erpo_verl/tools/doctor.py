"""``erpo-verl doctor``: diagnose an installation in one command.

Checks, each with a one-line fix when it fails:

* versions: verl against the pin (0.9.1), torch, transformers against verl's range;
* registration of our estimators, losses and trainer mode, in this process *and* inside a Ray worker
  (verl swallows plugin exceptions, so a broken plugin otherwise only shows up as "Unknown advantage estimator");
* hardware and GPU-only extras: CUDA devices, vLLM, flash-attn; whether CPU mode (``VERL_PLATFORM=cpu``) is on.

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

ESTIMATOR_NAMES = ("erpo", "ep_grpo", "dapo", "grpo_forking")
LOSS_NAMES = ("aer",)
TRAINER_MODES = ("erpo_sync",)


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
    """Which of our names resolve in verl's registries of *this* process (imports verl)."""
    import verl  # noqa: F401  (loads the verl.plugins entry points)
    from verl.trainer.ppo import core_algos
    from verl.trainer.ppo.v1 import trainer_base

    return {
        "estimators": [n for n in ESTIMATOR_NAMES if n in core_algos.ADV_ESTIMATOR_REGISTRY],
        "losses": [n for n in LOSS_NAMES if n in core_algos.POLICY_LOSS_REGISTRY],
        "trainer_modes": [n for n in TRAINER_MODES if n in trainer_base.TRAINER_REGISTRY],
    }


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
    fix = (
        "reinstall the plugin so its entry point is registered: pip install -e . (and check that "
        "VERL_USE_EXTERNAL_PLUGINS is unset, 'auto', or includes erpo_verl)"
    )
    if isinstance(report, Exception):
        return [Check(f"registration ({where})", False, f"could not check: {report!r}", fix)]
    wanted = {"estimators": ESTIMATOR_NAMES, "losses": LOSS_NAMES, "trainer_modes": TRAINER_MODES}
    missing = [f"{kind}:{n}" for kind, names in wanted.items() for n in names if n not in report[kind]]
    found = ", ".join(n for names in report.values() for n in names)
    if missing:
        return [Check(f"registration ({where})", False, f"missing {', '.join(missing)}", fix)]
    return [Check(f"registration ({where})", True, found)]


def run_checks(ray_worker: bool = True, require_gpu: bool = False, timeout: float = 120.0) -> list[Check]:
    checks: list[Check] = []
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
    checks += _registration_checks("this process", local)
    if ray_worker:
        try:
            remote = _registration_in_ray_worker(timeout)
        except Exception as exc:
            remote = exc
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
        checks.append(Check(dist, v is not None, v or "not installed", fix, required=require_gpu))
    checks.append(
        Check("CPU mode", True, "on (VERL_PLATFORM=cpu): cpu platform, gloo, rollout.name=hf" if cpu_mode
              else "off (set VERL_PLATFORM=cpu to train without a GPU)", required=False)
    )
    return checks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="erpo-verl doctor", description="Diagnose an erpo-verl installation.")
    parser.add_argument("--no-ray", action="store_true", help="skip the check inside a Ray worker")
    parser.add_argument("--require-gpu", action="store_true", help="treat a missing GPU, vLLM or flash-attn as errors")
    args = parser.parse_args(argv)
    checks = run_checks(ray_worker=not args.no_ray, require_gpu=args.require_gpu)
    failed = False
    for c in checks:
        status = "ok  " if c.ok else ("FAIL" if c.required else "warn")
        print(f"[{status}] {c.name:26s} {c.detail}")
        if not c.ok:
            print(f"       fix: {c.fix}")
            failed |= c.required
    print("\nall required checks passed" if not failed else "\nsome required checks failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
