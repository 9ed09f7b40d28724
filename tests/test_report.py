"""`pks stats` and `pks report` tell the run's numbers, and the page stands alone."""

import re
import subprocess
import sys
from collections import Counter

import pyarrow.parquet as pq

from pipelines.report import reason, run_stats


def test_stats_match_the_manifest_and_shards(sharded_run):
    rows = pq.read_table(sharded_run / "manifest.parquet").to_pylist()
    s = run_stats(sharded_run)
    assert s["status"] == dict(Counter(r["status"] for r in rows))
    ok = [r for r in rows if r["status"] == "ok"]
    assert s["stage_ok"] == {k: sum(r["curriculum_stage"] == k for r in ok) for k in range(4)}
    assert sum(s["reasons"]["rejected"].values()) == s["status"].get("rejected", 0) > 0
    assert s["shards"]["samples"] == len(ok) and sum(s["deformation_hist"]) == len(ok)
    assert s["tags"]["camera"] == dict(Counter(t for r in ok for t in r["caption"]["camera"]))
    assert [r["job"] for r in s["runs"]] == ["curate", "shard"]
    assert reason("clip has 12 of 40 frames") == reason("clip has 3 of 9 frames")


def test_cli_stats_and_self_contained_report(sharded_run):
    r = subprocess.run([sys.executable, "-m", "pks.cli", "stats", str(sharded_run)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rows = pq.read_table(sharded_run / "manifest.parquet").to_pylist()  # counted here, not by run_stats
    status = Counter(r["status"] for r in rows)
    index = pq.read_table(sharded_run / "shards" / "index.parquet").to_pylist()
    assert f"ok {status['ok']}" in r.stdout and f"rejected {status['rejected']}" in r.stdout
    assert f"shards: {len({x['shard'] for x in index})} holding {len(index)} sample(s)" in r.stdout
    assert "source frames/s" in r.stdout
    s = run_stats(sharded_run)
    r = subprocess.run([sys.executable, "-m", "pks.cli", "report", str(sharded_run)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    page = (sharded_run / "report.html").read_text()
    srcs = re.findall(r'src="([^"]+)"', page)
    assert len(srcs) >= 6 and all(x.startswith("data:image/png;base64,") for x in srcs)
    assert "<script" not in page and "http://" not in page and "https://" not in page
    stages = {
        k for k, v in s["stage_ok"].items() if v and k in {int(x.split("-")[1]) for x in s["shards"]["per_split_stage"]}
    }
    assert all(f"<h3>stage {k}</h3>" in page for k in stages)


def test_a_torn_last_line_of_runs_jsonl_is_skipped(sharded_run, tmp_path):
    """A kill mid-append tears the last line of OUT/runs.jsonl: stats read the lines before it."""
    import shutil

    for name in ("manifest.parquet", "runs.jsonl"):
        shutil.copy(sharded_run / name, tmp_path / name)
    with open(tmp_path / "runs.jsonl", "a") as f:
        f.write('{"at": "2026-01-01T00:00:00", "job": "cur')
    assert [r["job"] for r in run_stats(tmp_path)["runs"]] == ["curate", "shard"]
