"""pytest.ini hides only named third-party warnings: deprecations and user warnings of our own code surface."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = '''
import warnings


def test_emits():
    # attributed to our package, as a warning raised inside erpo_verl would be
    warnings.warn_explicit("OUR-DEPRECATION", DeprecationWarning, "erpo_verl/x.py", 1, module="erpo_verl.x")
    warnings.warn_explicit("OUR-USERWARNING", UserWarning, "erpo_verl/x.py", 2, module="erpo_verl.x")
    # a third-party deprecation that pytest.ini names (Ray's, as raised when verl imports it)
    warnings.warn_explicit("Ray state API is no longer experimental. THIRD-PARTY", DeprecationWarning,
                           "ray/util/state/util.py", 55, module="ray.util.state.util")
'''


def test_our_warnings_surface_and_named_third_party_ones_stay_hidden(tmp_path):
    (tmp_path / "test_probe.py").write_text(PROBE)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(REPO / "pytest.ini"), "--rootdir", str(tmp_path), "-q",
         "-p", "no:cacheprovider", str(tmp_path / "test_probe.py")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    assert "OUR-DEPRECATION" in result.stdout and "OUR-USERWARNING" in result.stdout
    assert "THIRD-PARTY" not in result.stdout


def test_pytest_ini_ignores_no_whole_warning_category():
    lines = [line.strip() for line in (REPO / "pytest.ini").read_text().splitlines()]
    blanket = [line for line in lines if line.startswith("ignore::") and line.count(":") == 2]
    assert not blanket, f"pytest.ini ignores whole categories: {blanket}"
