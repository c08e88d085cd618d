"""The reasoning benchmark: method switches (composed by verl's config), statistics, the SFT policy, tiny mode."""

import json
import math

import pytest

from erpo_verl.tools import bench_reasoning as br


@pytest.mark.parametrize("method", br.METHODS)
def test_every_method_composes_and_validates_in_verls_config(method, tmp_path):
    """The overrides a run passes, checked by recipe_check (verl's Hydra compose + validate_config, no Ray)."""
    from erpo_verl.tools.recipe_check import check_config, compose_config

    assets = {"model": "Qwen/Qwen2.5-0.5B", "train": "train.parquet", "test": "test.parquet"}
    config = compose_config(br.run_overrides(assets, method, 1, br.PROTOCOL, tmp_path))
    check_config(config)
    assert config.actor_rollout_ref.rollout.val_kwargs.n == br.PROTOCOL.val_n
    assert config.trainer.test_freq == br.PROTOCOL.test_freq and config.trainer.val_before_train
    # the shared settings are the same for every method
    assert config.data.train_batch_size == br.PROTOCOL.train_batch_size
    assert config.actor_rollout_ref.rollout.n == br.PROTOCOL.n
    assert config.actor_rollout_ref.actor.optim.lr == br.PROTOCOL.lr
    # common random numbers across methods: per-(seed, step, prompt, sample) sampling streams in the CPU rollout
    assert config.actor_rollout_ref.rollout.full_determinism is True
    assert config.reward.custom_reward_function.path == "pkg://erpo_verl.tasks.countdown"
    assert config.reward.custom_reward_function.name == "score_and_acc"


def test_methods_switch_on_what_their_names_say():
    o = {m: " ".join(br.method_overrides(m)) for m in br.METHODS}
    assert "clip_ratio_high=0.28" in o["dapo"] and "filter_groups.enable=True" in o["dapo"]
    assert "reward_manager.name=dapo" in o["dapo"] and "overlong_buffer_cfg.enable=True" in o["dapo"]
    assert "adv_estimator=grpo_forking" in o["grpo_forking"] and "erpo_sync" in o["grpo_forking"]
    assert "loss_mode=clip_cov" in o["clip_cov"] and "loss_mode=kl_cov" in o["kl_cov"]
    assert "loss_mode=aer" in o["aer_grpo"] and "adv_estimator=grpo " in o["aer_grpo"] + " "
    assert "loss_mode=aer" in o["aer_erpo"] and "adv_estimator=erpo " in o["aer_erpo"] + " "
    assert "filter_groups.enable=False" in o["grpo"] and "clip_ratio_high=0.2 " in o["grpo"] + " "


def test_validation_dump_gives_avg_at_k_and_unbiased_pass_at_k(tmp_path):
    rows = {0: [1, 0, 0, 0] + [0, 0, 0, 0], 5: [1, 1, 0, 0] + [1, 0, 0, 0]}  # 2 prompts x k=4
    for step, scores in rows.items():
        lines = [json.dumps({"input": f"p{i // 4}", "output": "x", "score": float(s), "step": step})
                 for i, s in enumerate(scores)]
        (tmp_path / f"{step}.jsonl").write_text("\n".join(lines) + "\n")
    curve = br.validation_curve(tmp_path, k=4)
    assert [p["step"] for p in curve] == [0, 5]
    assert curve[0]["pass@1"] == pytest.approx((0.25 + 0.0) / 2) and curve[0]["pass@4"] == pytest.approx(0.5)
    assert curve[1]["pass@1"] == pytest.approx((0.5 + 0.25) / 2) and curve[1]["pass@4"] == pytest.approx(1.0)
    # area under pass@1 over steps 0..5, divided by the span: the mean of the two ends for two points
    assert br.auc(curve, "pass@1") == pytest.approx((0.125 + 0.375) / 2)


def test_validation_dump_with_a_wrong_sample_count_is_an_error(tmp_path):
    (tmp_path / "0.jsonl").write_text(json.dumps({"input": "p", "score": 1.0}) + "\n")
    with pytest.raises(ValueError, match="expected 4 samples per prompt"):
        br.validation_curve(tmp_path, k=4)


def test_paired_difference_uses_a_student_t_interval_over_seeds():
    d = br.paired_difference({1: 0.30, 2: 0.25, 3: 0.35}, {1: 0.20, 2: 0.20, 3: 0.20})
    diffs = [0.10, 0.05, 0.15]
    se = (sum((x - 0.10) ** 2 for x in diffs) / 2) ** 0.5 / 3 ** 0.5
    assert d["mean"] == pytest.approx(0.10) and d["seeds"] == 3
    assert d["hi"] - d["mean"] == pytest.approx(4.303 * se)  # t(0.975, df=2)
    one = br.paired_difference({1: 0.3}, {1: 0.2, 2: 0.1})
    assert one["seeds"] == 1 and math.isnan(one["lo"])


def test_reading_says_better_worse_or_not_distinguishable():
    def run(values):
        return {s: {"summary": {"final_pass@1": v, "final_pass@16": v, "auc_pass@1": v, "entropy_final": 1.0,
                                "response_length": 10.0, "step_seconds": 1.0}} for s, v in values.items()}
    results = {"grpo": run({1: 0.20, 2: 0.22, 3: 0.21}), "a": run({1: 0.30, 2: 0.33, 3: 0.31}),
               "b": run({1: 0.10, 2: 0.12, 3: 0.11}), "c": run({1: 0.10, 2: 0.35, 3: 0.21})}
    text = "\n".join(br.reading(br.summarize(results, 16), 16))
    assert "a vs grpo: pass@1 +0.103" in text and "better" in text.split("a vs grpo")[1].split("\n")[0]
    assert "worse" in text.split("b vs grpo")[1].split("\n")[0]
    assert "not distinguishable" in text.split("c vs grpo")[1].split("\n")[0]
    assert "grpo vs" not in text


def test_seed_curve_averages_the_steps_every_seed_has_with_a_standard_error():
    runs = {
        1: {"curve": [{"step": 0, "pass@1": 0.1}, {"step": 10, "pass@1": 0.2}],
            "records": [{"step": 1, "actor/entropy": 0.5}, {"step": 2, "actor/entropy": 0.3}]},
        2: {"curve": [{"step": 0, "pass@1": 0.3}],  # a seed without step 10: the step is left out
            "records": [{"step": 1, "actor/entropy": 0.7}, {"step": 2, "actor/entropy": 0.5}]},
    }
    xs, means, ses = br.seed_curve(runs, "pass@1")
    assert xs == [0] and means == pytest.approx([0.2]) and ses == pytest.approx([0.1])  # sd 0.1414 / sqrt(2)
    xs, means, ses = br.seed_curve(runs, br.ENTROPY)
    assert xs == [1, 2] and means == pytest.approx([0.6, 0.4]) and ses == pytest.approx([0.1, 0.1])
    assert br.seed_curve({1: runs[1]}, "pass@1")[2] == [0.0, 0.0]  # one seed: no band


def test_band_plot_draws_each_method_in_its_own_colour_and_refuses_nothing_to_draw(tmp_path):
    from PIL import Image

    from erpo_verl.tools.plotting import plot_bands

    lines = {"grpo": ([0, 10, 20], [0.1, 0.2, 0.3], [0.02, 0.02, 0.02]), "erpo": ([0, 10, 20], [0.3, 0.2, 0.1], [0, 0, 0])}
    out = plot_bands([("pass@1", lines), ("entropy", {"grpo": lines["grpo"], "erpo": ([], [], [])})],
                     tmp_path / "p.png", "title", cols=2)
    colors = {c for _, c in Image.open(out).convert("RGB").getcolors(maxcolors=1 << 24)}
    for line_color in ((31, 119, 180), (255, 127, 14)):  # C0 and C1, the same per method in every panel
        assert any(sum(abs(a - b) for a, b in zip(c, line_color)) < 30 for c in colors), line_color
    with pytest.raises(ValueError, match="no panels"):
        plot_bands([], tmp_path / "q.png", "title")


def test_a_run_takes_the_seeds_step0_validation_from_a_finished_run_of_another_method(tmp_path, monkeypatch):
    """verl is faked: the check is which overrides a run gets, what lands in its validation folder and done.json."""
    from types import SimpleNamespace

    import erpo_verl.integration.cpu.launch as launch

    protocol = br.Protocol(steps=2, test_freq=2, val_n=2, num_test=2)
    calls = []

    def fake_run(overrides, folder, timeout):
        def last(key):  # the last value wins in Hydra (the CPU profile's own defaults come first)
            return [o for o in overrides if o.startswith(key + "=")][-1].split("=", 1)[1]

        before = last("trainer.val_before_train") == "True"
        calls.append(before)
        method = last("trainer.experiment_name").split("_seed")[0]
        (folder / "validation").mkdir(parents=True)
        for step in ([0] if before else []) + [2]:
            rows = [{"input": p, "acc": (method, step, p, i) == ("grpo", 0, "a", 0), "score": 0.0}
                    for p in ("a", "b") for i in range(2)]
            (folder / "validation" / f"{step}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
        records = [{"step": s, "actor/entropy": 0.5} for s in (1, 2)]
        (folder / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "data": {"actor/entropy": 0.5}})
                                                         for s in (1, 2)))
        return SimpleNamespace(returncode=0, metrics=records, seconds=1.0, log_path=folder / "train.log")

    monkeypatch.setattr(launch, "run_verl_cpu", fake_run)
    assets = {"model": "m", "train": "t", "test": "v", "sft": {"key": "sft1"}}
    first = br.run_once(tmp_path, assets, "grpo", 1, protocol)
    other_seed = br.run_once(tmp_path, assets, "grpo", 2, protocol)
    second = br.run_once(tmp_path, assets, "erpo", 1, protocol)
    assert calls == [True, True, False]  # seed 2 has no finished run to take it from
    assert first["step0_from"] is None and other_seed["step0_from"] is None and second["step0_from"] == "grpo_seed1"
    # the copied dump is the donor's: grpo's one correct sample at step 0 (pass@1 = 1/4 over 2 prompts x 2)
    assert second["curve"][0] == {"step": 0, "pass@1": 0.25, "pass@2": 0.5, "prompts": 2}
    assert json.loads((tmp_path / "runs" / "erpo_seed1" / "done.json").read_text())["step0_from"] == "grpo_seed1"
    # a run of another protocol or SFT policy is never a donor
    assert br.step0_donor(tmp_path, {"protocol": "other", "sft": "sft1", "seed": 1, "method": "dapo"}) is None
    assert br.step0_donor(tmp_path, {"protocol": protocol.key(), "sft": "x", "seed": 1, "method": "dapo"}) is None
    # reused runs keep saying where their step-0 validation came from
    assert br.run_once(tmp_path, assets, "erpo", 1, protocol)["step0_from"] == "grpo_seed1" and len(calls) == 3


def test_bad_arguments_exit_with_a_message(capsys):
    with pytest.raises(SystemExit):
        br.main(["--seeds", "1,2"])
    assert "at least 3 distinct seeds" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="unknown method 'nope'"):
        br.main(["--methods", "nope", "--plan"])


@pytest.mark.slow
def test_tiny_mode_runs_sft_and_grpo_through_verl_and_writes_the_report(tmp_path):
    out = tmp_path / "bench"
    assert br.main(["--tiny", "--out", str(out)]) == 0
    result = json.loads((out / "results.json").read_text())
    assert result["pilot"] is True and list(result["runs"]) == ["grpo"]
    run = result["runs"]["grpo"]["1"]
    assert [p["step"] for p in run["curve"]] == [0, 2]  # validated before training and at the last step
    assert all(p["prompts"] == br.TINY.num_test for p in run["curve"])
    assert 0.0 <= run["summary"]["final_pass@1"] <= run["summary"]["final_pass@4"] <= 1.0
    assert len(run["entropy"]) == 2 and all(v > 0 for _, v in run["entropy"])
    assert (out / "curves.png").stat().st_size > 0 and "PILOT" in (out / "results.md").read_text()
    # a second call reuses the cached policy and the finished run
    assert br.main(["--tiny", "--out", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["runs"]["grpo"]["1"]["seconds"] == run["seconds"]
