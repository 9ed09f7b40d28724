import shutil

import pyarrow.parquet as pq
import pytest

from pipelines.curate import run
from pks.config import load_config


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def inputs(tmp_path, synth_videos):
    d = tmp_path / "in"
    d.mkdir()
    for p, _ in synth_videos:
        shutil.copy(p, d / p.name)
    shutil.copy(synth_videos[0][0], d / "same_content_again.mp4")
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("this is text, not a video\n")
    return d


def test_curate_accounts_for_every_input_and_reruns_add_nothing(ray_local, inputs, tmp_path, synth_videos):
    out = tmp_path / "out"
    cfg = load_config()
    s = run(str(inputs), out, cfg, progress=lambda m: None)
    assert s["inputs"] == 6 and s["skipped"] == 1  # the duplicate file is processed once
    table = pq.read_table(out / "manifest.parquet").to_pylist()
    errors = {r["source_path"].rsplit("/", 1)[-1]: r["error"] for r in table if r["status"] == "error"}
    assert errors.keys() == {"empty.mp4", "notes.mp4"}
    assert "empty" in errors["empty.mp4"] and "not a readable media container" in errors["notes.mp4"]
    ok = [r for r in table if r["status"] == "ok"]
    assert len(ok) == len(synth_videos)
    again = run(str(inputs), out, cfg, progress=lambda m: None)
    assert again["processed"] == 0 and pq.read_table(out / "manifest.parquet").num_rows == len(table)
