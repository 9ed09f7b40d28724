import json
import os
import re
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


@pytest.mark.parametrize(
    "args, message",
    [
        (("taxonomy", "validate", "/no/such/file.json"), "no such file"),
        (("taxonomy", "show", "--axis", "colour"), "no axis 'colour'"),
        (("synth", "/tmp/pks-never", "--size", "640by360"), "--size must look like"),
        (("curate", "/no/such/dir/*.mp4", "/tmp/pks-never-out"), "no input matches"),
    ],
)
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


@pytest.mark.parametrize(
    "args, message",
    [
        (("shard", "/tmp/pks-no-run"), "no manifest in /tmp/pks-no-run"),
        (("shots", "/no/such.mp4"), "no such file"),
        (("taxonomy", "show", "--version", "99"), "no taxonomy v99"),
        (("caption", "/tmp", "--captioner", "openai"), "no curated run in /tmp"),
    ],
)
def test_more_user_mistakes_are_one_line(args, message):
    r = pks(*args)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.parametrize(
    "yaml_text, message",
    [
        ("shard:\n  max_samplez: 3\n", "unknown config key shard.max_samplez (did you mean shard.max_samples?)"),
        ("shard:\n  val_fraction: 1.5\n", "config shard.val_fraction must be in [0, 1), got 1.5"),
        ("curriculum:\n  deformation: [0.5, 0.2, 0.9]\n", "must be 3 ascending thresholds"),
        ("split:\n  detector: animee\n", "unknown detector 'animee'"),
        ("analyse:\n  motion: {gird: 3}\n", "unknown MotionParams field(s) ['gird']"),
        ("clips:\n  crf: high\n", "config clips.crf must be int, got 'high'"),
        ("caption:\n  captioner: transformers\n  model: /no/model\n", "must be a local model folder"),
        ("shard: [\n", "is not valid YAML"),
    ],
)
def test_config_values_are_checked_before_any_work(tmp_path, yaml_text, message):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml_text)
    r = pks("curate", str(tmp_path / "in"), str(tmp_path / "out"), "--config", str(cfg))  # read before inputs
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_bug_keeps_its_traceback_and_a_user_error_does_not(capsys):
    import typer

    from pks.cli import friendly
    from pks.errors import ConfigError

    @friendly
    def buggy():
        raise ValueError("internal invariant broken")

    @friendly
    def mistaken():
        raise ConfigError("config x must be y")

    with pytest.raises(ValueError, match="internal invariant"):
        buggy()
    with pytest.raises(typer.Exit) as e:
        mistaken()
    assert e.value.exit_code == 2 and capsys.readouterr().err == "pks: error: config x must be y\n"


def test_train_lists_encode_and_keeps_its_default_form(tmp_path):
    r = pks("train", "--help", env={**os.environ, "COLUMNS": "120"})
    assert r.returncode == 0 and "--config" in r.stdout
    assert re.search(r"encode\s+Precompute VAE latents", r.stdout), r.stdout  # a listed subcommand
    r = pks("train", str(tmp_path), "--help", env={**os.environ, "COLUMNS": "120"})  # the default form's options
    assert r.returncode == 0 and "Usage: pks train [OPTIONS]" in r.stdout, r.stdout
    for option in (
        "--steps",
        "--out",
        "--resume",
        "--batch-size",
        "--no-tag-channel",
        "--ray-workers",
        "--gpu",
        "--stage",
        "--init",
        "--judge",
        "--allow-stale",
    ):
        assert option in r.stdout, option


@pytest.mark.parametrize(
    "args, message",
    [
        (("train", "encode", "/no/such/shards", "--out", "LAT"), "no shards in /no/such/shards"),
        (("train", "default", "--out", "RUN"), "no shards in default"),  # the hidden command's name is a folder too
        (("train", "encode", "/no/such/shards", "--out", "s3://bucket/lat"), "needs a local OUT folder"),
        (("-v", "-q", "taxonomy", "show"), "--verbose and --quiet contradict"),
    ],
)
def test_train_mistakes_are_one_line(tmp_path, args, message):
    r = pks(*(str(tmp_path / a) if a in ("LAT", "RUN") else a for a in args), cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
