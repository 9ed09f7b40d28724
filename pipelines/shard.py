"""`pks shard`: OUT/manifest.parquet -> WebDataset tars per split and curriculum stage, plus
OUT/shards/index.parquet (clip_id -> shard, split, stage, and the sample's byte range in its
tar, headers included, so a reader fetches one sample with one range read).

A sample is `{key}.mp4` (the clip), `{key}.json` (its record), `{key}.jpg` (middle frame),
with key = clip_id. Which clips go in: status ok, a clip file, a curriculum stage, none of the
configured reject flags (and a caption when required); the rest are marked `rejected` in the
manifest with the reason. Splits are by source video, never by clip. The plan (which sample in
which shard) is a pure function of the manifest and the config, so a rerun after a kill writes
the same shards: a shard is written under a temporary name and renamed when complete.

A shard is kept only when it holds exactly what the plan says, with the current records and
clip bytes: each planned sample carries a fingerprint (its record's JSON and its clip's hash),
each shard the hash of its samples' fingerprints, written into the tar itself as a PAX global
header (readers of the tar never see it as a sample). A changed caption, stage, flag or
judge_score rewrites the shard that holds the clip, and no other.

The driver plans in columns (a few hundred bytes a clip, never a record's JSON): the manifest
is read a batch at a time, and the records of the shards to write reach their workers through
spill files (OUT/shards/records-*.tmp-*, removed when the shards are written). A kept shard's
byte ranges come from the previous index when its tar is older than that index.

OUT may be an object-store URL (pks.store): a shard is then written locally and uploaded whole
(one PUT), the index last.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import logging
import typing
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipelines.parts import duplicates, rewrite_parts, set_aside_bad_parts
from pipelines.raytools import init_ray, logs_of, ray_scope
from pks.errors import UserError
from pks.jobconfig import JobConfig, ShardConfig
from pks.progress import bar as progress_bar
from pks.record import SCHEMA, SHARD_REJECT, ClipRecord
from pks.seeded import unit
from pks.shardfile import (
    digest,
    members_of,
    record_digest,
    sample_ranges,
    write_tar,
    written_fingerprint,
)
from pks.store import TMP_MARK, Store, as_store

log = logging.getLogger(__name__)
SPLITS = ("train", "val")
FORMAT = "pks-shard-1"  # bump when the sample layout changes: every shard is then rewritten
_INDEX_FIELDS: list[tuple[str, pa.DataType]] = [  # typed: mypy joins the DataType subclasses to object
    ("clip_id", pa.string()),
    ("video_id", pa.string()),
    ("split", pa.string()),
    ("stage", pa.int32()),
    ("shard", pa.string()),
    ("position", pa.int32()),
    ("clip_bytes", pa.int64()),
    ("clip_mtime_ns", pa.int64()),
    ("clip_hash", pa.string()),
    ("record_hash", pa.string()),
    ("offset", pa.int64()),
    ("length", pa.int64()),
    ("frames", pa.int64()),
    ("fps", pa.float64()),  # the clip's length: the loader's windows
]
INDEX_SCHEMA = pa.schema(_INDEX_FIELDS)


def clip_key(clip_id: str) -> str:
    """A clip's key in OUT (pks.clips.clip_path is the same file in a local OUT)."""
    return f"clips/{clip_id}.mp4"


def shard_name(split: str, stage: int, n: int) -> str:
    """A shard's path under OUT/shards/."""
    return f"{split}/stage-{stage}/shard-{n:06d}.tar"


def rejection(r: ClipRecord, clips: set[str], sc: ShardConfig, kept: str = "") -> str:
    """Why an ok record stays out of the shards ('' when it goes in); `clips` holds the names
    in OUT/clips/ (one listing, not one request per clip); `kept` is the clip kept of its
    near-duplicate group when that is another clip."""
    if kept and "duplicate" in sc.reject_flags:
        return f"{SHARD_REJECT}duplicate of {kept}"
    bad = sorted(set(r.quality_flags) & set(sc.reject_flags))
    if bad:
        return f"{SHARD_REJECT}quality flags {', '.join(bad)}"
    if r.curriculum_stage is None:
        return f"{SHARD_REJECT}not analysed (no curriculum stage)"
    if sc.min_judge_score is not None and r.judge_score is not None and r.judge_score < sc.min_judge_score:
        return f"{SHARD_REJECT}judge score {r.judge_score:.3f} below {sc.min_judge_score}"
    if sc.require_caption and not r.caption:
        return f"{SHARD_REJECT}no caption"
    if f"{r.clip_id}.mp4" not in clips:
        return f"{SHARD_REJECT}no clip file"
    return ""


def judge(
    records: list[ClipRecord], clips: set[str], sc: ShardConfig, kept: dict[str, str] | None = None
) -> list[ClipRecord]:
    """Mark ok records that stay out as rejected (with why); earlier shard rejections are judged
    again, so a changed config takes them back in. `kept` ({clip_id: the clip kept of its
    near-duplicate group}, pipelines.parts.duplicates) keeps one clip of each group: the
    duplicate flag lives in the manifest only, not in these records."""
    kept = kept or {}
    result = []
    for r in records:
        if r.status == "rejected" and r.error.startswith(SHARD_REJECT):
            r = dataclasses.replace(r, status="ok", error="")
        if r.status == "ok":
            why = rejection(r, clips, sc, kept.get(r.clip_id, ""))
            if why:
                r = dataclasses.replace(r, status="rejected", error=why)
        result.append(r)
    return result


def video_of(clip_id: str) -> str:
    """The video_id in a clip_id ({video_id}_{start_frame:06d}_{end_frame:06d})."""
    return clip_id.rsplit("_", 2)[0]


def assign_splits(
    video_ids: list[str], seed: int, val_fraction: float, kept: dict[str, str] | None = None
) -> dict[str, str]:
    """Split by source video: a video's hash decides, so adding videos never moves old ones
    (unless it joins their near-duplicate group with a smaller id). With val_fraction > 0 and
    two or more videos, each split gets at least one video. Videos that share a near-duplicate
    group (`kept`, as judge takes it) are one unit, which the smallest video_id among them
    decides (the kept clip's video), so a copy of a training video never lands in val."""
    lead = {v: v for v in video_ids}
    for dup, first in (kept or {}).items():  # union-find over videos, the smallest id leads
        a, b = _lead(lead, video_of(dup)), _lead(lead, video_of(first))
        lead[max(a, b)] = min(a, b)
    units = {v: _lead(lead, v) for v in sorted(set(video_ids))}
    u = {v: unit(seed, "split", v) for v in sorted(set(units.values()))}
    split = {v: "val" if x < val_fraction else "train" for v, x in u.items()}
    if val_fraction > 0 and len(u) >= 2:
        if "val" not in split.values():
            split[min(u, key=u.__getitem__)] = "val"
        if "train" not in split.values():
            split[max(u, key=u.__getitem__)] = "train"
    return {v: split[units[v]] for v in units}


def _lead(lead: dict[str, str], v: str) -> str:
    """The video that decides v's split (v itself until a duplicate group joins it to another)."""
    while lead.setdefault(v, v) != v:
        v = lead[v]
    return v


def plan(rows: list[dict], sc: ShardConfig, kept: dict[str, str] | None = None) -> list[dict]:
    """Shards to write: [{name, split, stage, members}], members being rows with clip_id,
    video_id, curriculum_stage and clip_bytes (plan_table over them)."""
    table = pa.table(
        {
            k: pa.array([r[k] for r in rows], t)
            for k, t in (
                ("clip_id", pa.string()),
                ("video_id", pa.string()),
                ("curriculum_stage", pa.int64()),
                ("clip_bytes", pa.int64()),
            )
        }
    )
    return [
        {**{k: s[k] for k in ("name", "split", "stage")}, "members": [rows[i] for i in s["rows"]]}
        for s in plan_table(table, sc, kept)
    ]


def plan_table(rows: pa.Table, sc: ShardConfig, kept: dict[str, str] | None = None) -> list[dict]:
    """Shards to write: [{name, split, stage, rows}], rows being the row numbers of its samples
    in `rows` (a table with clip_id, video_id, curriculum_stage and clip_bytes), in order.
    Within a split and stage the clips are shuffled with the seed (so clips of one video spread
    across shards), then packed up to max_samples and max_bytes. Columns, not a dict per clip:
    the driver plans 10^6 clips in ~100 bytes each."""
    videos = typing.cast(pa.DictionaryArray, pc.dictionary_encode(rows.column("video_id")).combine_chunks())
    vids = typing.cast("list[str]", videos.dictionary.to_pylist())  # (the dictionary holds no null)
    split = assign_splits(vids, sc.seed, sc.val_fraction, kept)
    names = sorted(set(split.values()))
    code = np.array([names.index(split[v]) for v in vids], np.int64)
    key = code[videos.indices.to_numpy(zero_copy_only=False)] * 256 + rows.column("curriculum_stage").to_numpy()
    by_id = pc.sort_indices(rows.column("clip_id")).to_numpy()
    size = rows.column("clip_bytes").to_numpy()
    shards = []
    for k in np.unique(key).tolist():  # (split, stage) in order
        sp, stage = names[k // 256], k % 256
        members = by_id[key[by_id] == k]  # by clip_id
        rng = np.random.default_rng(int(unit(sc.seed, "order", sp, stage) * 2**63))
        members = members[rng.permutation(len(members))]
        cuts, n, total = [], 0, 0
        for i, b in enumerate(size[members].tolist()):
            if n and (n >= sc.max_samples or total + b > sc.max_bytes):
                cuts.append(i)
                n = total = 0
            n += 1
            total += b
        shards += [
            {"name": shard_name(sp, stage, i), "split": sp, "stage": stage, "rows": m}
            for i, m in enumerate(np.split(members, cuts))
        ]
    return shards


def middle_frame_jpeg(path: Path | io.BytesIO, width: int) -> bytes:
    """The clip's middle frame (of a file, or of its bytes) as a JPEG at most `width` pixels wide."""
    import cv2
    import decord

    vr = decord.VideoReader(path if isinstance(path, io.BytesIO) else str(path))
    rgb = vr[len(vr) // 2].asnumpy()
    h, w = rgb.shape[:2]
    if w > width:
        rgb = cv2.resize(rgb, (width, round(h * width / w) // 2 * 2), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise ValueError(f"cannot encode the thumbnail of {path}")
    return buf.tobytes()


def file_hash(out: Store, rel: str, chunk: int = 1 << 20) -> str:
    """BLAKE2b-128 of a file's bytes, read in chunks."""
    h = hashlib.blake2b(digest_size=16)
    with out.open(rel) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


SAMPLE_SCHEMA = pa.schema(
    [
        pa.field(k, t)
        for k, t in (
            ("clip_id", pa.string()),
            ("video_id", pa.string()),
            ("curriculum_stage", pa.int8()),
            ("record_hash", pa.string()),
            ("frames", pa.int64()),
            ("fps", pa.float64()),
        )
    ]
)


def samples(out: Store, previous: pa.Table | None = None, batch_rows: int = 8192) -> pa.Table:
    """The ok rows of the manifest as planned samples, a row each: clip_id, video_id,
    curriculum_stage, record_hash, frames, fps, clip_bytes, clip_mtime_ns, clip_hash, and
    `previous`, the sample's row in the previous index (null when it has none). The manifest
    is read a batch at a time and only these columns are kept (the record's JSON is written
    for the shards to write, by spill_records). A clip's hash is reused from the previous index
    while its size and mtime are unchanged (as git's index does), so a rerun does not read
    every clip again."""
    chunks = [SAMPLE_SCHEMA.empty_table()]
    for b in out.batches("manifest.parquet", schema=SCHEMA, batch_size=batch_rows):
        b = b.filter(pc.equal(b.column("status"), pa.scalar("ok")))
        if b.num_rows:
            frames = pc.if_else(
                pc.is_null(b.column("clip_frames")),
                pc.subtract(b.column("end_frame"), b.column("start_frame")),
                b.column("clip_frames"),
            )
            chunks.append(
                pa.table(
                    [
                        b.column("clip_id"),
                        b.column("video_id"),
                        b.column("curriculum_stage"),
                        pa.array([record_digest(r) for r in b.to_pylist()], pa.string()),
                        frames,
                        b.column("fps"),
                    ],
                    schema=SAMPLE_SCHEMA,
                )
            )
    rows = pa.concat_tables(chunks)  # (chunked: no copy)
    ids = rows.column("clip_id")
    clips = out.stats_table("clips")  # one listing, not one request per clip
    mp4 = clips.filter(pc.ends_with(clips.column("name"), ".mp4"))
    at = pc.index_in(ids, value_set=pc.utf8_slice_codeunits(mp4.column("name"), 0, -4))
    if at.null_count:
        missing = str(ids.filter(pc.is_null(at))[0])
        raise RuntimeError(f"{out.url(clip_key(missing))} is gone since the clips were judged; run pks shard again")
    size, mtime = mp4.column("size").take(at), mp4.column("mtime_ns").take(at)
    n = len(ids)
    old = pc.index_in(ids, value_set=previous.column("clip_id")) if previous is not None else pa.nulls(n, pa.int32())
    old_hash = previous.column("clip_hash").take(old) if previous is not None else pa.nulls(n, pa.string())
    same = np.zeros(n, bool)
    if previous is not None:
        before = previous.take(old)  # (a null row where the clip is new)
        same = (
            _true(pc.equal(before.column("clip_bytes"), size))
            & _true(pc.equal(before.column("clip_mtime_ns"), mtime))
            & _true(pc.not_equal(old_hash, pa.scalar("")))
        )
    # every null hash (a new clip, or an index row without one) is not `same`, so replaced here
    fresh = [file_hash(out, clip_key(str(c))) for c in ids.filter(pa.array(~same)).to_pylist()]
    clip_hash = pc.replace_with_mask(flat(old_hash), pa.array(~same), pa.array(fresh, pa.string()))
    rows = rows.append_column("clip_bytes", size).append_column("clip_mtime_ns", mtime)
    return rows.append_column("clip_hash", clip_hash).append_column("previous", old)


def _true(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean column as numpy, null (a comparison with a missing value) as False: with nulls
    arrow gives an object array, where bool(None) is False."""
    return mask.to_numpy(zero_copy_only=False).astype(bool)


def flat(a: pa.Array | pa.ChunkedArray) -> pa.Array:
    return a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a


def fingerprint_of(rows: pa.Table, thumb_width: int) -> str:
    """What a shard must hold: its samples (rows with clip_id, record_hash and clip_hash) in
    order, with their content, in this format."""
    cols = [rows.column(k).to_pylist() for k in ("clip_id", "record_hash", "clip_hash")]
    return digest(FORMAT, str(thumb_width), *(digest(*m) for m in zip(*cols)))


def write_shard(spec: dict, out: Store, thumb_width: int = 384) -> dict:
    """Write one planned shard (a plain function; Ray wraps it) with its samples' records, read
    from the ranges of the spill files that spec["records"] names (spill_records). Written with
    tarfile itself rather than webdataset's TarWriter, which cannot add the PAX global header
    that holds the fingerprint; the samples are plain WebDataset members."""
    members = spilled_members(spec, out)

    def samples():
        for m in members:
            clip = clip_key(m["clip_id"])
            data = out.read_bytes(clip)
            if hashlib.blake2b(data, digest_size=16).hexdigest() != m["clip_hash"]:
                raise RuntimeError(f"{out.url(clip)} changed after the shard plan was made; run pks shard again")
            thumb = middle_frame_jpeg(Path(out.path(clip)) if out.local else io.BytesIO(data), thumb_width)
            yield m["clip_id"], {"mp4": data, "json": m["record"].encode(), "jpg": thumb}

    write_tar(f"shards/{spec['name']}", spec["fingerprint"], samples(), out)
    return {"name": spec["name"], "samples": len(members), "why": spec["why"]}


def spill_records(
    out: Store, rows: pa.Table, todo: list[dict], token: str, budget: int = 64 << 20, batch_rows: int = 8192
) -> list[str]:
    """Hand each shard to write its samples' records without holding them in the driver: the
    manifest is read again a batch at a time, and each record of a shard in `todo` goes, as one
    line (position, clip_id, clip_hash, the record's JSON), into a buffer written out, sorted by
    shard and position, as a spill file whenever it reaches `budget` bytes. Each spec gets
    "records": [{key, offset, length}], its lines in each spill file, which its worker reads
    (one range read per file). Returns the spill files' keys, for the caller to remove (their
    names carry TMP_MARK, so a killed run's are removed by the next)."""
    shard_of = np.full(rows.num_rows, -1, np.int64)
    position = np.zeros(rows.num_rows, np.int64)
    for t, spec in enumerate(todo):
        shard_of[spec["rows"]] = t
        position[spec["rows"]] = np.arange(len(spec["rows"]))
        spec["records"] = []
    keys: list[str] = []
    buffer: list[tuple[int, int, bytes]] = []
    held = 0

    def spill():
        key = f"shards/records-{len(keys):06d}{TMP_MARK}{token}"
        buffer.sort(key=lambda x: x[:2])
        with out.writing(key) as tmp, open(tmp, "wb") as f:
            at = 0
            for t, lines in itertools.groupby(buffer, key=lambda x: x[0]):
                data = b"".join(line for _, _, line in lines)
                f.write(data)
                todo[t]["records"].append({"key": key, "offset": at, "length": len(data)})
                at += len(data)
        keys.append(key)
        buffer.clear()

    ids, hashes, done = rows.column("clip_id"), rows.column("clip_hash"), 0
    for b in out.batches("manifest.parquet", schema=SCHEMA, batch_size=batch_rows):
        b = b.filter(pc.equal(b.column("status"), pa.scalar("ok")))
        if b.num_rows and not pa.chunked_array([b.column("clip_id")]).equals(ids.slice(done, b.num_rows)):
            raise RuntimeError("the manifest changed while the shards were planned; run pks shard again")
        want = np.flatnonzero(shard_of[done : done + b.num_rows] >= 0)
        if len(want):
            at = done + want
            for g, h, r in zip(at.tolist(), hashes.take(at).to_pylist(), b.take(pa.array(want)).to_pylist()):
                line = f"{position[g]}\t{r['clip_id']}\t{h}\t{json.dumps(r, sort_keys=True)}\n".encode()
                buffer.append((int(shard_of[g]), int(position[g]), line))
                held += len(line)
        done += b.num_rows
        if held >= budget:
            spill()
            held = 0
    if done != rows.num_rows:
        raise RuntimeError("the manifest changed while the shards were planned; run pks shard again")
    if buffer:
        spill()
    return keys


def spilled_members(spec: dict, out: Store) -> list[dict]:
    """A shard's samples in order (clip_id, clip_hash, record), from its ranges of the spill
    files. A record's JSON never holds a raw tab or newline (json.dumps escapes them)."""
    lines = []
    for r in spec["records"]:
        with out.open(r["key"]) as f:
            f.seek(r["offset"])
            lines += f.read(r["length"]).decode().splitlines()
    members = sorted((int(p), c, h, r) for p, c, h, r in (line.split("\t", 3) for line in lines))
    if [p for p, *_ in members] != list(range(spec["samples"])):
        raise RuntimeError(f"the spilled records of {spec['name']} are not its {spec['samples']} samples")
    return [{"clip_id": c, "clip_hash": h, "record": r} for _, c, h, r in members]


def why_rewrite(out: Store, spec: dict, rows: pa.Table, previous: pa.Table | None) -> str:
    """'' when the finished shard is exactly the planned one; else why it must be (re)written.
    `rows` are the planned samples (samples()), `previous` the previous index (read_index)."""
    tar = f"shards/{spec['name']}"
    if not out.exists(tar):
        return "new"
    with out.open(tar) as f:
        fingerprint = written_fingerprint(f)
    if fingerprint == spec["fingerprint"]:
        return ""
    if not fingerprint:
        return "no fingerprint (torn, or written by an older PKS)"
    planned = rows.take(pa.array(spec["rows"]))
    with out.open(tar) as f:
        members = members_of(f)
    if members != planned.column("clip_id").to_pylist():
        return "other samples"
    old = previous.take(planned.column("previous")) if previous is not None else None
    if old is None or not old.column("record_hash").equals(planned.column("record_hash")):
        return "records changed"
    if not old.column("clip_hash").equals(planned.column("clip_hash")):
        return "clips changed"
    return "format or thumbnail settings changed"


def _ray_write(spec: dict, out: Store, thumb_width: int) -> dict:
    return write_shard(spec, out, thumb_width)


REUSED = ["clip_id", "shard", "position", "clip_bytes", "clip_mtime_ns", "clip_hash", "record_hash", "offset", "length"]


def read_index(out: Store) -> pa.Table | None:
    """The previous index, the columns a rerun reuses (REUSED), with the index file's mtime_ns
    in its schema metadata (pks.mtime_ns); None when there is none, or one from before
    fingerprints."""
    stat = out.stats("shards").get("index.parquet")
    if stat is None:
        return None
    with out.open("shards/index.parquet") as f:
        schema = pq.read_schema(f)
    if "clip_hash" not in schema.names:
        return None
    columns = [c for c in REUSED if c in schema.names]
    table = pa.Table.from_batches(
        list(out.batches("shards/index.parquet", columns=columns, batch_size=1 << 16)),
        schema=pa.schema([schema.field(c) for c in columns]),
    )
    return table.replace_schema_metadata({"pks.mtime_ns": str(stat[1])})


def reused_ranges(
    spec: dict, rows: pa.Table, previous: pa.Table | None, tar_mtime_ns: int, counts: dict[str, int]
) -> tuple[pa.Array | pa.ChunkedArray, pa.Array | pa.ChunkedArray] | None:
    """A kept shard's samples' (offsets, lengths) from the previous index, without opening the
    tar: when the tar is older than that index (so it is the tar the index describes, which
    read or wrote it) and the index's rows of the shard are its planned samples, in order,
    and no others. None otherwise: its headers are read instead."""
    if previous is None or "offset" not in previous.column_names or spec["name"] not in counts:
        return None
    if not tar_mtime_ns < int(previous.schema.metadata[b"pks.mtime_ns"]):
        return None
    at = rows.column("previous").take(pa.array(spec["rows"]))
    if at.null_count or counts[spec["name"]] != len(at):
        return None
    old = previous.take(at)
    if not (
        pc.all(pc.equal(old.column("shard"), spec["name"])).as_py()
        and np.array_equal(old.column("position").to_numpy(), np.arange(len(at)))
    ):
        return None
    return old.column("offset"), old.column("length")


def shard_run(out: Path | Store, cfg: JobConfig, progress=None) -> dict:
    """Judge, plan and write the shards of a finished run; then the index. Resumable; keeps
    every shard that already holds exactly its planned samples and content. A Ray it starts
    is stopped when it ends. `progress` takes its lines (default: this module's log)."""
    with ray_scope():
        return write_shards(as_store(out), cfg, progress)


def plan_shards(out: Store, sc: ShardConfig, kept: dict[str, str]) -> tuple[pa.Table, list[dict], pa.Table | None]:
    """(the planned samples, the shards with their fingerprints, the previous index) for a
    judged run: columns and row numbers, no record's JSON (see spill_records)."""
    previous = read_index(out)
    rows = samples(out, previous)
    shards = plan_table(rows, sc, kept)
    for s in shards:
        s["fingerprint"] = fingerprint_of(rows.take(pa.array(s["rows"])), sc.thumb_width)
    return rows, shards, previous


def write_shards(out: Store, cfg: JobConfig, progress=None) -> dict:
    import ray

    say = progress or log.info
    sc = cfg.shard
    if not (Path(out.path("parts")).is_dir() if out.local else out.list("parts")):
        raise UserError(f"no curated run in {out.url()} (run pks curate first)")
    set_aside_bad_parts(out, progress)
    clips = set(out.list("clips"))
    kept = duplicates(out, cfg.analyse)  # from the parts: the manifest may predate them
    for _ in rewrite_parts(out, cfg, lambda rs: judge(rs, clips, sc, kept), kept):  # rejections land in the manifest
        pass
    clips.clear()  # (10^6 names: not kept through the plan)
    rows, shards, previous = plan_shards(out, sc, kept)
    existing = out.find("shards")
    for stale in existing:  # left by a killed run (an object store never holds one: no partial PUT)
        if TMP_MARK in Path(stale).name:
            out.remove(stale)
    for s in shards:
        s["why"] = why_rewrite(out, s, rows, previous)
    todo = [s for s in shards if s["why"]]
    for s in shards:
        if not s["why"]:
            log.debug(f"  {s['name']}: kept")
    why = dict(Counter(s["why"] for s in todo))
    say(
        f"pks shard: {rows.num_rows} clip(s) in {len(shards)} shard(s): {len(shards) - len(todo)} kept, "
        f"{len(todo)} to write" + (f" ({', '.join(f'{n} {w}' for w, n in why.items())})" if todo else "")
    )
    if todo:
        spills = spill_records(out, rows, todo, uuid.uuid4().hex[:12])
        try:
            init_ray(cfg.ray, logs_of(out))
            specs = [
                {k: s[k] for k in ("name", "fingerprint", "why", "records")} | {"samples": len(s["rows"])} for s in todo
            ]
            ds: ray.data.Dataset = ray.data.from_items(specs, override_num_blocks=len(specs))
            # (Ray types the function without its fn_kwargs)
            ds = ds.map(
                _ray_write,  # type: ignore[arg-type]
                fn_kwargs={"out": out, "thumb_width": sc.thumb_width},
                num_cpus=1,
            )
            with progress_bar(len(todo), "pks shard", "shard") as bar:
                for i, s in enumerate(ds.iter_rows(), 1):  # as each shard is written (by a Ray task)
                    say(f"  [{i}/{len(todo)}] {s['name']}: {s['samples']} sample(s) ({s['why']})")
                    bar.update(1)
        finally:
            for key in spills:
                out.remove(key)
    write_index(out, rows, shards, previous)
    # only now the shards of an earlier plan that this one does not have: removed first, a kill
    # in between would leave the old index naming tars that are gone
    planned = {s["name"] for s in shards}
    removed = 0
    for tar in existing:
        if tar.endswith(".tar") and tar.removeprefix("shards/") not in planned:
            out.remove(tar)
            removed += 1
    if removed:
        say(f"pks shard: removed {removed} shard(s) the plan no longer has")
    per: Counter[str] = Counter()
    for s in shards:
        per[f"{s['split']}/stage-{s['stage']}"] += len(s["rows"])
    counted = {f"{sp}/stage-{k}": per[f"{sp}/stage-{k}"] for sp in SPLITS for k in range(4)}
    return {
        "shards": len(shards),
        "kept": len(shards) - len(todo),
        "new": why.pop("new", 0),
        "rewritten": sum(why.values()),
        "removed": removed,
        "why": why,
        "samples": rows.num_rows,
        "per_split_stage": {k: v for k, v in counted.items() if v},
        "index": out.url("shards/index.parquet"),
    }


def write_index(
    out: Store, rows: pa.Table, shards: list[dict], previous: pa.Table | None, flush_rows: int = 1 << 16
) -> None:
    """OUT/shards/index.parquet, a row per sample in plan order, written a few shards at a
    time. A kept shard's byte ranges come from the previous index when it describes the
    very tar (reused_ranges), else from the tar's headers; a written one's from its headers."""
    counts: dict[str, int] = {}  # the previous index's samples per shard
    if previous is not None:
        vc = pc.value_counts(previous.column("shard"))  # (a row per shard, not per sample)
        counts = {str(k): int(v) for k, v in zip(vc.field("values").to_pylist(), vc.field("counts").to_numpy())}
    mtimes: dict[str, dict[str, tuple[int, int]]] = {}
    pending: list[pa.Table] = []
    with out.writing("shards/index.parquet") as tmp, pq.ParquetWriter(tmp, INDEX_SCHEMA) as writer:
        for s in shards:
            folder, name = f"shards/{s['name']}".rsplit("/", 1)
            ranges: tuple[pa.Array | pa.ChunkedArray, pa.Array | pa.ChunkedArray] | None = None
            if not s["why"]:  # kept
                if folder not in mtimes:
                    mtimes[folder] = out.stats(folder)  # one listing per split and stage
                if name in mtimes[folder]:
                    ranges = reused_ranges(s, rows, previous, mtimes[folder][name][1], counts)
            planned = rows.take(pa.array(s["rows"]))
            if ranges is None:
                with out.open(f"shards/{s['name']}") as f:
                    r = sample_ranges(f)
                got = [r[str(c)] for c in planned.column("clip_id").to_pylist()]
                ranges = pa.array([o for o, _ in got], pa.int64()), pa.array([n for _, n in got], pa.int64())
            n = planned.num_rows
            cols = {
                "split": pa.array([s["split"]] * n, pa.string()),
                "stage": pa.array([s["stage"]] * n, pa.int32()),
                "shard": pa.array([s["name"]] * n, pa.string()),
                "position": pa.array(np.arange(n, dtype=np.int32)),
                "offset": ranges[0],
                "length": ranges[1],
            }
            pending.append(
                pa.table(
                    [cols[f.name] if f.name in cols else planned.column(f.name) for f in INDEX_SCHEMA],
                    schema=INDEX_SCHEMA,
                )
            )
            if sum(t.num_rows for t in pending) >= flush_rows:
                writer.write_table(pa.concat_tables(pending))
                pending = []
        if pending or not shards:
            writer.write_table(pa.concat_tables(pending) if pending else INDEX_SCHEMA.empty_table())
