"""`pks curate`: the Ray Data job from raw footage to OUT/manifest.parquet and OUT/clips/.

One video is one unit of work: ingest (probe) -> split (shot detection) -> clip records ->
clips cut to mp4. The worker writes the video's records to OUT/parts/{video_id}.parquet under
a temporary name and renames it when complete, so a rerun (or a resume after kill -9) skips
finished videos and never duplicates a record; the manifest is rebuilt from the parts.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from annotators.caption.backends import make_backend
from annotators.caption.captioner import CAPTION_ERROR, caption_records
from annotators.shots import get_detector, shots_from_boundaries
from annotators.signals import analyse, load_clip
from annotators.signals.dedupe import find_duplicates
from annotators.signals.embed import embedder, semantic_duplicates
from pks.clips import clip_path, write_clips
from pks.config import load_config
from pks.decode import decode_small
from pks.probe import ProbeError, VideoInfo, content_hash, list_inputs, probe
from pks.record import SCHEMA, ClipRecord, read_parquet, write_parquet


def video_key(path: str) -> str:
    """The video_id: the content hash, or for an unreadable file a hash of its path."""
    try:
        return content_hash(path)
    except OSError:
        return "path-" + hashlib.blake2b(path.encode(), digest_size=6).hexdigest()


def ingest(path: str, vid: str) -> VideoInfo | ClipRecord:
    """Probe one video: its VideoInfo, or an error record saying why it is unusable."""
    if vid.startswith("path-"):
        return ClipRecord(video_id=vid, source_path=path, status="error", error="cannot read file")
    try:
        return probe(path, video_id=vid)
    except ProbeError as e:
        return ClipRecord(video_id=vid, source_path=path, status="error", error=str(e))


def split(info: VideoInfo, cfg: dict) -> list[ClipRecord]:
    """Detect shots and turn them into clip records (or one rejected record if none is long enough)."""
    sc = cfg["split"]
    detector = get_detector(sc["detector"], **(sc.get("params") or {}))
    frames = decode_small(info.path, detector.frame_size)
    n = len(frames.rgb)
    if n == 0:
        return [ClipRecord(video_id=info.video_id, source_path=info.path, fps=info.avg_fps, width=info.width,
                           height=info.height, status="error", error="no decodable frames")]
    shots = shots_from_boundaries(detector.detect(frames.rgb, info.avg_fps), n, info.avg_fps,
                                  sc["min_shot_s"], sc["max_shot_s"], sc["trim_frames"])
    base = dict(video_id=info.video_id, source_path=info.path, fps=info.avg_fps, width=info.width, height=info.height)
    if not shots:
        return [ClipRecord(**base, end_frame=n, status="rejected",
                           error=f"no shot of at least {sc['min_shot_s']}s", quality_flags=["too_short"])]
    records = []
    for s in shots:
        flags = ["decode_error"] if frames.filled[s.start_frame:s.end_frame].any() else []
        records.append(ClipRecord(**base, start_frame=s.start_frame, end_frame=s.end_frame,
                                  transition_in=s.transition_in, quality_flags=flags))
    return records


def cut(info: VideoInfo, records: list[ClipRecord], out: Path, cfg: dict) -> list[ClipRecord]:
    """Write each ok record's clip; a clip that comes out short becomes an error record."""
    ok = [r for r in records if r.status == "ok"]
    spans = [(r.start_frame, r.end_frame, clip_path(out, r.clip_id)) for r in ok]
    written = write_clips(info.path, spans, info.avg_fps, info.rotation, cfg["clips"]["crf"], cfg["clips"]["preset"])
    result = []
    for r in records:
        path = clip_path(out, r.clip_id)
        if r.status == "ok" and written.get(path, 0) != r.n_frames:
            r = r.error_copy(f"clip has {written.get(path, 0)} of {r.n_frames} frames")
            path.unlink(missing_ok=True)
        result.append(r)
    return result


def analyse_records(records: list[ClipRecord], out: Path, cfg: dict) -> list[ClipRecord]:
    """Fill the analysis fields of every ok record, from its clip file (or the source span)."""
    result = []
    for r in records:
        if r.status != "ok":
            result.append(r)
            continue
        clip_file = clip_path(out, r.clip_id)
        if clip_file.exists():
            frames = load_clip(str(clip_file), width=cfg["analyse"]["width"], fps=r.fps)
        else:
            frames = load_clip(r.source_path, r.start_frame, r.end_frame, cfg["analyse"]["width"], fps=r.fps)
        fields = analyse(frames, cfg)
        fields["quality_flags"] = sorted(set(r.quality_flags) | set(fields["quality_flags"]))
        ce = cfg["analyse"]["clip_embeddings"]
        if ce.get("checkpoint"):  # semantic embedding, kept beside the manifest for the duplicate search
            vec = embedder(ce["arch"], str(ce["checkpoint"])).embed(frames.rgb)
            (out / "embeddings").mkdir(exist_ok=True)
            tmp = out / "embeddings" / f"{r.clip_id}.tmp.npy"
            np.save(tmp, vec.astype(np.float32))
            os.replace(tmp, out / "embeddings" / f"{r.clip_id}.npy")
        result.append(dataclasses.replace(r, **fields))
    return result


_BACKENDS: dict[str, object] = {}


def worker_backend(cfg: dict):
    """One caption backend per worker process and caption config: a local model loads once,
    not once per video."""
    key = json.dumps(cfg["caption"], sort_keys=True)
    if key not in _BACKENDS:
        _BACKENDS[key] = make_backend(cfg)
    return _BACKENDS[key]


def process_video(path: str, vid: str, out: Path, cfg: dict) -> list[ClipRecord]:
    """All stages for one video, as a plain function. Unexpected failures become error rows."""
    got = ingest(path, vid)
    if isinstance(got, ClipRecord):
        return [got]
    try:
        records = split(got, cfg)
        if cfg["clips"]["write"]:
            records = cut(got, records, out, cfg)
        if cfg["analyse"]["enabled"]:
            records = analyse_records(records, out, cfg)
        if cfg["caption"]["captioner"] != "none" and not worker_backend(cfg).batch:
            records = caption_records(records, out, worker_backend(cfg), cfg)
        return records
    except Exception as e:  # one bad video must not end the job; record why
        return [ClipRecord(video_id=vid, source_path=path, fps=got.avg_fps, width=got.width, height=got.height,
                           status="error", error=f"{type(e).__name__}: {e}")]


def part_path(out: Path, video_id: str) -> Path:
    return out / "parts" / f"{video_id}.parquet"


def write_part(out: Path, video_id: str, records: list[ClipRecord]) -> None:
    """Atomically write one video's records: readers see all of them or none."""
    final = part_path(out, video_id)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    write_parquet(records, tmp)
    os.replace(tmp, final)


def ray_task(row: dict, out: str, cfg: dict) -> dict:
    """The thin Ray wrapper: run one video, persist its part, return a one-line summary."""
    t0 = time.perf_counter()
    records = process_video(row["path"], row["video_id"], Path(out), cfg)
    write_part(Path(out), row["video_id"], records)
    return {"path": row["path"], "video_id": row["video_id"], "n_records": len(records),
            "n_ok": sum(r.status == "ok" for r in records), "n_errors": sum(r.status == "error" for r in records),
            "error": next((r.error for r in records if r.status == "error"), ""),
            "frames": max((r.end_frame for r in records), default=0), "seconds": time.perf_counter() - t0}


def build_manifest(out: Path, cfg: dict) -> dict[str, int]:
    """Stream all finished parts into OUT/manifest.parquet (atomically); count statuses and
    mark near-duplicates across videos. One part in memory at a time (plus a hash per clip),
    so memory does not grow with the length of the footage."""
    parts = sorted((out / "parts").glob("*.parquet"))
    sigs = []
    for p in parts:
        t = pq.read_table(p, columns=["clip_id", "phash", "status"]).to_pylist()
        sigs += [(r["clip_id"], r["phash"]) for r in t if r["status"] == "ok" and r["phash"]]
    dupes = find_duplicates(sigs, cfg["analyse"]["duplicate_bits"])
    emb = [(cid, out / "embeddings" / f"{cid}.npy") for cid, _ in sigs]
    emb = [(cid, p) for cid, p in emb if p.exists()]
    if emb:  # semantic near-duplicates (OpenCLIP) that the hashes did not already catch
        vecs = np.stack([np.load(p) for _, p in emb])
        similarity = cfg["analyse"]["clip_embeddings"]["similarity"]
        for cid, other in semantic_duplicates([c for c, _ in emb], vecs, similarity).items():
            dupes.setdefault(cid, other)
    tmp = out / "manifest.parquet.tmp"
    counts = {"ok": 0, "rejected": 0, "error": 0}
    with pq.ParquetWriter(tmp, SCHEMA) as writer:
        for p in parts:
            table = pq.read_table(p, schema=SCHEMA)
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
    os.replace(tmp, out / "manifest.parquet")
    return counts


def rewrite_parts(out: Path, cfg: dict, fn):
    """Apply `fn` to each finished part's records, rewrite the part atomically, and yield the
    new records; the manifest is rebuilt once every part is done."""
    for p in sorted((out / "parts").glob("*.parquet")):
        records = fn(read_parquet(p))
        write_part(out, p.stem, records)
        yield p.stem, records
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


def caption_run(out: Path, cfg: dict, progress=print) -> dict[str, int]:
    """Caption (or finish captioning) an existing run in place, part by part; resumable.
    A batch backend (vllm) gets groups of parts in one pass, so its engines load once per
    group, not once per video; a kill loses at most the group in flight."""
    backend = make_backend(cfg)
    progress(f"pks caption: captioner {backend.source}")
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


def plan(paths: list[str], out: Path, dedupe: bool = True) -> tuple[list[dict], int]:
    """Which inputs still need work: skip finished video_ids and duplicate content."""
    done = {p.stem for p in (out / "parts").glob("*.parquet")}
    todo, seen, skipped = [], set(), 0
    for p in paths:
        vid = video_key(p)
        if vid in done or (dedupe and vid in seen):
            skipped += 1
            continue
        seen.add(vid)
        todo.append({"path": p, "video_id": vid})
    return todo, skipped


def run(input_spec: str, out: str | Path, cfg: dict | None = None, progress=print) -> dict:
    """Run the job. Returns counts: inputs, skipped (already done or duplicate), processed, records..."""
    import ray

    cfg = cfg or load_config()
    get_detector(cfg["split"]["detector"], **(cfg["split"].get("params") or {}))  # fail fast on a bad name
    backend = make_backend(cfg) if cfg["caption"]["captioner"] != "none" else None  # fail fast on bad settings
    out = Path(out).resolve()
    (out / "parts").mkdir(parents=True, exist_ok=True)
    (out / "clips").mkdir(exist_ok=True)
    paths = list_inputs(input_spec)
    todo, skipped = plan(paths, out, cfg["ingest"].get("dedupe", True))
    if backend:
        note = " (no endpoint/model configured: measured tags only, no narrative)" if backend.source == "signals" else ""
        progress(f"pks curate: captioner {backend.source}{note}")
    progress(f"pks curate: {len(paths)} input(s), {skipped} already done or duplicate, {len(todo)} to process")
    t0 = time.perf_counter()
    done, frames = 0, 0
    if todo:
        init_ray(cfg)
        ds = ray.data.from_items(todo, override_num_blocks=len(todo))
        ds = ds.map(ray_task, fn_kwargs={"out": str(out), "cfg": cfg}, num_cpus=1)
        for s in ds.iter_rows():  # streamed: only one-line summaries reach the driver
            done += 1
            frames += s["frames"]
            what = f"{s['n_ok']} clip(s)" + (f", error: {s['error']}" if s["n_errors"] else "")
            progress(f"  [{done}/{len(todo)}] {Path(s['path']).name}: {what} ({s['seconds']:.1f}s)")
    elapsed = time.perf_counter() - t0
    if backend and backend.batch:  # after every video: one pass over the new clips (cached ones skip)
        init_ray(cfg)
        caption_run(out, cfg, progress)
    counts = build_manifest(out, cfg)
    summary = {"inputs": len(paths), "skipped": skipped, "processed": done, "records": sum(counts.values()),
               "ok": counts["ok"], "rejected": counts["rejected"], "errors": counts["error"],
               "source_frames_per_s": round(frames / elapsed, 1) if done else None,
               "manifest": str(out / "manifest.parquet")}
    log_run(out, {"job": "curate", "seconds": round(elapsed, 2), "videos": done, "source_frames": frames,
                  "source_frames_per_s": summary["source_frames_per_s"], "ok": counts["ok"]})
    if cfg["shard"]["enabled"] and cfg["clips"]["write"]:
        from pipelines.shard import shard_run

        t1 = time.perf_counter()
        summary["shards"] = shard_run(out, cfg, progress)
        log_run(out, {"job": "shard", "seconds": round(time.perf_counter() - t1, 2),
                      "samples": summary["shards"]["samples"]})
        summary.update(status_counts(out))
    return summary


def status_counts(out: Path) -> dict[str, int]:
    statuses = pq.read_table(out / "manifest.parquet", columns=["status"]).column("status").to_pylist()
    return {"ok": statuses.count("ok"), "rejected": statuses.count("rejected"), "errors": statuses.count("error")}


def log_run(out: Path, entry: dict) -> None:
    """Append one line per job to OUT/runs.jsonl: the throughput the report shows."""
    with open(out / "runs.jsonl", "a") as f:
        f.write(json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **entry}) + "\n")
