#!/usr/bin/env bash
# Component ablations of ERPO / EP-GRPO (docs/algorithms.md: the estimator and its configuration), one experiment per switch, same seed.
#
#   bash recipes/ablate_erpo.sh [hydra overrides...]                    # the default ablations of ABLATION_BASE
#   ABLATIONS="gate_off progress_off" bash recipes/ablate_erpo.sh       # a selection
#   ABLATION_BASE=ep_grpo bash recipes/ablate_erpo.sh                   # ablate EP-GRPO instead of ERPO
#   ABLATIONS="base edges_floor std_unbiased stats_response third_party" bash recipes/ablate_erpo.sh
#                                       # the conventions of the third-party implementation (docs/algorithms.md), not run by default
#   DRY_RUN=1 / PROFILE=cpu-tiny work as for the recipes (each ablation is composed / run in turn)
#
# Each ablation runs recipes/run_${ABLATION_BASE}_qwen7b.sh with one switch added, as experiment
# "<base experiment>-<ablation>" in its own output folder; SEED (default 42) is the same for all of them.
# Runs are sequential; the script stops at the first failure (exit status of that run).
set -euo pipefail

RECIPES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ABLATION_BASE=${ABLATION_BASE:-erpo}     # erpo | ep_grpo

case "${ABLATION_BASE}" in
    erpo) DEFAULT_ABLATIONS="base gate_off progress_off bucket_cum_entropy zero_var_on" ;;
    ep_grpo) DEFAULT_ABLATIONS="base gate_off progress_off bucket_position zero_var_off" ;;
    *) echo "ERROR: ABLATION_BASE=${ABLATION_BASE}; use erpo or ep_grpo" >&2; exit 2 ;;
esac
ABLATIONS=${ABLATIONS:-${DEFAULT_ABLATIONS}}
KEY="+algorithm.${ABLATION_BASE}"

# ablation name -> the overrides that switch the component (empty: the estimator's defaults)
switches_of() {
    case "$1" in
        base) ;;                                                  # the preset as is (reference run)
        gate_off) echo "${KEY}.gate=false" ;;                     # W = 1: no entropy gate
        progress_off) echo "${KEY}.progress_coef=0" ;;            # eta = 0: no implicit progress term
        bucket_position) echo "${KEY}.bucket_coord=position" ;;   # ERPO buckets: relative token position
        bucket_cum_entropy) echo "${KEY}.bucket_coord=cum_entropy" ;;  # EP-GRPO buckets: cumulative entropy
        zero_var_off) echo "${KEY}.zero_var_fallback=false" ;;    # no signal in all-equal-reward groups
        zero_var_on) echo "${KEY}.zero_var_fallback=true" ;;      # anchor on sign(R - theta) there
        edges_floor) echo "${KEY}.bucket_edges=floor" ;;          # b = min(floor(K tau_before), K-1) (spec §8)
        std_unbiased) echo "${KEY}.bucket_std=unbiased" ;;        # n-1 in the bucket std (spec §8)
        stats_response) echo "${KEY}.entropy_stats_scope=response" ;;  # gate z-score per response (spec §8)
        stats_batch) echo "${KEY}.entropy_stats_scope=batch" ;;   # gate z-score over the whole batch
        third_party)                                              # all four §8 conventions at once
            printf '%s\n' "${KEY}.bucket_edges=floor" "${KEY}.bucket_std=unbiased" \
                "${KEY}.entropy_stats_scope=response" "${KEY}.anchor_gate=false" ;;
        *) return 1 ;;
    esac
}

for name in ${ABLATIONS}; do
    if ! switches_of "${name}" >/dev/null; then
        echo "ERROR: unknown ablation '${name}'; choose from: base gate_off progress_off bucket_position" \
            "bucket_cum_entropy zero_var_off zero_var_on edges_floor std_unbiased stats_response stats_batch" \
            "third_party" >&2
        exit 2
    fi
done

SEED=${SEED:-42}
export SEED
BASE_EXPERIMENT=${EXPERIMENT_NAME:-}
BASE_OUTPUT_DIR=${OUTPUT_DIR:-}
unset EXPERIMENT_NAME OUTPUT_DIR VERL_FILE_LOGGER_PATH  # set per ablation below (each run: OUTPUT_DIR/metrics.jsonl)

for name in ${ABLATIONS}; do
    mapfile -t switches < <(switches_of "${name}")
    echo "=== ablation ${name}: ${switches[*]:-(${ABLATION_BASE} defaults)}" >&2
    (
        if [[ -n "${BASE_EXPERIMENT}" ]]; then
            export EXPERIMENT_NAME="${BASE_EXPERIMENT}-${name}"
        else
            export EXPERIMENT_SUFFIX="-ablate-${name}"  # -> <algo>-<model>-<train set>-ablate-<name>
        fi
        if [[ -n "${BASE_OUTPUT_DIR}" ]]; then
            export OUTPUT_DIR="${BASE_OUTPUT_DIR}/${name}"
        fi
        exec bash "${RECIPES_DIR}/run_${ABLATION_BASE}_qwen7b.sh" "${switches[@]}" "$@"
    )
done
