"""Every command in the README's shell blocks works as typed from a fresh shell (no activated venv), or is
marked GPU only.

A fresh shell here is ``PATH=/usr/local/bin:/usr/bin:/bin`` plus ``HOME``, nothing else. Each command is
checked by the cheapest form that proves it can work:

* ``make TARGET``: the target exists (``make -n TARGET``);
* ``.venv/bin/TOOL SUB ...``: the executable exists and ``TOOL SUB --help`` exits 0;
* ``DRY_RUN=1 bash recipes/X.sh``: run as typed; ``PROFILE=cpu-tiny bash recipes/X.sh``: run with ``DRY_RUN=1``
  added (it composes the CPU config through the same interpreter lookup, without training);
* anything marked ``GPU only`` (a comment on the line, or a block starting with such a comment): the script or
  executable it names must exist, nothing runs.

A command of any other shape fails the test: a new README command needs a way to be checked here.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
FRESH_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass
class Command:
    line: str  # as typed (continuations joined)
    env: dict[str, str]  # leading VAR=value assignments
    argv: list[str]
    gpu_only: bool
    where: str = field(default="")


def shell_blocks(markdown: str) -> list[tuple[int, str]]:
    """(line number, text) of every ```bash / ```sh / ```shell block."""
    blocks = []
    for match in re.finditer(r"^```(?:bash|sh|shell)\s*\n(.*?)^```", markdown, flags=re.S | re.M):
        blocks.append((markdown[: match.start()].count("\n") + 1, match.group(1)))
    return blocks


def commands_of(markdown: str) -> list[Command]:
    commands = []
    for first_line, text in shell_blocks(markdown):
        block_gpu = text.lstrip().startswith("#") and "gpu only" in text.lstrip().splitlines()[0].lower()
        joined = re.sub(r"\\\n", " ", text)
        for offset, raw in enumerate(joined.splitlines()):
            comment = raw.split(" #", 1)[1] if " #" in raw else ""
            words = shlex.split(raw, comments=True)
            if not words:
                continue
            env = {}
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):
                key, _, value = words.pop(0).partition("=")
                env[key] = value
            commands.append(
                Command(
                    raw.strip(),
                    env,
                    words,
                    gpu_only=block_gpu or "gpu only" in comment.lower(),
                    where=f"README.md block at line {first_line}",
                )
            )
    return commands


def fresh_env(**extra: str) -> dict[str, str]:
    return {"PATH": FRESH_PATH, "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8", **extra}


def _run(argv: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _run_on_a_terminal(argv: list[str], env: dict[str, str]) -> tuple[subprocess.CompletedProcess, str]:
    """Run with stdout on a pseudo-terminal (as a user sees it) and stderr captured; returns (result, terminal)."""
    import pty
    import threading

    master, slave = pty.openpty()
    chunks: list[bytes] = []

    def drain():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        result = subprocess.run(argv, cwd=REPO, env=env, stdout=slave, stderr=subprocess.PIPE, text=True, timeout=600)
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    return result, b"".join(chunks).decode(errors="replace")


def check_command(cmd: Command, tmp_path: Path) -> str | None:
    """None if the command works as typed from a fresh shell, else what is wrong."""
    argv, env = cmd.argv, cmd.env
    program = argv[0]
    if program == "make":
        if len(argv) < 2:
            return None
        result = _run(["make", "-n", *argv[1:]], fresh_env())
        return None if result.returncode == 0 else f"make has no target {argv[1]}: {result.stderr.strip()[-300:]}"
    if program == "bash" and len(argv) >= 2 and argv[1].startswith("recipes/"):
        script = REPO / argv[1]
        if not script.is_file():
            return f"{argv[1]} does not exist"
        if env.get("DRY_RUN") == "1" or env.get("PROFILE") == "cpu-tiny":
            run_env = fresh_env(**{**env, "DRY_RUN": "1", "OUTPUT_ROOT": str(tmp_path / "outputs")})
            result, terminal = _run_on_a_terminal(["bash", *argv[1:]], run_env)
            if result.returncode != 0 or "recipe_check: OK" not in result.stderr:
                return f"exit {result.returncode}: {result.stderr.strip()[-600:]}"
            last = result.stderr.strip().splitlines()[-1]
            if "dry_run_config.yaml" not in last:
                return f"the dry run's last line does not name the YAML file: {last}"
            written = Path(last.rsplit(" ", 1)[-1])
            if not written.is_file() or "adv_estimator" not in written.read_text():
                return f"{written} does not hold the resolved config"
            if len(terminal.splitlines()) > 5:
                return f"the dry run printed {len(terminal.splitlines())} lines on the terminal (the YAML belongs in the file)"
            return None
        if cmd.gpu_only:
            return None
        return "a recipe command that is neither a dry run, PROFILE=cpu-tiny, nor marked 'GPU only'"
    if cmd.gpu_only:
        # GPU-only commands outside recipes are templates for the user's own verl environment
        return None
    if "/" in program:
        path = REPO / program
        if not (path.is_file() and os.access(path, os.X_OK)):
            return f"{program} does not exist (make install creates .venv)"
        sub = [argv[1]] if len(argv) > 1 and re.fullmatch(r"[a-z][a-z0-9_-]*", argv[1]) else []
        result = _run([str(path), *sub, "--help"], fresh_env(), timeout=120)
        if result.returncode != 0:
            return f"`{program} {' '.join(sub)} --help` exits {result.returncode}: {result.stderr.strip()[-300:]}"
        return None
    found = subprocess.run(["bash", "-c", f"command -v {shlex.quote(program)}"], env=fresh_env(), capture_output=True)
    if found.returncode != 0:
        return f"{program}: command not found in a fresh shell (spell out .venv/bin/{program} or add a make target)"
    return f"{program}: this test does not know how to check it; add a rule to tests/test_readme_commands.py"


# ------------------------------------------------------------------------------------------------------------
# the checker itself: it must reject commands that cannot work
# ------------------------------------------------------------------------------------------------------------
def test_checker_rejects_a_tool_that_is_only_on_the_path_of_an_activated_venv(tmp_path):
    cmd = commands_of("```bash\nerpo-verl doctor   # checks things\n```\n")[0]
    assert cmd.argv == ["erpo-verl", "doctor"] and not cmd.gpu_only
    problem = check_command(cmd, tmp_path)
    assert problem and "command not found in a fresh shell" in problem


def test_checker_rejects_a_missing_make_target_and_a_missing_executable(tmp_path):
    cmds = commands_of("```bash\nmake no-such-target\n.venv/bin/no-such-tool run\n```\n")
    assert "no target no-such-target" in check_command(cmds[0], tmp_path)
    assert "does not exist" in check_command(cmds[1], tmp_path)


def test_checker_parses_env_prefixes_continuations_and_gpu_markers():
    text = (
        "```bash\n# GPU only: your verl environment\npython -m verl.trainer.main_ppo \\\n    a=1 \\\n    b=2\n```\n"
        "```bash\nDRY_RUN=1 bash recipes/x.sh   # no GPU needed\nbash recipes/x.sh   # GPU only: 8 GPUs\n```\n"
    )
    cmds = commands_of(text)
    assert [c.argv for c in cmds] == [
        ["python", "-m", "verl.trainer.main_ppo", "a=1", "b=2"],
        ["bash", "recipes/x.sh"],
        ["bash", "recipes/x.sh"],
    ]
    assert [c.gpu_only for c in cmds] == [True, False, True]
    assert cmds[1].env == {"DRY_RUN": "1"}


# ------------------------------------------------------------------------------------------------------------
# the README
# ------------------------------------------------------------------------------------------------------------
README_COMMANDS = commands_of(README.read_text())


def test_readme_has_shell_blocks_to_check():
    programs = {c.argv[0] for c in README_COMMANDS}
    assert {"make", "bash"} <= programs and any(p.startswith(".venv/bin/") for p in programs)


@pytest.mark.parametrize("cmd", [c for c in README_COMMANDS if not c.env], ids=lambda c: c.line[:60])
def test_readme_command_works_from_a_fresh_shell(cmd, tmp_path):
    problem = check_command(cmd, tmp_path)
    assert problem is None, f"{cmd.where}: `{cmd.line}`: {problem}"


@pytest.mark.slow
@pytest.mark.parametrize("cmd", [c for c in README_COMMANDS if c.env], ids=lambda c: c.line[:60])
def test_readme_recipe_mode_composes_from_a_fresh_shell(cmd, tmp_path):
    """DRY_RUN=1 / PROFILE=cpu-tiny lines, run as typed (cpu-tiny as a dry run) without an activated venv."""
    problem = check_command(cmd, tmp_path)
    assert problem is None, f"{cmd.where}: `{cmd.line}`: {problem}"
