"""`erpo-verl plot` on fixture metrics files and `erpo-verl doctor` on this (GPU-less) machine."""

import subprocess
import sys
from pathlib import Path

import pytest

from erpo_verl.tools.cli import main as cli_main
from erpo_verl.tools.metrics_io import load_metrics

FIXTURES = Path(__file__).parent / "fixtures" / "runs"


def test_metrics_files_of_every_supported_format_load_to_per_step_records():
    for name in ("erpo_metrics.jsonl", "grpo_flat.jsonl", "dapo.csv"):
        records = load_metrics(FIXTURES / name)
        assert [r["step"] for r in records] == list(range(1, 11))
        assert all(isinstance(r["critic/score/mean"], float) for r in records)
    assert "note" not in load_metrics(FIXTURES / "erpo_metrics.jsonl")[0]  # text values dropped


def test_plot_draws_one_line_per_run_into_a_png_of_the_expected_size(tmp_path):
    from PIL import Image

    out = tmp_path / "runs.png"
    rc = cli_main([
        "plot",
        f"erpo={FIXTURES / 'erpo_metrics.jsonl'}",
        f"grpo={FIXTURES / 'grpo_flat.jsonl'}",
        f"dapo={FIXTURES / 'dapo.csv'}",
        "--out", str(out), "--svg",
    ])
    assert rc == 0 and out.exists() and out.with_suffix(".svg").exists()
    image = Image.open(out).convert("RGB")
    # 6 panels (3 verl metrics + 3 erpo/ metrics logged by the erpo run) in a 2 x 3 grid at 110 dpi
    assert image.size == (1650, 792)
    colors = {c for _, c in image.getcolors(maxcolors=1 << 24)}
    for line_color in ((31, 119, 180), (255, 127, 14), (44, 160, 44)):  # matplotlib C0, C1, C2: one per run
        assert any(sum(abs(a - b) for a, b in zip(c, line_color)) < 30 for c in colors), line_color


def test_plot_reports_a_missing_file_and_a_broken_line_with_exit_code_2(tmp_path, capsys):
    assert cli_main(["plot", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "x.png")]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1, "data": {}}\n{not json\n')
    assert cli_main(["plot", str(bad), "--out", str(tmp_path / "x.png")]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err


def test_doctor_reports_the_missing_gpu_and_vllm_without_failing(capsys):
    from erpo_verl.tools.doctor import main as doctor_main

    rc = doctor_main(["--no-ray"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "[warn] GPU" in out and "no CUDA device" in out
    assert "[warn] vllm" in out and "not installed" in out
    assert "[ok  ] verl" in out and "registration (this process)" in out


def test_doctor_fails_when_a_gpu_is_required_here():
    from erpo_verl.tools.doctor import main as doctor_main

    assert doctor_main(["--no-ray", "--require-gpu"]) == 1


@pytest.mark.slow
def test_doctor_checks_registration_inside_a_ray_worker():
    out = subprocess.run([sys.executable, "-m", "erpo_verl.tools.doctor"], capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[ok  ] registration (Ray worker)" in out.stdout
    assert "erpo, ep_grpo, dapo, grpo_forking, aer, erpo_sync, erpo_colocate_async, erpo_separate_async" in out.stdout
