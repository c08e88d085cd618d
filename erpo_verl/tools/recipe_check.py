"""Compose and validate a verl 0.9.1 configuration without GPUs, data or models (the recipes' ``DRY_RUN=1``).

    python -m erpo_verl.tools.recipe_check [--no-yaml] [--config-path=config] [--config-name NAME] OVERRIDE [OVERRIDE ...]

It does what ``python -m verl.trainer.main_ppo OVERRIDE ...`` does before it starts Ray, and a little more:

1. composes verl's own ``ppo_trainer`` config (or the one ``--config-name`` names, e.g. ``ppo_megatron_trainer``,
   as verl's scripts pass it) with Hydra's compose API (config module ``verl.trainer.config``, i.e. the installed
   wheel, not a checkout) and the same overrides, so a renamed or unknown key, or a ``+`` on a key that exists,
   fails exactly as it would in the real entry point;
2. checks the verl version and that the erpo-verl plugin is registered (the same check as ``erpo-verl doctor
   --problems``) and that the estimator and trainer mode named by the config resolve;
3. rejects the legacy reward keys that verl 0.9.1's ``main_ppo`` accepts but silently ignores
   (``reward_model.*``, ``custom_reward_function.*``);
4. runs our :func:`erpo_verl.integration.preflight.preflight` (which turns the reference policy on when an estimator needs
   it) and verl's ``validate_config``;
5. builds the dataclasses the trainer and workers build from the config - the actor (``FSDPActorConfig``),
   the reference policy (after the same key renaming the worker does), the rollout (``RolloutConfig``), its
   checkpoint engine, the critic when one is used, ``algorithm.filter_groups`` - and checks the model
   section's keys against ``HFModelConfig`` (which cannot be built without the model files), so unknown keys
   fail here rather than on the cluster;
6. resolves the reward manager class and imports the custom reward function, checks that it accepts what verl's
   reward loop passes (plus ``reward_router_address`` and ``reward_model_tokenizer`` when
   ``reward.reward_model.enable=true``), and checks the DAPO reward manager's ``reward.reward_kwargs``
   (``overlong_buffer_cfg``, ``max_resp_len``);

No GPU and no data is touched. Model files are read only where verl's own ``validate_config`` reads them: with a
critic (GAE), it loads ``critic.model``'s config and tokenizer, so those must exist; the OK line says so.

then prints the resolved configuration as a YAML document (``---`` first) on stdout (everything else goes to
stderr) and exits 0.
Any problem exits 2 with one ``recipe_check: ERROR: ...`` line that names the setting.

In Python, :func:`compose_config` returns the composed ``DictConfig`` and :func:`check_config` runs
steps 2-6 on it (mutating it like the real entry point does) and returns what it built.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from erpo_verl import VERL_VERSION

CONFIG_MODULE = "verl.trainer.config"
CONFIG_NAME = "ppo_trainer"
EXIT_OK = 0
EXIT_INVALID = 2

# Keys of verl's legacy reward configuration. verl 0.9.1 still declares them (legacy_reward_impl.yaml, all
# null) so Hydra accepts them, but main_ppo no longer migrates them: setting one has no effect at all.
LEGACY_REWARD_SECTIONS = {
    "reward_model": "reward.* (e.g. reward_model.reward_manager -> reward.reward_manager.name, "
    "reward_model.reward_kwargs -> +reward.reward_kwargs)",
    "custom_reward_function": "reward.custom_reward_function.{path,name}",
    "sandbox_fusion": "reward.sandbox_fusion.*",
}
DAPO_OVERLONG_KEYS = {"enable", "len", "penalty_factor", "log"}
DAPO_REWARD_KWARGS = {"overlong_buffer_cfg", "max_resp_len"}
REWARD_MODEL_ARGS = {"reward_router_address": "127.0.0.1:0", "reward_model_tokenizer": None}


class RecipeCheckError(ValueError):
    """The configuration would not run; the message names the setting."""


@dataclass
class CheckReport:
    """What :func:`check_config` built and changed."""

    changes: list[str] = field(default_factory=list)
    built: dict[str, str] = field(default_factory=dict)
    use_reference_policy: bool = False
    use_critic: bool = False
    trainer_class: str = ""
    reward_manager: str = ""
    reward_function: str | None = None

    def summary(self) -> str:
        lines = [f"built {name}: {cls}" for name, cls in self.built.items()]
        lines.append(f"trainer class: {self.trainer_class}")
        on_off = {True: "on", False: "off"}
        lines.append(f"reference policy: {on_off[self.use_reference_policy]}; critic: {on_off[self.use_critic]}")
        function = self.reward_function or "(verl default routing)"
        lines.append(f"reward manager: {self.reward_manager}; reward function: {function}")
        if self.changes:
            lines.append("changed by erpo-verl preflight: " + " ".join(self.changes))
        return "\n".join(lines)


# -------------------------------------------------------------------------------------------------------------
# composition
# -------------------------------------------------------------------------------------------------------------
def compose_config(overrides: Sequence[str], config_name: str = CONFIG_NAME):
    """verl's ``config_name`` config (default ``ppo_trainer``) with ``overrides`` applied, composed as ``main_ppo``
    composes it."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base=None):
            return compose(config_name=config_name, overrides=list(overrides))
    except Exception as exc:  # hydra's override-parse / composition errors
        if type(exc).__module__.startswith(("hydra", "omegaconf")):
            raise RecipeCheckError(f"Hydra could not compose the config: {_one_line(exc)}") from exc
        raise


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    cause = exc.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text += " (" + " ".join(str(cause).split()) + ")"
    return text


# -------------------------------------------------------------------------------------------------------------
# checks
# -------------------------------------------------------------------------------------------------------------
def check_plugin_registered() -> None:
    """verl's version and our registration (verl swallows plugin errors): the check of ``erpo-verl doctor``."""
    from erpo_verl.tools.doctor import plugin_problems

    problems = plugin_problems()
    if problems:
        raise RecipeCheckError("; ".join(problems))


def check_legacy_reward_keys(config) -> None:
    for section, replacement in LEGACY_REWARD_SECTIONS.items():
        node = config.get(section, None)
        if node is None:
            continue
        set_keys = _non_null_leaves(node, prefix=section)
        if set_keys:
            raise RecipeCheckError(
                f"{', '.join(set_keys)} is a legacy key that verl 0.9.1's main_ppo accepts but ignores; "
                f"use {replacement}"
            )


def _non_null_leaves(node, prefix: str) -> list[str]:
    from omegaconf import DictConfig, OmegaConf

    out = []
    container = OmegaConf.to_container(node, resolve=False) if isinstance(node, DictConfig) else node
    stack = [(prefix, container)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{path}.{k}", v) for k, v in value.items())
        elif value is not None:
            out.append(path)
    return sorted(out)


def check_estimator(config) -> None:
    from verl.trainer.ppo.core_algos import AdvantageEstimator, get_adv_estimator_fn

    name = str(config.algorithm.adv_estimator)
    if name in (AdvantageEstimator.GAE.value, AdvantageEstimator.GRPO.value):
        return
    try:
        get_adv_estimator_fn(name)
    except ValueError as exc:
        raise RecipeCheckError(f"algorithm.adv_estimator={name}: {exc}") from exc


def check_trainer_mode(config) -> str:
    if not config.trainer.get("use_v1", True):
        return "verl.trainer.main_ppo_v0.TaskRunner (legacy trainer)"
    from verl.trainer.ppo.v1 import get_trainer_cls

    mode = config.trainer.v1.trainer_mode
    try:
        cls = get_trainer_cls(mode)
    except ValueError as exc:
        raise RecipeCheckError(f"trainer.v1.trainer_mode={mode}: {exc}") from exc
    return f"{cls.__module__}.{cls.__qualname__}"


def run_preflight_and_validate(config, report: CheckReport) -> None:
    import verl.utils.config as verl_config
    from verl.trainer.ppo.utils import need_critic, need_reference_policy

    from erpo_verl.integration.preflight import preflight

    report.changes = preflight(config)  # raises ERPOSetupError (a ValueError) naming the setting
    report.use_reference_policy = bool(need_reference_policy(config))
    report.use_critic = bool(need_critic(config))
    validate = getattr(verl_config.validate_config, "__wrapped__", verl_config.validate_config)
    try:
        validate(config, report.use_reference_policy, report.use_critic)
    except Exception as exc:  # AssertionError/ValueError from the checks, hydra's InstantiationException
        reason = _one_line(exc) or type(exc).__name__
        if report.use_critic and "critic.model" in reason:
            reason += (f" (with a critic, verl's validate_config loads critic.model's config and tokenizer: "
                       f"critic.model.path={config.critic.model.get('path')} must be a model folder)")
        raise RecipeCheckError(f"verl's validate_config rejected the config: {reason}") from exc


def build_worker_dataclasses(config, report: CheckReport) -> None:
    """Build the dataclasses the trainer and the workers build, so unknown or invalid keys fail now."""
    from omegaconf import open_dict
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.config import HFModelConfig

    arr = config.actor_rollout_ref

    def build(name: str, node) -> Any:
        try:
            obj = omega_conf_to_dataclass(node)
        except Exception as exc:  # TypeError for unknown keys, AssertionError/ValueError from __post_init__
            raise RecipeCheckError(f"{name}: {_one_line(exc) or type(exc).__name__}") from exc
        report.built[name] = type(obj).__name__
        return obj

    build("actor_rollout_ref.actor", arr.actor)
    if report.use_reference_policy:
        # the reference worker renames its log-prob keys before building an ActorConfig (engine_workers.py)
        ref = copy.deepcopy(arr.ref)
        with open_dict(ref):
            ref.ppo_mini_batch_size = arr.actor.ppo_mini_batch_size
            ref.ppo_micro_batch_size = ref.pop("log_prob_micro_batch_size", None)
            ref.ppo_micro_batch_size_per_gpu = ref.pop("log_prob_micro_batch_size_per_gpu", None)
            ref.use_dynamic_bsz = ref.pop("log_prob_use_dynamic_bsz", False)
            ref.ppo_max_token_len_per_gpu = ref.pop("log_prob_max_token_len_per_gpu", None)
        build("actor_rollout_ref.ref", ref)
    build("actor_rollout_ref.rollout", arr.rollout)
    build("actor_rollout_ref.rollout.checkpoint_engine", arr.rollout.checkpoint_engine)
    if report.use_critic:
        build("critic", config.critic)
    filter_groups = config.algorithm.get("filter_groups", None)
    if filter_groups is not None:
        build("algorithm.filter_groups", filter_groups)

    # HFModelConfig loads the tokenizer in __post_init__: check its keys instead of building it
    known = {f.name for f in dataclasses.fields(HFModelConfig)} | {"_target_"}
    unknown = sorted(set(arr.model.keys()) - known)
    if unknown:
        raise RecipeCheckError(
            f"actor_rollout_ref.model has keys HFModelConfig does not know: {', '.join(unknown)} "
            "(model config overrides go under actor_rollout_ref.model.override_config)"
        )
    report.built["actor_rollout_ref.model"] = "HFModelConfig (keys checked; not built: it loads the model files)"


def check_reward(config, report: CheckReport) -> None:
    from verl.trainer.ppo.reward import get_custom_reward_fn, resolve_reward_manager_cls

    try:
        manager_cls = resolve_reward_manager_cls(config)
    except (ValueError, AssertionError, ImportError, AttributeError) as exc:
        raise RecipeCheckError(f"reward.reward_manager: {_one_line(exc)}") from exc
    report.reward_manager = f"{config.reward.reward_manager.name} ({manager_cls.__name__})"

    fn_cfg = config.reward.get("custom_reward_function") or {}
    if fn_cfg.get("path"):
        try:
            wrapped = get_custom_reward_fn(config)
        except Exception as exc:
            raise RecipeCheckError(
                f"reward.custom_reward_function (path={fn_cfg.get('path')}, name={fn_cfg.get('name')}): "
                f"{_one_line(exc)}"
            ) from exc
        raw = wrapped.args[0] if hasattr(wrapped, "args") and wrapped.args else wrapped
        kwargs = dict(fn_cfg.get("reward_kwargs", {}) or {})
        # verl's reward loop (experimental/reward_loop/reward_manager/*.py) adds these when a reward model runs
        passed = dict(REWARD_MODEL_ARGS) if (config.reward.get("reward_model", None) or {}).get("enable", False) else {}
        try:
            inspect.signature(raw).bind(
                data_source="x", solution_str="x", ground_truth="x", extra_info={}, **passed, **kwargs
            )
        except TypeError as exc:
            raise RecipeCheckError(
                f"{fn_cfg.get('path')}:{fn_cfg.get('name')} cannot be called with what verl passes "
                f"(data_source, solution_str, ground_truth, extra_info{''.join(', ' + k for k in passed)}) and "
                f"reward.custom_reward_function.reward_kwargs {sorted(kwargs)}: {exc}"
            ) from exc
        report.reward_function = f"{fn_cfg.get('path')}:{fn_cfg.get('name')}"

    reward_kwargs = config.reward.get("reward_kwargs", None)
    if config.reward.reward_manager.name == "dapo" and reward_kwargs is not None:
        unknown = sorted(set(reward_kwargs.keys()) - DAPO_REWARD_KWARGS)
        if unknown:
            raise RecipeCheckError(
                f"reward.reward_kwargs.{unknown[0]} is not read by the dapo reward manager "
                f"(it reads {sorted(DAPO_REWARD_KWARGS)})"
            )
        overlong = reward_kwargs.get("overlong_buffer_cfg", None)
        if overlong is not None:
            unknown = sorted(set(overlong.keys()) - DAPO_OVERLONG_KEYS)
            if unknown:
                raise RecipeCheckError(
                    f"reward.reward_kwargs.overlong_buffer_cfg.{unknown[0]} is unknown "
                    f"(keys: {sorted(DAPO_OVERLONG_KEYS)})"
                )
            if overlong.get("enable", False):
                max_len = reward_kwargs.get("max_resp_len", None)
                buf = overlong.get("len", None)
                if max_len is None or buf is None or not buf > 0 or max_len < buf:
                    raise RecipeCheckError(
                        "the dapo overlong buffer needs reward.reward_kwargs.max_resp_len >= "
                        f"overlong_buffer_cfg.len > 0 (got max_resp_len={max_len}, len={buf})"
                    )
                if max_len != config.data.max_response_length:
                    raise RecipeCheckError(
                        f"reward.reward_kwargs.max_resp_len={max_len} differs from "
                        f"data.max_response_length={config.data.max_response_length}: the overlong penalty "
                        "would start at the wrong length"
                    )
    elif reward_kwargs is not None and config.reward.reward_manager.name != "dapo":
        raise RecipeCheckError(
            "reward.reward_kwargs is only read by the dapo reward manager; set reward.reward_manager.name=dapo "
            "or move reward-function arguments to reward.custom_reward_function.reward_kwargs"
        )


def check_data(config) -> None:
    for key in ("train_files", "val_files"):
        if not config.data.get(key):
            raise RecipeCheckError(f"data.{key} is not set")


def check_config(config) -> CheckReport:
    """Run every check on a composed config (mutating it as ``main_ppo`` would); raise RecipeCheckError."""
    report = CheckReport()
    with contextlib.redirect_stdout(sys.stderr):  # verl prints progress; stdout is for the YAML
        check_plugin_registered()
        check_legacy_reward_keys(config)
        check_data(config)
        check_estimator(config)
        report.trainer_class = check_trainer_mode(config)
        try:
            run_preflight_and_validate(config, report)
        except RecipeCheckError:
            raise
        except ValueError as exc:  # erpo-verl preflight (ERPOSetupError) or estimator hyper-parameters
            raise RecipeCheckError(_one_line(exc)) from exc
        build_worker_dataclasses(config, report)
        check_reward(config, report)
    return report


def render_yaml(config) -> str:
    """The resolved config as one YAML document (starting with ``---``, so several runs' output is a stream)."""
    from omegaconf import OmegaConf

    return "---\n" + OmegaConf.to_yaml(config, resolve=True)


# -------------------------------------------------------------------------------------------------------------
# command line
# -------------------------------------------------------------------------------------------------------------
USAGE = ("usage: python -m erpo_verl.tools.recipe_check [--no-yaml] [--config-path=config] [--config-name NAME] "
         "OVERRIDE [OVERRIDE ...]")


def _verl_config_dir() -> str:
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("verl")
    return str(Path(spec.origin).parent / "trainer" / "config") if spec and spec.origin else ""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    show_yaml = True
    config_name = CONFIG_NAME
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if flag == "--":
            break
        if flag == "--no-yaml":
            show_yaml = False
        elif flag == "--config-name" or flag.startswith("--config-name="):
            value = flag.partition("=")[2] if "=" in flag else (args.pop(0) if args else "")
            config_name = value.strip("'\"").removesuffix(".yaml")
            if not config_name:
                print(f"recipe_check: ERROR: --config-name needs a name (e.g. ppo_megatron_trainer)\n{USAGE}", file=sys.stderr)
                return EXIT_INVALID
        elif flag == "--config-path" or flag.startswith("--config-path="):
            value = (flag.partition("=")[2] if "=" in flag else (args.pop(0) if args else "")).strip("'\"")
            # main_ppo resolves a relative --config-path against verl/trainer/: "config" is verl's own folder
            if value.rstrip("/") not in ("config", _verl_config_dir()):
                print(f"recipe_check: ERROR: --config-path={value} is not supported: the dry run composes verl's own "
                      f"configs (module {CONFIG_MODULE}, i.e. --config-path=config); pass --config-name with one of "
                      "them", file=sys.stderr)
                return EXIT_INVALID
        elif flag in ("--help", "-h"):
            print(__doc__.strip())
            return EXIT_OK
        else:
            print(f"recipe_check: ERROR: unknown option {flag}\n{USAGE}", file=sys.stderr)
            return EXIT_INVALID
    try:
        with contextlib.redirect_stdout(sys.stderr):
            config = compose_config(args, config_name)
        report = check_config(config)
        text = render_yaml(config) if show_yaml else ""
    except RecipeCheckError as exc:
        print(f"recipe_check: ERROR: {exc}", file=sys.stderr)
        return EXIT_INVALID
    if show_yaml:
        sys.stdout.write(text)
        sys.stdout.flush()
    print(report.summary(), file=sys.stderr)
    touched = ("no GPU or data was touched; verl's validate_config read critic.model's config and tokenizer"
               if report.use_critic else "no GPU, data or model was touched")
    print(
        f"recipe_check: OK: the {config_name} config composes and validates against verl {VERL_VERSION} "
        f"(dry run: {touched})",
        file=sys.stderr,
    )
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
