"""Everything in erpo-verl that touches verl (or vLLM): registration, post-import hooks, preflight checks,
the advantage step, the ``erpo_sync`` trainer mode, the AER loss and the CPU backend.

The pure parts (``erpo_verl.estimators``, ``erpo_verl.rewards``, ``erpo_verl.eval``) never import from here.
"""
