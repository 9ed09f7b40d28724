"""Long videos in parallel: shot detection per segment, then cut and analysis per group of shots.

A video longer than split.segment_s is planned as K segments [start, end). Stage 1 (a Ray
Data map over segments) decodes each segment plus split.overlap_s either side (seeking to it,
small frames only) and keeps the boundaries its detector finds inside its own core; the
detector sees the same neighbourhood of every boundary as on the whole video, so the merged
boundaries are the unsegmented detector's (detector statistics taken over a whole window,
such as the anime detector's flat-frame and letterbox references, are taken over the
segment's window instead: the same wherever the footage is alike, see tests/test_segments.py).
The driver merges a video's boundaries into its clip records (cheap), and stage 2 cuts and
analyses groups of about segment_s of shots, each group decoding its own span once. When every
group of a video is back, the driver writes the video's part: the part is still the commit, so
a rerun redoes only videos without a part (their finished clips are kept and not re-cut).

Seeking gives iter_decoded's frame numbers only where every frame lies on the timestamp grid
(pks.seek); a segment that sees a frame missing without a decode error sends its video back to
the one-task path (decoding from frame 0), as are videos without a grid (variable frame rate),
retries and videos no longer than one segment.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import cv2
import numpy as np

from annotators.shots import Boundary, get_detector
from pipelines.parts import write_part
from pipelines.video import clip_records, clip_stages, ingest, ray_task
from pks.decode import _small_yuv
from pks.jobconfig import JobConfig, SplitConfig
from pks.probe import VideoInfo
from pks.record import ClipRecord
from pks.seek import Grid, Irregular, frame_grid, iter_range
from pks.store import Store, is_url, staged


def plan_segments(n_frames: int, fps: float, segment_s: float) -> list[tuple[int, int]]:
    """Cores [start, end) of about segment_s each, covering [0, n_frames)."""
    k = max(1, int(np.ceil(n_frames / max(1.0, segment_s * fps))))
    edges = np.linspace(0, n_frames, k + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges, edges[1:])]


def detect_segment(path: str, core: tuple[int, int], grid: Grid, fps: float, sc: SplitConfig) -> dict:
    """Boundaries inside `core` of one segment, from its frames plus overlap_s either side.
    Returns {boundaries: [(frame, kind, span)], filled: [index], end: last decoded index + 1
    (within the window), irregular: bool}. Holds the window's small frames only."""
    detector = get_detector(sc.detector, **sc.params)
    pad = int(round(sc.overlap_s * fps))
    lo, hi = max(0, core[0] - pad), min(grid.n_frames, core[1] + pad)
    yuv, filled, end = [], [], lo
    try:
        for i, frame, gap in iter_range(path, lo, hi, grid, fast=True):
            yuv.append(_small_yuv(frame, detector.frame_size))
            if gap and core[0] <= i < core[1]:
                filled.append(i)
            end = i + 1
    except Irregular:
        return {"boundaries": [], "filled": [], "end": 0, "irregular": True}
    if end - lo != len(yuv):
        return {"boundaries": [], "filled": [], "end": 0, "irregular": True}
    if yuv:
        arr = np.stack(yuv)
        n, h, w, _ = arr.shape
        rgb = cv2.cvtColor(arr.reshape(n * h, w, 3), cv2.COLOR_YUV2RGB).reshape(n, h, w, 3)
        found = detector.detect(rgb, fps)
    else:
        found = []
    keep = [
        (b.frame + lo, b.kind, [b.span[0] + lo, b.span[1] + lo] if b.span else None)
        for b in found
        if core[0] <= b.frame + lo < core[1]
    ]
    return {"boundaries": keep, "filled": filled, "end": end, "irregular": False}


def merge_segments(results: list[dict]) -> tuple[list[Boundary], int, np.ndarray]:
    """A video's boundaries, decodable frame count and filled mask from its segments' results
    (in segment order)."""
    bounds = [Boundary(f, kind, tuple(span) if span else None) for r in results for f, kind, span in r["boundaries"]]
    n = max(r["end"] for r in results)
    filled = np.zeros(n, bool)
    for r in results:
        filled[[i for i in r["filled"] if i < n]] = True
    return bounds, n, filled


def group_records(records: list[ClipRecord], span_frames: int) -> list[list[ClipRecord]]:
    """Consecutive records in groups spanning about `span_frames` (a group decodes its span once)."""
    groups: list[list[ClipRecord]] = []
    for r in records:
        if groups and r.end_frame - groups[-1][0].start_frame <= span_frames:
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


# ---- Ray tasks: one JSON column in and out, so rows of different kinds share a schema ----------


def plan_task(row: dict, cfg: JobConfig) -> list[dict]:
    """A todo row -> one `whole` job (the one-task path) or a video's `segment` jobs."""
    job = json.loads(row["job"])
    sc = cfg.split
    if job.get("retry") or is_url(job["path"]):  # a remote input is downloaded once, by one task
        return [{"job": json.dumps({**job, "kind": "whole"})}]
    info = ingest(job["path"], job["video_id"])
    if isinstance(info, ClipRecord) or info.n_frames <= sc.segment_s * info.avg_fps:
        return [{"job": json.dumps({**job, "kind": "whole"})}]
    grid = frame_grid(info.path)
    if grid is None:
        return [{"job": json.dumps({**job, "kind": "whole"})}]
    cores = plan_segments(grid.n_frames, info.avg_fps, sc.segment_s)
    return [
        {
            "job": json.dumps(
                {
                    **job,
                    "kind": "segment",
                    "info": info.to_dict(),
                    "grid": grid.__dict__,
                    "core": core,
                    "k": k,
                    "of": len(cores),
                }
            )
        }
        for k, core in enumerate(cores)
    ]


def work_task(row: dict, out: Store, cfg: JobConfig) -> dict:
    """Run one job: a whole video (its part written, a summary back), a segment's shot
    detection, or a group's cut and analysis (records back: the driver writes the part)."""
    job = json.loads(row["job"])
    t0 = time.perf_counter()
    if job["kind"] == "whole":
        result: dict[str, Any] = {"summary": ray_task(job, out, cfg)}
    elif job["kind"] == "segment":
        info = job["info"]
        result = detect_segment(info["path"], tuple(job["core"]), Grid(**job["grid"]), info["avg_fps"], cfg.split)
    else:
        records = [ClipRecord.from_row(r) for r in job["records"]]
        with staged(out, job["path"]) as (work, _):  # clips in OUT when this block ends
            (work / "clips").mkdir(exist_ok=True)
            done = clip_stages(VideoInfo(**job["info"]), records, work, cfg, Grid(**job["grid"]))
        result = {"records": [r.to_row() for r in done]}
    return {"result": json.dumps({**job, **result, "seconds": time.perf_counter() - t0}, default=str)}


def _run_jobs(jobs: list[dict], out: Store, cfg: JobConfig, plan: bool):
    import ray

    ds: ray.data.Dataset = ray.data.from_items([{"job": json.dumps(j)} for j in jobs], override_num_blocks=len(jobs))
    if plan:
        # (Ray types the function without its fn_kwargs, here and in map below)
        ds = ds.flat_map(
            plan_task,  # type: ignore[arg-type]
            fn_kwargs={"cfg": cfg},
            num_cpus=1,
            max_retries=3,
            retry_exceptions=False,
        )
        ds = ds.repartition(target_num_rows_per_block=1)  # segments of one video spread over the workers
    # Retries on purpose. A task lost with its worker or node (a raylet killed, a preempted
    # machine) runs again elsewhere, a few times, not forever (Ray Data's default) so a video
    # that keeps killing its worker ends the job instead of hanging it. The retry is
    # idempotent: a part is replaced atomically, present clips are kept, stray clip files are
    # removed at the end. An exception raised by a task is not retried: per-clip failures are
    # records already, so one escaping is a bug that would fail the same way.
    ds = ds.map(
        work_task,  # type: ignore[arg-type]
        fn_kwargs={"out": out, "cfg": cfg},
        num_cpus=1,
        max_retries=3,
        retry_exceptions=False,
    )
    for row in ds.iter_rows():
        yield json.loads(row["result"])


def run_videos(todo: list[dict], out: Store, cfg: JobConfig):
    """Process `todo` (curate.plan's rows); yield one curate.ray_task-style summary per video
    as its part is written."""
    sc = cfg.split
    segs: dict[str, list[dict]] = defaultdict(list)  # video_id -> its segments' results so far
    pending: dict[str, dict] = {}  # video_id -> its records and the groups still out
    second: list[dict] = []
    for r in _run_jobs(todo, out, cfg, plan=True):
        if r["kind"] == "whole":
            yield r["summary"]
            continue
        segs[r["video_id"]].append(r)
        if len(segs[r["video_id"]]) < r["of"]:
            continue
        results = sorted(segs.pop(r["video_id"]), key=lambda s: s["k"])
        if any(s["irregular"] for s in results):  # timestamps cannot number its frames: from frame 0
            second.append({"path": r["path"], "video_id": r["video_id"], "retry": False, "kind": "whole"})
            continue
        info = VideoInfo(**r["info"])
        bounds, n, filled = merge_segments(results)
        records = clip_records(info, bounds, n, filled, sc)
        groups = group_records(records, int(sc.segment_s * info.avg_fps))
        pending[r["video_id"]] = {
            "records": records,
            "groups": len(groups),
            "done": [],
            "seconds": sum(s["seconds"] for s in results),
            "path": r["path"],
            "segments": len(results),
        }
        second += [
            {
                "kind": "group",
                "path": r["path"],
                "video_id": r["video_id"],
                "info": r["info"],
                "grid": r["grid"],
                "records": [x.to_row() for x in g],
            }
            for g in groups
        ]
    if not second:
        return
    for r in _run_jobs(second, out, cfg, plan=False):
        if r["kind"] == "whole":
            yield r["summary"]
            continue
        p = pending[r["video_id"]]
        p["done"] += [ClipRecord.from_row(x) for x in r["records"]]
        p["seconds"] += r["seconds"]
        p["groups"] -= 1
        if p["groups"]:
            continue
        del pending[r["video_id"]]
        by_id = {x.clip_id: x for x in p["done"]}
        records = [by_id.get(x.clip_id, x) for x in p["records"]]
        write_part(out, r["video_id"], records)
        yield {
            "path": p["path"],
            "video_id": r["video_id"],
            "n_records": len(records),
            "retried": 0,
            "n_ok": sum(x.status == "ok" for x in records),
            "n_errors": sum(x.status == "error" for x in records),
            "error": next((x.error for x in records if x.status == "error"), ""),
            "frames": max((x.end_frame for x in records), default=0),
            "seconds": p["seconds"],
            "segments": p["segments"],
        }
