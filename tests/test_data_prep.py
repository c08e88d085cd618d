"""Tests for data_prep: every converter on source-shaped fixtures, the verl schema, atomic writes, bad input,
the offline hub error, and routing of every data_source we write to erpo_verl.rewards.math through verl."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import data_prep.io as data_io
from data_prep.__main__ import main
from data_prep.converters import DATASETS
from data_prep.io import read_verl_parquet, write_verl_parquet
from data_prep.schema import ANSWER_LINE_PREFIX, BOXED_INSTRUCTION, SchemaError, make_row, render_prompt, validate_row
from erpo_verl.rewards.data_sources import DATASET_DATA_SOURCES, is_routed_to_math_reward

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "data_prep"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def jsonl_to_parquet(source: Path, target: Path) -> Path:
    """Store a fixture the way the hub does (parquet, nested columns as structs/lists)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(read_jsonl(source)), target)
    return target


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def summary_counts(printed: str, split: str) -> dict[str, int]:
    """The numbers in the summary table row of ``split``."""
    for line in printed.splitlines():
        cells = line.split()
        if cells and cells[0] == split and len(cells) >= 6 and cells[1].isdigit():
            return dict(zip(("read", "skipped", "dupes", "prompts", "rows"), map(int, cells[1:6])))
    raise AssertionError(f"no summary row for {split} in:\n{printed}")


def truths(path: Path) -> list[str]:
    return [row["reward_model"]["ground_truth"] for row in read_verl_parquet(path)]


# --------------------------------------------------------------------------------------------- converters


def test_math_from_a_hub_snapshot_layout(tmp_path, capsys):
    snapshot = tmp_path / "MATH-lighteval"
    jsonl_to_parquet(FIXTURES / "math" / "train.jsonl", snapshot / "data" / "train-00000-of-00001.parquet")
    jsonl_to_parquet(FIXTURES / "math" / "test.jsonl", snapshot / "data" / "test-00000-of-00001.parquet")
    out = tmp_path / "out"
    code, printed, _ = run_cli(["math", "--source", str(snapshot), "--out", str(out)], capsys)
    assert code == 0
    assert truths(out / "train.parquet") == ["\\frac{5}{6}", "\\frac{\\sqrt{3}}{2}", "3", "\\text{(C)}", "[-1, 3]"]
    assert truths(out / "test.parquet") == ["1024", "2\\sqrt{2}", "\\{-1, 1\\}"]
    row = read_verl_parquet(out / "train.parquet")[0]
    assert row["data_source"] == "erpo/math"
    assert row["prompt"] == [
        {"role": "user", "content": "What is $\\frac{1}{2} + \\frac{1}{3}$?\n\n" + BOXED_INSTRUCTION}
    ]
    assert row["extra_info"]["split"] == "train" and row["extra_info"]["level"] == "Level 1"
    assert row["extra_info"]["type"] == "Prealgebra"
    assert "no \\boxed{} answer in solution" in printed and "train-00000-of-00001.parquet:6" in printed


def test_math500(tmp_path, capsys):
    code, _, _ = run_cli(["math500", "--source", str(FIXTURES / "math500"), "--out", str(tmp_path)], capsys)
    assert code == 0
    rows = read_verl_parquet(tmp_path / "test.parquet")
    assert [r["reward_model"]["ground_truth"] for r in rows] == [
        "\\left( 3, \\frac{\\pi}{2} \\right)",
        "26000",
        "150^\\circ",
        "\\frac{1}{2}",
        "\\text{Monday}",
    ]
    assert rows[0]["extra_info"]["unique_id"] == "test/precalculus/807.json"
    assert rows[0]["extra_info"]["level"] == "2" and rows[0]["data_source"] == "erpo/math500"


def test_aime24_integer_answers_are_canonical(tmp_path, capsys):
    code, _, _ = run_cli(["aime24", "--source", str(FIXTURES / "aime24"), "--out", str(tmp_path)], capsys)
    assert code == 0
    # "204" (string), 113 (int), "033" (zero-padded), 321.0 (float) in the source
    assert truths(tmp_path / "test.parquet") == ["204", "113", "33", "321"]
    assert read_verl_parquet(tmp_path / "test.parquet")[1]["extra_info"]["id"] == "61"


def test_aime25(tmp_path, capsys):
    assert (
        run_cli(["aime25", "--source", str(FIXTURES / "aime25" / "test.jsonl"), "--out", str(tmp_path)], capsys)[0] == 0
    )
    assert truths(tmp_path / "test.parquet") == ["70", "588", "16"]


def test_amc23_float_answers(tmp_path, capsys):
    code, printed, _ = run_cli(["amc23", "--source", str(FIXTURES / "amc23"), "--out", str(tmp_path)], capsys)
    assert code == 0
    assert truths(tmp_path / "test.parquet") == ["27", "36", "0.5"]
    assert "missing answer" in printed and "test.jsonl:4" in printed


def test_dapo17k_is_deduplicated_and_rewrapped(tmp_path, capsys):
    source = jsonl_to_parquet(FIXTURES / "dapo17k" / "dapo-math-17k.jsonl", tmp_path / "src" / "dapo-math-17k.parquet")
    out = tmp_path / "out"
    code, printed, _ = run_cli(
        ["dapo17k", "--source", str(source), "--out", str(out), "--prompt-format", "answer_line"], capsys
    )
    assert code == 0
    rows = read_verl_parquet(out / "train.parquet")
    assert len(rows) == 5  # 30 rows = 5 prompts duplicated 4-8 times
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["34", "12", "24", "2", "101"]
    for row in rows:
        content = row["prompt"][0]["content"]
        assert content.count("Solve the following math problem step by step") == 1  # template not doubled
        assert content.startswith(ANSWER_LINE_PREFIX)
        assert not row["extra_info"]["question"].startswith("Solve the following")
    assert rows[1]["extra_info"]["question"] == "Let $x$ be a real number such that $x^3 = 8$. Find $x + 10$."
    assert "removed 25 duplicate question(s)" in printed
    assert summary_counts(printed, "train") == {"read": 30, "skipped": 0, "dupes": 25, "prompts": 5, "rows": 5}


def test_duplicates_with_conflicting_answers_are_reported(tmp_path, capsys):
    source = tmp_path / "dupes.jsonl"
    source.write_text(
        "".join(json.dumps({"question": "Same question?", "answer": a}) + "\n" for a in ("1", "1", "2")),
        encoding="utf-8",
    )
    code, printed, _ = run_cli(["custom", "--source", str(source), "--out", str(tmp_path / "o")], capsys)
    assert code == 0
    assert truths(tmp_path / "o" / "train.parquet") == ["1"]
    assert "removed 2 duplicate question(s) in train, 1 of them with a different answer" in printed
    code, _, _ = run_cli(["custom", "--source", str(source), "--out", str(tmp_path / "k"), "--keep-duplicates"], capsys)
    assert code == 0 and truths(tmp_path / "k" / "train.parquet") == ["1", "1", "2"]


def test_gsm8k(tmp_path, capsys):
    code, printed, _ = run_cli(["gsm8k", "--source", str(FIXTURES / "gsm8k"), "--out", str(tmp_path)], capsys)
    assert code == 0
    assert truths(tmp_path / "train.parquet") == ["72", "2000"]
    assert truths(tmp_path / "test.parquet") == ["18"]
    assert "no #### answer in solution" in printed


def test_custom_csv_with_named_fields(tmp_path, capsys):
    args = ["custom", "--source", str(FIXTURES / "custom" / "problems.csv"), "--out", str(tmp_path)]
    code, printed, _ = run_cli(args + ["--question-field", "q", "--answer-field", "a"], capsys)
    assert code == 0
    assert truths(tmp_path / "train.parquet") == ["42", "\\frac{1}{2}", "\\frac{5}{2}"]  # boxed solution reduced
    assert "problems.csv:4" in printed and "problems.csv:5" in printed  # spreadsheet row numbers
    assert read_verl_parquet(tmp_path / "train.parquet")[0]["data_source"] == "erpo/custom"


def test_custom_json_and_dotted_fields(tmp_path, capsys):
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps({"rows": [{"item": {"q": "What is 3+4?", "a": 7}}]}), encoding="utf-8")
    args = [
        "custom",
        "--source",
        str(listed),
        "--out",
        str(tmp_path / "a"),
        "--question-field",
        "item.q",
        "--answer-field",
        "item.a",
    ]
    assert run_cli(args, capsys)[0] == 0
    assert truths(tmp_path / "a" / "train.parquet") == ["7"]
    lines = tmp_path / "lines.json"  # a .json file that is really JSON Lines
    lines.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": "4"}\n', encoding="utf-8")
    assert run_cli(["custom", "--source", str(lines), "--out", str(tmp_path / "b")], capsys)[0] == 0
    assert truths(tmp_path / "b" / "train.parquet") == ["2", "4"]


def test_dapo_style_aime_file_becomes_an_avg_at_n_set(tmp_path, capsys):
    """DAPO's AIME-2024 parquet repeats every problem 32 times; we store each once and repeat on request."""
    rows = []
    for problem, answer in (("Find $a$ in problem one.", "123"), ("Find $b$ in problem two.", "45")):
        content = ANSWER_LINE_PREFIX + problem + '\n\nRemember to put your answer on its own line after "Answer:".'
        rows += [
            {
                "data_source": "math_dapo",
                "prompt": [{"content": content, "role": "user"}],
                "ability": "MATH",
                "reward_model": {"ground_truth": answer, "style": "rule-lighteval/MATH_v2"},
                "extra_info": {"index": str(i)},
            }
            for i in range(32)
        ]
    source = tmp_path / "aime-2024.parquet"
    pq.write_table(pa.Table.from_pylist(rows), source)
    out = tmp_path / "out"
    code, printed, _ = run_cli(["aime24", "--source", str(source), "--out", str(out), "--repeat", "32"], capsys)
    assert code == 0 and "removed 62 duplicate" in printed
    written = read_verl_parquet(out / "test.parquet")
    assert len(written) == 64
    assert [r["extra_info"]["index"] for r in written] == list(range(64))
    assert {r["extra_info"]["prompt_id"] for r in written[:32]} == {"aime24/test/0"}
    assert [r["extra_info"]["repeat_index"] for r in written[:32]] == list(range(32))
    assert {r["reward_model"]["ground_truth"] for r in written[32:]} == {"45"}


def test_limit_shuffle_and_seed(tmp_path, capsys):
    source = tmp_path / "fifty.jsonl"
    source.write_text(
        "".join(json.dumps({"question": f"Q{i}?", "answer": str(i)}) + "\n" for i in range(50)), encoding="utf-8"
    )

    def order(*extra):
        out = tmp_path / "-".join(extra or ("plain",))
        assert run_cli(["custom", "--source", str(source), "--out", str(out), "--limit", "10", *extra], capsys)[0] == 0
        return truths(out / "train.parquet")

    assert order() == [str(i) for i in range(10)]
    first = order("--shuffle", "--seed", "1")
    assert first == order("--shuffle", "--seed", "1", "--no-progress") and len(first) == 10
    assert first != order("--shuffle", "--seed", "2") and first != [str(i) for i in range(10)]


def test_progress_bar_can_be_forced(tmp_path, capsys):
    code, _, err = run_cli(["gsm8k", "--source", str(FIXTURES / "gsm8k"), "--out", str(tmp_path), "--progress"], capsys)
    assert code == 0 and "gsm8k/train" in err and "rows" in err


# ------------------------------------------------------------------------------------------------ schema


def test_make_row_shape():
    row = make_row("What is 1+1?", " 2 ", "erpo/toy", "train", 7, prompt_format="answer_line", extra={"level": 3})
    assert row["data_source"] == "erpo/toy" and row["ability"] == "math"
    assert row["reward_model"] == {"style": "rule", "ground_truth": "2"}
    assert row["prompt"][0]["role"] == "user" and row["prompt"][0]["content"] == render_prompt(
        "What is 1+1?", "answer_line"
    )
    assert row["extra_info"] == {
        "level": 3,
        "split": "train",
        "index": 7,
        "question": "What is 1+1?",
        "answer": "2",
        "prompt_format": "answer_line",
    }
    validate_row(row)
    assert render_prompt("Q", "boxed") == "Q\n\n" + BOXED_INSTRUCTION


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"question": "  "}, "question"),
        ({"answer": ""}, "answer"),
        ({"data_source": None}, "data_source"),
        ({"index": -1}, "index"),
        ({"index": True}, "index"),
        ({"prompt_format": "chat"}, "prompt format"),
        ({"extra": {"tags": ["a"]}}, "extra['tags']"),
    ],
)
def test_make_row_rejects_bad_arguments(kwargs, message):
    arguments = {"question": "Q?", "answer": "1", "data_source": "erpo/x", "split": "train", "index": 0, **kwargs}
    with pytest.raises(SchemaError, match=message.replace("[", r"\[").replace("]", r"\]")):
        make_row(**arguments)


def _good_row(index=0):
    return make_row("What is 2+2?", "4", "erpo/toy", "train", index)


@pytest.mark.parametrize(
    "mutate, field",
    [
        (lambda r: r.pop("prompt"), "missing column"),
        (lambda r: r.update(data_source=""), "data_source"),
        (lambda r: r.update(prompt=[]), "prompt"),
        (lambda r: r.update(prompt="What?"), "prompt"),
        (lambda r: r["prompt"][0].update(role="robot"), "prompt[0].role"),
        (lambda r: r["prompt"][0].update(content=" "), "prompt[0].content"),
        (lambda r: r.update(ability=None), "ability"),
        (lambda r: r["reward_model"].update(ground_truth=4), "reward_model.ground_truth"),
        (lambda r: r["reward_model"].pop("style"), "reward_model.style"),
        (lambda r: r.update(extra_info=None), "extra_info"),
        (lambda r: r["extra_info"].pop("split"), "extra_info.split"),
        (lambda r: r["extra_info"].update(index="0"), "extra_info.index"),
        (lambda r: r["extra_info"].update(score=float("nan")), "extra_info.score"),
    ],
)
def test_validate_row_names_the_field(mutate, field):
    row = _good_row()
    mutate(row)
    with pytest.raises(SchemaError) as error:
        validate_row(row, where="rows.parquet row 3")
    assert "rows.parquet row 3" in str(error.value) and field in str(error.value)


# ------------------------------------------------------------------------------------------ safe writing


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_write_verl_parquet_round_trip_and_overwrite(tmp_path):
    target = tmp_path / "nested" / "toy.parquet"
    rows = [_good_row(i) for i in range(3)]
    assert write_verl_parquet(rows, target) == target.resolve()
    assert [r["extra_info"]["index"] for r in read_verl_parquet(target)] == [0, 1, 2]
    before = target.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        write_verl_parquet([_good_row(9)], target)
    assert target.read_bytes() == before
    write_verl_parquet([_good_row(9)], target, overwrite=True)
    assert [r["extra_info"]["index"] for r in read_verl_parquet(target)] == [9]
    assert _leftovers(target.parent) == ["toy.parquet"]


def test_write_verl_parquet_rejects_bad_rows_without_writing(tmp_path):
    bad = [_good_row(0), _good_row(1)]
    bad[1]["reward_model"]["ground_truth"] = ""
    with pytest.raises(SchemaError, match=r"row 1: reward_model.ground_truth"):
        write_verl_parquet(bad, tmp_path / "x.parquet")
    with pytest.raises(SchemaError, match="no rows"):
        write_verl_parquet([], tmp_path / "x.parquet")
    with pytest.raises(SchemaError, match="not unique"):
        write_verl_parquet([_good_row(0), _good_row(0)], tmp_path / "x.parquet")
    mixed = [
        make_row("Q1", "1", "erpo/t", "train", 0, extra={"level": 1}),
        make_row("Q2", "2", "erpo/t", "train", 1, extra={"level": "hard"}),
    ]
    with pytest.raises(SchemaError, match="extra_info.level is str but row 0 has int"):
        write_verl_parquet(mixed, tmp_path / "x.parquet")
    assert _leftovers(tmp_path) == []
    assert issubclass(SchemaError, ValueError)


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    def write_then_interrupt(table, where, **kwargs):
        Path(where).write_bytes(b"PAR1 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(data_io.pq, "write_table", write_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_verl_parquet([_good_row()], tmp_path / "train.parquet")
    assert _leftovers(tmp_path) == []


def test_failed_read_back_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(data_io, "read_verl_parquet", lambda path: [])
    with pytest.raises(SchemaError, match="read back 0"):
        write_verl_parquet([_good_row()], tmp_path / "train.parquet")
    assert _leftovers(tmp_path) == []


def test_killed_process_never_leaves_a_partial_parquet(tmp_path):
    """SIGKILL in the middle of writing: no train.parquet appears (only a hidden temporary file may remain)."""
    target = tmp_path / "train.parquet"
    child = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        import data_prep.io as data_io
        from data_prep.schema import make_row

        def slow_write(table, where, **kwargs):
            Path(where).write_bytes(b"PAR1 partial")
            print("writing", flush=True)
            time.sleep(60)

        data_io.pq.write_table = slow_write
        data_io.write_verl_parquet([make_row("Q?", "1", "erpo/t", "train", 0)], {str(target)!r})
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    process = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert process.stdout.readline().strip() == "writing"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert not target.exists()
    assert list(tmp_path.glob("*.parquet")) == []


# ------------------------------------------------------------------------------------ CLI and bad input


def test_cli_refuses_to_overwrite_unless_asked(tmp_path, capsys):
    args = ["aime25", "--source", str(FIXTURES / "aime25"), "--out", str(tmp_path)]
    assert run_cli(args, capsys)[0] == 0
    before = (tmp_path / "test.parquet").read_bytes()
    code, _, err = run_cli(args + ["--limit", "1"], capsys)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert (tmp_path / "test.parquet").read_bytes() == before
    assert run_cli(args + ["--limit", "1", "--overwrite"], capsys)[0] == 0
    assert truths(tmp_path / "test.parquet") == ["70"]


def test_existing_split_output_blocks_the_whole_run(tmp_path, capsys):
    (tmp_path / "test.parquet").write_bytes(b"keep me")
    code, _, err = run_cli(["gsm8k", "--source", str(FIXTURES / "gsm8k"), "--out", str(tmp_path)], capsys)
    assert code == 2 and "test.parquet already exists" in err
    assert not (tmp_path / "train.parquet").exists()  # nothing written before the check


def test_bad_rows_are_skipped_and_counted(tmp_path, capsys):
    args = [
        "custom",
        "--source",
        str(FIXTURES / "bad" / "mixed.jsonl"),
        "--out",
        str(tmp_path),
        "--question-field",
        "problem",
    ]
    code, printed, _ = run_cli(args, capsys)
    assert code == 0
    assert truths(tmp_path / "train.parquet") == ["2", "5"]
    for reason, line in [
        ("missing question", 2),
        ("empty answer", 3),
        ("question is not a string", 4),
        ("answer is not a string or number", 5),
        ("answer is NaN", 7),
        ("unparsable row: invalid JSON", 8),
        ("unparsable row: a JSON list", 9),
    ]:
        assert reason in printed and f"mixed.jsonl:{line}" in printed, reason
    assert summary_counts(printed, "train") == {"read": 9, "skipped": 7, "dupes": 0, "prompts": 2, "rows": 2}


def test_strict_mode_stops_at_the_first_bad_row(tmp_path, capsys):
    args = [
        "custom",
        "--source",
        str(FIXTURES / "bad" / "mixed.jsonl"),
        "--out",
        str(tmp_path),
        "--question-field",
        "problem",
        "--strict",
    ]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert "mixed.jsonl:2: missing question (field 'problem')" in err
    assert list(tmp_path.iterdir()) == []


def test_skip_reports_show_only_the_first_few_rows(tmp_path, capsys):
    source = tmp_path / "many.jsonl"
    source.write_text(
        "".join(json.dumps({"question": f"Q{i}", "answer": "" if i % 2 else "1"}) + "\n" for i in range(20)),
        encoding="utf-8",
    )
    code, printed, _ = run_cli(["custom", "--source", str(source), "--out", str(tmp_path / "o")], capsys)
    assert code == 0
    line = next(text for text in printed.splitlines() if "empty answer" in text)
    assert "skipped 10 row(s)" in line and line.count("many.jsonl:") == 5 and line.endswith(", ...)")


def test_wrong_field_names_explain_what_exists(tmp_path, capsys):
    args = ["custom", "--source", str(FIXTURES / "math500"), "--out", str(tmp_path), "--question-field", "qustion"]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert "no usable rows" in err and "missing question" in err and "problem" in err and "unique_id" in err


def test_unreadable_files_are_skipped_or_fatal_under_strict(tmp_path, capsys):
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(FIXTURES / "aime25" / "test.jsonl", source / "good.jsonl")
    corrupt = source / "broken.parquet"
    corrupt.write_bytes(b"this is not parquet at all")
    code, printed, _ = run_cli(["aime25", "--source", str(source), "--out", str(tmp_path / "o")], capsys)
    assert code == 0 and truths(tmp_path / "o" / "test.parquet") == ["70", "588", "16"]
    assert "skipped 1 file(s) in test: unreadable file" in printed and "broken.parquet: cannot read parquet" in printed
    code, _, err = run_cli(["aime25", "--source", str(source), "--out", str(tmp_path / "s"), "--strict"], capsys)
    assert code == 2 and "broken.parquet: cannot read parquet" in err and "--strict" in err
    assert not (tmp_path / "s").exists()


def test_a_source_with_no_readable_file_exits_2_naming_it(tmp_path, capsys):
    corrupt = tmp_path / "train.parquet"
    corrupt.write_bytes(b"this is not parquet at all")
    code, _, err = run_cli(["custom", "--source", str(corrupt), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and f"{corrupt}: cannot read parquet" in err and "no usable rows" in err
    broken_json = tmp_path / "rows.json"
    broken_json.write_text('[{"question": "x", ', encoding="utf-8")
    code, _, err = run_cli(["custom", "--source", str(broken_json), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "rows.json" in err and "invalid JSON" in err
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("question,answer\nCaf\xe9?,1\n".encode("latin-1"))
    code, _, err = run_cli(["custom", "--source", str(latin1), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "UTF-8" in err
    code, _, err = run_cli(["custom", "--source", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "o").exists()


def test_usage_errors_exit_2(tmp_path, capsys):
    assert main(["math500", "--out", str(tmp_path), "--repeat", "0"]) == 2
    assert main(["math500"]) == 2  # --out is required
    assert main(["no-such-dataset", "--out", str(tmp_path)]) == 2
    assert main(["custom", "--out", str(tmp_path)]) == 2  # custom needs --source
    assert main(["--help"]) == 0
    capsys.readouterr()


def test_hidden_files_in_a_source_directory_are_ignored(tmp_path, capsys):
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(FIXTURES / "aime25" / "test.jsonl", source / "test.jsonl")
    (source / ".test.parquet.123.abcd.tmp.parquet").write_bytes(b"left over by a killed run")
    (source / ".cache").mkdir()
    (source / ".cache" / "old.jsonl").write_text('{"problem": "stale?", "answer": "1"}\n', encoding="utf-8")
    code, printed, _ = run_cli(["aime25", "--source", str(source), "--out", str(tmp_path / "o")], capsys)
    assert code == 0 and summary_counts(printed, "test")["skipped"] == 0 and ".cache" not in printed
    assert truths(tmp_path / "o" / "test.parquet") == ["70", "588", "16"]


def test_split_detection_in_directories(tmp_path, capsys):
    unlabelled = tmp_path / "src"
    unlabelled.mkdir()
    shutil.copy(FIXTURES / "gsm8k" / "train.jsonl", unlabelled / "part-a.jsonl")
    code, _, err = run_cli(["gsm8k", "--source", str(unlabelled), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "cannot tell which split" in err and "--split" in err
    code, _, _ = run_cli(
        ["gsm8k", "--source", str(unlabelled), "--out", str(tmp_path / "o"), "--split", "train"], capsys
    )
    assert code == 0 and truths(tmp_path / "o" / "train.parquet") == ["72", "2000"]
    code, _, _ = run_cli(
        ["gsm8k", "--source", str(FIXTURES / "gsm8k"), "--out", str(tmp_path / "t"), "--split", "test"], capsys
    )
    assert code == 0 and _leftovers(tmp_path / "t") == ["test.parquet"]


def test_offline_hub_download_fails_with_a_pointer_to_source(tmp_path):
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf"),  # an empty cache: nothing to fall back on
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    )
    completed = subprocess.run(
        [sys.executable, "-m", "data_prep", "aime24", "--out", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2, completed.stderr
    assert "--source" in completed.stderr and "HuggingFaceH4/aime_2024" in completed.stderr
    assert "offline" in completed.stderr
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- routing through real verl


@pytest.fixture(scope="module")
def every_dataset_written(tmp_path_factory):
    """One output directory per dataset, in both prompt formats."""
    root = tmp_path_factory.mktemp("all")
    sources = {
        "math": FIXTURES / "math",
        "math500": FIXTURES / "math500",
        "aime24": FIXTURES / "aime24",
        "aime25": FIXTURES / "aime25",
        "amc23": FIXTURES / "amc23",
        "dapo17k": FIXTURES / "dapo17k",
        "gsm8k": FIXTURES / "gsm8k",
        "custom": FIXTURES / "custom" / "problems.csv",
    }
    assert set(sources) == set(DATASETS)
    files = []
    for name, source in sources.items():
        for prompt_format in ("boxed", "answer_line"):
            out = root / f"{name}-{prompt_format}"
            args = [name, "--source", str(source), "--out", str(out), "--prompt-format", prompt_format, "--no-progress"]
            if name == "custom":
                args += ["--question-field", "q", "--answer-field", "a"]
            assert main(args) == 0
            files += [(name, prompt_format, path) for path in sorted(out.glob("*.parquet"))]
    return files


def test_every_data_source_routes_to_our_reward_through_verl(every_dataset_written, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    from omegaconf import OmegaConf
    from verl.trainer.ppo.reward import get_custom_reward_fn
    from verl.utils.reward_score import default_compute_score

    reward_config = {
        "path": "pkg://erpo_verl.rewards.math",
        "name": "compute_score",
        "reward_kwargs": {"score_format": "signed"},
    }
    reward_fn = get_custom_reward_fn(OmegaConf.create({"reward": {"custom_reward_function": reward_config}}))

    seen_sources = set()
    for name, prompt_format, path in every_dataset_written:
        for row in read_verl_parquet(path):
            data_source, truth = row["data_source"], row["reward_model"]["ground_truth"]
            seen_sources.add(data_source)
            assert data_source == DATASET_DATA_SOURCES[name] and is_routed_to_math_reward(data_source)
            assert row["extra_info"]["prompt_format"] == prompt_format
            answer = (
                f"Some reasoning.\n\n\\boxed{{{truth}}}"
                if prompt_format == "boxed"
                else f"Some reasoning.\nAnswer: {truth}"
            )
            right = reward_fn(
                data_source=data_source, solution_str=answer, ground_truth=truth, extra_info=row["extra_info"]
            )
            wrong = reward_fn(
                data_source=data_source, solution_str="I am not sure.", ground_truth=truth, extra_info=row["extra_info"]
            )
            assert right["score"] == 1.0 and right["acc"] is True, (name, truth, right)
            assert wrong["score"] == -1.0 and wrong["acc"] is False
    assert seen_sources == set(DATASET_DATA_SOURCES.values())
    # verl's own router does not know our values: forgetting custom_reward_function fails loudly.
    with pytest.raises(NotImplementedError):
        default_compute_score("erpo/aime24", "\\boxed{1}", "1")


def test_verl_dataset_loads_our_files(every_dataset_written, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-datasets"))
    from omegaconf import OmegaConf
    from verl.utils.dataset.rl_dataset import RLHFDataset

    name, _, path = next(
        item for item in every_dataset_written if item[0] == "math" and item[2].name == "train.parquet"
    )
    config = OmegaConf.create({"filter_overlong_prompts": False, "cache_dir": str(tmp_path / "verl-cache")})
    dataset = RLHFDataset(data_files=[str(path)], tokenizer=None, config=config)
    rows = read_verl_parquet(path)
    assert len(dataset) == len(rows)
    item = dataset[2]
    assert item["index"] == 2
    assert item["raw_prompt"] == rows[2]["prompt"]
    assert item["reward_model"]["ground_truth"] == rows[2]["reward_model"]["ground_truth"]
