"""Verifiable reasoning tasks for CPU-scale benchmarks (pure: no verl import)."""
