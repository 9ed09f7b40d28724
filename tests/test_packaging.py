"""The wheel carries every file the installed `pks` reads at run time: the taxonomy, the job
configs and the training configs (`pks train --config tiny` from a wheel once found none)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# ~1-2 min (a wheel build and 2 training steps); `make test` runs every test, slow ones included
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project built as a wheel (from a copy of its packages, so the build leaves nothing in
    the checkout) and installed into a folder of its own; dependencies come from this Python."""
    d = tmp_path_factory.mktemp("wheel")
    src = d / "src"
    for p in ROOT.iterdir():
        if (p / "__init__.py").is_file():  # the packages (pyproject's find keeps the ones it names)
            shutil.copytree(p, src / p.name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    r = subprocess.run(
        pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(d / "dist"), str(src)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    (wheel,) = (d / "dist").glob("pks-*.whl")
    r = subprocess.run(
        pip + ["install", "--no-deps", "--no-index", "--target", str(d / "site"), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return d / "site"


def from_wheel(site: Path, cwd: Path, *args) -> subprocess.CompletedProcess:
    """Python with the installed wheel first on the path, run outside the checkout."""
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_installed_wheel_trains_without_the_checkout(installed, sharded_run, tmp_path):
    r = from_wheel(
        installed,
        tmp_path,
        "-c",
        "import pks, pipelines, taxonomy, training; "
        "print('\\n'.join(m.__file__ for m in (pks, pipelines, taxonomy, training)))",
    )
    assert r.returncode == 0 and all(f.startswith(str(installed)) for f in r.stdout.split()), r.stdout + r.stderr
    r = from_wheel(installed, tmp_path, "-m", "pks.cli", "train", "--help")
    assert r.returncode == 0 and "--config" in r.stdout, r.stderr[-3000:]
    r = from_wheel(installed, tmp_path, "-m", "pks.cli", "taxonomy", "schema")
    assert r.returncode == 0 and json.loads(r.stdout)["properties"], r.stderr[-3000:]
    r = from_wheel(
        installed,
        tmp_path,
        "-m",
        "pks.cli",
        "train",
        sharded_run,
        "--config",
        "tiny_pixel",
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--out",
        tmp_path / "run",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.splitlines()[-1])["step"] == 2
