"""The microbenchmark (``make bench``) in its tiny configuration: it runs, and its table and JSON are complete."""

from __future__ import annotations

import json
import math

from erpo_verl.tools import bench


def test_tiny_bench_produces_table_and_json(tmp_path, capsys):
    assert bench.main(["--tiny", "--repeats", "3", "--no-cuda", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((tmp_path / "bench.json").read_text())
    table = (tmp_path / "bench.md").read_text()
    (cpu,) = [d for d in report["devices"] if d["device"] == "cpu"]
    assert set(cpu["sizes"]) == set(bench.TINY_SIZES)
    largest = cpu["largest"]
    for case in bench.CASES:
        row = cpu["cases"][case]
        for size in bench.TINY_SIZES:
            assert row["ms"][size] > 0 and len(row["ms_runs"][size]) == 3
            assert all(t > 0 for t in row["ms_runs"][size])
            assert row["tokens_per_s"][size] > 0
        assert row["ratio_grpo"] > 0
        assert math.isfinite(row["exponent"])
        assert row["bytes_per_token"][largest] >= 0
        if case in bench.FLOOR_OF:
            assert row["ratio_floor"] > 0 and row["floor"] == bench.FLOOR_OF[case]
        assert f"| {case}" in table and f"| {case}" in printed
    assert cpu["cases"]["grpo"]["ratio_grpo"] == 1.0
    for name in bench.TARGET_CASES:
        assert set(cpu["targets"][name]) == {"ratio_floor", "ratio_grpo", "bytes_per_token", "exponent"}
    assert "× floor ≤ 6" in table and report["machine"]["nproc"] >= 1


def test_floor_reads_every_input():
    import torch

    tensors = [torch.rand(5, 7), torch.ones(5, 7, dtype=torch.int64), torch.rand(5, 7)]
    out = bench.floor_pass(tensors, block_tokens=14)
    torch.testing.assert_close(out, tensors[0] + tensors[1] + tensors[2])


def test_scaling_exponent():
    assert abs(bench.scaling_exponent([1, 2, 4], [3.0, 6.0, 12.0]) - 1.0) < 1e-12
    assert abs(bench.scaling_exponent([1, 2, 4], [1.0, 4.0, 16.0]) - 2.0) < 1e-12


def test_batch_shape():
    batch = bench.make_batch(64, 128, seed=1)
    mask = batch["response_mask"]
    assert mask.dtype.is_floating_point is False and mask.shape == (64, 128)
    lengths = mask.sum(1)
    assert lengths.min() >= 1 and (lengths == 128).any()  # jagged, with responses at the maximum length
    rewards = batch["token_level_rewards"]
    assert set(rewards.sum(1).unique().tolist()) <= {0.0, 1.0}
    assert len(set(batch["index"].tolist())) == 64 // bench.GROUP_SIZE
