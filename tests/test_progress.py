"""What the commands say while they work (issue 23, item 5): pks's own lines through `logging`
(INFO by default, DEBUG with --verbose, WARNING with --quiet), one progress bar per long command
with rate and ETA (drawn for a terminal, or when PKS_PROGRESS=1 forces it), and calibrate's
--in-place, which keeps the config's comments."""

import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from pks.progress import PACKAGES


def pks(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "pks.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PKS_PROGRESS": "", **(env or {})},
    )


@pytest.fixture
def run_copy(sharded_run, tmp_path):
    """A copy of the sharded run: pks shard rewrites its parts and shards."""
    shutil.copytree(sharded_run, tmp_path / "out")
    return tmp_path / "out"


SHARD = ("--max-samples", 3, "--val-fraction", 0.3)  # the settings the run was sharded with (conftest)


def test_quiet_hides_the_progress_lines_and_verbose_adds_debug_ones(run_copy):
    said = pks("shard", run_copy, *SHARD)  # every shard already written: no Ray, only pks's lines
    assert said.returncode == 0, said.stderr[-2000:]
    assert "pks shard: " in said.stderr and "kept" in said.stderr and ": kept\n" not in said.stderr, said.stderr
    assert "%|" not in said.stderr  # stderr is not a terminal: no bar
    quiet = pks("--quiet", "shard", run_copy, *SHARD)
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == said.stdout, quiet.stderr
    verbose = pks("-v", "shard", run_copy, *SHARD)
    assert verbose.returncode == 0 and "pks shard: " in verbose.stderr
    assert "  train/stage-0/shard-000000.tar: kept\n" in verbose.stderr, verbose.stderr  # a DEBUG line


def test_a_forced_bar_shows_rate_and_eta(run_copy):
    for tar in (run_copy / "shards" / "train").glob("stage-*/*.tar"):
        tar.unlink()  # to be written again: the bar counts them
    r = pks("shard", run_copy, *SHARD, env={"PKS_PROGRESS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    assert "pks shard: 100%|" in r.stderr and ("shard/s]" in r.stderr or "s/shard]" in r.stderr), r.stderr
    assert "<00:00" in r.stderr  # the ETA (none left at the end)
    assert "  [1/" in r.stderr  # the progress lines still print beside it
    tar = next((run_copy / "shards" / "train").glob("stage-*/*.tar"))
    tar.unlink()
    r = pks("-q", "shard", run_copy, *SHARD, env={"PKS_PROGRESS": "1"})  # --quiet wins over the force
    assert r.returncode == 0 and "%|" not in r.stderr and "[1/1]" not in r.stderr, r.stderr


@pytest.fixture
def restore_logging():
    """configure_logging changes the project's loggers for the whole test process: put them back."""
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers)) for n in PACKAGES}
    yield
    for name, (level, handlers) in saved.items():
        logging.getLogger(name).setLevel(level)
        logging.getLogger(name).handlers[:] = handlers


def test_the_bar_helper_is_shown_only_when_asked(capsys, monkeypatch, restore_logging):
    from pks.progress import bar, configure_logging

    def draw():
        with bar(3, "work", "clip") as b:
            for _ in range(3):
                b.update(1)
        return capsys.readouterr().err

    configure_logging(logging.INFO)
    monkeypatch.setenv("PKS_PROGRESS", "")
    assert draw() == ""  # captured stderr is no terminal
    monkeypatch.setenv("PKS_PROGRESS", "1")
    err = draw()
    assert "work: 100%|" in err and "3/3 [" in err and "clip/s]" in err, err
    configure_logging(logging.WARNING)
    assert draw() == ""
    monkeypatch.setenv("PKS_PROGRESS", "0")
    configure_logging(logging.INFO)
    assert draw() == ""
    logging.getLogger("pipelines.curate").info("a line")  # bare text on stderr, as the commands always printed
    logging.getLogger("pipelines.curate").debug("not at INFO")
    assert capsys.readouterr().err == "a line\n"


def test_only_rank_0_prints_the_training_summary(monkeypatch):
    from training.devices import is_main_process

    assert is_main_process()
    monkeypatch.setenv("RANK", "1")
    assert not is_main_process()


CONFIG = """# my curation settings
shard:
  max_samples: 3   # small shards
curriculum:
  # from last season
  deformation: [0.1, 0.2, 0.3]  # calibrated by hand
  motion_boost: null
"""


def test_calibrate_in_place_keeps_the_comments(sharded_run, tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(CONFIG)
    r = pks("calibrate", sharded_run, "--config", cfg, "--in-place", "--no-apply")
    assert r.returncode == 0 and f"written to {cfg}" in r.stdout, r.stderr
    rows = pq.read_table(sharded_run / "manifest.parquet").to_pylist()
    want = [
        round(float(q), 4)
        for q in np.quantile([x["deformation_score"] for x in rows if x["status"] == "ok"], (0.25, 0.5, 0.75))
    ]
    text = cfg.read_text()
    assert yaml.safe_load(text) == {
        "shard": {"max_samples": 3},
        "curriculum": {"deformation": want, "motion_boost": None},
    }
    assert want != [0.1, 0.2, 0.3]
    for comment in (
        "# my curation settings\n",
        "max_samples: 3   # small shards\n",
        "  # from last season\n",
        "# calibrated by hand\n",
    ):
        assert comment in text, text
    assert f"deformation: [{', '.join(map(str, want))}]" in text  # still a flow list
    assert [p.name for p in tmp_path.iterdir()] == ["job.yaml"]  # no temporary file left
    for bad in (["--in-place"], ["--in-place", "--config", cfg, "--write", tmp_path / "new.yaml"]):
        r = pks("calibrate", sharded_run, *bad, "--no-apply")
        assert r.returncode == 2 and "--in-place rewrites the --config file" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    assert cfg.read_text() == text and not (tmp_path / "new.yaml").exists()
