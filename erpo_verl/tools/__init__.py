"""User-facing tools: the ``erpo-verl`` CLI, doctor, demo, plots, benchmarks and the recipe dry run."""
