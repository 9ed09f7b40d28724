"""Curriculum shards: every ok clip exactly once, splits by video, rejections recorded,
readable with webdataset and Ray Data, and a kill mid-write followed by a rerun gives the same
samples."""

import dataclasses
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections import Counter

import cv2
import decord
import numpy as np
import pyarrow.parquet as pq
import webdataset as wds

from pipelines.shard import assign_splits, plan, shard_run
from pks.config import load_config
from support.procs import kill_9_when


def tars(out):
    return sorted(str(p) for p in (out / "shards").rglob("*.tar"))


def samples(out):
    """(key, split, stage dir, record) for every sample, read back with webdataset."""
    res = []
    for s in wds.WebDataset(tars(out), shardshuffle=False, empty_check=False):
        rel = os.path.relpath(s["__url__"], out / "shards").split(os.sep)
        res.append((s["__key__"], rel[0], rel[1], json.loads(s["json"]), s))
    return res


def manifest(out):
    return pq.read_table(out / "manifest.parquet").to_pylist()


def test_every_ok_clip_once_with_record_clip_and_thumbnail(sharded_run):
    out = sharded_run
    got = samples(out)
    ok = {r["clip_id"]: r for r in manifest(out) if r["status"] == "ok"}
    assert len(ok) >= 6 and len(tars(out)) > 4
    assert Counter(k for k, *_ in got) == Counter(ok.keys())  # every ok clip exactly once
    for key, _split, stage_dir, record, s in got:
        assert record == ok[key] and stage_dir == f"stage-{record['curriculum_stage']}"
        assert s["mp4"] == (out / "clips" / f"{key}.mp4").read_bytes()
        thumb = cv2.imdecode(np.frombuffer(s["jpg"], np.uint8), cv2.IMREAD_COLOR)
        assert thumb.shape[1] == min(384, record["width"])
    index = pq.read_table(out / "shards" / "index.parquet").to_pylist()
    assert sorted((r["clip_id"], r["shard"]) for r in index) == sorted(
        (k, os.path.relpath(s["__url__"], out / "shards")) for k, *_, s in got
    )
    for r in index:  # each sample's byte range holds exactly its members: one range read fetches it
        with open(out / "shards" / r["shard"], "rb") as f:
            f.seek(r["offset"])
            chunk = f.read(r["length"])
        with tarfile.open(fileobj=io.BytesIO(chunk), mode="r:") as t:
            members = {m.name: t.extractfile(m).read() for m in t}
        assert sorted(members) == [f"{r['clip_id']}.{e}" for e in ("jpg", "json", "mp4")]
        assert members[f"{r['clip_id']}.mp4"] == (out / "clips" / f"{r['clip_id']}.mp4").read_bytes()
    key = got[0][0]
    assert len(decord.VideoReader(str(out / "clips" / f"{key}.mp4"))) == ok[key]["end_frame"] - ok[key]["start_frame"]


def test_no_source_video_spans_splits(sharded_run):
    splits = {}
    for _, split, _, record, _ in samples(sharded_run):
        splits.setdefault(record["video_id"], set()).add(split)
    assert all(len(s) == 1 for s in splits.values())
    assert {s for v in splits.values() for s in v} == {"train", "val"}  # val_fraction 0.3 of 3 videos


def test_flagged_clips_are_rejected_with_reason_and_judged_again(sharded_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(sharded_run, out)
    rejected = [r for r in manifest(out) if r["error"].startswith("shard: ")]
    assert rejected and all(r["status"] == "rejected" and "quality flags" in r["error"] for r in rejected)
    assert all(set(r["quality_flags"]) & {"block_corruption", "interlaced", "decoder_garbage"} for r in rejected), [
        (r["clip_id"], r["quality_flags"]) for r in rejected
    ]
    before = len(samples(out))
    cfg = load_config(None, {"shard.max_samples": 3, "shard.val_fraction": 0.3, "shard.reject_flags": []})
    s = shard_run(out, cfg, progress=lambda m: None)
    assert s["samples"] == before + len(rejected) == len(samples(out))
    assert not [r for r in manifest(out) if r["error"].startswith("shard: ")]


def test_plan_spreads_videos_and_is_deterministic():
    rows = [
        {"clip_id": f"{v}_{i:06d}_{i + 1:06d}", "video_id": v, "curriculum_stage": i % 2, "clip_bytes": 1000}
        for v in ("a" * 16, "b" * 16, "c" * 16, "d" * 16)
        for i in range(40)
    ]
    sc = dataclasses.replace(load_config().shard, seed=3, val_fraction=0.25, max_samples=10, max_bytes=10**9)
    shards = plan(rows, sc)
    assert plan(list(reversed(rows)), sc) == shards
    assert sum(len(s["members"]) for s in shards) == len(rows)
    train = [s for s in shards if s["split"] == "train"]
    assert all(len({m["video_id"] for m in s["members"]}) >= 2 for s in train)  # shuffled, not by video
    by_bytes = plan(rows, dataclasses.replace(sc, max_bytes=3500))
    assert max(len(s["members"]) for s in by_bytes) == 3
    vids = [f"{i:016x}" for i in range(40)]
    split = assign_splits(vids, 3, 0.25)
    assert 4 <= list(split.values()).count("val") <= 16
    assert assign_splits(vids + ["e" * 16], 3, 0.25).items() >= split.items()  # old videos stay put


def test_ray_data_reads_the_shards(sharded_run):
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        ds = ray.data.read_webdataset(tars(sharded_run), decoder=None)
        rows = ds.take_all()
    finally:
        ray.shutdown()
    ok = {r["clip_id"] for r in manifest(sharded_run) if r["status"] == "ok"}
    assert sorted(r["__key__"] for r in rows) == sorted(ok)
    assert all(isinstance(r["mp4"], bytes) and r["mp4"][4:8] == b"ftyp" for r in rows)


def test_kill_mid_write_then_rerun_gives_the_same_samples(sharded_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(sharded_run, out)
    want = sorted((k, sp, st) for k, sp, st, *_ in samples(out))
    index = pq.read_table(out / "shards" / "index.parquet").to_pylist()
    shutil.rmtree(out / "shards")
    cmd = [
        sys.executable,
        "-m",
        "pks.cli",
        "shard",
        str(out),
        "--max-samples",
        "1",
        "--val-fraction",
        "0.3",
        "--num-cpus",
        "1",
    ]
    kill_9_when(cmd, lambda: list((out / "shards").rglob("*.tar")))  # mid-write
    finished = len(tars(out))
    assert 1 <= finished < len(want), "the kill should land mid-run"
    (out / "shards" / "train" / "stage-9").mkdir(parents=True)  # and a torn temporary file, as a kill leaves
    (out / "shards" / "train" / "stage-9" / "shard-000000.tar.tmp-1").write_bytes(b"torn")
    r = subprocess.run(cmd[:-4] + ["--val-fraction", "0.3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not list((out / "shards").rglob("*.tmp-*"))
    assert sorted((k, sp, st) for k, sp, st, *_ in samples(out)) == want  # same samples, none twice
    again = pq.read_table(out / "shards" / "index.parquet").to_pylist()
    assert sorted(r["clip_id"] for r in again) == sorted(r["clip_id"] for r in index)


def test_one_clip_of_a_duplicate_group_reaches_the_shards_and_its_videos_share_a_split(sharded_run, tmp_path):
    from pipelines.parts import read_part, write_part

    out = tmp_path / "run"
    shutil.copytree(sharded_run, out)
    cfg = load_config(None, {"shard.max_samples": 3, "shard.val_fraction": 0.3})
    videos = sorted({r["video_id"] for r in manifest(out)})
    split = assign_splits(videos, 0, 0.3)
    orig = next(v for v in videos if split[v] == "train")
    # A copy of a training video (same clips, other id) under an id that alone would go to val.
    copy = next(
        c
        for c in (f"{i:016x}" for i in range(1000))
        if assign_splits(videos + [c], 0, 0.3)[c] == "val" and c not in videos
    )
    records = [dataclasses.replace(r, video_id=copy) for r in read_part(out, orig)]
    own = next(i for i, r in enumerate(records) if r.status == "ok")  # one clip of the copy's own, no duplicate
    records[own].phash = " ".join(f"{x:016x}" for x in np.random.default_rng(1).integers(0, 2**63, 8))
    for r in records:
        if r.status != "error":
            shutil.copy(out / "clips" / f"{r.clip_id.replace(copy, orig)}.mp4", out / "clips" / f"{r.clip_id}.mp4")
    write_part(out, copy, records)
    shard_run(out, cfg, progress=lambda m: None)
    rows = {r["clip_id"]: r for r in manifest(out)}
    groups = {}
    for r in rows.values():
        if r["duplicate_of"]:
            groups.setdefault(r["duplicate_of"], []).append(r)
    assert len(groups) >= len([r for r in records if r.phash]) - 1
    index = pq.read_table(out / "shards" / "index.parquet").to_pylist()
    sharded = {r["clip_id"] for r in index}
    for kept, dups in groups.items():
        assert kept == min([kept] + [d["clip_id"] for d in dups])  # the earliest clip of the group is kept
        for d in dups:
            assert d["status"] == "rejected" and d["error"] == f"shard: duplicate of {kept}"
            assert "duplicate" in d["quality_flags"] and d["clip_id"] not in sharded
        assert (kept in sharded) == (rows[kept]["status"] == "ok")
    # The two videos (alone: one in train, one in val) share the split of the kept clips' video.
    assert records[own].clip_id in sharded
    splits = {(r["video_id"], r["split"]) for r in index if r["video_id"] in (orig, copy)}
    assert {v for v, _ in splits} == {orig, copy} and len({s for _, s in splits}) == 1
    again = shard_run(out, cfg, progress=lambda m: None)  # judged again: the same rejections, no shard rewritten
    assert again["new"] == again["rewritten"] == 0 and {r["clip_id"]: r for r in manifest(out)} == rows


def test_a_column_added_to_the_record_later_leaves_shards_current(sharded_run, tmp_path):
    """A manifest written before a record column existed (read back as null) and the same run's
    manifest with it: the shards match both, so an upgrade does not make every shard stale."""
    from pks.shardfile import stale_samples

    out = tmp_path / "run"
    shutil.copytree(sharded_run, out)
    assert stale_samples(out)[0] == 0
    table = pq.read_table(out / "manifest.parquet")
    pq.write_table(table.drop(["clip_frames", "retimed"]), out / "manifest.parquet")  # as an older pks wrote it
    assert stale_samples(out) == (0, len(pq.read_table(out / "shards" / "index.parquet")))
    # a field that really changed still shows
    rows = table.to_pylist()
    ok = next(i for i, r in enumerate(rows) if r["status"] == "ok")
    rows[ok]["judge_score"] = 0.5
    pq.write_table(
        pq.read_table(out / "manifest.parquet").from_pylist(rows, schema=table.schema), out / "manifest.parquet"
    )
    assert stale_samples(out)[0] == 1
