"""Pure tensor estimators (no verl, no Ray): testable on their own.

``erpo`` and ``ep_grpo`` are two presets of :func:`entropy_progress_advantage` (fast path) and of
:func:`reference_advantage` (the plain form the tests hold it equal to); ``dapo`` is GRPO's outcome advantage
under its own name and ``grpo_forking`` keeps it only on the high-entropy tokens (:mod:`outcome_family`).
:mod:`erpo_verl.integration.register` registers them with verl.
"""

from erpo_verl.estimators.config import EP_GRPO_CHANGES, EP_GRPO_DEFAULTS, ERPO_DEFAULTS, EntropyProgressConfig
from erpo_verl.estimators.entropy_progress import entropy_progress_advantage
from erpo_verl.estimators.ep_grpo import compute_ep_grpo_advantage, ep_grpo_config
from erpo_verl.estimators.erpo import compute_erpo_advantage, erpo_config
from erpo_verl.estimators.dapo import compute_dapo_outcome_advantage, dapo_config
from erpo_verl.estimators.inputs import accepts_extra_inputs
from erpo_verl.estimators.forking import top_entropy_mask
from erpo_verl.estimators.grpo_forking import compute_grpo_forking_advantage, grpo_forking_config
from erpo_verl.estimators.outcome import outcome_advantage
from erpo_verl.estimators.reference import reference_advantage
from erpo_verl.estimators.validation import EXTRA_INPUTS

# name -> (estimator, function that builds its validated config from verl's `algorithm` section)
ESTIMATORS = {
    "erpo": (compute_erpo_advantage, erpo_config),
    "ep_grpo": (compute_ep_grpo_advantage, ep_grpo_config),
    "dapo": (compute_dapo_outcome_advantage, dapo_config),
    "grpo_forking": (compute_grpo_forking_advantage, grpo_forking_config),
}
for _fn, _ in ESTIMATORS.values():  # ours take the erpo_sync direct path (erpo_verl/estimators/inputs.py)
    accepts_extra_inputs(_fn)

__all__ = [
    "ESTIMATORS",
    "EXTRA_INPUTS",
    "EP_GRPO_CHANGES",
    "EP_GRPO_DEFAULTS",
    "ERPO_DEFAULTS",
    "EntropyProgressConfig",
    "compute_dapo_outcome_advantage",
    "compute_ep_grpo_advantage",
    "compute_grpo_forking_advantage",
    "compute_erpo_advantage",
    "entropy_progress_advantage",
    "ep_grpo_config",
    "erpo_config",
    "dapo_config",
    "grpo_forking_config",
    "top_entropy_mask",
    "outcome_advantage",
    "reference_advantage",
]
