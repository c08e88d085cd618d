"""erpo-verl: entropy-aware, token-level credit assignment (ERPO, EP-GRPO) for verl 0.9.1.

Importing this package is cheap and does not import verl. Registration with verl happens in
:mod:`erpo_verl.integration.register`, which verl loads through the ``verl.plugins`` entry point on ``import verl``.
"""

__version__ = "0.1.0"
VERL_VERSION = "0.9.1"
