"""The erpo-verl trainer modes: verl's three v1 modes plus forwarding of entropy / log-probs to the estimator.

======================== ======================================= =================================================
``trainer.v1.trainer_mode``  runs verl's                              where π_old (entropy, ``old_log_probs``) comes from
======================== ======================================= =================================================
``erpo_sync``             ``sync`` (``PPOTrainerSync``)            actor recompute; the weights that sampled the batch
``erpo_colocate_async``   ``colocate_async``                       actor recompute at training time; samples may be
                                                                   one or more versions older (partial rollouts)
``erpo_separate_async``   ``separate_async``                       actor recompute with the weights of the last
                                                                   parameter sync, restored for every mini-batch
======================== ======================================= =================================================

One mixin, :class:`EntropyForwardingMixin`, holds everything we add (the advantage step with the extra inputs,
the AER loss and its controller state in checkpoints, the ``erpo/old_policy/*`` staleness metrics); each mode
class is the mixin on top of verl's own class, registered under verl's name with ``erpo_`` in front. Imported
(by :mod:`erpo_verl.integration.register`) right after verl's trainer modules, i.e. only in the processes that
build a trainer. The advantage step's logic lives in :mod:`erpo_verl.integration.advantage_step` and the
configuration checks in :mod:`erpo_verl.integration.preflight`, so that both can be tested without Ray or
TransferQueue. What "old policy" means in each mode: docs/async.md.
"""

from __future__ import annotations

import os
from functools import partial

import numpy as np
import transfer_queue as tq
from omegaconf import open_dict
from tensordict import TensorDict

from erpo_verl.aer_controller import COEF_FIELD, AERState, aer_enabled
from erpo_verl.integration.advantage_step import (
    ADVANTAGE_INPUT_FIELDS,
    aer_coefficients,
    compute_advantage_with_extras,
    old_policy_lag_metrics,
    padding_rows,
    padding_rows_from_tags,
    takes_direct_path,
)
from erpo_verl.integration.aer_loss import aer_options, aer_ppo_loss
from erpo_verl.integration.preflight import ERPO_TRAINER_MODES, mode_section, preflight, trainer_mode_of
from erpo_verl.integration.touchpoints import mark_applied
from erpo_verl.integration.trace import record_advantage
from erpo_verl.integration.version import check_verl_version
from verl import DataProto
from verl.utils.checkpoint.checkpoint_manager import find_latest_ckpt_path
from verl.utils.config import omega_conf_to_dataclass
from verl.trainer.ppo.ray_trainer import apply_kl_penalty
from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_add_to_batch
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_colocate_async import PPOTrainerColocateAsync
from verl.trainer.ppo.v1.trainer_separate_async import PPOTrainerSeparateAsync
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.workers.utils.padding import response_to_nested


class EntropyForwardingMixin:
    """What erpo-verl adds to a verl v1 trainer mode; put it first in the bases, verl's mode class after it."""

    ERPO_MODE: str = ""  # our registry name; verl's mode is ERPO_TRAINER_MODES[ERPO_MODE]

    @property
    def verl_mode(self) -> str:
        return ERPO_TRAINER_MODES[self.ERPO_MODE]

    def __init__(self, config):
        check_verl_version()  # this class copies verl internals: never run it against another verl silently
        preflight(config)  # idempotent; covers entry points other than verl.trainer.main_ppo
        selected = trainer_mode_of(config)
        if selected != self.ERPO_MODE:
            raise ValueError(f"{type(self).__name__} runs trainer.v1.trainer_mode={self.ERPO_MODE}, not {selected}")
        # One set of settings under both names: verl's mode classes read trainer.v1.<verl mode> directly
        # (separate_async's parameter_sync_step in its constructor, below), verl's generic code reads
        # trainer.v1.<selected mode> (PPOTrainer.__init__, rollout-skip).
        section = mode_section(config, self.ERPO_MODE)
        with open_dict(config):
            config.trainer.v1[self.verl_mode] = section
            config.trainer.v1[self.ERPO_MODE] = section
        super().__init__(config)
        self.aer = aer_options(config) if aer_enabled(config) else None
        self.aer_state = AERState(alpha=self.aer.aer_alpha_init) if self.aer else None

    def _build_replay_buffer(self):
        # verl 0.9.1 compares self.trainer_mode with "sync" in several places (replay buffer class, dataloader
        # gen_batch_size, TransferQueue checkpointing, re-issuing in-flight prompts); with verl's own mode name
        # here our modes take exactly verl's code paths for their mode, so ERPO and GRPO runs stay comparable.
        self.trainer_mode = self.verl_mode
        mark_applied("override.trainer_mode_alias")
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
        """verl 0.9.1's ``PPOTrainer._compute_advantage`` (trainer_base.py) with the extra inputs forwarded.

        Estimators that did not opt in, without AER, take verl's own method unchanged (everything verl passes).
        Called once per mini-batch that is trained on (``parameter_sync_step`` times per step in
        separate_async), after verl's replay buffer dropped stale samples: AER's statistics see exactly those.
        """
        tags = getattr(batch, "tags", None) or None
        metrics.update(old_policy_lag_metrics(
            tags, getattr(self, "global_steps", 0), padding_rows_from_tags(tags), getattr(self, "local_trigger_step", 0)
        ))
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
        padding = padding_rows(data.non_tensor_batch["uid"], data.batch["response_mask"], tags)

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


@register_trainer("erpo_sync")
class ERPOTrainerSync(EntropyForwardingMixin, PPOTrainerSync):
    """verl's synchronous v1 trainer plus forwarding of entropy / log-probs to the advantage estimator."""

    ERPO_MODE = "erpo_sync"


@register_trainer("erpo_colocate_async")
class ERPOTrainerColocateAsync(EntropyForwardingMixin, PPOTrainerColocateAsync):
    """verl's colocate_async v1 trainer (partial rollouts, rollout and training on the same devices) plus forwarding."""

    ERPO_MODE = "erpo_colocate_async"


@register_trainer("erpo_separate_async")
class ERPOTrainerSeparateAsync(EntropyForwardingMixin, PPOTrainerSeparateAsync):
    """verl's separate_async v1 trainer (rollout on its own devices, parameter sync every parameter_sync_step
    mini-batches) plus forwarding."""

    ERPO_MODE = "erpo_separate_async"

