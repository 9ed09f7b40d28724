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

OUT may be an object-store URL (pks.store): a shard is then written locally and uploaded whole
(one PUT), the index last.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.parts import duplicates, rewrite_parts, set_aside_bad_parts
from pipelines.raytools import init_ray, logs_of, ray_scope
from pks.errors import UserError
from pks.jobconfig import JobConfig, ShardConfig
from pks.progress import bar as progress_bar
from pks.record import SCHEMA, SHARD_REJECT, ClipRecord
from pks.seeded import unit
from pks.store import TMP_MARK, Store, as_store

log = logging.getLogger(__name__)
SPLITS = ("train", "val")
FORMAT = "pks-shard-1"  # bump when the sample layout changes: every shard is then rewritten
FINGERPRINT = "pks.fingerprint"  # the PAX global header that carries a shard's fingerprint
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
    video_id and clip_bytes. Within a split and stage the clips are shuffled with the seed (so
    clips of one video spread across shards), then packed up to max_samples and max_bytes."""
    split = assign_splits([r["video_id"] for r in rows], sc.seed, sc.val_fraction, kept)
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((split[r["video_id"]], r["curriculum_stage"]), []).append(r)
    shards = []
    for (sp, stage), members in sorted(groups.items()):
        members.sort(key=lambda r: r["clip_id"])
        rng = np.random.default_rng(int(unit(sc.seed, "order", sp, stage) * 2**63))
        packed: list[list[dict]] = [[]]
        size = 0
        for i in rng.permutation(len(members)):
            r = members[i]
            if packed[-1] and (len(packed[-1]) >= sc.max_samples or size + r["clip_bytes"] > sc.max_bytes):
                packed.append([])
                size = 0
            packed[-1].append(r)
            size += r["clip_bytes"]
        shards += [
            {"name": shard_name(sp, stage, n), "split": sp, "stage": stage, "members": m} for n, m in enumerate(packed)
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


def digest(*parts: bytes | str) -> str:
    """BLAKE2b-128 of the parts, each closed by a NUL so ('ab', 'c') and ('a', 'bc') differ."""
    h = hashlib.blake2b(digest_size=16)
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def file_hash(out: Store, rel: str, chunk: int = 1 << 20) -> str:
    """BLAKE2b-128 of a file's bytes, read in chunks."""
    h = hashlib.blake2b(digest_size=16)
    with out.open(rel) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def samples(out: Store, previous: dict[str, dict]) -> list[dict]:
    """The ok rows of the manifest as planned samples: clip_id, video_id, curriculum_stage,
    the record's JSON (exactly what the shard will hold), clip size and hash, and fingerprints.
    A clip's hash is reused from the previous index while its size and mtime are unchanged
    (as git's index does), so a rerun does not read every clip again."""
    rows = []
    clips = out.stats("clips")  # one listing, not one request per clip
    for r in out.read_table("manifest.parquet", schema=SCHEMA).to_pylist():
        if r["status"] != "ok":
            continue
        size, mtime = clips[f"{r['clip_id']}.mp4"]
        old = previous.get(r["clip_id"])
        same = old and old["clip_bytes"] == size and old["clip_mtime_ns"] == mtime
        clip_hash = old["clip_hash"] if old and same and old["clip_hash"] else file_hash(out, clip_key(r["clip_id"]))
        record = json.dumps(r, sort_keys=True)
        record_hash = record_digest(r)
        rows.append(
            {
                "clip_id": r["clip_id"],
                "video_id": r["video_id"],
                "curriculum_stage": r["curriculum_stage"],
                "record": record,
                "record_hash": record_hash,
                "clip_bytes": size,
                "clip_mtime_ns": mtime,
                "clip_hash": clip_hash,
                "frames": ClipRecord.from_row(r).frames_in_clip,
                "fps": r["fps"],
                "fingerprint": digest(r["clip_id"], record_hash, clip_hash),
            }
        )
    return rows


def shard_fingerprint(spec: dict, thumb_width: int) -> str:
    """What a shard must hold: its samples in order, with their content, in this format."""
    return digest(FORMAT, str(thumb_width), *(m["fingerprint"] for m in spec["members"]))


def members_of(tar: Path | io.IOBase) -> list[str]:
    """The sample keys of a finished shard (a path or an open file), in order (reads tar headers only)."""
    with tar_reader(tar) as t:
        return list(dict.fromkeys(n.split(".", 1)[0] for n in t.getnames()))


def member_end(m: tarfile.TarInfo) -> int:
    """Where a tar member's data ends, padded to the tar's block size."""
    return m.offset_data + -(-m.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE


def sample_ranges(tar: Path | io.IOBase) -> dict[str, tuple[int, int]]:
    """Each sample's byte range in a finished shard (a path or an open file), its headers
    included: key -> (offset, length). Reads the tar headers only (tarfile seeks past the
    members' data)."""
    ranges: dict[str, tuple[int, int]] = {}
    with tar_reader(tar) as t:
        for m in t:
            key = m.name.split(".", 1)[0]
            start = ranges[key][0] if key in ranges else m.offset
            ranges[key] = (start, member_end(m) - start)
    return ranges


def tar_reader(tar: Path | io.IOBase) -> tarfile.TarFile:
    return tarfile.open(tar) if isinstance(tar, (str, Path)) else tarfile.open(fileobj=tar)


def written_fingerprint(tar: Path | io.IOBase) -> str:
    """The fingerprint a finished shard (a path or an open file) was written with ('' if none):
    its first header only."""
    try:
        with tar_reader(tar) as t:
            return t.pax_headers.get(FINGERPRINT, "")
    except (tarfile.TarError, OSError):
        return ""


def write_shard(spec: dict, out: Store, thumb_width: int = 384) -> dict:
    """Write one planned shard (a plain function; Ray wraps it) with the records the plan
    carries. Written with tarfile itself rather than webdataset's TarWriter, which cannot add
    the PAX global header that holds the fingerprint; the samples are plain WebDataset members."""

    def samples():
        for m in spec["members"]:
            clip = clip_key(m["clip_id"])
            data = out.read_bytes(clip)
            if hashlib.blake2b(data, digest_size=16).hexdigest() != m["clip_hash"]:
                raise RuntimeError(f"{out.url(clip)} changed after the shard plan was made; run pks shard again")
            thumb = middle_frame_jpeg(Path(out.path(clip)) if out.local else io.BytesIO(data), thumb_width)
            yield m["clip_id"], {"mp4": data, "json": m["record"].encode(), "jpg": thumb}

    write_tar(f"shards/{spec['name']}", spec["fingerprint"], samples(), out)
    return {"name": spec["name"], "samples": len(spec["members"]), "why": spec["why"]}


def write_tar(final: Path | str, fingerprint: str, samples, out: Store | None = None) -> None:
    """A WebDataset tar of (key, {ext: bytes}) samples with the fingerprint in a PAX global
    header, at a path (or a key of `out`), written under a temporary name and renamed (or
    uploaded whole) when complete."""
    out, final = (out, str(final)) if out else (as_store(Path(final).parent), Path(final).name)
    with (
        out.writing(final) as tmp,
        tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT, pax_headers={FINGERPRINT: fingerprint}) as tar,
    ):
        for key, members in samples:
            for ext, payload in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mode, info.mtime = len(payload), 0o444, 0  # same bytes on every rerun
                tar.addfile(info, io.BytesIO(payload))


def why_rewrite(out: Store, spec: dict, previous: dict[str, dict]) -> str:
    """'' when the finished shard is exactly the planned one; else why it must be (re)written."""
    tar = f"shards/{spec['name']}"
    if not out.exists(tar):
        return "new"
    with out.open(tar) as f:
        fingerprint = written_fingerprint(f)
    if fingerprint == spec["fingerprint"]:
        return ""
    if not fingerprint:
        return "no fingerprint (torn, or written by an older PKS)"
    keys = [m["clip_id"] for m in spec["members"]]
    with out.open(tar) as f:
        members = members_of(f)
    if members != keys:
        return "other samples"
    old = [previous.get(k) or {} for k in keys]
    if any(o.get("record_hash") != m["record_hash"] for o, m in zip(old, spec["members"])):
        return "records changed"
    if any(o.get("clip_hash") != m["clip_hash"] for o, m in zip(old, spec["members"])):
        return "clips changed"
    return "format or thumbnail settings changed"


def _ray_write(spec: dict, out: Store, thumb_width: int) -> dict:
    return write_shard(spec, out, thumb_width)


def record_digest(row: dict) -> str:
    """A manifest row's hash, blind to empty fields (null, "", []): a column added to the record
    later (read as null from older manifests, written empty by newer code) leaves the hashes of
    existing shards as they were."""
    return digest(json.dumps({k: v for k, v in row.items() if v is not None and v != "" and v != []}, sort_keys=True))


def stale_samples(out) -> tuple[int, int]:
    """(stale, sharded) for OUT's shards against its manifest: a sample is stale when its record
    changed after `pks shard` wrote it (a caption, an audit correction, a Judge score, a
    re-stage) or its clip is no longer ok; an ok clip that no shard holds counts too."""
    out = as_store(out)
    held = {
        r["clip_id"]: r["record_hash"]
        for r in out.read_table("shards/index.parquet", columns=["clip_id", "record_hash"]).to_pylist()
    }
    current = {
        r["clip_id"]: record_digest(r)
        for r in out.read_table("manifest.parquet", schema=SCHEMA).to_pylist()
        if r["status"] == "ok"
    }
    return sum(current.get(c) != h for c, h in held.items()) + sum(c not in held for c in current), len(held)


def read_index(out: Store) -> dict[str, dict]:
    """The previous index by clip_id ({} when there is none, or one from before fingerprints)."""
    if not out.exists("shards/index.parquet"):
        return {}
    table = out.read_table("shards/index.parquet")
    if "clip_hash" not in table.column_names:
        return {}
    return {r["clip_id"]: r for r in table.to_pylist()}


def shard_run(out: Path | Store, cfg: JobConfig, progress=None) -> dict:
    """Judge, plan and write the shards of a finished run; then the index. Resumable; keeps
    every shard that already holds exactly its planned samples and content. A Ray it starts
    is stopped when it ends. `progress` takes its lines (default: this module's log)."""
    with ray_scope():
        return write_shards(as_store(out), cfg, progress)


def write_shards(out: Store, cfg: JobConfig, progress=None) -> dict:
    import ray

    say = progress or log.info
    sc = cfg.shard
    if not (Path(out.path("parts")).is_dir() if out.local else out.list("parts")):
        raise UserError(f"no curated run in {out.url()} (run pks curate first)")
    set_aside_bad_parts(out, progress)
    clips = set(out.list("clips"))
    kept = duplicates(out, cfg)  # from the parts: the manifest may predate them
    for _ in rewrite_parts(out, cfg, lambda rs: judge(rs, clips, sc, kept)):  # rejections land in the manifest
        pass
    previous = read_index(out)
    rows = samples(out, previous)
    shards = plan(rows, sc, kept)
    for s in shards:
        s["fingerprint"] = shard_fingerprint(s, sc.thumb_width)
    existing = out.find("shards")
    for stale in existing:  # left by a killed run (an object store never holds one: no partial PUT)
        if TMP_MARK in Path(stale).name:
            out.remove(stale)
    for s in shards:
        s["why"] = why_rewrite(out, s, previous)
    todo = [s for s in shards if s["why"]]
    for s in shards:
        if not s["why"]:
            log.debug(f"  {s['name']}: kept")
    why = dict(Counter(s["why"] for s in todo))
    say(
        f"pks shard: {len(rows)} clip(s) in {len(shards)} shard(s): {len(shards) - len(todo)} kept, "
        f"{len(todo)} to write" + (f" ({', '.join(f'{n} {w}' for w, n in why.items())})" if todo else "")
    )
    if todo:
        init_ray(cfg, logs_of(out))
        ds: ray.data.Dataset = ray.data.from_items(todo, override_num_blocks=len(todo))
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
    ranges = {}
    for s in shards:  # kept shards too: headers only
        with out.open(f"shards/{s['name']}") as f:
            ranges[s["name"]] = sample_ranges(f)
    index = [
        {
            "clip_id": m["clip_id"],
            "video_id": m["video_id"],
            "split": s["split"],
            "stage": s["stage"],
            "shard": s["name"],
            "position": i,
            **{k: m[k] for k in ("clip_bytes", "clip_mtime_ns", "clip_hash", "record_hash", "frames", "fps")},
            **dict(zip(("offset", "length"), ranges[s["name"]][m["clip_id"]])),
        }
        for s in shards
        for i, m in enumerate(s["members"])
    ]
    with out.writing("shards/index.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(index, schema=INDEX_SCHEMA), tmp)
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
    per = {
        f"{sp}/stage-{k}": sum(1 for x in index if (x["split"], x["stage"]) == (sp, k))
        for sp in SPLITS
        for k in range(4)
    }
    return {
        "shards": len(shards),
        "kept": len(shards) - len(todo),
        "new": why.pop("new", 0),
        "rewritten": sum(why.values()),
        "removed": removed,
        "why": why,
        "samples": len(index),
        "per_split_stage": {k: v for k, v in per.items() if v},
        "index": out.url("shards/index.parquet"),
    }
