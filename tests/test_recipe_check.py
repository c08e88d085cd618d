"""The dry run (``python -m erpo_verl.tools.recipe_check``) on what verl's own scripts pass: reward functions that
take the reward-model arguments, ``--config-name``, critic configs (which read model files), and the backends
erpo_sync/AER reject before Ray."""

from __future__ import annotations

import textwrap

import pytest

from erpo_verl.tools import recipe_check
from erpo_verl.tools.recipe_check import EXIT_INVALID, EXIT_OK, RecipeCheckError, check_config, compose_config

SMALL = (
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1",
    "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=1",
    "critic.ppo_micro_batch_size_per_gpu=1",
    "trainer.n_gpus_per_node=1",
    "data.train_batch_size=8",
    "actor_rollout_ref.actor.ppo_mini_batch_size=8",
    "data.train_files=/tmp/train.parquet",
    "data.val_files=/tmp/val.parquet",
    "actor_rollout_ref.rollout.name=vllm",
)


@pytest.fixture
def genrm_reward(tmp_path):
    """A reward function shaped like verl's FAPO GenRM ones: it needs the reward-model arguments."""
    path = tmp_path / "genrm_reward.py"
    path.write_text(textwrap.dedent('''
        def compute_score(data_source, solution_str, ground_truth, extra_info, reward_router_address,
                          reward_model_tokenizer, **kwargs):
            return 0.0
    '''))
    return (f"reward.custom_reward_function.path={path}", "reward.custom_reward_function.name=compute_score")


def test_a_reward_function_taking_the_reward_model_arguments_passes_when_a_reward_model_is_on(genrm_reward):
    config = compose_config(["algorithm.adv_estimator=grpo", *SMALL, *genrm_reward, "reward.reward_model.enable=True"])
    report = check_config(config)
    assert report.reward_function.endswith("genrm_reward.py:compute_score")


def test_the_same_function_without_a_reward_model_is_rejected_naming_the_argument(genrm_reward):
    config = compose_config(["algorithm.adv_estimator=grpo", *SMALL, *genrm_reward])
    with pytest.raises(RecipeCheckError, match="reward_router_address"):
        check_config(config)


def test_config_name_selects_another_verl_config():
    config = compose_config(["algorithm.adv_estimator=grpo"], config_name="ppo_megatron_trainer")
    assert config.actor_rollout_ref.actor.strategy == "megatron"


@pytest.mark.parametrize("flag", [["--config-name=ppo_megatron_trainer"], ["--config-name", "ppo_megatron_trainer.yaml"]])
def test_megatron_with_erpo_is_rejected_before_ray_through_the_command_line(flag, capsys):
    rc = recipe_check.main([*flag, "--no-yaml", *SMALL, "algorithm.adv_estimator=erpo", "trainer.v1.trainer_mode=erpo_sync"])
    err = capsys.readouterr().err
    assert rc == EXIT_INVALID
    assert "actor_rollout_ref.actor.strategy=megatron" in err and "FSDP" in err


def test_a_config_path_other_than_verls_own_is_refused_with_a_reason(capsys):
    assert recipe_check.main(["--config-path=/my/recipe/config", "--config-name=x"]) == EXIT_INVALID
    assert "--config-path=/my/recipe/config is not supported" in capsys.readouterr().err


def test_verls_own_config_path_as_its_scripts_pass_it_is_accepted(capsys):
    rc = recipe_check.main(["--config-path=config", "--config-name=ppo_megatron_trainer", "--no-yaml", *SMALL,
                            "algorithm.adv_estimator=erpo", "trainer.v1.trainer_mode=erpo_sync"])
    assert rc == EXIT_INVALID  # composed; then rejected by preflight, not by the option parser
    assert "actor_rollout_ref.actor.strategy=megatron" in capsys.readouterr().err


def test_a_critic_config_says_that_it_read_the_critic_model(toy_assets, capsys):
    model = str(toy_assets["model"])
    args = [*SMALL, "algorithm.adv_estimator=gae", f"actor_rollout_ref.model.path={model}", f"critic.model.path={model}"]
    assert recipe_check.main(["--no-yaml", *args]) == EXIT_OK
    err = capsys.readouterr().err
    assert "verl's validate_config read critic.model's config and tokenizer" in err
    assert "no GPU, data or model was touched" not in err


def test_a_critic_config_with_a_missing_model_names_the_setting(tmp_path, capsys):
    missing = tmp_path / "no_model"
    args = [*SMALL, "algorithm.adv_estimator=gae", f"critic.model.path={missing}"]
    assert recipe_check.main(["--no-yaml", *args]) == EXIT_INVALID
    assert f"critic.model.path={missing} must be a model folder" in capsys.readouterr().err


def test_a_config_without_critic_touches_no_model(capsys):
    assert recipe_check.main(["--no-yaml", *SMALL, "algorithm.adv_estimator=grpo",
                              "actor_rollout_ref.model.path=/nonexistent/model"]) == EXIT_OK
    assert "no GPU, data or model was touched" in capsys.readouterr().err


# -- the recipes' environment check: a model whose config.json has fewer positions than prompt + response --------
def _run_recipe(tmp_path, **settings):
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODEL", "DATA", "TRAIN", "VAL", "PROFILE", "DRY_RUN",
                                                                     "MAX_", "N_GPUS", "SKIP_"))}
    env.update(PYTHON=sys.executable, OUTPUT_ROOT=str(tmp_path / "outputs"), SKIP_GPU_CHECK="1",
               **{k: str(v) for k, v in settings.items()})
    return subprocess.run(["bash", str(repo / "recipes" / "run_grpo_qwen7b.sh")], env=env, capture_output=True,
                          text=True, timeout=300, cwd=repo)


def _model_folder(tmp_path, positions):
    import json

    folder = tmp_path / f"model_{positions}"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2", "max_position_embeddings": positions}))
    return folder


def test_math_model_with_4k_positions_in_config_json_is_stopped_with_the_fix(tmp_path, toy_assets):
    model = _model_folder(tmp_path, 4096)
    result = _run_recipe(tmp_path, MODEL_NAME="Qwen2.5-Math-7B", MODEL_PATH=model, TRAIN_FILES=toy_assets["train"],
                         VAL_FILES=toy_assets["val"])
    assert result.returncode != 0 and "cannot start" in result.stderr
    assert f"{model}/config.json has max_position_embeddings=4096, fewer than prompt + response = 10240" in result.stderr
    assert '"max_position_embeddings": 32768' in result.stderr
    assert "verl.trainer.main_ppo" not in result.stderr


def test_a_model_with_enough_positions_passes_the_position_check(tmp_path, toy_assets):
    model = _model_folder(tmp_path, 32768)
    missing = tmp_path / "missing.parquet"  # another problem stops the recipe before it starts verl
    result = _run_recipe(tmp_path, MODEL_NAME="Qwen2.5-Math-7B", MODEL_PATH=model, TRAIN_FILES=toy_assets["train"],
                         VAL_FILES=missing)
    assert result.returncode != 0 and f"data file {missing} does not exist" in result.stderr
    assert "max_position_embeddings=" not in result.stderr and "verl.trainer.main_ppo" not in result.stderr
