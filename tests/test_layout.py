"""The README's layout table lists every folder of the tree, and the pure parts import without verl."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _layout_paths() -> set[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Layout\n", 1)[1].split("\n## ", 1)[0]
    return {token.rstrip("/") for token in re.findall(r"`([^`\s]+)`", section)}


def _folders() -> set[str]:
    try:
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    folders = set()
    for name in files:
        if not (REPO / name).exists():
            continue  # deleted in the work tree
        for parent in Path(name).parents:
            if str(parent) not in (".", "") and "__pycache__" not in parent.parts:
                folders.add(parent.as_posix())
    return folders


def test_the_readme_layout_table_lists_every_folder():
    listed = _layout_paths()
    missing = sorted(
        folder for folder in _folders()
        if folder not in listed
        and not any(path.startswith(folder + "/") for path in listed)  # a parent of listed entries
        and not folder.startswith("tests/fixtures/")  # described by the tests/fixtures/ row
    )
    assert missing == [], f"folders missing from the README's layout table: {missing}"


def test_the_layout_table_names_only_paths_that_exist():
    listed = {p for p in _layout_paths() if "/" in p or p.endswith(".py")}
    gone = sorted(p for p in listed if p.startswith(("erpo_verl", "tests", "data_prep", "recipes", "docs"))
                  and not (REPO / p).exists())
    assert gone == []


@pytest.mark.parametrize("module", ["erpo_verl.estimators", "erpo_verl.aer_controller", "erpo_verl.rewards",
                                    "erpo_verl.eval", "erpo_verl.estimators.inputs"])
def test_pure_parts_import_without_verl(module):
    code = (f"import sys, {module}; sys.exit(1 if any(m == 'verl' or m.startswith(('verl.', 'erpo_verl.integration')) "
            "for m in sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
