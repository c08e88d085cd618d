"""The reproduction recipes (recipes/*.sh), run as a user runs them: ``bash recipes/run_<algo>_qwen7b.sh``.

* ``DRY_RUN=1``: every recipe and the ablation entry compose the full config with verl 0.9.1's real schema
  and our plugin, pass the preflight and verl's ``validate_config`` and build verl's config dataclasses.
* The four recipes are one controlled experiment: their composed configs differ only in algorithm keys.
* A bad environment (no model, no data, no GPU outside the CPU profile) stops the recipe in seconds with a
  message that says what to do.
* ``PROFILE=cpu-tiny`` runs the very same scripts end to end on CPU for 2 steps (slow).
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
ALGOS = ("grpo", "dapo", "erpo", "ep_grpo")
BASELINE = "grpo"

# Every key an ALGO block may set. The four composed configs may differ only in these (and in the names below).
ALGORITHM_KEYS = frozenset(
    {
        "algorithm.adv_estimator",
        "algorithm.norm_adv_by_std_in_grpo",
        "algorithm.use_kl_in_reward",
        "trainer.v1.trainer_mode",
        "actor_rollout_ref.actor.use_kl_loss",
        "actor_rollout_ref.actor.kl_loss_coef",
        "actor_rollout_ref.actor.policy_loss.loss_mode",
        "actor_rollout_ref.actor.clip_ratio_low",
        "actor_rollout_ref.actor.clip_ratio_high",
        "actor_rollout_ref.actor.clip_ratio_c",
        "actor_rollout_ref.actor.loss_agg_mode",
        "algorithm.filter_groups.enable",
        "algorithm.filter_groups.metric",
        "algorithm.filter_groups.max_inflight_gen_batches",
        "reward.reward_manager.name",
        "reward.reward_kwargs.overlong_buffer_cfg.enable",
        "reward.reward_kwargs.overlong_buffer_cfg.len",
        "reward.reward_kwargs.overlong_buffer_cfg.penalty_factor",
        "reward.reward_kwargs.overlong_buffer_cfg.log",
        "reward.reward_kwargs.max_resp_len",
    }
)
# Keys derived from the experiment name (<algo>-<model>-<train set>), which differ by construction.
NAMING_KEYS = frozenset(
    {
        "trainer.experiment_name",
        "trainer.default_local_dir",
        "trainer.validation_data_dir",
        "actor_rollout_ref.rollout.trace.experiment_name",
    }
)

# Variables the recipes read: removed from the inherited environment so each test sees the defaults.
RECIPE_VARIABLES = (
    "DRY_RUN PROFILE SKIP_ENV_CHECK SKIP_GPU_CHECK MODEL MODEL_NAME MODELS_DIR MODEL_PATH DATA_DIR TRAIN_SET "
    "VAL_REPEAT "
    "TRAIN_FILE TRAIN_FILES VAL_FILES NNODES N_GPUS_PER_NODE GEN_TP GPU_MEM_UTIL SP_SIZE OFFLOAD TRAIN_BATCH_SIZE "
    "PPO_MINI_BATCH_SIZE N_RESP MAX_PROMPT_LENGTH MAX_RESPONSE_LENGTH ACTOR_MAX_TOKENS INFER_MAX_TOKENS LR "
    "LR_WARMUP_STEPS WEIGHT_DECAY TEMPERATURE TOP_P SEED OVERLONG_BUFFER_LEN OVERLONG_PENALTY_FACTOR "
    "FILTER_GROUPS_METRIC MAX_INFLIGHT_GEN_BATCHES VAL_TEMPERATURE VAL_TOP_P VAL_DO_SAMPLE TEST_FREQ VAL_BEFORE_TRAIN "
    "TOTAL_STEPS TOTAL_EPOCHS SAVE_FREQ MAX_CKPT_TO_KEEP PROJECT_NAME EXPERIMENT_NAME EXPERIMENT_SUFFIX LOGGERS "
    "ASSETS_DIR CPU_STEPS OUTPUT_ROOT OUTPUT_DIR CKPT_DIR VALIDATION_DATA_DIR VERL_FILE_LOGGER_PATH ABLATIONS "
    "ABLATION_BASE ALGO_NAME VERL_PLATFORM TRAINER_MODE ROLLOUT_GPUS CHECKPOINT_ENGINE CPU_GPUS_PER_NODE CPU_NNODES"
).split()


def recipe_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in RECIPE_VARIABLES}
    env.update(
        PYTHON=sys.executable,
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        WANDB_MODE="disabled",
        OUTPUT_ROOT=str(tmp_path / "outputs"),
    )
    env.update({k: str(v) for k, v in settings.items()})
    return env


def run_script(script: str, env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(RECIPES / script), *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def flatten(node, prefix: str = "") -> dict:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: node}


def get(config: dict, dotted: str):
    for part in dotted.split("."):
        config = config[part]
    return config


def _fail_message(result: subprocess.CompletedProcess) -> str:
    return f"exit {result.returncode}\n--- stderr (tail) ---\n{result.stderr[-4000:]}"


# ------------------------------------------------------------------------------------------------------------
# DRY_RUN=1: the four recipes
# ------------------------------------------------------------------------------------------------------------
# Dry runs started together by the `dry_runs` fixture besides the recipes themselves: name -> (script, settings, args)
EXTRA_DRY_RUNS = {
    "dapo@cpu-tiny": ("run_dapo_qwen7b.sh", {"PROFILE": "cpu-tiny"}, ()),
    "erpo+bad_override": ("run_erpo_qwen7b.sh", {}, ("+algorithm.erpo.gate_gama=3",)),
    "erpo@separate_async": ("run_erpo_qwen7b.sh", {"TRAINER_MODE": "separate_async"}, ()),
    "grpo@colocate_async": ("run_grpo_qwen7b.sh", {"TRAINER_MODE": "colocate_async"}, ()),
    "erpo@cpu-tiny+separate_async": ("run_erpo_qwen7b.sh", {"PROFILE": "cpu-tiny", "TRAINER_MODE": "separate_async"}, ()),
}


@pytest.fixture(scope="module")
def dry_runs(tmp_path_factory):
    """The four recipes, the entropy-method recipes and EXTRA_DRY_RUNS under DRY_RUN=1, started concurrently
    (each is ~7 s of importing verl; together they take about half as long on two cores);
    name -> (CompletedProcess, parsed config or None)."""
    tmp = tmp_path_factory.mktemp("recipes_dry")
    jobs = {algo: (f"run_{algo}_qwen7b.sh", {}, ()) for algo in [*ALGOS, *sorted(ENTROPY_METHOD_RECIPES)]}
    jobs.update(EXTRA_DRY_RUNS)
    procs = {}
    for name, (script, settings, args) in jobs.items():
        # the recipes share one output root (their configs are compared); the extra runs get their own folders
        # (the same experiment names: one would overwrite the other's resolved config)
        where = tmp / name.replace("@", "_").replace("+", "_") if name in EXTRA_DRY_RUNS else tmp
        env = recipe_env(where, DRY_RUN="1", **settings)
        procs[name] = subprocess.Popen(
            ["bash", str(RECIPES / script), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
    results = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        config = yaml.safe_load(out) if proc.returncode == 0 else None
        results[name] = (result, config)
    return results


@pytest.mark.parametrize("algo", ALGOS)
def test_recipe_dry_run_composes_and_validates_against_verl(dry_runs, algo):
    result, config = dry_runs[algo]
    assert result.returncode == 0, _fail_message(result)
    assert "recipe_check: OK" in result.stderr
    assert "[validate_config] All configuration checks passed" in result.stderr  # verl's own validation ran
    assert "built actor_rollout_ref.actor: FSDPActorConfig" in result.stderr
    assert "built actor_rollout_ref.rollout: RolloutConfig" in result.stderr
    # the 8 x 80 GB defaults
    assert get(config, "algorithm.adv_estimator") == algo
    assert get(config, "trainer.use_v1") is True
    assert get(config, "trainer.n_gpus_per_node") == 8 and get(config, "trainer.nnodes") == 1
    assert get(config, "actor_rollout_ref.rollout.name") == "vllm"
    assert get(config, "actor_rollout_ref.actor.strategy") == "fsdp2"
    assert get(config, "actor_rollout_ref.model.path").endswith("/Qwen2.5-7B")
    assert get(config, "data.train_files")[0].endswith("/math/train.parquet")
    assert [Path(f).parent.name for f in get(config, "data.val_files")] == ["math500", "aime24", "aime25", "amc23"]
    assert get(config, "actor_rollout_ref.rollout.n") == 8
    assert get(config, "data.max_response_length") == 8192
    assert get(config, "actor_rollout_ref.rollout.val_kwargs.n") == 1  # avg@16 comes from 16 copies per row
    assert get(config, "reward.custom_reward_function.path") == "pkg://erpo_verl.rewards.math"


def test_recipes_differ_only_in_algorithm_keys(dry_runs):
    flat = {}
    for algo in ALGOS:
        result, config = dry_runs[algo]
        assert result.returncode == 0, _fail_message(result)
        flat[algo] = flatten(config)
    base = flat[BASELINE]
    diffs = {}
    for algo in ALGOS:
        keys = set(base) | set(flat[algo])
        diffs[algo] = {k for k in keys if base.get(k, "<absent>") != flat[algo].get(k, "<absent>")}
        unexpected = diffs[algo] - ALGORITHM_KEYS - NAMING_KEYS
        assert not unexpected, f"{algo} differs from {BASELINE} outside the algorithm block: " + ", ".join(
            f"{k}: {base.get(k, '<absent>')!r} vs {flat[algo].get(k, '<absent>')!r}" for k in sorted(unexpected)
        )
    # ... and the algorithm blocks really do what their papers say
    erpo, ep, dapo = flat["erpo"], flat["ep_grpo"], flat["dapo"]
    for cfg in (erpo, ep):
        assert cfg["trainer.v1.trainer_mode"] == "erpo_sync"
        assert cfg["actor_rollout_ref.actor.use_kl_loss"] is True  # the reference policy runs ...
        assert cfg["actor_rollout_ref.actor.kl_loss_coef"] == 0.0  # ... with no KL term in the loss
        assert cfg["algorithm.filter_groups.enable"] is False
    assert ep["algorithm.filter_groups.enable"] is False  # EP-GRPO keeps zero-variance groups
    assert base["actor_rollout_ref.actor.use_kl_loss"] is False and base["trainer.v1.trainer_mode"] == "sync"
    assert dapo["actor_rollout_ref.actor.clip_ratio_low"] == 0.2
    assert dapo["actor_rollout_ref.actor.clip_ratio_high"] == 0.28
    assert dapo["actor_rollout_ref.actor.loss_agg_mode"] == "token-mean"
    assert dapo["algorithm.filter_groups.enable"] is True and dapo["algorithm.filter_groups.metric"] == "acc"
    assert dapo["reward.reward_manager.name"] == "dapo"
    assert dapo["reward.reward_kwargs.overlong_buffer_cfg.enable"] is True
    assert dapo["reward.reward_kwargs.overlong_buffer_cfg.len"] == 4096
    assert dapo["reward.reward_kwargs.max_resp_len"] == dapo["data.max_response_length"]
    # the shared part is really shared: same reward function, data, lengths, optimiser, rollout for all four
    for key in (
        "reward.custom_reward_function.path",
        "reward.custom_reward_function.reward_kwargs.score_format",
        "data.val_files",
        "actor_rollout_ref.actor.optim.lr",
        "actor_rollout_ref.rollout.temperature",
        "actor_rollout_ref.rollout.val_kwargs.temperature",
    ):
        assert len({repr(flat[a][key]) for a in ALGOS}) == 1, key


def _algo_block(script: Path) -> list[str]:
    text = script.read_text()
    match = re.search(r"^ALGO=\(\n(.*?)^\)", text, flags=re.S | re.M)
    assert match, f"{script.name} has no ALGO=( ... ) block"
    return [line.split("#", 1)[0].strip() for line in match.group(1).splitlines() if line.split("#", 1)[0].strip()]


def _without_algo_block(script: Path) -> list[str]:
    text = re.sub(r"^ALGO=\(\n.*?^\)\n", "", script.read_text(), flags=re.S | re.M)
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [line for line in lines if not line.startswith("ALGO_NAME=")]


def test_recipe_scripts_differ_only_in_their_algo_block():
    scripts = [RECIPES / f"run_{algo}_qwen7b.sh" for algo in ALGOS]
    assert len({tuple(_without_algo_block(s)) for s in scripts}) == 1, "the recipes differ outside ALGO=(...)"
    for script in scripts:
        keys = {item.split("=", 1)[0].lstrip("+") for item in _algo_block(script)}
        assert keys <= ALGORITHM_KEYS, f"{script.name} sets {sorted(keys - ALGORITHM_KEYS)} in its ALGO block"


# ------------------------------------------------------------------------------------------------------------
# DRY_RUN=1: ablations and the CPU profile
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.slow  # five full compositions in sequence (~50 s): in `make test`, not in `make test-fast`
def test_ablation_entry_dry_run_composes_every_default_ablation_with_the_same_seed(tmp_path):
    result = run_script("ablate_erpo.sh", recipe_env(tmp_path, DRY_RUN="1"))
    assert result.returncode == 0, _fail_message(result)
    configs = [c for c in yaml.safe_load_all(result.stdout) if c]
    names = ["base", "gate_off", "progress_off", "bucket_cum_entropy", "zero_var_on"]
    assert result.stderr.count("recipe_check: OK") == len(names) == len(configs)
    by_name = {}
    for config in configs:
        experiment = get(config, "trainer.experiment_name")
        assert experiment.startswith("erpo-Qwen2.5-7B-math-ablate-"), experiment
        by_name[experiment.rsplit("-ablate-", 1)[1]] = config
    assert sorted(by_name) == sorted(names)
    assert "erpo" not in by_name["base"]["algorithm"]  # the reference run uses the estimator's defaults
    assert by_name["gate_off"]["algorithm"]["erpo"] == {"gate": False}
    assert by_name["progress_off"]["algorithm"]["erpo"] == {"progress_coef": 0}
    assert by_name["bucket_cum_entropy"]["algorithm"]["erpo"] == {"bucket_coord": "cum_entropy"}
    assert by_name["zero_var_on"]["algorithm"]["erpo"] == {"zero_var_fallback": True}
    assert {get(c, "data.seed") for c in configs} == {42}
    assert {get(c, "actor_rollout_ref.rollout.seed") for c in configs} == {42}
    assert len({get(c, "trainer.default_local_dir") for c in configs}) == len(names)  # one folder each


def test_ablation_entry_maps_every_switch_for_the_ep_grpo_base_and_rejects_unknown_names(tmp_path, fake_python):
    # the stand-in Python records the recipe_check call: tests the shell mapping without composing
    fake = fake_python
    names = ("base gate_off progress_off bucket_position bucket_cum_entropy zero_var_off zero_var_on edges_floor "
             "std_unbiased stats_response stats_batch third_party")
    env = recipe_env(tmp_path, DRY_RUN="1", ABLATION_BASE="ep_grpo", ABLATIONS=names, PYTHON=str(fake))
    result = run_script("ablate_erpo.sh", env, "trainer.total_training_steps=5")
    assert result.returncode == 0, _fail_message(result)
    calls = [c.strip().splitlines() for c in result.stdout.split("CALL\n") if c.strip()]
    assert len(calls) == 12
    expected = {
        "base": None,
        "gate_off": "+algorithm.ep_grpo.gate=false",
        "progress_off": "+algorithm.ep_grpo.progress_coef=0",
        "bucket_position": "+algorithm.ep_grpo.bucket_coord=position",
        "bucket_cum_entropy": "+algorithm.ep_grpo.bucket_coord=cum_entropy",
        "zero_var_off": "+algorithm.ep_grpo.zero_var_fallback=false",
        "zero_var_on": "+algorithm.ep_grpo.zero_var_fallback=true",
        "edges_floor": "+algorithm.ep_grpo.bucket_edges=floor",
        "std_unbiased": "+algorithm.ep_grpo.bucket_std=unbiased",
        "stats_response": "+algorithm.ep_grpo.entropy_stats_scope=response",
        "stats_batch": "+algorithm.ep_grpo.entropy_stats_scope=batch",
        "third_party": ["+algorithm.ep_grpo.bucket_edges=floor", "+algorithm.ep_grpo.bucket_std=unbiased",
                        "+algorithm.ep_grpo.entropy_stats_scope=response", "+algorithm.ep_grpo.anchor_gate=false"],
    }
    for name, args in zip(names.split(), calls, strict=True):
        assert args[:2] == ["-m", "erpo_verl.tools.recipe_check"]
        assert f"trainer.experiment_name=ep_grpo-Qwen2.5-7B-math-ablate-{name}" in args
        assert "algorithm.adv_estimator=ep_grpo" in args and args[-1] == "trainer.total_training_steps=5"
        switches = [a for a in args if a.startswith("+algorithm.ep_grpo.")]
        want = expected[name]
        assert switches == (want if isinstance(want, list) else [want] if want else [])

    bad = run_script("ablate_erpo.sh", recipe_env(tmp_path, DRY_RUN="1", ABLATIONS="gate_of", PYTHON=str(fake)))
    assert bad.returncode == 2 and "unknown ablation 'gate_of'" in bad.stderr and "gate_off" in bad.stderr
    assert "CALL" not in bad.stdout  # nothing ran


def test_cpu_profile_dry_run_keeps_the_algorithm_block_and_switches_dapo_to_the_score_metric(dry_runs):
    result, config = dry_runs["dapo@cpu-tiny"]
    assert result.returncode == 0, _fail_message(result)
    # hardware/model/data/reward blocks come from the CPU profile ...
    assert get(config, "trainer.device") == "cpu"
    assert get(config, "actor_rollout_ref.rollout.name") == "hf"
    assert get(config, "actor_rollout_ref.model.path").endswith("tiny_qwen2")
    assert get(config, "reward.custom_reward_function.path") == "pkg://erpo_verl.toy.reward"
    assert get(config, "trainer.total_training_steps") == 2
    # ... the algorithm block is DAPO's, adapted to the toy lengths and the toy reward
    assert get(config, "algorithm.adv_estimator") == "dapo"
    assert get(config, "actor_rollout_ref.actor.clip_ratio_high") == 0.28
    assert get(config, "algorithm.filter_groups.enable") is True
    assert get(config, "algorithm.filter_groups.metric") == "score"  # toy acc is exact match: never varies at first
    max_len = get(config, "data.max_response_length")
    assert get(config, "reward.reward_kwargs.max_resp_len") == max_len
    assert 0 < get(config, "reward.reward_kwargs.overlong_buffer_cfg.len") <= max_len


def test_dry_run_reports_a_bad_override_clearly(dry_runs):
    result, _ = dry_runs["erpo+bad_override"]
    assert result.returncode == 2
    assert "recipe_check: ERROR: unknown key algorithm.erpo.gate_gama" in result.stderr
    assert result.stdout.strip() == ""


# ------------------------------------------------------------------------------------------------------------
# docs/paper_index.md: every documented flag set composes on top of the recipes
# ------------------------------------------------------------------------------------------------------------
PAPER_FLAGS = {
    "grpo_as_published": (
        "grpo",
        [
            "actor_rollout_ref.actor.use_kl_loss=True",
            "actor_rollout_ref.actor.kl_loss_coef=0.04",
            "actor_rollout_ref.actor.kl_loss_type=low_var_kl",
            "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean",
        ],
    ),
    "dr_grpo": (
        "grpo",
        ["algorithm.norm_adv_by_std_in_grpo=False", "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-sum-norm"],
    ),
    "clip_cov": (
        "grpo",
        [
            "actor_rollout_ref.actor.policy_loss.loss_mode=clip_cov",
            "actor_rollout_ref.actor.policy_loss.clip_cov_ratio=0.0002",
            "actor_rollout_ref.actor.policy_loss.clip_cov_lb=1.0",
            "actor_rollout_ref.actor.policy_loss.clip_cov_ub=5.0",
        ],
    ),
    "kl_cov": (
        "grpo",
        [
            "actor_rollout_ref.actor.policy_loss.loss_mode=kl_cov",
            "actor_rollout_ref.actor.policy_loss.kl_cov_ratio=0.002",
            "actor_rollout_ref.actor.policy_loss.ppo_kl_coef=1",
        ],
    ),
    "forking_tokens": (
        "grpo",
        [
            "algorithm.adv_estimator=grpo_forking",
            "trainer.v1.trainer_mode=erpo_sync",
            "+algorithm.grpo_forking.top_entropy_ratio=0.2",
        ],
    ),
    "forking_tokens_in_dapo": ("dapo", ["trainer.v1.trainer_mode=erpo_sync", "+algorithm.dapo.top_entropy_ratio=0.2"]),
    "aer": ("grpo", ["actor_rollout_ref.actor.policy_loss.loss_mode=aer", "trainer.v1.trainer_mode=erpo_sync"]),
}


@pytest.fixture(scope="module")
def fake_python(tmp_path_factory) -> Path:
    """A stand-in interpreter that prints its arguments: shows what a recipe would run, without running it."""
    fake = tmp_path_factory.mktemp("fake_python") / "python"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "CALL" "$@"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    return fake


def recipe_overrides(tmp_path: Path, fake_python: Path, algo: str) -> list[str]:
    result = run_script(f"run_{algo}_qwen7b.sh", recipe_env(tmp_path, DRY_RUN="1", PYTHON=str(fake_python)))
    assert result.returncode == 0, _fail_message(result)
    args = result.stdout.split("CALL\n", 1)[1].splitlines()
    assert args[:2] == ["-m", "erpo_verl.tools.recipe_check"]
    return args[2:]


@pytest.mark.parametrize("paper", sorted(PAPER_FLAGS))
def test_paper_index_flags_compose(tmp_path, fake_python, paper):
    from omegaconf import OmegaConf

    from erpo_verl.tools.recipe_check import check_config, compose_config

    base, flags = PAPER_FLAGS[paper]
    doc = (REPO / "docs" / "paper_index.md").read_text()
    missing = [flag for flag in flags if flag not in doc]
    assert not missing, f"docs/paper_index.md does not show {missing}"
    config = compose_config(recipe_overrides(tmp_path, fake_python, base) + flags)
    check_config(config)  # raises RecipeCheckError naming the setting
    for flag in flags:
        key, value = flag.lstrip("+").split("=", 1)
        assert str(OmegaConf.select(config, key)) == value or float(OmegaConf.select(config, key)) == float(value), flag


# ------------------------------------------------------------------------------------------------------------
# normal mode: bad environments fail fast with a clear message
# ------------------------------------------------------------------------------------------------------------
def _assert_stopped_before_training(result):
    assert result.returncode != 0
    assert "cannot start" in result.stderr
    assert "verl.trainer.main_ppo" not in result.stderr  # nothing heavy was launched


def test_missing_model_path_is_reported(tmp_path, toy_assets):
    env = recipe_env(
        tmp_path, MODEL_PATH=tmp_path / "no_model", TRAIN_FILES=toy_assets["train"], VAL_FILES=toy_assets["val"]
    )
    result = run_script("run_grpo_qwen7b.sh", env, timeout=120)
    _assert_stopped_before_training(result)
    assert f"model path {tmp_path / 'no_model'} does not exist" in result.stderr
    assert "data file" not in result.stderr


def test_missing_data_is_reported_with_the_data_prep_command(tmp_path, toy_assets):
    missing = tmp_path / "data" / "aime24" / "test.parquet"
    env = recipe_env(
        tmp_path,
        MODEL_PATH=toy_assets["model"],
        TRAIN_FILES=toy_assets["train"],
        VAL_FILES=f"{toy_assets['val']},{missing}",
    )
    result = run_script("run_erpo_qwen7b.sh", env, timeout=120)
    _assert_stopped_before_training(result)
    assert f"data file {missing} does not exist" in result.stderr
    assert "erpo-data math500 --out" in result.stderr and "--repeat 16" in result.stderr
    assert "python -m data_prep" not in result.stderr  # the docs' name for the tool
    assert "model path" not in result.stderr


def test_gpus_requested_on_a_cpu_machine_outside_the_cpu_profile_are_reported(tmp_path, toy_assets):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has GPUs")
    env = recipe_env(
        tmp_path, MODEL_PATH=toy_assets["model"], TRAIN_FILES=toy_assets["train"], VAL_FILES=toy_assets["val"]
    )
    result = run_script("run_dapo_qwen7b.sh", env, timeout=120)
    _assert_stopped_before_training(result)
    assert "GPUs: this recipe needs N_GPUS_PER_NODE=8 GPUs" in result.stderr
    assert "PROFILE=cpu-tiny" in result.stderr and "DRY_RUN=1" in result.stderr


def test_unknown_profile_is_rejected(tmp_path):
    result = run_script("run_grpo_qwen7b.sh", recipe_env(tmp_path, PROFILE="cpu"), timeout=60)
    assert result.returncode == 2 and "PROFILE=cpu is not a profile" in result.stderr


def test_trainer_mode_separate_async_composes_the_7b_erpo_recipe_with_rollout_gpus_of_its_own(dry_runs):
    result, config = dry_runs["erpo@separate_async"]
    assert result.returncode == 0, _fail_message(result)
    assert "[validate_config] All configuration checks passed" in result.stderr
    assert get(config, "trainer.v1.trainer_mode") == "erpo_separate_async"
    assert get(config, "trainer.n_gpus_per_node") == 6  # 8 - ROLLOUT_GPUS
    assert get(config, "actor_rollout_ref.rollout.n_gpus_per_node") == 2
    assert get(config, "actor_rollout_ref.rollout.checkpoint_engine.backend") == "nccl"
    # verl's assertion: train_batch_size == parameter_sync_step * ppo_mini_batch_size (256 == 8 * 32)
    assert get(config, "trainer.v1.separate_async.parameter_sync_step") == 8
    assert get(config, "algorithm.adv_estimator") == "erpo"


def test_trainer_mode_colocate_async_switches_a_plain_recipe_to_verls_mode(dry_runs):
    result, config = dry_runs["grpo@colocate_async"]
    assert result.returncode == 0, _fail_message(result)
    assert get(config, "trainer.v1.trainer_mode") == "colocate_async"
    assert get(config, "trainer.n_gpus_per_node") == 8


def test_trainer_mode_separate_async_on_the_cpu_profile_gets_a_rollout_device_of_its_own(dry_runs):
    result, config = dry_runs["erpo@cpu-tiny+separate_async"]
    assert result.returncode == 0, _fail_message(result)
    assert get(config, "trainer.v1.trainer_mode") == "erpo_separate_async"
    assert get(config, "trainer.n_gpus_per_node") == 1 and get(config, "actor_rollout_ref.rollout.n_gpus_per_node") == 1
    assert get(config, "ray_kwargs.ray_init.num_gpus") == 2  # two logical devices without CPU_GPUS_PER_NODE
    assert get(config, "actor_rollout_ref.rollout.checkpoint_engine.backend") == "cpu_gloo"
    assert get(config, "actor_rollout_ref.hybrid_engine") is False


def test_an_unknown_trainer_mode_is_rejected_by_the_recipe(tmp_path):
    result = run_script("run_erpo_qwen7b.sh", recipe_env(tmp_path, TRAINER_MODE="fully_async", DRY_RUN="1"), timeout=60)
    assert result.returncode == 2 and "TRAINER_MODE=fully_async is not one of verl's v1 modes" in result.stderr


# ------------------------------------------------------------------------------------------------------------
# PROFILE=cpu-tiny: the same scripts, end to end on CPU (2 steps)
# ------------------------------------------------------------------------------------------------------------
def _cpu_run(tmp_path, toy_assets, algo):
    metrics = tmp_path / "metrics.jsonl"
    env = recipe_env(
        tmp_path,
        PROFILE="cpu-tiny",
        ASSETS_DIR=Path(toy_assets["model"]).parent,
        OUTPUT_DIR=tmp_path / "run",
        VERL_FILE_LOGGER_PATH=metrics,
    )
    result = run_script(f"run_{algo}_qwen7b.sh", env, timeout=900)
    assert result.returncode == 0, _fail_message(result)
    assert f"Per-step metrics: {metrics}" in result.stderr.strip().splitlines()[-1]  # the last line says where
    from erpo_verl.tools.metrics_io import load_metrics

    records = load_metrics(metrics)
    assert [int(r["step"]) for r in records] == [1, 2]
    return records


@pytest.mark.slow
def test_cpu_profile_runs_the_erpo_recipe_for_two_steps(tmp_path, toy_assets):
    records = _cpu_run(tmp_path, toy_assets, "erpo")
    for record in records:
        assert "erpo/gate_mean" in record  # the erpo_sync trainer fed entropy to the estimator
        assert "timing_s/ref" in record and record["actor/kl_coef"] == 0.0  # reference on, no KL term


@pytest.mark.slow
def test_cpu_profile_runs_the_grpo_recipe_for_two_steps(tmp_path, toy_assets):
    records = _cpu_run(tmp_path, toy_assets, "grpo")
    for record in records:
        assert not any(k.startswith("erpo/") for k in record)
        assert "timing_s/ref" not in record  # GRPO runs without the reference policy


# ------------------------------------------------------------------------------------------------------------
# DRY_RUN=1: the entropy-method recipes (AER, 80/20 forking tokens, Clip-Cov, KL-Cov) on the same 7B setup
# ------------------------------------------------------------------------------------------------------------
ENTROPY_METHOD_RECIPES = {
    # recipe: (baseline recipe it extends, expected values, extra keys it may set besides ALGORITHM_KEYS)
    "aer": (
        "grpo",
        {
            "algorithm.adv_estimator": "grpo",
            "trainer.v1.trainer_mode": "erpo_sync",
            "actor_rollout_ref.actor.policy_loss.loss_mode": "aer",
            "actor_rollout_ref.actor.policy_loss._target_": "erpo_verl.integration.aer_loss.AERPolicyLossConfig",
            "actor_rollout_ref.actor.policy_loss.aer_target_ratio": 0.4,
            "actor_rollout_ref.actor.calculate_entropy": True,
            # the entropy term's softmax is recomputed in backward (issue 11 §3.9; docs/reproduction.md §3)
            "actor_rollout_ref.actor.entropy_checkpointing": True,
            "actor_rollout_ref.actor.fsdp_config.entropy_checkpointing": True,
        },
        {"actor_rollout_ref.actor.policy_loss._target_", "actor_rollout_ref.actor.calculate_entropy",
         "actor_rollout_ref.actor.entropy_checkpointing", "actor_rollout_ref.actor.fsdp_config.entropy_checkpointing"},
    ),
    "forking": (
        "dapo",
        {
            "algorithm.adv_estimator": "dapo",
            "algorithm.dapo.top_entropy_ratio": 0.2,
            "trainer.v1.trainer_mode": "erpo_sync",
            "actor_rollout_ref.actor.clip_ratio_high": 0.28,
            "algorithm.filter_groups.enable": True,
        },
        set(),
    ),
    "clip_cov": (
        "grpo",
        {
            "actor_rollout_ref.actor.policy_loss.loss_mode": "clip_cov",
            "actor_rollout_ref.actor.policy_loss.clip_cov_ratio": 0.0002,
            "actor_rollout_ref.actor.policy_loss.clip_cov_ub": 5.0,
            "trainer.v1.trainer_mode": "sync",
        },
        set(),
    ),
    "kl_cov": (
        "grpo",
        {
            "actor_rollout_ref.actor.policy_loss.loss_mode": "kl_cov",
            "actor_rollout_ref.actor.policy_loss.kl_cov_ratio": 0.002,
            "actor_rollout_ref.actor.policy_loss.ppo_kl_coef": 1.0,
        },
        set(),
    ),
}


@pytest.mark.parametrize("recipe", sorted(ENTROPY_METHOD_RECIPES))
def test_entropy_method_recipes_compose_and_change_only_their_method_keys(dry_runs, recipe):
    baseline, expected, extra_keys = ENTROPY_METHOD_RECIPES[recipe]
    result, config = dry_runs[recipe]
    assert result.returncode == 0, _fail_message(result)
    assert "recipe_check: OK" in result.stderr
    for key, value in expected.items():
        assert get(config, key) == value, key
    base_result, base_config = dry_runs[baseline]
    assert base_result.returncode == 0, _fail_message(base_result)
    ours, theirs = flatten(config), flatten(base_config)
    method_keys = {k for k in expected} | extra_keys
    changed = {k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k)}
    assert changed <= ALGORITHM_KEYS | NAMING_KEYS | method_keys | {k for k in changed if ".aer_" in k}, sorted(
        changed - ALGORITHM_KEYS - NAMING_KEYS - method_keys
    )
