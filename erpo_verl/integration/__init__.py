"""Everything in erpo-verl that touches verl (or vLLM): registration, post-import hooks, preflight checks,
the advantage step, the ``erpo_sync`` trainer mode, the AER loss and the CPU backend.

Every change to verl's behaviour made from here is declared in :mod:`.touchpoints` (``erpo-verl doctor`` lists them).
The pure parts (``erpo_verl.estimators``, ``erpo_verl.aer_controller``, ``erpo_verl.rewards``, ``erpo_verl.eval``)
never import from here.
"""
