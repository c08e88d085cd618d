"""`erpo-verl plot` on multi-run CSVs and TensorBoard files, and the help texts of the command-line tools."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from erpo_verl.tools.cli import main as cli_main
from erpo_verl.tools.metrics_io import load_metrics, load_runs, write_csv

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _records(rewards, entropy0):
    return [
        {"step": s + 1, "critic/score/mean": r, "actor/entropy": entropy0 - 0.1 * s, "response_length/mean": 10.0 + s}
        for s, r in enumerate(rewards)
    ]


def _line_colours_present(png: Path) -> set[str]:
    from PIL import Image

    colours = {c for _, c in Image.open(png).convert("RGB").getcolors(maxcolors=1 << 24)}
    named = {"C0": (31, 119, 180), "C1": (255, 127, 14), "C2": (44, 160, 44)}
    return {n for n, rgb in named.items() if any(sum(abs(a - b) for a, b in zip(c, rgb)) < 30 for c in colours)}


# ------------------------------------------------------------------------------------------------------------
# a CSV with a `run` column (the demo's metrics.csv) is split into its runs
# ------------------------------------------------------------------------------------------------------------
def test_a_two_run_csv_is_split_by_its_run_column_with_each_runs_own_values(tmp_path):
    erpo, grpo = _records([0.2, 0.4, 0.6], 2.0), _records([0.1, 0.3], 3.0)
    erpo[1]["erpo/gate_std"] = 0.5  # a metric only one run has
    path = write_csv({"erpo": erpo, "grpo": grpo}, tmp_path / "metrics.csv")

    runs = load_runs(path)
    assert list(runs) == ["erpo", "grpo"]
    assert [r["critic/score/mean"] for r in runs["erpo"]] == [0.2, 0.4, 0.6]
    assert [r["critic/score/mean"] for r in runs["grpo"]] == [0.1, 0.3]
    assert [r["actor/entropy"] for r in runs["grpo"]] == pytest.approx([3.0, 2.9])
    assert "erpo/gate_std" in runs["erpo"][1] and all("erpo/gate_std" not in r for r in runs["grpo"])
    # load_metrics would merge the runs step by step: it refuses instead of mixing them
    with pytest.raises(ValueError, match="holds 2 runs"):
        load_metrics(path)


def test_plot_of_the_demo_csv_draws_one_line_per_run(tmp_path, capsys):
    path = write_csv({"erpo": _records([0.2, 0.4, 0.6], 2.0), "grpo": _records([0.1, 0.3, 0.5], 3.0)}, tmp_path / "m.csv")
    out = tmp_path / "runs.png"
    assert cli_main(["plot", str(path), "--out", str(out)]) == 0
    assert "2 runs: erpo, grpo" in capsys.readouterr().out
    assert _line_colours_present(out) >= {"C0", "C1"}
    # NAME= prefixes the runs of a multi-run file; the same run twice is an error naming the clash
    assert cli_main(["plot", f"a={path}", f"b={path}", "--out", str(out)]) == 0
    assert "4 runs: a/erpo, a/grpo, b/erpo, b/grpo" in capsys.readouterr().out
    assert cli_main(["plot", str(path), str(path), "--out", str(out)]) == 2
    assert "two runs are named 'erpo'" in capsys.readouterr().err


def test_a_csv_with_an_empty_run_value_is_rejected_with_its_line(tmp_path, capsys):
    path = tmp_path / "m.csv"
    path.write_text("run,step,critic/score/mean\nerpo,1,0.2\n,2,0.3\n")
    assert cli_main(["plot", str(path), "--out", str(tmp_path / "x.png")]) == 2
    assert "m.csv:3: empty 'run' value" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------
# TensorBoard event files written by verl's own tensorboard logger
# ------------------------------------------------------------------------------------------------------------
def test_tensorboard_events_written_by_verls_logger_load_and_plot(tmp_path, monkeypatch, capsys):
    from verl.utils.tracking import Tracking

    tb_dir = tmp_path / "tensorboard_log" / "proj" / "erpo_run"
    monkeypatch.setenv("TENSORBOARD_DIR", str(tb_dir))
    tracker = Tracking(project_name="proj", experiment_name="erpo_run", default_backend=["tensorboard"])
    expected = _records([0.25, 0.5, 0.75, 1.0], 2.0)
    for record in expected:
        tracker.log({k: v for k, v in record.items() if k != "step"}, step=record["step"])
    tracker.log({"val-core/toy/acc/mean@1": 0.125}, step=4)  # validation metrics come as a second call per step
    tracker.logger["tensorboard"].finish()
    event_files = list(tb_dir.glob("events.out.tfevents.*"))
    assert len(event_files) == 1

    for source in (tb_dir, event_files[0]):  # the folder verl names, or the event file itself
        records = load_metrics(source)
        assert [r["step"] for r in records] == [1, 2, 3, 4]
        for got, want in zip(records, expected):
            for key in ("critic/score/mean", "actor/entropy", "response_length/mean"):
                assert got[key] == pytest.approx(want[key], rel=1e-6)  # float32 in the event file
        assert records[-1]["val-core/toy/acc/mean@1"] == 0.125

    out = tmp_path / "tb.png"
    assert cli_main(["plot", str(tb_dir), "--out", str(out)]) == 0
    assert "1 runs: erpo_run" in capsys.readouterr().out and out.stat().st_size > 10_000


def test_a_folder_without_event_files_is_an_error_naming_the_pattern(tmp_path, capsys):
    assert cli_main(["plot", str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert "events.out.tfevents" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------------------
# help texts
# ------------------------------------------------------------------------------------------------------------
def _help(*argv: str) -> str:
    result = subprocess.run([str(BIN / argv[0]), *argv[1:]], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-1000:]
    return result.stdout


def test_erpo_verl_help_is_plain_text_listing_every_command():
    text = _help("erpo-verl", "--help")
    assert "``" not in text and ":func:" not in text
    assert text.startswith("usage: erpo-verl COMMAND")
    for command in ("demo", "plot", "assets", "doctor"):
        assert f"\n  {command} " in text


@pytest.mark.parametrize("command", ["demo", "plot", "assets", "doctor"])
def test_each_subcommand_usage_names_the_subcommand(command):
    assert _help("erpo-verl", command, "--help").startswith(f"usage: erpo-verl {command}")


def test_unknown_command_exits_2_naming_the_choices(capsys):
    assert cli_main(["plott"]) == 2
    assert "unknown command 'plott'" in capsys.readouterr().err


def test_erpo_eval_metrics_help_describes_the_input_fields_and_avg_vs_pass():
    text = _help("erpo-eval", "metrics", "--help")
    for field in ("prompt_id", "data_source", "response", "ground_truth", "acc", "pred", "input", "output", "gts"):
        assert f"{field}" in text, field
    assert "avg@1" in text and "pass@1" in text and "FIRST k samples" in text


def test_erpo_eval_orders_columns_the_same_on_screen_and_in_the_csv(tmp_path, capsys):
    from erpo_verl.eval.cli import main as eval_main

    gens = tmp_path / "gens.jsonl"
    rows = []
    for prompt in range(3):
        for sample in range(4):
            correct = (prompt + sample) % 3 == 0
            rows.append({"prompt_id": f"p{prompt}", "data_source": "erpo/toy", "response": "x",
                         "ground_truth": "1", "acc": correct, "pred": "1" if correct else "2"})
    gens.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert eval_main(["metrics", str(gens), "--k", "1,2,4", "--out", str(tmp_path / "res")]) == 0
    screen = capsys.readouterr().out
    header = screen.splitlines()[0].split()
    with open(tmp_path / "res" / "metrics.csv", newline="") as fh:
        csv_header = next(csv.reader(fh))
    screen_metrics = [h for h in header if "@" in h]
    assert screen_metrics == [h for h in csv_header if "@" in h]
    assert screen_metrics == ["avg@1", "pass@1", "maj@1", "avg@2", "pass@2", "maj@2", "avg@4", "pass@4", "maj@4"]
    assert "avg@1 scores only the first sample" in screen


def test_recipe_hints_name_erpo_data_not_python_m_data_prep():
    common = (REPO / "recipes" / "common.sh").read_text()
    assert "python -m data_prep" not in common
    assert "${ERPO_DATA} ${TRAIN_SET} --out" in common


# ------------------------------------------------------------------------------------------------------------
# the demo figure explains itself
# ------------------------------------------------------------------------------------------------------------
def test_demo_figure_states_seeds_axes_length_cap_and_why_grpo_lacks_erpo_panels(tmp_path):
    import matplotlib

    from erpo_verl.tools.demo import DEMO_SETTINGS, demo_figure_text
    from erpo_verl.tools.plotting import plot_runs

    erpo = _records([0.2, 0.3, 0.4], 3.8)
    for r in erpo:
        r.update({"erpo/gate_std": 0.3, "erpo/progress_abs_mean": 0.1, "erpo/sign_flip_frac": 0.05})
    runs = {"erpo": erpo, "grpo": _records([0.2, 0.25, 0.35], 3.8)}
    out = tmp_path / "demo.png"
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as text, to read it back
        plot_runs(runs, out, svg=True, **demo_figure_text(["erpo", "grpo"], seed=7, steps=3))
    svg = out.with_suffix(".svg").read_text()
    assert "1 seed (seed 7), 3 steps" in svg and "ERPO vs GRPO" in svg
    assert "mean reward per response" in svg and "mean token entropy (nats)" in svg and "tokens per response" in svg
    assert f"max_response_length = {DEMO_SETTINGS['max_response_length']} tokens" in svg
    assert svg.count("not logged by: grpo") == 3  # one per erpo/ panel, none in the shared panels
    assert "grpo has no such terms" in svg


# ------------------------------------------------------------------------------------------------------------
# PROFILE=cpu-tiny's terminal filter
# ------------------------------------------------------------------------------------------------------------
def test_log_filter_hides_the_config_dump_and_repeats_but_keeps_steps_errors_and_the_full_file(tmp_path):
    tr = "\x1b[36m(TaskRunnerV1 pid=11)\x1b[0m "
    wd = "\x1b[36m(WorkerDict pid=12)\x1b[0m "
    lines = [
        "ray init kwargs: {'num_cpus': 16}",
        tr + "{'actor_rollout_ref': {'actor': {'_target_': 'verl.workers.config.FSDPActorConfig',",
        tr + "                                 'clip_ratio': 0.2,",
        wd + "Qwen2ForCausalLM contains 77.31K parameters",  # another actor in the middle of the dump
        tr + "'_target_': 'verl.utils.profiler.config.NPUToolConfig',",
        tr + "                                 'ignore_patterns': ['lm_head',",
        tr + "                                                     'embed_tokens'],",
        tr + " 'trainer': {'use_v1': True}}",
        tr + "Using dataset class: RLHFDataset",
        wd + "/x/verl/workers/engine/__init__.py:32: UserWarning: torchtitan engine is not available: X",
        wd + "  warnings.warn(f\"torchtitan engine is not available: {e!r}\", stacklevel=1)",
        wd + "UserWarning: something we should see",
        "\x1b[36m(WorkerDict pid=13)\x1b[0m UserWarning: something we should see",  # same text, other process
        tr + "Training Progress:  33%|###  | 1/3 [01:20<02:40, 80.45s/it]",
        tr + "step:1 - critic/score/mean:0.19 - actor/entropy:3.85",
        wd + "Loading weights: 100%|##########| 4/4 [00:00<00:00, 120.00it/s]",
        tr + "Traceback (most recent call last):",
        tr + "  File \"x.py\", line 1, in <module>",
        tr + "ValueError: boom",
        tr + "'Final validation metrics: None'",
    ]
    log = tmp_path / "train.log"
    result = subprocess.run(
        [sys.executable, "-m", "erpo_verl.tools.logfilter", "--log", str(log)],
        input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0
    shown = result.stdout.splitlines()
    assert log.read_text().splitlines() == lines  # the file gets everything, unchanged
    assert not any("_target_" in s or "clip_ratio" in s or "embed_tokens" in s or "use_v1" in s for s in shown)
    assert not any("engine is not available" in s or "Loading weights" in s or "Final validation" in s for s in shown)
    assert sum("something we should see" in s for s in shown) == 1
    for kept in ("ray init kwargs", "77.31K parameters", "Using dataset class", "Training Progress", "step:1 -",
                 "Traceback (most recent call last)", 'File "x.py"', "ValueError: boom"):
        assert any(kept in s for s in shown), kept
    assert shown[-1] == f"[erpo] 11 of {len(lines)} lines not shown (verl's config dump, repeated warnings, progress bars); full log: {log}"
