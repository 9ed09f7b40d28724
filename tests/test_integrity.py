"""Shards always hold the manifest's current records: an audit-style edit rewrites the shard
that holds the clip and nothing else; calibration, require_caption and remote listing. Faults:
a part that does not read, an index write that fails, Ray left running."""

import shutil
import subprocess
import sys

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.shard import shard_run
from pks.config import load_config
from pks.probe import list_inputs
from support.runs import assert_shards_match_manifest, edit, manifest, shard_records, stamps

CFG = load_config(None, {"shard.max_samples": 3, "shard.val_fraction": 0.3})  # as the sharded_run fixture


def quiet(out, cfg=CFG):
    return shard_run(out, cfg, progress=lambda m: None)


@pytest.fixture
def run(sharded_run, tmp_path):
    shutil.copytree(sharded_run, tmp_path / "run")
    return tmp_path / "run"


def test_a_rerun_keeps_every_shard(run):
    before = stamps(run)
    s = quiet(run)
    assert (s["kept"], s["new"], s["rewritten"], s["removed"]) == (s["shards"], 0, 0, 0)
    assert stamps(run) == before


def test_audit_edits_rewrite_the_shards_that_hold_them_and_no_other(run):
    got = assert_shards_match_manifest(run)
    before = stamps(run)
    ok = sorted(got)
    # 1. A caption correction: only the shard holding that clip is rewritten.
    target = ok[0]
    cap = {**got[target][1]["caption"], "narrative": "she winds up and throws", "vfx": ["speed_lines"]}
    edit(run, CFG, {target: {"caption": cap, "caption_source": "human:alice"}})
    s = quiet(run)
    assert (s["rewritten"], s["why"], s["new"], s["removed"]) == (1, {"records changed": 1}, 0, 0)
    after = stamps(run)
    assert {k for k in after if after[k] != before[k]} == {got[target][0]}
    assert shard_records(run)[target][1]["caption"] == cap
    # 2. A stage change and a failure flag: only the two affected (split, stage) groups repack.
    got = assert_shards_match_manifest(run)
    mover = next(k for k in ok if got[k][1]["curriculum_stage"] != 3)
    flagged = next(k for k in ok if k != mover)
    groups = {
        got[mover][0].rsplit("/", 1)[0],
        got[mover][0].split("/")[0] + "/stage-3",
        got[flagged][0].rsplit("/", 1)[0],
    }
    before = stamps(run)
    edit(
        run,
        CFG,
        {
            mover: {"curriculum_stage": 3},
            flagged: {"quality_flags": sorted(set(got[flagged][1]["quality_flags"]) | {"interlaced"})},
        },
    )
    s = quiet(run)
    got = assert_shards_match_manifest(run)
    assert got[mover][0].split("/")[1] == "stage-3"
    assert flagged not in got
    assert next(r for r in manifest(run) if r["clip_id"] == flagged)["error"] == "shard: quality flags interlaced"
    after = stamps(run)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed and all(k.rsplit("/", 1)[0] in groups for k in changed)
    untouched = [k for k in before if k.rsplit("/", 1)[0] not in groups]
    assert untouched and all(after[k] == before[k] for k in untouched)
    assert s["kept"] == len(after) - s["new"] - s["rewritten"] >= len(untouched)


def test_a_changed_clip_file_rewrites_its_shard(run):
    got = shard_records(run)
    key = sorted(got)[1]
    clip = run / "clips" / f"{key}.mp4"
    data = clip.read_bytes()
    clip.write_bytes(data[:-16] + bytes(16))  # same size; new content (and mtime)
    s = quiet(run)
    assert (s["rewritten"], s["why"]) == (1, {"clips changed": 1})


def test_require_caption_keeps_uncaptioned_clips_out(run):
    key = sorted(shard_records(run))[0]
    edit(run, CFG, {key: {"caption": None, "caption_source": ""}})
    s = quiet(
        run, load_config(None, {**{"shard.max_samples": 3, "shard.val_fraction": 0.3}, "shard.require_caption": True})
    )
    row = next(r for r in manifest(run) if r["clip_id"] == key)
    assert (row["status"], row["error"]) == ("rejected", "shard: no caption")
    assert key not in assert_shards_match_manifest(run) and s["rewritten"] >= 1
    quiet(run)  # the default config takes it back in (without a caption)
    assert key in assert_shards_match_manifest(run)


def test_calibrate_restages_the_run_and_the_shards_follow(run, tmp_path):
    mine, cfg_file = tmp_path / "mine.yaml", tmp_path / "job.yaml"
    mine.write_text("# my settings\nshard:\n  max_samples: 3\n")
    r = subprocess.run(
        [sys.executable, "-m", "pks.cli", "calibrate", str(run), "--config", str(mine), "--write", str(cfg_file)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    assert mine.read_text() == "# my settings\nshard:\n  max_samples: 3\n"  # the user's file is not rewritten
    assert yaml.safe_load(cfg_file.read_text())["shard"] == {"max_samples": 3}  # the new one keeps its settings
    ok = [x for x in manifest(run) if x["status"] == "ok"]
    deform = [x["deformation_score"] for x in ok]
    want = [round(float(q), 4) for q in np.quantile(deform, (0.25, 0.5, 0.75))]
    assert yaml.safe_load(cfg_file.read_text())["curriculum"]["deformation"] == want
    for x in ok:  # every ok clip re-staged against the quartiles (no motion boost by default)
        assert x["curriculum_stage"] == sum(x["deformation_score"] >= t for t in want)
    assert len({x["curriculum_stage"] for x in ok}) >= 3  # quartiles spread the run over the stages
    quiet(run)
    got = assert_shards_match_manifest(run)
    assert all(path.split("/")[1] == f"stage-{rec['curriculum_stage']}" for path, rec in got.values())


def test_remote_input_listing_finds_videos_under_a_url():
    fs = fsspec.filesystem("memory")
    for name in ("raw/ep1.mp4", "raw/season2/ep2.MKV", "raw/notes.txt", "raw/cover.jpg"):
        fs.pipe(f"/pks-test/{name}", b"x")
    assert list_inputs("memory://pks-test/raw") == [
        "memory:///pks-test/raw/ep1.mp4",
        "memory:///pks-test/raw/season2/ep2.MKV",
    ]
    assert list_inputs("memory://pks-test/raw/*.mp4") == ["memory:///pks-test/raw/ep1.mp4"]


def statuses(part) -> list[tuple[str, str]]:
    return [(r["clip_id"], r["status"]) for r in pq.read_table(part).to_pylist()]


def test_a_part_that_does_not_read_is_set_aside_and_its_video_curated_again(run, synth_dir):
    """A power loss can leave a renamed part empty: every later run crashed on it."""
    import ray

    from pipelines.curate import run as curate

    part = sorted((run / "parts").glob("*.parquet"))[0]
    before = statuses(part)
    part.write_bytes(b"")
    said = []
    s = curate(str(synth_dir), run, CFG, progress=said.append)
    assert (s["processed"], s["skipped"]) == (1, 2)
    assert statuses(part) == before and (run / "parts" / "bad" / part.name).stat().st_size == 0
    assert [m for m in said if "does not read" in m] == [
        f"pks: warning: {part} does not read (Parquet file size is 0 bytes); moved to parts/bad/, "
        "pks curate processes its video again"
    ]
    assert_shards_match_manifest(run)
    assert not ray.is_initialized()  # run() stops the Ray it started


def test_shard_sets_a_part_that_does_not_read_aside(run):
    part = sorted((run / "parts").glob("*.parquet"))[0]
    part.write_bytes(b"PAR1 torn")
    said = []
    shard_run(run, CFG, progress=said.append)
    assert any("does not read" in m for m in said) and (run / "parts" / "bad" / part.name).exists()
    assert part.stem not in {r["video_id"] for r in manifest(run)}
    assert_shards_match_manifest(run)


def test_the_index_never_names_a_removed_shard(run, monkeypatch):
    """Stale shards go only once the new index is written: a failure (or a kill) in between
    leaves an index whose every shard is there."""
    from pks.store import Store

    fewer = load_config(None, {"shard.max_samples": 100, "shard.val_fraction": 0.3})  # one shard per group
    real = Store.writing

    def writing(self, rel):
        if rel == "shards/index.parquet":
            raise OSError(28, "No space left on device")
        return real(self, rel)

    monkeypatch.setattr(Store, "writing", writing)
    with pytest.raises(OSError):
        quiet(run, fewer)
    named = set(pq.read_table(run / "shards" / "index.parquet").column("shard").to_pylist())
    assert named and all((run / "shards" / n).is_file() for n in named)
    monkeypatch.setattr(Store, "writing", real)
    assert quiet(run, fewer)["removed"] > 0
    assert_shards_match_manifest(run)


def test_judging_the_clips_lists_them_once(run, monkeypatch):
    from pks.store import Store

    asked, real = [], Store.exists
    monkeypatch.setattr(Store, "exists", lambda self, rel: asked.append(rel) or real(self, rel))
    quiet(run)
    assert [k for k in asked if k.startswith("clips/")] == []


def test_a_library_call_stops_the_ray_it_started_and_only_that(run):
    import ray

    shards = sorted((run / "shards").rglob("*.tar"))
    shards[0].unlink()  # a shard to write: the call starts Ray
    assert not ray.is_initialized()
    assert quiet(run)["new"] == 1 and not ray.is_initialized()
    shards[1].unlink()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    assert quiet(run)["new"] == 1 and ray.is_initialized()  # the caller's Ray keeps running


def test_the_one_atomic_write(tmp_path, monkeypatch):
    """AtomicFile / atomic_path: a unique temporary name per writer, fsync of the file and of
    its folder before and after the rename, and an abort or an error leaves the old file."""
    import os

    from pks.store import TMP_MARK, AtomicFile, atomic_path

    final = tmp_path / "sub" / "x.bin"
    a, b = AtomicFile(final), AtomicFile(final)
    assert a.tmp != b.tmp and TMP_MARK in a.tmp.name and a.tmp.parent == final.parent
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real(fd))
    a.tmp.write_bytes(b"first")
    a.commit()
    assert final.read_bytes() == b"first" and synced == [str(a.tmp), str(final.parent)]
    b.tmp.write_bytes(b"second")
    b.abort()
    assert final.read_bytes() == b"first" and not b.tmp.exists()
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"torn")
            raise RuntimeError("killed mid-write")
    assert final.read_bytes() == b"first" and sorted(p.name for p in final.parent.iterdir()) == ["x.bin"]
