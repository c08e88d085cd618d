"""``ERPOTrainerSync``, registered as verl v1 trainer mode ``erpo_sync``.

Imported (by :mod:`erpo_verl.integration.register`) right after verl's own ``trainer_sync`` module, i.e. only in the
processes that build a trainer. The advantage step's logic lives in :mod:`erpo_verl.integration.advantage_step` and
the configuration checks in :mod:`erpo_verl.integration.preflight`, so that both can be tested without Ray or
TransferQueue.
"""

from __future__ import annotations

import os
from functools import partial

import numpy as np
import transfer_queue as tq
from tensordict import TensorDict

from erpo_verl.aer_controller import COEF_FIELD, AERState, aer_enabled
from erpo_verl.integration.advantage_step import (
    ADVANTAGE_INPUT_FIELDS,
    aer_coefficients,
    compute_advantage_with_extras,
    padding_rows,
    takes_direct_path,
)
from erpo_verl.integration.aer_loss import aer_options, aer_ppo_loss
from erpo_verl.integration.preflight import TRAINER_MODE, erpo_sync_section, preflight
from erpo_verl.integration.touchpoints import mark_applied
from erpo_verl.integration.trace import record_advantage
from erpo_verl.integration.version import check_verl_version
from verl import DataProto
from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path
from verl.utils.config import omega_conf_to_dataclass
from verl.trainer.ppo.ray_trainer import apply_kl_penalty
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.workers.utils.padding import response_to_nested


@register_trainer(TRAINER_MODE)
class ERPOTrainerSync(PPOTrainerSync):
    """verl's synchronous v1 trainer plus forwarding of entropy / log-probs to the advantage estimator."""

    def __init__(self, config):
        check_verl_version()  # this class copies verl internals: never run it against another verl silently
        preflight(config)  # idempotent; covers entry points other than verl.trainer.main_ppo
        super().__init__(config)
        self.aer = aer_options(config) if aer_enabled(config) else None
        self.aer_state = AERState(alpha=self.aer.aer_alpha_init) if self.aer else None

    def _build_replay_buffer(self):
        # verl 0.9.1 compares self.trainer_mode with "sync" in several places (replay buffer class, dataloader
        # gen_batch_size, TransferQueue checkpointing); this *is* the sync trainer under another registry name,
        # so it must take exactly the sync code paths, or ERPO and GRPO runs would not be comparable.
        # Settings: one section, trainer.v1.erpo_sync, which verl's own __init__ (parameter_sync_step) and
        # generic code (rollout-skip) read for the selected mode; the code paths that now see "sync" read the
        # same values (preflight rejects a differing trainer.v1.sync section).
        self.trainer_mode = "sync"
        mark_applied("override.trainer_mode_sync_alias")
        section = erpo_sync_section(self.config)
        if len(section):
            from omegaconf import open_dict

            with open_dict(self.config):
                self.config.trainer.v1.sync = section
        return super()._build_replay_buffer()

    # -- AER: the actor loss with the entropy term, and the controller state in checkpoints -------------------
    def on_init_end(self):
        super().on_init_end()
        if self.aer is not None:
            actor_config = omega_conf_to_dataclass(self.config.actor_rollout_ref.actor)
            self.actor_rollout_wg.set_loss_fn(partial(aer_ppo_loss, config=actor_config))
            mark_applied("override.set_loss_fn_aer")

    def _save_checkpoint(self):
        # The AER state goes in first: verl's _save_checkpoint ends by writing latest_checkpointed_iteration.txt
        # and firing its checkpoint callbacks; a kill after that must not leave a "latest" folder without it.
        if self.aer is not None:
            folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
            self.aer_state.save(folder)
            mark_applied("override.checkpoint_aer_state")
        super()._save_checkpoint()

    def _load_checkpoint(self):
        super()._load_checkpoint()
        if self.aer is None or self.global_steps == 0:
            return
        trainer = self.config.trainer
        if trainer.resume_mode == "resume_path":
            folder = trainer.resume_from_path
        else:
            folder = find_latest_ckpt_path(os.path.abspath(trainer.default_local_dir))
        restored = AERState.load(folder) if folder else None
        if restored is None:
            raise FileNotFoundError(f"AER: no controller state in {folder}; was the checkpoint written without AER?")
        self.aer_state = restored
        mark_applied("override.checkpoint_aer_state")

    def _compute_advantage(self, batch, metrics):
        """verl 0.9.1's ``PPOTrainerSync._compute_advantage`` (trainer_base.py) with the extra inputs forwarded.

        Estimators that did not opt in, without AER, take verl's own method unchanged (everything verl passes).
        """
        if self.aer is None and not takes_direct_path(self.config.algorithm.adv_estimator):
            return super()._compute_advantage(batch, metrics)
        mark_applied("copy.compute_advantage")
        algo = self.config.algorithm
        data = tq.kv_batch_get(
            keys=batch.keys, partition_id=batch.partition_id, select_fields=list(ADVANTAGE_INPUT_FIELDS)
        )
        response_mask = data["response_mask"]
        data = DataProto(batch=data.to_padded_tensor())
        data.batch["token_level_scores"] = data.batch["rm_scores"]
        data.non_tensor_batch["uid"] = np.array(data.batch.pop("uid").tolist(), dtype=object)
        tags = getattr(batch, "tags", None)
        padding = padding_rows(data.non_tensor_batch["uid"], data.batch["response_mask"], tags if tags else None)

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
        data = compute_advantage_with_extras(data, self.config, metrics, batch_keys=batch.keys, padding=padding)
        record_advantage(self.config, metrics)  # test-only trace (ERPO_TRACE_DIR); a no-op otherwise

        # 4. AER's per-token entropy coefficients, read by aer_ppo_loss in the actor workers
        out_fields = ["advantages", "returns"]
        if self.aer is not None:
            data.batch[COEF_FIELD] = aer_coefficients(data, self.aer_state, self.aer, metrics, padding=padding)
            out_fields.append(COEF_FIELD)

        # 5. write nested results back
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
