import json
import subprocess
import sys

import pytest


def pks(*args, **kw):
    return subprocess.run([sys.executable, "-m", "pks.cli", *args], capture_output=True, text=True, **kw)


def test_help_lists_commands():
    r = pks("--help")
    assert r.returncode == 0
    for cmd in ("synth", "curate", "taxonomy", "probe"):
        assert cmd in r.stdout


@pytest.mark.parametrize("args, message", [
    (("taxonomy", "validate", "/no/such/file.json"), "no such file"),
    (("taxonomy", "show", "--axis", "colour"), "no axis 'colour'"),
    (("synth", "/tmp/pks-never", "--size", "640by360"), "--size must look like"),
    (("curate", "/no/such/dir/*.mp4", "/tmp/pks-never-out"), "no input matches"),
])
def test_user_mistakes_are_one_line_without_traceback(args, message):
    r = pks(*args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_validate_reports_each_bad_caption(tmp_path):
    good = {"narrative": "", "style": ["cel_tv"], "motion": [], "camera": ["static"], "vfx": [], "shot": "wide"}
    f = tmp_path / "caps.jsonl"
    f.write_text(json.dumps(good) + "\n" + json.dumps({**good, "vfx": ["glitter"]}) + "\n")
    r = pks("taxonomy", "validate", str(f))
    assert r.returncode == 1
    assert "line 2: invalid: unknown tag 'glitter' on axis 'vfx'" in r.stdout and "1/2" in r.stdout


def test_taxonomy_show_prints_definitions():
    r = pks("taxonomy", "show", "--axis", "vfx")
    assert r.returncode == 0 and "anger_vein" in r.stdout and "[camera]" not in r.stdout
