"""The trainer's data module over real shards: tensors, tags from the taxonomy, the stage
schedule, exact resume and identical batches with DataLoader workers, each sample read once."""

import os
import shutil
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

import taxonomy
import training.data
from pks.errors import UserError
from training.data import CurriculumLoader, Schedule, decode_clip, tag_targets


def loader(run, **kw):
    return CurriculumLoader(run / "shards", **{"frames": 6, "fps": 12, "size": (48, 80), "batch_size": 3, **kw})


def ids(batches):
    return [[r["clip_id"] for r in b["records"]] for b in batches]


def test_batches_hold_video_text_tags_and_records(sharded_run):
    batches = list(loader(sharded_run, steps=4))
    assert [b["step"] for b in batches] == [0, 1, 2, 3]
    tax = taxonomy.load()
    for b in batches:
        assert b["video"].shape == (3, 6, 3, 48, 80) and b["video"].dtype == torch.uint8
        assert b["video"].float().std() > 5  # real pictures, not padding
        for i, rec in enumerate(b["records"]):
            assert b["stage"][i] == rec["curriculum_stage"] and b["text"][i] == rec["caption"]["narrative"]
            for axis in taxonomy.TAG_AXES:
                on = [tax.axes[axis].ids[j] for j in torch.nonzero(b["tags"][axis][i]).flatten().tolist()]
                assert sorted(on) == sorted(rec["caption"][axis])
            assert tax.axes["shot"].ids[b["shot"][i]] == rec["caption"]["shot"]
    train = {
        r["clip_id"]
        for r in pq.read_table(sharded_run / "shards" / "index.parquet").to_pylist()
        if r["split"] == "train"
    }
    assert {c for b in ids(batches) for c in b} <= train


def test_resume_from_a_step_and_workers_give_the_same_batches(sharded_run):
    full = list(loader(sharded_run, steps=8, seed=5))
    resumed = list(loader(sharded_run, steps=4, seed=5, start_step=4))
    assert ids(resumed) == ids(full[4:])
    assert all(torch.equal(a["video"], b["video"]) for a, b in zip(resumed, full[4:]))
    dl = torch.utils.data.DataLoader(loader(sharded_run, steps=8, seed=5), batch_size=None, num_workers=2)
    assert ids(list(dl)) == ids(full)
    assert ids(list(loader(sharded_run, steps=8, seed=6))) != ids(full)
    windows = list(loader(sharded_run, steps=8, seed=5, random_window=True))
    assert ids(windows) == ids(full)  # same clips, other windows of the longer ones
    assert any(not torch.equal(a["video"], b["video"]) for a, b in zip(windows, full))
    resumed = list(loader(sharded_run, steps=4, seed=5, start_step=4, random_window=True))
    assert all(torch.equal(a["video"], b["video"]) for a, b in zip(resumed, windows[4:]))
    cached = loader(sharded_run, steps=8, seed=5, random_window=True, cache_mb=64)
    assert all(torch.equal(a["video"], b["video"]) for a, b in zip(cached, windows))  # the cache changes nothing
    assert cached._decoded and cached._cached == sum(v.nbytes for v in cached._decoded.values())


def test_schedule_moves_the_mix_from_physical_to_extreme(tmp_path):
    rows = [
        {
            "clip_id": f"c{k}_{i}",
            "video_id": "v",
            "split": "train",
            "stage": k,
            "shard": f"s{k}.tar",
            "position": i,
            "clip_bytes": 1,
            "frames": 100,
            "fps": 24.0,
        }
        for k in (0, 1, 3)
        for i in range(5)
    ]  # stage 2: none
    (tmp_path / "shards").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "shards" / "index.parquet")
    sched = Schedule(start=(0.5, 0.5, 0, 0), end=(0, 0, 0.5, 0.5), steps=100)
    lo = CurriculumLoader(tmp_path / "shards", schedule=sched, batch_size=1000)  # 2 steps per 2000 samples
    early = np.bincount([lo.stage_of(i) for i in range(2000)], minlength=4)
    late = np.bincount([lo.stage_of(i) for i in range(100_000, 102_000)], minlength=4)
    assert abs(early[0] - 1000) < 120 and abs(early[1] - 1000) < 120 and early[2:].sum() < 20
    assert late[3] == 2000  # the empty stage's weight goes to the others
    assert np.allclose(sched.weights(50), [0.25, 0.25, 0.25, 0.25])
    # Across the ramp, each stage's draws are its 0th, 1st, 2nd, ... in stream order: every
    # epoch of a stage takes each of its samples once, though no position counts the earlier ones.
    lo = CurriculumLoader(tmp_path / "shards", schedule=sched, batch_size=10, seed=3)
    draws = [lo.draw(i) for i in range(3000)]
    for k in (0, 1, 3):
        assert [n for s, n in draws if s == k] == list(range(sum(s == k for s, _ in draws)))
    assert {lo.place(i)[1] for i in range(3000)} == {"s0.tar", "s1.tar", "s3.tar"}


def logged_reads(monkeypatch, log):
    """Count every range the loader reads from a shard file (also in forked DataLoader workers)."""
    real = training.data.read_range

    def counted(path, offset, length):
        data = real(path, offset, length)
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, f"{path} {offset} {len(data)}\n".encode())  # one short append: atomic
        os.close(fd)
        return data

    monkeypatch.setattr(training.data, "read_range", counted)
    return lambda: Counter(tuple(line.split()) for line in log.read_text().splitlines()) if log.exists() else Counter()


def test_four_workers_read_each_sample_once_and_give_the_same_batches(sharded_run, tmp_path, monkeypatch):
    reads = logged_reads(monkeypatch, tmp_path / "reads.log")
    plain = list(loader(sharded_run, steps=8, seed=5))
    index = {(r["shard"], r["clip_id"]): r for r in pq.read_table(sharded_run / "shards" / "index.parquet").to_pylist()}
    lo = loader(sharded_run, seed=5)
    consumed = Counter()  # the ranges of the samples the 8 batches hold: each read once, nothing else
    for i in range(8 * 3):
        _, shard, _ = lo.place(i)
        r = index[shard, lo.key_of(i)]
        consumed[str(sharded_run / "shards" / shard), str(r["offset"]), str(r["length"])] += 1
    assert reads() == consumed
    (tmp_path / "reads.log").unlink()
    dl = torch.utils.data.DataLoader(loader(sharded_run, steps=8, seed=5), batch_size=None, num_workers=4)
    batches = list(dl)
    assert reads() == consumed  # 4 workers read what one process reads: each sample once
    assert ids(batches) == ids(plain) and [b["step"] for b in batches] == list(range(8))
    assert all(torch.equal(a["video"], b["video"]) for a, b in zip(batches, plain))
    # Ranks: disjoint whole batches, or with split_batches each its slice of every batch.
    ranks = [list(loader(sharded_run, steps=8, seed=5, rank=r, world_size=2)) for r in (0, 1)]
    assert ids(ranks[0]) == ids(plain[0::2]) and ids(ranks[1]) == ids(plain[1::2])
    halves = [
        list(loader(sharded_run, steps=2, seed=5, batch_size=4, rank=r, world_size=2, split_batches=True))
        for r in (0, 1)
    ]
    whole = list(loader(sharded_run, steps=2, seed=5, batch_size=4))
    assert [a + b for a, b in zip(ids(halves[0]), ids(halves[1]))] == ids(whole)


def test_resume_at_any_step_is_computed_not_replayed(sharded_run):
    step = 10**6
    lo = loader(sharded_run, seed=7)
    resumed = list(loader(sharded_run, seed=7, start_step=step, steps=2))
    assert [b["step"] for b in resumed] == [step, step + 1]
    assert ids(resumed) == [[lo.key_of(i) for i in range(s * 3, s * 3 + 3)] for s in (step, step + 1)]
    assert [b["stage"].tolist() for b in resumed] == [
        [lo.stage_of(i) for i in range(s * 3, s * 3 + 3)] for s in (step, step + 1)
    ]
    earlier = list(loader(sharded_run, seed=7, start_step=step - 2, steps=4))
    assert ids(earlier[2:]) == ids(resumed)
    assert all(torch.equal(a["video"], b["video"]) for a, b in zip(earlier[2:], resumed))


def test_index_without_or_with_wrong_offsets_reads_the_same_samples(sharded_run, tmp_path):
    """Offsets are found from the tar headers where the index has none (an older index) or
    wrong ones (latent shards copy their source's index)."""
    want = list(loader(sharded_run, steps=4, seed=5))
    table = pq.read_table(sharded_run / "shards" / "index.parquet")
    for name, fix in (
        ("none", lambda t: t.drop_columns(["offset", "length"])),
        (
            "wrong",
            lambda t: t.set_column(t.schema.get_field_index("offset"), "offset", pc.add(t.column("offset"), 512)),
        ),
    ):
        root = tmp_path / name
        shutil.copytree(sharded_run / "shards", root)
        pq.write_table(fix(table), root / "index.parquet")
        got = list(
            CurriculumLoader(root, **{"frames": 6, "fps": 12, "size": (48, 80), "batch_size": 3}, steps=4, seed=5)
        )
        assert ids(got) == ids(want)
        assert all(torch.equal(a["video"], b["video"]) for a, b in zip(got, want))


def test_decode_clip_samples_at_fps_and_never_pads(sharded_run):
    rec = pq.read_table(sharded_run / "manifest.parquet").to_pylist()[0]
    data = (sharded_run / "clips" / f"{rec['clip_id']}.mp4").read_bytes()
    n = rec["end_frame"] - rec["start_frame"]
    frames = decode_clip(data, rec["fps"], 4, rec["fps"] / 2, (32, 32))  # every other frame
    assert frames.shape == (4, 32, 32, 3)
    frames = decode_clip(data, rec["fps"], n + 5, rec["fps"], (32, 32))
    assert len(frames) == n  # the clip's own frames only: no repeated last frame
    later = decode_clip(data, rec["fps"], 3, rec["fps"], (32, 32), start=2)
    assert np.array_equal(later, frames[2:5])
    with pytest.raises(ValueError, match="cannot decode the clip"):
        decode_clip(b"not a video", 24, 4, 8, (32, 32))
    with pytest.raises(ValueError, match="cannot decode the clip"):
        decode_clip(data[: len(data) // 8], rec["fps"], 4, rec["fps"], (32, 32))


def test_every_window_lies_inside_real_frames(sharded_run):
    """A window longer than some clips: those clips stay out of the stream (counted), and every
    window of the others, random ones included, is made of distinct real frames, never a held
    last frame (the synthetic shots move in every frame)."""
    from training.data import span

    rows = [r for r in pq.read_table(sharded_run / "shards" / "index.parquet").to_pylist() if r["split"] == "train"]
    lengths = sorted(r["frames"] for r in rows)
    frames = (lengths[len(lengths) // 2] - 1) // 2 + 1  # at half the source rate: longer than half the clips
    fps = rows[0]["fps"] / 2
    short = sum(1 for r in rows if r["frames"] < span(frames, fps, r["fps"]))
    assert 0 < short < len(rows)
    for random_window in (False, True):
        ld = loader(sharded_run, frames=frames, fps=fps, size=(32, 56), steps=6, random_window=random_window)
        assert ld.left_out == short and ld.sizes.sum() == len(rows) - short
        for b in ld:
            for video, rec in zip(b["video"], b["records"]):
                assert rec["end_frame"] - rec["start_frame"] >= span(frames, fps, rec["fps"])
                assert all((video[i] != video[i + 1]).any() for i in range(frames - 1)), rec["clip_id"]
    with pytest.raises(ValueError, match="holds 400 frames"):
        loader(sharded_run, frames=400)


def test_tag_targets_of_uncaptioned_clip():
    tags, shot = tag_targets(None, taxonomy.load())
    assert shot == -1 and all(v.sum() == 0 for v in tags.values())


def test_stale_shards_are_refused_until_pks_shard_runs(sharded_run, tmp_path):
    """A record changed after pks shard (as pks caption, an audit or a Judge score do) makes the
    shards stale: the loader and pks train refuse them in one line naming the command, pks stats
    counts them, --allow-stale overrides, and pks shard makes them current again."""
    import subprocess
    import sys

    from pks.record import SCHEMA
    from pks.shardfile import stale_samples

    out = tmp_path / "out"
    shutil.copytree(sharded_run, out)
    rows = pq.read_table(out / "manifest.parquet", schema=SCHEMA).to_pylist()
    ok = next(r for r in rows if r["status"] == "ok")
    ok["caption"] = {**ok["caption"], "narrative": "corrected by an annotator"}
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), out / "manifest.parquet")
    assert stale_samples(out) == (1, len(pq.read_table(out / "shards" / "index.parquet")))
    with pytest.raises(UserError, match=f"1 sample\\(s\\) of .* no longer match .*run pks shard {out}"):
        loader(out)  # a user's error (one line, exit 2) wherever it is met: pks train, --stage dpo, a library call
    assert next(iter(loader(out, steps=1, allow_stale=True)))["video"].shape[0] == 3

    def pks(*args):
        return subprocess.run(
            [sys.executable, "-m", "pks.cli", *map(str, args)], capture_output=True, text=True, timeout=600
        )

    r = pks("train", out, "--config", "tiny", "--steps", "1", "--out", tmp_path / "run")
    assert r.returncode == 2 and "no longer match" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "stale: 1 sample(s) no longer match the manifest: run pks shard" in pks("stats", out).stdout
    parts = out / "parts"  # the parts are the truth pks shard rebuilds the manifest from: change them too
    for part in parts.glob("*.parquet"):
        table = pq.read_table(part, schema=SCHEMA).to_pylist()
        for r in table:
            if r["clip_id"] == ok["clip_id"]:
                r["caption"] = ok["caption"]
        pq.write_table(pa.Table.from_pylist(table, schema=SCHEMA), part)
    assert pks("shard", out).returncode == 0
    assert stale_samples(out) == (0, len(pq.read_table(out / "shards" / "index.parquet")))
    assert "stale" not in pks("stats", out).stdout
