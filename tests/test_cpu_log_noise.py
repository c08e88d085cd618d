"""The CPU profile sizes TransferQueue's storage threads to the machine, so TransferQueue's
``target_num_threads 8 should not exceed total physical CPU cores N`` warning (once ~80% of a demo log on
2 cores) is not produced at all."""

from __future__ import annotations

import os
import subprocess
import sys

import psutil
import pytest

# what TransferQueue's storage units and clients run around each put/get/clear, with the env they were given
PROBE = """
import logging, sys
logging.basicConfig(stream=sys.stdout, level=logging.WARNING, format="%(message)s")
from transfer_queue.storage import simple_storage
from transfer_queue.utils.common import limit_pytorch_auto_parallel_threads
with limit_pytorch_auto_parallel_threads(target_num_threads=simple_storage.TQ_NUM_THREADS, info="probe"):
    pass
print("threads", simple_storage.TQ_NUM_THREADS)
"""


def _probe(env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout + result.stderr


def test_cpu_profile_sets_tq_threads_to_the_physical_core_count_capped_at_8():
    from erpo_verl.integration.cpu.profile import CPU_ENV, cpu_env

    cores = psutil.cpu_count(logical=False) or os.cpu_count()
    assert CPU_ENV["TQ_NUM_THREADS"] == str(min(8, cores))
    assert cpu_env({})["TQ_NUM_THREADS"] == str(min(8, cores))


def test_transfer_queue_stays_quiet_under_the_cpu_profile_environment():
    from erpo_verl.integration.cpu.profile import cpu_env

    out = _probe(cpu_env())
    assert "should not exceed total physical CPU cores" not in out
    assert f"threads {cpu_env()['TQ_NUM_THREADS']}" in out


@pytest.mark.skipif((psutil.cpu_count(logical=False) or 99) >= 8, reason="the warning needs fewer than 8 physical cores")
def test_without_the_setting_transfer_queue_warns_on_this_machine():
    env = {k: v for k, v in os.environ.items() if k != "TQ_NUM_THREADS"}
    assert "target_num_threads 8 should not exceed total physical CPU cores" in _probe(env)
