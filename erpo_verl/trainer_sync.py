"""``ERPOTrainerSync``, registered as verl v1 trainer mode ``erpo_sync``.

Imported (by :mod:`erpo_verl.register`) right after verl's own ``trainer_sync`` module, i.e. only in the
processes that build a trainer. The forwarding logic lives in :mod:`erpo_verl.trainer` so that it can be
tested without Ray or TransferQueue.
"""

from __future__ import annotations

import numpy as np
import transfer_queue as tq
from tensordict import TensorDict

from erpo_verl.trainer import TRAINER_MODE, compute_advantage_with_extras, preflight
from verl import DataProto
from verl.trainer.ppo.ray_trainer import apply_kl_penalty
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.workers.utils.padding import response_to_nested

# Fields of one step's TransferQueue rows that the advantage step reads. verl 0.9.1 reads all but
# "entropy", which its old-log-prob pass stores and then no estimator ever sees.
ADVANTAGE_INPUT_FIELDS = (
    "uid",
    "response_mask",
    "rm_scores",
    "rollout_log_probs",
    "old_log_probs",
    "ref_log_prob",
    "values",
    "entropy",
)


@register_trainer(TRAINER_MODE)
class ERPOTrainerSync(PPOTrainerSync):
    """verl's synchronous v1 trainer plus forwarding of entropy / log-probs to the advantage estimator."""

    def __init__(self, config):
        preflight(config)  # idempotent; covers entry points other than verl.trainer.main_ppo
        super().__init__(config)

    def _compute_advantage(self, batch, metrics):
        algo = self.config.algorithm
        data = tq.kv_batch_get(
            keys=batch.keys, partition_id=batch.partition_id, select_fields=list(ADVANTAGE_INPUT_FIELDS)
        )
        response_mask = data["response_mask"]
        data = DataProto(batch=data.to_padded_tensor())
        data.batch["token_level_scores"] = data.batch["rm_scores"]
        data.non_tensor_batch["uid"] = np.array(data.batch.pop("uid").tolist(), dtype=object)

        # 1. KL in reward, 2. rollout correction: as verl's PPOTrainer._compute_advantage
        if algo.use_kl_in_reward:
            data, kl_metrics = apply_kl_penalty(data, kl_ctrl=self.kl_ctrl_in_reward, kl_penalty=algo.kl_penalty)
            metrics.update(kl_metrics)
        else:
            data.batch["token_level_rewards"] = data.batch["token_level_scores"]
        rollout_corr = algo.get("rollout_correction", None)
        bypass = bool(rollout_corr and rollout_corr.get("bypass_mode", False))
        rollout_correction = rollout_corr is not None and "rollout_log_probs" in data.batch and not bypass
        if rollout_correction:
            data, is_metrics = compute_rollout_correction_and_add_to_batch(data, rollout_corr)
            metrics.update(is_metrics)

        # 3. advantages, with the extra per-token inputs forwarded
        data = compute_advantage_with_extras(data, self.config, metrics, batch_keys=batch.keys)

        # 4. write nested results back
        out_fields = ["advantages", "returns"]
        if algo.use_kl_in_reward:
            out_fields.append("token_level_rewards")
        if rollout_correction:
            out_fields.append("response_mask")
            if "rollout_is_weights" in data.batch:
                out_fields.append("rollout_is_weights")
        output = TensorDict(
            {f: response_to_nested(data.batch[f], response_mask) for f in out_fields}, batch_size=len(batch)
        )
        return tq.kv_batch_put(keys=batch.keys, partition_id=batch.partition_id, fields=output)
