"""`pks curate`: the Ray Data job from raw footage to OUT/manifest.parquet and OUT/clips/. This
module is the driver (plan the inputs, run the videos, caption a run, restage, the run log);
one video's work is pipelines/video.py, the parts and manifest pipelines/parts.py.

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

import functools
import json
import logging
import os
import time
from pathlib import Path

import pyarrow.parquet as pq

from annotators.caption.backends import make_backend
from annotators.caption.captioner import CAPTION_ERROR, caption_records
from pipelines.parts import (
    build_manifest,
    parts_of,
    rewrite_parts,
    set_aside_bad_parts,
    status_counts,
    write_part,
)
from pipelines.raytools import init_ray, logs_of, ray_scope
from pipelines.segments import run_videos
from pipelines.video import UNREADABLE, video_key
from pks.config import load_config
from pks.errors import UserError
from pks.jobconfig import JobConfig
from pks.probe import list_inputs
from pks.progress import bar as progress_bar
from pks.record import ClipRecord, read_parquet
from pks.store import (
    TMP_MARK,
    Store,
    as_store,
    atomic_path,
    input_options,
    input_stamp,
    is_url,
)

log = logging.getLogger(__name__)


def restage(out: Path, cfg: JobConfig) -> dict[int, int]:
    """Recompute curriculum_stage of every record under new thresholds, part by part
    (atomically), then rebuild the manifest. Returns clips per stage (ok clips)."""
    from annotators.signals.curriculum import stage

    def restaged(records):
        for r in records:
            if r.status == "ok" and r.deformation_score is not None:
                r.curriculum_stage = stage(r.deformation_score, r.motion_score, cfg.curriculum)
        return records

    per_stage = {k: 0 for k in range(4)}
    for _, records in rewrite_parts(out, cfg, restaged):
        for r in records:
            if r.status == "ok" and r.deformation_score is not None:
                per_stage[r.curriculum_stage] += 1
    return per_stage


def calibrate_run(out: Path, config: Path | None, write: Path | None, apply: bool, in_place: bool = False) -> dict:
    """Curriculum thresholds from the deformation quartiles of OUT's ok clips. `write`: a new job
    config (the settings of `config`, or none, with the thresholds), written atomically;
    `in_place`: the thresholds set in `config` itself, its comments kept (atomically); `apply`:
    the run re-staged with them. Returns {thresholds, per_stage}."""
    import yaml

    from annotators.signals.curriculum import calibrate
    from pks.config import set_in_file

    if in_place and (write or not config):
        raise UserError("--in-place rewrites the --config file: give --config, and not --write")
    rows = pq.read_table(Path(out) / "manifest.parquet", columns=["status", "deformation_score"]).to_pylist()
    try:
        thresholds = calibrate([r["deformation_score"] for r in rows if r["status"] == "ok"])
    except ValueError as e:  # too few analysed clips in this run
        raise UserError(f"{out}: {e}") from None
    # checked before anything is written: a --config that does not load is never rewritten
    cfg = load_config(config, {"curriculum.deformation": thresholds}) if apply or in_place else None
    if write:
        doc = (yaml.safe_load(Path(config).read_text()) or {}) if config else {}
        doc.setdefault("curriculum", {})["deformation"] = thresholds
        with atomic_path(Path(write)) as tmp:
            tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    if in_place:
        assert config is not None  # checked above
        set_in_file(config, "curriculum.deformation", thresholds)
    per_stage = None
    if apply:
        assert cfg is not None  # loaded above whenever apply
        per_stage = restage(out, cfg)
    return {"thresholds": thresholds, "per_stage": per_stage}


@ray_scope()
def caption_run(out: Path | Store, cfg: JobConfig, progress=None) -> dict[str, int]:
    """Caption (or finish captioning) an existing run in place, part by part; resumable.
    A batch backend (vllm) gets groups of parts in one pass, so its engines load once per
    group, not once per video; a kill loses at most the group in flight. `progress` takes its
    lines (default: this module's log)."""
    say = progress or log.info
    store = as_store(out)  # pks curate passes its Store: captioning reads clips from a local OUT
    if not store.local:
        raise UserError(f"captioning needs a local OUT, got {store.url()}")
    out = Path(store.path())
    backend = make_backend(cfg.caption)
    say(f"pks caption: captioner {backend.source}")
    set_aside_bad_parts(store, progress)
    counts = {"captioned": 0, "errors": 0}
    parts = sorted((out / "parts").glob("*.parquet"))
    bar = progress_bar(len(parts), "pks caption", "video")

    def tally(stem: str, records: list[ClipRecord]) -> None:
        counts["captioned"] += sum(r.status == "ok" and r.caption is not None for r in records)
        counts["errors"] += sum(r.status == "error" and r.error.startswith(CAPTION_ERROR) for r in records)
        say(f"  {stem}: {counts['captioned']} captioned, {counts['errors']} caption errors so far")
        bar.update(1)
        bar.set_postfix(clips=counts["captioned"], refresh=False)

    with bar:
        if not backend.batch:
            for stem, records in rewrite_parts(out, cfg, lambda rs: caption_records(rs, out, backend, cfg)):
                tally(stem, records)
            return counts
        init_ray(cfg.ray, logs_of(out))
        group_size = cfg.caption.vllm.group_clips
        group: list[tuple[str, list[ClipRecord]]] = []
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


INPUT_KEYS = "input_keys.jsonl"  # OUT/: path, size, mtime_ns (or version) -> video_id, from earlier runs


def hash_inputs(paths: list[str], out: Store, cfg: JobConfig) -> list[str]:
    """The video_ids of `paths`, hashed as Ray tasks (where the inputs are read: on the nodes,
    from their store), so a first run is not bound by one driver reading every byte. Local
    files without a cluster are hashed here: one disk, and Ray's task start costs more than
    it saves (6 x 96 MB: 0.8 s here, 2.0 s as tasks on 2 CPUs)."""
    cluster = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if len(paths) < 2 or not (cluster or any(is_url(p) for p in paths)):
        return [video_key(p, out) for p in paths]
    import ray

    init_ray(cfg.ray, logs_of(out))
    task = ray.remote(num_cpus=1)(video_key)
    # Ray's overloads type a function with a defaulted second parameter as a one-argument task
    return ray.get([task.remote(p, out) for p in paths])  # type: ignore[call-arg]


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


def plan(
    paths: list[str], out: Path | Store, dedupe: bool = True, retry_errors: bool = True, hash_many=None
) -> tuple[list[dict], int]:
    """Which inputs still need work: videos without a finished part, and (with retry_errors)
    videos whose part holds error records; finished videos and duplicate content are skipped."""
    out = as_store(out)
    parts = {Path(p).stem: p for p in parts_of(out)}
    keys = video_keys(paths, out, hash_many)
    todo, seen, skipped = [], set(), 0
    for p in paths:
        vid = keys[p]
        retry = (
            vid in parts
            and retry_errors
            and "error" in out.read_table(parts[vid], columns=["status"]).column("status").to_pylist()
        )
        if (vid in parts and not retry) or (dedupe and vid in seen):
            skipped += 1
            log.debug(f"  {p}: skipped ({'already done' if vid in parts else 'duplicate content'})")
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
        # (".part": the temporary clips of pks before AtomicFile)
        if TMP_MARK in name or name.endswith(".part") or (name.endswith(".mp4") and name[:-4] not in known):
            out.remove(f"clips/{name}")
            removed += 1
    return removed


@ray_scope()
def run(
    input_spec: str,
    out: str | Path | Store,
    cfg: JobConfig | None = None,
    progress=None,
    retry_errors: bool = True,
    storage_options: dict | None = None,
) -> dict:
    """Run the job. Returns counts: inputs, skipped (already done or duplicate), processed,
    retried (videos whose error records were tried again), records... OUT may be a local
    folder or an object-store URL; `storage_options` are fsspec options for OUT's protocol.
    `progress` takes its lines (default: this module's log)."""
    say = progress or log.info
    cfg = cfg or load_config()  # load_config validated it: nothing below fails on a config value
    backend = make_backend(cfg.caption) if cfg.caption.captioner != "none" else None
    out = as_store(out, storage_options)
    if backend and backend.batch and not out.local:
        raise UserError(f"captioner {cfg.caption.captioner} needs a local OUT (it captions the run in place)")
    # a bad input spec is a user error, before OUT is touched
    paths = list_inputs(input_spec, input_options(out, input_spec))
    out.check()  # a missing bucket, refused credentials: one line, before any work
    if out.local:
        (Path(out.root) / "parts").mkdir(parents=True, exist_ok=True)
        (Path(out.root) / "clips").mkdir(exist_ok=True)
    set_aside_bad_parts(out, progress)  # before the plan: their videos are processed again now
    todo, skipped = plan(
        paths,
        out,
        cfg.ingest.dedupe,
        retry_errors,
        hash_many=functools.partial(hash_inputs, out=out, cfg=cfg),
    )
    if backend:
        note = (
            " (no endpoint/model configured: measured tags only, no narrative)" if backend.source == "signals" else ""
        )
        say(f"pks curate: captioner {backend.source}{note}")
    retrying = sum(t["retry"] for t in todo)
    say(
        f"pks curate: {len(paths)} input(s), {skipped} already done or duplicate, {len(todo)} to process"
        + (f" ({retrying} to retry their errors; --no-retry-errors skips them)" if retrying else "")
    )
    t0 = time.perf_counter()
    done, frames, clips = 0, 0, 0
    if todo:
        init_ray(cfg.ray, logs_of(out))
        with progress_bar(len(todo), "pks curate", "video") as bar:
            for s in run_videos(
                todo, out, cfg
            ):  # streamed: only summaries (and a long video's records) reach the driver
                done += 1
                frames += s["frames"]
                clips += s["n_ok"]
                what = (f"retried {s['retried']} error(s), " if s["retried"] else "") + f"{s['n_ok']} clip(s) ok"
                what += f", {s['n_errors']} error(s), first: {s['error']}" if s["n_errors"] else ""
                what += f", in {s['segments']} segments" if s.get("segments") else ""
                say(f"  [{done}/{len(todo)}] {Path(s['path']).name}: {what} ({s['seconds']:.1f}s)")
                bar.update(1)
                bar.set_postfix(clips=clips, refresh=False)
    elapsed = time.perf_counter() - t0
    orphans = remove_orphan_clips(out)
    if orphans:
        say(f"pks curate: removed {orphans} clip file(s) no record points to")
    if backend and backend.batch:  # after every video: one pass over the new clips (cached ones skip)
        init_ray(cfg.ray, logs_of(out))
        caption_run(out, cfg, progress)
    counts = build_manifest(out, cfg)
    summary = {
        "inputs": len(paths),
        "skipped": skipped,
        "processed": done,
        "retried": retrying,
        "records": sum(counts.values()),
        "ok": counts["ok"],
        "rejected": counts["rejected"],
        "errors": counts["error"],
        "source_frames_per_s": round(frames / elapsed, 1) if done else None,
        "manifest": out.url("manifest.parquet"),
    }
    log_run(
        out,
        {
            "job": "curate",
            "seconds": round(elapsed, 2),
            "videos": done,
            "source_frames": frames,
            "source_frames_per_s": summary["source_frames_per_s"],
            "ok": counts["ok"],
        },
    )
    if cfg.shard.enabled and cfg.clips.write:
        from pipelines.shard import shard_run

        t1 = time.perf_counter()
        summary["shards"] = shard_run(out, cfg, progress)
        log_run(
            out,
            {
                "job": "shard",
                "seconds": round(time.perf_counter() - t1, 2),
                **{k: summary["shards"][k] for k in ("samples", "kept", "new", "rewritten", "removed")},
            },
        )
        summary.update(status_counts(out))
    return summary


def log_run(out: Path | Store, entry: dict) -> None:
    """Append one line per job to OUT/runs.jsonl: the throughput the report shows."""
    as_store(out).append_text("runs.jsonl", json.dumps({"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **entry}) + "\n")
