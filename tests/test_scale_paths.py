"""Paths that must stay flat at 10^6 clips: semantic duplicates through an approximate index fed
in batches (the same answer as the exact search), kept shards that take their index rows from
the previous index instead of reopening their tars, and a shard plan that holds no record's
JSON in the driver."""

import numpy as np
import pytest

from annotators.signals.embed import semantic_duplicates, streamed_duplicates


def planted(n=5000, d=256, copies=1500, seed=0):
    """n random unit vectors and `copies` perturbed copies of some of them (cosine 0.90..0.99 to
    their source: some above 0.95, some below; a source can have several), shuffled."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, d)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    src = rng.choice(n, copies)
    noise = rng.normal(size=(copies, d)).astype(np.float32)
    noise -= (noise * base[src]).sum(1, keepdims=True) * base[src]  # orthogonal: the angle is exact
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    cos = rng.uniform(0.90, 0.99, copies).astype(np.float32)[:, None]
    cop = cos * base[src] + np.sqrt(1 - cos**2) * noise
    v = np.concatenate([base, cop / np.linalg.norm(cop, axis=1, keepdims=True)])
    return v[rng.permutation(len(v))]


def test_the_index_finds_what_the_exact_search_finds():
    pytest.importorskip("hnswlib")
    v = planted()
    ids = [f"c{i:05d}" for i in range(len(v))]
    exact = semantic_duplicates(ids, v, 0.95)
    loaded = []

    def load(batch):
        loaded.append(len(batch))
        return v[[int(c[1:]) for c in batch]]

    ann = streamed_duplicates(ids, load, 0.95, batch=1000, exact_below=0)
    assert len(exact) > 500 and ann == exact
    assert max(loaded) == 1000 and sum(loaded) == len(ids)  # read a batch at a time, each once
    # clips with more close earlier ones in the index than one search fetches get the earliest
    many = np.repeat(v[:1], 40, axis=0) + 1e-3 * np.random.default_rng(1).normal(size=(40, v.shape[1]))
    many /= np.linalg.norm(many, axis=1, keepdims=True)
    w = np.concatenate([many[:30], v[1:3000], many[30:]]).astype(np.float32)
    ids = [f"c{i:05d}" for i in range(len(w))]
    want = semantic_duplicates(ids, w, 0.95)
    assert all(want[c] == ids[0] for c in ids[-10:])
    assert streamed_duplicates(ids, lambda b: w[[int(c[1:]) for c in b]], 0.95, batch=1000, exact_below=0) == want


def test_small_sets_take_the_exact_path_in_batches():
    v = planted(n=300, d=32, copies=100, seed=2)
    ids = [f"c{i:05d}" for i in range(len(v))]
    seen = []
    got = streamed_duplicates(ids, lambda b: seen.append(len(b)) or v[[int(c[1:]) for c in b]], 0.95, batch=64)
    assert got == semantic_duplicates(ids, v, 0.95) and max(seen) == 64


def test_duplicates_searches_stored_embeddings_through_the_index(tmp_path, monkeypatch):
    """parts.duplicates over OUT/embeddings: the ANN path (forced) marks the same clips, each
    pointing at the earliest clip of its group, as the exact one."""
    pytest.importorskip("hnswlib")
    import functools

    from pipelines import parts
    from pks.config import load_config
    from pks.record import ClipRecord

    v = planted(n=400, d=64, copies=150, seed=3)
    rng = np.random.default_rng(4)
    records = [
        ClipRecord(
            video_id=f"{i // 50:016x}",
            source_path="v.mp4",
            start_frame=i % 50 * 10,
            end_frame=i % 50 * 10 + 10,
            fps=24.0,
            curriculum_stage=0,
            phash=" ".join(f"{x:016x}" for x in rng.integers(0, 2**63, 8)),
        )
        for i in range(len(v))
    ]
    (tmp_path / "embeddings").mkdir()
    for r, x in zip(records, v):
        np.save(tmp_path / "embeddings" / f"{r.clip_id}.npy", x)
    for vid in sorted({r.video_id for r in records}):
        parts.write_part(tmp_path, vid, [r for r in records if r.video_id == vid])
    cfg = load_config()
    exact = parts.duplicates(tmp_path, cfg.analyse)
    monkeypatch.setattr(
        parts, "streamed_duplicates", functools.partial(parts.streamed_duplicates, exact_below=0, batch=128)
    )
    assert len(exact) > 20 and parts.duplicates(tmp_path, cfg.analyse) == exact
    assert all(kept < dup for dup, kept in exact.items()) and not set(exact.values()) & set(exact)


def tiny_clip(path, seed):
    from pks.videoio import Mp4Writer

    w = Mp4Writer(path, 24, 64, 48, preset="ultrafast")
    for i in range(8):
        w.write(np.full((48, 64, 3), (seed * 37 + i * 9) % 256, np.uint8))
    w.close()


@pytest.fixture(scope="module")
def tiny_sharded(tmp_path_factory):
    """A curated run without curation: 4 videos x 5 clips (tiny H.264 files), then sharded."""
    import shutil

    from pipelines.parts import write_part
    from pipelines.shard import shard_run
    from pks.config import load_config
    from pks.record import ClipRecord

    tmp_path = tmp_path_factory.mktemp("tiny")
    out = tmp_path / "run"
    (out / "clips").mkdir(parents=True)
    for k in range(3):
        tiny_clip(tmp_path / f"c{k}.mp4", k)
    for v in range(4):
        vid = f"{v + 1:016x}"
        records = [
            ClipRecord(
                video_id=vid,
                source_path=f"{vid}.mp4",
                start_frame=i * 8,
                end_frame=i * 8 + 8,
                fps=24.0,
                width=64,
                height=48,
                curriculum_stage=(v + i) % 2,
                caption_source=f"take {i}",
            )
            for i in range(5)
        ]
        for i, r in enumerate(records):
            shutil.copy(tmp_path / f"c{(v + i) % 3}.mp4", out / "clips" / f"{r.clip_id}.mp4")
        write_part(out, vid, records)
    cfg = load_config(None, {"shard.max_samples": 3, "shard.val_fraction": 0.3})
    shard_run(out, cfg, progress=lambda m: None)
    return out, cfg


@pytest.fixture
def tiny_run(tiny_sharded, tmp_path):
    import shutil

    out, cfg = tiny_sharded
    shutil.copytree(out, tmp_path / "run")  # mtimes too
    return tmp_path / "run", cfg


def spy(monkeypatch, module, *names):
    calls = []
    for name in names:
        real = getattr(module, name)
        monkeypatch.setattr(
            module, name, lambda *a, _real=real, _name=name, **kw: calls.append(_name) or _real(*a, **kw)
        )
    return calls


def ranges_hold_their_samples(out):
    """Each index row's byte range in its tar is exactly its sample's members."""
    import io
    import tarfile

    import pyarrow.parquet as pq

    for r in pq.read_table(out / "shards" / "index.parquet").to_pylist():
        with open(out / "shards" / r["shard"], "rb") as f:
            f.seek(r["offset"])
            chunk = f.read(r["length"])
        with tarfile.open(fileobj=io.BytesIO(chunk), mode="r:") as t:
            assert sorted(t.getnames()) == [f"{r['clip_id']}.{e}" for e in ("jpg", "json", "mp4")]


def test_a_rerun_with_nothing_changed_takes_the_index_rows_and_opens_no_tar_for_them(tiny_run, monkeypatch):
    import os

    import pyarrow.parquet as pq

    from pipelines import shard
    from pipelines.parts import read_part, write_part

    out, cfg = tiny_run
    index = out / "shards" / "index.parquet"
    first = pq.read_table(index)
    ranges_hold_their_samples(out)
    calls = spy(monkeypatch, shard, "sample_ranges", "members_of")
    s = shard.shard_run(out, cfg, progress=lambda m: None)
    assert s["kept"] == s["shards"] > 4 and calls == []  # no kept tar read past its fingerprint
    assert pq.read_table(index).equals(first)

    # a tar newer than the index (rewritten after it, by a run killed before its index) is read
    tar = out / "shards" / first.column("shard")[0].as_py()
    os.utime(tar, ns=(index.stat().st_mtime_ns + 1,) * 2)
    s = shard.shard_run(out, cfg, progress=lambda m: None)
    assert s["kept"] == s["shards"] and calls == ["sample_ranges"] and pq.read_table(index).equals(first)

    # a changed record rewrites its shard, whose ranges come from its headers; the rest stay
    calls.clear()
    vid = first.column("video_id")[0].as_py()
    records = read_part(out, vid)
    records[0].caption_source = "a caption source longer by blocks of the tar, so that byte ranges move " * 20
    write_part(out, vid, records)
    s = shard.shard_run(out, cfg, progress=lambda m: None)
    assert s["rewritten"] == 1 and calls == ["members_of", "sample_ranges"]  # why, and the new ranges
    again = pq.read_table(index)
    assert again.drop_columns(["offset", "length", "record_hash"]).equals(
        first.drop_columns(["offset", "length", "record_hash"])
    )
    assert not again.column("length").equals(first.column("length"))
    ranges_hold_their_samples(out)


def test_workers_read_their_records_from_spill_files(tiny_run):
    """The plan carries no record's JSON: each shard's records reach its worker through ranges
    of spill files (here one per few rows), in plan order, exactly the manifest's JSON."""
    import json

    import pyarrow.parquet as pq

    from pipelines.shard import plan_shards, spill_records, spilled_members
    from pks.store import as_store

    out, cfg = tiny_run
    store = as_store(out)
    rows, shards, _ = plan_shards(store, cfg.shard, {})
    assert "record" not in rows.column_names and all(
        set(s) == {"name", "split", "stage", "rows", "fingerprint"} for s in shards
    )
    keys = spill_records(store, rows, shards, "test", budget=1, batch_rows=3)
    assert len(keys) >= 6
    manifest = {
        r["clip_id"]: json.dumps(r, sort_keys=True) for r in pq.read_table(out / "manifest.parquet").to_pylist()
    }
    for s in shards:
        members = spilled_members({**s, "samples": len(s["rows"])}, store)
        assert [m["clip_id"] for m in members] == rows.column("clip_id").take(s["rows"]).to_pylist()
        assert [m["record"] for m in members] == [manifest[m["clip_id"]] for m in members]
    assert max(len(s["records"]) for s in shards) > 1  # a shard's records from several spill files
    for k in keys:
        store.remove(k)
