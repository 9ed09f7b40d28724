"""`pks curate`: the Ray Data job from raw footage to OUT/manifest.parquet and OUT/clips/.

A video up to split.segment_s long is one unit of work: ingest (probe) -> split (shot
detection) -> clip records -> clips cut to mp4 and analysed from one decode. A longer one is
split into segments detected in parallel and groups of shots cut in parallel
(pipelines/segments.py). Either way a video's records go to OUT/parts/{video_id}.parquet under
a temporary name, renamed when complete, so a rerun (or a resume after kill -9) skips
finished videos and never duplicates a record; the manifest is rebuilt from the parts.
OUT may be an object-store URL (pks.store): there the worker writes into a scratch folder,
uploads the clips, then the part (one PUT, the video's commit).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from annotators.caption.backends import make_backend
from annotators.caption.captioner import CAPTION_ERROR, caption_records
from annotators.shots import get_detector
from annotators.signals import analyse
from annotators.signals.dedupe import find_duplicates
from annotators.signals.embed import embedder, semantic_duplicates
from pipelines.clipwork import clip_pass
from pipelines.segments import clip_records, run_videos
from pipelines.shard import SHARD_REJECT
from pks.config import load_config
from pks.decode import decode_small
from pks.errors import UserError
from pks.probe import ProbeError, VideoInfo, content_hash, list_inputs, probe
from pks.record import SCHEMA, ClipRecord, read_parquet, write_parquet
from pks.timing import frame_times
from pks.store import (Store, as_store, atomic_path, first_line, input_options, input_stamp, is_url, open_input,
                       staged)


UNREADABLE = "path-"  # the video_id of a file that could not be read: this prefix + a hash of its path


def video_key(path: str, out: Store | None = None) -> str:
    """The video_id: the content hash, or for an unreadable file a hash of its path. A URL is
    read from its store (with OUT's storage options when it shares OUT's protocol)."""
    try:
        if is_url(path):
            with open_input(path, out) as f:
                return content_hash(f)
        return content_hash(path)
    except OSError:
        return UNREADABLE + hashlib.blake2b(path.encode(), digest_size=6).hexdigest()


def ingest(path: str, vid: str) -> VideoInfo | ClipRecord:
    """Probe one video: its VideoInfo, or an error record saying why it is unusable."""
    if vid.startswith(UNREADABLE):
        return ClipRecord(video_id=vid, source_path=path, status="error", error="cannot read file")
    try:
        return probe(path, video_id=vid)
    except ProbeError as e:
        return ClipRecord(video_id=vid, source_path=path, status="error", error=str(e))
    except OSError as e:  # gone since it was hashed, or a remote input that could not be fetched
        return ClipRecord(video_id=vid, source_path=path, status="error", error=f"cannot read file: {e}")


def split(info: VideoInfo, cfg: dict) -> list[ClipRecord]:
    """Detect shots and turn them into clip records (or one rejected record if none is long enough)."""
    sc = cfg["split"]
    detector = get_detector(sc["detector"], **(sc.get("params") or {}))
    frames = decode_small(info.path, detector.frame_size)
    boundaries = detector.detect(frames.rgb, info.avg_fps) if len(frames.rgb) else []
    return clip_records(info, boundaries, len(frames.rgb), frames.filled, sc)


def stage_error(stage: str, e: Exception) -> str:
    """An error reason naming the stage, the exception and where it was raised (a bug's
    location is what its reader needs first)."""
    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{stage}: {type(e).__name__}: {e}{where}"


def analyse_one(r: ClipRecord, frames, out: Path, cfg: dict) -> ClipRecord:
    """The analysis fields of one ok record, from its frames (pipelines.clipwork decodes them)."""
    fields = analyse(frames, cfg)
    fields["quality_flags"] = sorted(set(r.quality_flags) | set(fields["quality_flags"]))
    ce = cfg["analyse"]["clip_embeddings"]
    if ce.get("checkpoint"):  # semantic embedding, kept beside the manifest for the duplicate search
        vec = embedder(ce["arch"], str(ce["checkpoint"])).embed(frames.rgb)
        # a temporary name per attempt: a retry may run beside the attempt it replaces
        with atomic_path(out / "embeddings" / f"{r.clip_id}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, vec.astype(np.float32))
    return dataclasses.replace(r, **fields)


def caption_clips(records: list[ClipRecord], out: Path, cfg: dict) -> list[ClipRecord]:
    """Caption ok records; if the stage fails as a whole, each clip is tried alone so the
    failure lands on the clip that caused it."""
    backend = worker_backend(cfg)
    try:
        return caption_records(records, out, backend, cfg)
    except Exception:  # noqa: BLE001
        result = []
        for r in records:
            try:
                result += caption_records([r], out, backend, cfg)
            except Exception as e:  # noqa: BLE001
                result.append(r.error_copy(stage_error(CAPTION_ERROR.rstrip(": "), e)))
        return result


_BACKENDS: dict[str, object] = {}


def worker_backend(cfg: dict):
    """One caption backend per worker process and caption config: a local model loads once,
    not once per video."""
    key = json.dumps(cfg["caption"], sort_keys=True)
    if key not in _BACKENDS:
        _BACKENDS[key] = make_backend(cfg)
    return _BACKENDS[key]


def retry_copy(r: ClipRecord) -> ClipRecord:
    """A clip-level error record made ok again, so the stages that failed run once more."""
    return dataclasses.replace(r, status="ok", error="")


def clip_stages(info: VideoInfo, records: list[ClipRecord], out: Path, cfg: dict, grid=None) -> list[ClipRecord]:
    """Cut, analyse and caption `records` (the ok ones); each failure stays on its clip. Cut
    and analysis share one decode of the records' span (seeking to it with a `grid`, see
    pks.seek)."""
    times = frame_times(info.path) if info.vfr else None  # a variable-rate source: clips resampled by them
    records = clip_pass(info.path, info.rotation, records, out, cfg,
                        lambda r, frames: analyse_one(r, frames, out, cfg), grid, times)
    if cfg["caption"]["captioner"] != "none" and not worker_backend(cfg).batch:
        records = caption_clips(records, out, cfg)
    return records


def process_video(path: str, vid: str, out: Path, cfg: dict,
                  previous: list[ClipRecord] | None = None) -> list[ClipRecord]:
    """All stages for one video, as a plain function. `previous` holds the video's records from
    an earlier run: its clip-level error records are retried and every other record is kept as
    it is. Whole-video errors are only for whole-video causes (unreadable file, no frames, shot
    detection failing); a stage failing on one clip becomes that clip's error record."""
    got = ingest(path, vid)
    if isinstance(got, ClipRecord):
        return [got]
    if previous and not any(r.whole_video for r in previous if r.status == "error"):
        retry = {i for i, r in enumerate(previous) if r.status == "error"}
        redone = iter(clip_stages(got, [retry_copy(previous[i]) for i in sorted(retry)], out, cfg))
        return [next(redone) if i in retry else r for i, r in enumerate(previous)]
    try:
        records = split(got, cfg)
    except Exception as e:  # noqa: BLE001 (shot detection reads the whole video: its failure is the video's)
        return [ClipRecord(video_id=vid, source_path=path, fps=got.avg_fps, width=got.width, height=got.height,
                           status="error", error=stage_error("split", e))]
    return clip_stages(got, records, out, cfg)


def part_key(video_id: str) -> str:
    return f"parts/{video_id}.parquet"


def part_path(out: Path, video_id: str) -> Path:
    return Path(out) / part_key(video_id)


def write_part(out: Path | Store, video_id: str, records: list[ClipRecord]) -> None:
    """Atomically write one video's records: readers see all of them or none."""
    with as_store(out).writing(part_key(video_id)) as tmp:
        write_parquet(records, tmp)


def read_part(out: Path | Store, video_id: str) -> list[ClipRecord]:
    return [ClipRecord.from_row(r) for r in as_store(out).read_table(part_key(video_id), schema=SCHEMA).to_pylist()]


def with_source(records: list[ClipRecord] | None, path: str) -> list[ClipRecord] | None:
    """The records with source_path `path` (a remote input is processed from a local copy)."""
    return records and [dataclasses.replace(r, source_path=path) for r in records]


def ray_task(row: dict, out: str | Store, cfg: dict) -> dict:
    """The thin Ray wrapper: run one video (or retry its errors), persist its part, return a
    one-line summary."""
    t0 = time.perf_counter()
    out = as_store(out)
    retry = row.get("retry") and out.exists(part_key(row["video_id"]))
    previous = read_part(out, row["video_id"]) if retry else None
    with staged(out, row["path"]) as (work, source):  # clips are in OUT when this block ends
        (work / "clips").mkdir(exist_ok=True)  # a scratch folder standing for a remote OUT starts empty
        records = process_video(source, row["video_id"], work, cfg, with_source(previous, source))
    records = with_source(records, row["path"])
    write_part(out, row["video_id"], records)
    retried = sum(r.status == "error" for r in previous) if previous else 0
    return {"path": row["path"], "video_id": row["video_id"], "n_records": len(records), "retried": retried,
            "n_ok": sum(r.status == "ok" for r in records), "n_errors": sum(r.status == "error" for r in records),
            "error": next((r.error for r in records if r.status == "error"), ""),
            "frames": max((r.end_frame for r in records), default=0), "seconds": time.perf_counter() - t0}


def parts_of(out: Store) -> list[str]:
    """The keys of the finished parts, sorted."""
    return [f"parts/{n}" for n in out.list("parts") if n.endswith(".parquet")]


def set_aside_bad_parts(out: Store, progress=print) -> int:
    """Move each part that does not read (a power loss can leave a renamed part empty or torn)
    to OUT/parts/bad/, saying so in one line: its video then has no part, so pks curate
    processes it again (on this run when called before `plan`), and no reader of the parts
    stumbles on it. Reads each part's footer. Returns how many were moved."""
    moved = 0
    for p in parts_of(out):
        try:
            with out.open(p) as f:
                pq.read_metadata(f)
        except pa.ArrowInvalid as e:  # not Parquet (a store that cannot be read raises OSError, and stops the run)
            out.move(p, f"parts/bad/{Path(p).name}")
            progress(f"pks: warning: {out.url(p)} does not read ({first_line(e)}); moved to parts/bad/, "
                     "pks curate processes its video again")
            moved += 1
    return moved


def duplicates(out: Path | Store, cfg: dict, parts: list[str] | None = None) -> dict[str, str]:
    """{clip_id: the clip kept of its near-duplicate group} for every clip that nearly repeats
    another; the group's earliest clip_id (smallest video_id, then start_frame) is the one kept.
    Searched over ok clips and the shard stage's rejections (which it judges again), so a
    duplicate the shard stage rejected stays one. A part at a time (plus a hash per clip)."""
    out = as_store(out)
    sigs = []
    for p in parts_of(out) if parts is None else parts:
        t = out.read_table(p, columns=["clip_id", "phash", "status", "error"]).to_pylist()
        sigs += [(r["clip_id"], r["phash"]) for r in t if r["phash"] and (
            r["status"] == "ok" or r["error"].startswith(SHARD_REJECT))]
    sigs.sort()  # both searches point each duplicate at an earlier clip: the earliest is kept
    dupes = find_duplicates(sigs, cfg["analyse"]["duplicate_bits"])
    have = set(out.list("embeddings"))
    emb = [(cid, f"embeddings/{cid}.npy") for cid, _ in sigs if f"{cid}.npy" in have]
    if emb:  # semantic near-duplicates (OpenCLIP) that the hashes did not already catch
        vecs = np.stack([np.load(io.BytesIO(out.read_bytes(p))) for _, p in emb])
        similarity = cfg["analyse"]["clip_embeddings"]["similarity"]
        for cid, other in semantic_duplicates([c for c, _ in emb], vecs, similarity).items():
            dupes.setdefault(cid, other)

    def kept(cid: str) -> str:  # a semantic match can point at a hash duplicate: follow it to the group's first
        while cid in dupes:
            cid = dupes[cid]
        return cid

    return {cid: kept(cid) for cid in dupes}


def build_manifest(out: Path | Store, cfg: dict) -> dict[str, int]:
    """Stream all finished parts into OUT/manifest.parquet (atomically); count statuses and
    mark near-duplicates across videos (`duplicate`, duplicate_of the clip kept of the group).
    One part in memory at a time, so memory does not grow with the length of the footage."""
    out = as_store(out)
    parts = parts_of(out)
    dupes = duplicates(out, cfg, parts)
    counts = {"ok": 0, "rejected": 0, "error": 0}
    with out.writing("manifest.parquet") as tmp, pq.ParquetWriter(tmp, SCHEMA) as writer:
        for p in parts:
            table = out.read_table(p, schema=SCHEMA)
            if dupes and any(c in dupes for c in table.column("clip_id").to_pylist()):
                rows = table.to_pylist()
                for r in rows:
                    if r["clip_id"] in dupes:
                        r["duplicate_of"] = dupes[r["clip_id"]]
                        r["quality_flags"] = sorted(set(r["quality_flags"]) | {"duplicate"})
                table = pa.Table.from_pylist(rows, schema=SCHEMA)
            writer.write_table(table)
            for status in table.column("status").to_pylist():
                counts[status] += 1
    return counts


def rewrite_parts(out: Path | Store, cfg: dict, fn):
    """Apply `fn` to each finished part's records, rewrite the part atomically, and yield the
    new records; the manifest is rebuilt once every part is done."""
    for p in parts_of(as_store(out)):
        stem = Path(p).stem
        records = fn(read_part(out, stem))
        write_part(out, stem, records)
        yield stem, records
    build_manifest(out, cfg)


def restage(out: Path, cfg: dict) -> dict[int, int]:
    """Recompute curriculum_stage of every record under new thresholds, part by part
    (atomically), then rebuild the manifest. Returns clips per stage (ok clips)."""
    from annotators.signals.curriculum import stage

    def restaged(records):
        for r in records:
            if r.status == "ok" and r.deformation_score is not None:
                r.curriculum_stage = stage(r.deformation_score, r.motion_score, cfg["curriculum"])
        return records

    per_stage = {k: 0 for k in range(4)}
    for _, records in rewrite_parts(out, cfg, restaged):
        for r in records:
            if r.status == "ok" and r.deformation_score is not None:
                per_stage[r.curriculum_stage] += 1
    return per_stage


def ray_up() -> bool:
    ray = sys.modules.get("ray")  # not imported: not started (and not worth importing to ask)
    return ray is not None and ray.is_initialized()


@contextlib.contextmanager
def ray_scope():
    """For a library call (run, caption_run, shard_run): stop, when it ends, the Ray it started
    (init_ray starts one where work needs it); a Ray that was up before, the caller's, keeps
    running."""
    was_up = ray_up()
    try:
        yield
    finally:
        if not was_up and ray_up():
            sys.modules["ray"].shutdown()


@ray_scope()
def caption_run(out: Path | Store, cfg: dict, progress=print) -> dict[str, int]:
    """Caption (or finish captioning) an existing run in place, part by part; resumable.
    A batch backend (vllm) gets groups of parts in one pass, so its engines load once per
    group, not once per video; a kill loses at most the group in flight."""
    store = as_store(out)  # pks curate passes its Store: captioning reads clips from a local OUT
    if not store.local:
        raise UserError(f"captioning needs a local OUT, got {store.url()}")
    out = Path(store.path())
    backend = make_backend(cfg)
    progress(f"pks caption: captioner {backend.source}")
    set_aside_bad_parts(store, progress)
    counts = {"captioned": 0, "errors": 0}

    def tally(stem: str, records: list[ClipRecord]) -> None:
        counts["captioned"] += sum(r.status == "ok" and r.caption is not None for r in records)
        counts["errors"] += sum(r.status == "error" and r.error.startswith(CAPTION_ERROR) for r in records)
        progress(f"  {stem}: {counts['captioned']} captioned, {counts['errors']} caption errors so far")

    if not backend.batch:
        for stem, records in rewrite_parts(out, cfg, lambda rs: caption_records(rs, out, backend, cfg)):
            tally(stem, records)
        return counts
    init_ray(cfg)
    group_size = (cfg["caption"].get("vllm") or {}).get("group_clips", 4096)
    group: list[tuple[str, list[ClipRecord]]] = []
    parts = sorted((out / "parts").glob("*.parquet"))
    for n, p in enumerate(parts):
        group.append((p.stem, read_parquet(p)))
        if sum(len(rs) for _, rs in group) < group_size and n + 1 < len(parts):
            continue
        captioned = iter(caption_records([r for _, rs in group for r in rs], out, backend, cfg))
        for stem, rs in group:
            records = [next(captioned) for _ in rs]
            write_part(out, stem, records)
            tally(stem, records)
        group = []
    build_manifest(out, cfg)
    return counts


def init_ray(cfg: dict) -> None:
    import ray

    if ray.is_initialized():
        return
    address = cfg["ray"].get("address") or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        ray.init(num_cpus=cfg["ray"].get("num_cpus"), include_dashboard=False,
                 log_to_driver=False, configure_logging=True, logging_level="WARNING")


INPUT_KEYS = "input_keys.jsonl"  # OUT/: path, size, mtime_ns (or version) -> video_id, from earlier runs


def hash_inputs(paths: list[str], out: Store, cfg: dict) -> list[str]:
    """The video_ids of `paths`, hashed as Ray tasks (where the inputs are read: on the nodes,
    from their store), so a first run is not bound by one driver reading every byte. Local
    files without a cluster are hashed here: one disk, and Ray's task start costs more than
    it saves (6 x 96 MB: 0.8 s here, 2.0 s as tasks on 2 CPUs)."""
    cluster = cfg["ray"].get("address") or os.environ.get("RAY_ADDRESS")
    if len(paths) < 2 or not (cluster or any(is_url(p) for p in paths)):
        return [video_key(p, out) for p in paths]
    import ray

    init_ray(cfg)
    task = ray.remote(num_cpus=1)(video_key)
    return ray.get([task.remote(p, out) for p in paths])


def video_keys(paths: list[str], out: Path | Store, hash_many=None) -> dict[str, str]:
    """The video_id of every input, reusing an earlier run's content hash while a file's size and
    mtime (an object's size and ETag) are unchanged (as git's index does), so a rerun hashes
    only new or changed inputs; `hash_many` hashes those (default: one after another here)."""
    out = as_store(out)
    # later lines win; a line torn by a kill is skipped, so that file is hashed again
    cache = {e["path"]: e for e in out.read_jsonl(INPUT_KEYS) if "path" in e and "video_id" in e}
    keys, fresh = {}, []
    for p in paths:
        try:
            stamp = input_stamp(p, out)
        except OSError:
            keys[p] = video_key(p, out)  # unreadable: a key from its path, nothing to cache
            continue
        e = cache.get(p)
        if e and all(e.get(k) == v for k, v in stamp.items()):
            keys[p] = e["video_id"]
            continue
        fresh.append({"path": p, **stamp})
    hashes = (hash_many or (lambda ps: [video_key(p, out) for p in ps]))([e["path"] for e in fresh])
    for e, vid in zip(fresh, hashes):
        e["video_id"] = keys[e["path"]] = vid
    # a failed read is never remembered (it may be transient): that file is read again next run
    read = [e for e in fresh if not e["video_id"].startswith(UNREADABLE)]
    if read:  # appended (an object is rewritten whole): later lines win when read back
        out.append_text(INPUT_KEYS, "".join(json.dumps(e) + "\n" for e in read))
    return keys


def plan(paths: list[str], out: Path | Store, dedupe: bool = True, retry_errors: bool = True,
         hash_many=None) -> tuple[list[dict], int]:
    """Which inputs still need work: videos without a finished part, and (with retry_errors)
    videos whose part holds error records; finished videos and duplicate content are skipped."""
    out = as_store(out)
    parts = {Path(p).stem: p for p in parts_of(out)}
    keys = video_keys(paths, out, hash_many)
    todo, seen, skipped = [], set(), 0
    for p in paths:
        vid = keys[p]
        retry = vid in parts and retry_errors and "error" in out.read_table(parts[vid], columns=["status"]).column(
            "status").to_pylist()
        if (vid in parts and not retry) or (dedupe and vid in seen):
            skipped += 1
            continue
        seen.add(vid)
        todo.append({"path": p, "video_id": vid, "retry": retry})
    return todo, skipped


def remove_orphan_clips(out: Path | Store) -> int:
    """Delete clip files that no record points to (left by a failed or killed video, or by an
    earlier run of other settings), and the temporary files of killed writes."""
    out = as_store(out)
    known = set()
    for p in parts_of(out):
        known.update(out.read_table(p, columns=["clip_id"]).column("clip_id").to_pylist())
    removed = 0
    for name in out.list("clips"):
        if name.endswith(".part") or (name.endswith(".mp4") and name[:-4] not in known):
            out.remove(f"clips/{name}")
            removed += 1
    return removed


@ray_scope()
def run(input_spec: str, out: str | Path, cfg: dict | None = None, progress=print, retry_errors: bool = True,
        storage_options: dict | None = None) -> dict:
    """Run the job. Returns counts: inputs, skipped (already done or duplicate), processed,
    retried (videos whose error records were tried again), records... OUT may be a local
    folder or an object-store URL; `storage_options` are fsspec options for OUT's protocol."""
    cfg = cfg or load_config()  # load_config validated it: nothing below fails on a config value
    backend = make_backend(cfg) if cfg["caption"]["captioner"] != "none" else None
    out = as_store(out, storage_options)
    if backend and backend.batch and not out.local:
        raise UserError(f"captioner {cfg['caption']['captioner']} needs a local OUT (it captions the run in place)")
    # a bad input spec is a user error, before OUT is touched
    paths = list_inputs(input_spec, input_options(out, input_spec))
    out.check()  # a missing bucket, refused credentials: one line, before any work
    if out.local:
        (Path(out.root) / "parts").mkdir(parents=True, exist_ok=True)
        (Path(out.root) / "clips").mkdir(exist_ok=True)
    set_aside_bad_parts(out, progress)  # before the plan: their videos are processed again now
    todo, skipped = plan(paths, out, cfg["ingest"].get("dedupe", True), retry_errors,
                         hash_many=functools.partial(hash_inputs, out=out, cfg=cfg))
    if backend:
        note = " (no endpoint/model configured: measured tags only, no narrative)" if backend.source == "signals" else ""
        progress(f"pks curate: captioner {backend.source}{note}")
    retrying = sum(t["retry"] for t in todo)
    progress(f"pks curate: {len(paths)} input(s), {skipped} already done or duplicate, {len(todo)} to process"
             + (f" ({retrying} to retry their errors; --no-retry-errors skips them)" if retrying else ""))
    t0 = time.perf_counter()
    done, frames = 0, 0
    if todo:
        init_ray(cfg)
        for s in run_videos(todo, out, cfg):  # streamed: only summaries (and a long video's records) reach the driver
            done += 1
            frames += s["frames"]
            what = (f"retried {s['retried']} error(s), " if s["retried"] else "") + f"{s['n_ok']} clip(s) ok"
            what += f", {s['n_errors']} error(s), first: {s['error']}" if s["n_errors"] else ""
            what += f", in {s['segments']} segments" if s.get("segments") else ""
            progress(f"  [{done}/{len(todo)}] {Path(s['path']).name}: {what} ({s['seconds']:.1f}s)")
    elapsed = time.perf_counter() - t0
    orphans = remove_orphan_clips(out)
    if orphans:
        progress(f"pks curate: removed {orphans} clip file(s) no record points to")
    if backend and backend.batch:  # after every video: one pass over the new clips (cached ones skip)
        init_ray(cfg)
        caption_run(out, cfg, progress)
    counts = build_manifest(out, cfg)
    summary = {"inputs": len(paths), "skipped": skipped, "processed": done, "retried": retrying,
               "records": sum(counts.values()),
               "ok": counts["ok"], "rejected": counts["rejected"], "errors": counts["error"],
               "source_frames_per_s": round(frames / elapsed, 1) if done else None,
               "manifest": out.url("manifest.parquet")}
    log_run(out, {"job": "curate", "seconds": round(elapsed, 2), "videos": done, "source_frames": frames,
                  "source_frames_per_s": summary["source_frames_per_s"], "ok": counts["ok"]})
    if cfg["shard"]["enabled"] and cfg["clips"]["write"]:
        from pipelines.shard import shard_run

        t1 = time.perf_counter()
        summary["shards"] = shard_run(out, cfg, progress)
        log_run(out, {"job": "shard", "seconds": round(time.perf_counter() - t1, 2),
                      **{k: summary["shards"][k] for k in ("samples", "kept", "new", "rewritten", "removed")}})
        summary.update(status_counts(out))
    return summary


def status_counts(out: Path | Store) -> dict[str, int]:
    statuses = as_store(out).read_table("manifest.parquet", columns=["status"]).column("status").to_pylist()
    return {"ok": statuses.count("ok"), "rejected": statuses.count("rejected"), "errors": statuses.count("error")}


def log_run(out: Path | Store, entry: dict) -> None:
    """Append one line per job to OUT/runs.jsonl: the throughput the report shows."""
    as_store(out).append_text("runs.jsonl", json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **entry}) + "\n")
