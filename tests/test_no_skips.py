"""Under CI a skipped test fails (tests/support/no_skips.py); an xfail stays an xfail."""

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent


def run(tmp_path, **env):
    (tmp_path / "test_sample.py").write_text(
        "import pytest\n\n"
        "def test_skips():\n    pytest.importorskip('a_module_nobody_installed')\n\n"
        "@pytest.mark.xfail(strict=True, reason='known')\ndef test_known_miss():\n    assert False\n\n"
        "def test_passes():\n    assert True\n"
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "PKS_NO_SKIPS")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "support.no_skips",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(tmp_path / "test_sample.py"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**clean, "PYTHONPATH": str(TESTS), **env},
        timeout=120,
    )


def test_a_skip_fails_under_ci_and_passes_elsewhere(tmp_path):
    for env in ({"CI": "true"}, {"PKS_NO_SKIPS": "1"}):
        r = run(tmp_path, **env)
        assert r.returncode == 1 and "1 failed, 1 passed, 1 xfailed" in r.stdout, r.stdout
        assert "skipped where nothing may be" in r.stdout and "a_module_nobody_installed" in r.stdout
    r = run(tmp_path, CI="false")
    assert r.returncode == 0 and "1 passed, 1 skipped, 1 xfailed" in r.stdout, r.stdout
