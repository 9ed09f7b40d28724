"""Long videos in parallel: shot detection per segment, then cut and analysis per group of shots.

A video longer than split.segment_s is planned as K segments [start, end). A segment job
decodes its segment plus split.overlap_s either side (seeking to it, small frames only) and
keeps the boundaries its detector finds inside its own core; the detector sees the same
neighbourhood of every boundary as on the whole video, so the merged boundaries are the
unsegmented detector's (detector statistics taken over a whole window, such as the anime
detector's flat-frame and letterbox references, are taken over the segment's window instead:
the same wherever the footage is alike, see tests/test_segments.py). Group jobs cut and
analyse groups of about segment_s of shots, each group decoding its own span once; what is
left of a video when its last segment is back goes in groups that shrink toward its end
(tail_groups), so the cores finish it together.

Streaming: a group starts as soon as the records it holds are final, not when every segment
is back. With segments 0..j back, every shot before the last boundary found in them is final
(later boundaries only decide the shot after it), and every group but the last of those
shots' records is final (group_records is greedy: a group closes at the first record that
does not fit). So groups are the ones the whole video's records would give, by construction
(checked again when the video's last segment is back). Only segments back in an unbroken run
from segment 0 count: a group then seeks only where earlier range decodes have seen every
frame before it (see pks.seek). When every group of a video is back, the driver writes the
video's part: the part is still the commit, so a rerun redoes only videos without a part
(their finished clips are kept and not re-cut).

Seeking gives iter_decoded's frame numbers only where every frame lies on the timestamp grid
(pks.seek); a segment that sees a frame missing without a decode error sends its video back to
the one-task path (decoding from frame 0; after the groups already started for it are back,
so two tasks never cut the same clip at once), as are videos without a grid (variable frame
rate), retries and videos no longer than one segment.
"""

from __future__ import annotations

import heapq
import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from annotators.shots import Boundary, shots_from_boundaries
from pipelines.parts import write_part
from pipelines.video import clip_records, clip_stages, ingest_grid, ray_task, shot_records, worker_detector
from pks.decode import DecodeMarks, _small_yuv, decode_threads
from pks.jobconfig import JobConfig, SplitConfig
from pks.probe import VideoInfo
from pks.record import ClipRecord
from pks.seek import Grid, Irregular, iter_range
from pks.store import Store, is_url, staged

# The shortest group the tail is cut into (seconds of source). Every group costs ~0.4 s of CPU
# beyond its frames (a seek, a decoder, its task); on the 1080p file of BENCHMARKS.md issue 25 a
# 4 s group takes 1.4-2.5 s: its overhead, a sixth to a third of that, is paid at the end only.
TAIL_LEAST_S = 4.0


def plan_segments(n_frames: int, fps: float, segment_s: float) -> list[tuple[int, int]]:
    """Cores [start, end) of about segment_s each, covering [0, n_frames)."""
    k = max(1, int(np.ceil(n_frames / max(1.0, segment_s * fps))))
    edges = np.linspace(0, n_frames, k + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges, edges[1:])]


def detect_segment(path: str, core: tuple[int, int], grid: Grid, fps: float, sc: SplitConfig) -> dict:
    """Boundaries inside `core` of one segment, from its frames plus overlap_s either side.
    Returns {boundaries: [(frame, kind, span)], marks: the core's DecodeMarks.within, end: last
    decoded index + 1 (within the window), irregular: bool}. Holds the window's small frames only.
    The window reaches past the core, so a concealed frame just after it still marks the
    core's B-frames that lead it."""
    detector = worker_detector(sc)
    pad = int(round(sc.overlap_s * fps))
    lo, hi = max(0, core[0] - pad), min(grid.n_frames, core[1] + pad)
    yuv, marks, end = [], DecodeMarks(), lo
    irregular = {"boundaries": [], "marks": DecodeMarks().within(0, 0), "end": 0, "irregular": True}
    try:
        for i, frame, filled in iter_range(path, lo, hi, grid, fast=True, watch=marks.watch):
            yuv.append(_small_yuv(frame, detector.frame_size))
            marks.add(i, frame, filled)
            end = i + 1
    except Irregular:
        return irregular
    if end - lo != len(yuv):
        return irregular
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
    return {"boundaries": keep, "marks": marks.within(*core), "end": end, "irregular": False}


def merge_segments(results: list[dict]) -> tuple[list[Boundary], int, np.ndarray]:
    """A video's boundaries, decodable frame count and damaged-frame mask (DecodeMarks.damaged)
    from its segments' results (in segment order)."""
    bounds = [Boundary(f, kind, tuple(span) if span else None) for r in results for f, kind, span in r["boundaries"]]
    n = max(r["end"] for r in results)
    return bounds, n, DecodeMarks.union([r["marks"] for r in results]).damaged(n)


def tail_groups(records: list[ClipRecord], slots: int, least_frames: int, span_frames: int) -> list[list[ClipRecord]]:
    """The last records of a video in consecutive groups that shrink toward its end (guided
    self-scheduling: each group about a (2 x slots)-th of the frames still left, within
    [least_frames, span_frames]), so the cores finish the video together instead of one
    running its last long group alone while the others idle."""
    left = sum(r.end_frame - r.start_frame for r in records)
    groups: list[list[ClipRecord]] = []
    size = target = 0.0
    for r in records:
        n = r.end_frame - r.start_frame
        if not groups or size >= target or size + n > span_frames:
            groups.append([])
            size, target = 0, max(least_frames, left / (2 * slots))
        groups[-1].append(r)
        size += n
        left -= n
    return groups


def group_records(records: list[ClipRecord], span_frames: int) -> list[list[ClipRecord]]:
    """Consecutive records in groups spanning about `span_frames` (a group decodes its span once)."""
    groups: list[list[ClipRecord]] = []
    for r in records:
        if groups and r.end_frame - groups[-1][0].start_frame <= span_frames:
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


# ---- Jobs: plain dicts in and out (plan, whole, segment, group), run by a Pool ---------------


def plan_task(job: dict, cfg: JobConfig) -> list[dict]:
    """A todo row -> one `whole` job (the one-task path) or a video's `segment` jobs. The probe
    and the frame grid come from one demux of the file."""
    sc = cfg.split
    job = {k: v for k, v in job.items() if k != "kind"}
    if job.get("retry") or is_url(job["path"]):  # a remote input is downloaded once, by one task
        return [{**job, "kind": "whole"}]
    info, grid = ingest_grid(job["path"], job["video_id"])
    if isinstance(info, ClipRecord) or info.n_frames <= sc.segment_s * info.avg_fps or grid is None:
        return [{**job, "kind": "whole"}]
    cores = plan_segments(grid.n_frames, info.avg_fps, sc.segment_s)
    return [
        {
            **job,
            "kind": "segment",
            "info": info.to_dict(),
            "grid": grid.__dict__,
            "core": core,
            "k": k,
            "of": len(cores),
        }
        for k, core in enumerate(cores)
    ]


def work_task(job: dict, out: Store, cfg: JobConfig) -> dict:
    """Run one job: plan a video (its jobs back), a whole video (its part written, a summary
    back), a segment's shot detection, or a group's cut and analysis (records back: the driver
    writes the part)."""
    t0 = time.perf_counter()
    if job["kind"] == "plan":
        result: dict[str, Any] = {"jobs": plan_task(job, cfg)}
    elif job["kind"] == "whole":
        result = {"summary": ray_task(job, out, cfg)}
    elif job["kind"] == "segment":
        info = job["info"]
        result = detect_segment(info["path"], tuple(job["core"]), Grid(**job["grid"]), info["avg_fps"], cfg.split)
    else:
        records = [ClipRecord.from_row(r) for r in job["records"]]
        with staged(out, job["path"]) as (work, _):  # clips in OUT when this block ends
            (work / "clips").mkdir(exist_ok=True)
            done = clip_stages(VideoInfo(**job["info"]), records, work, cfg, Grid(**job["grid"]))
        result = {"records": [r.to_row() for r in done]}
    return {**job, **result, "seconds": time.perf_counter() - t0}


# Which waiting job runs first: groups finish videos (their parts written sooner, less held in
# the driver), segments free groups, and a plan, cheap, only adds work.
PRIORITY = {"group": 0, "segment": 1, "whole": 2, "plan": 3}


class Pool:
    """Runs jobs (work_task); `run_videos` submits them and takes them back as they finish.
    Jobs wait here in PRIORITY order and a few more than the cores are handed to the runner,
    so the next job is chosen when a core frees, with what is known then."""

    def __init__(self, slots: int):
        self.slots = slots
        self.waiting: list[tuple[int, int, dict]] = []  # heap of (priority, order, job)
        self.order = 0

    def submit(self, job: dict) -> None:
        heapq.heappush(self.waiting, (PRIORITY[job["kind"]], self.order, job))
        self.order += 1

    def take(self) -> dict | None:
        """The next waiting job, or None."""
        return heapq.heappop(self.waiting)[2] if self.waiting else None

    def busy(self) -> bool:
        raise NotImplementedError

    def next_done(self) -> dict:
        """work_task's result for some finished job (waiting until one finishes)."""
        raise NotImplementedError


class InProcess(Pool):
    """Jobs one after another in this process, in the order a one-core Ray pool would run
    them: tests and profiling (benchmarks/profile_curate.py times `call`)."""

    def __init__(self, out: Store, cfg: JobConfig):
        super().__init__(1)
        self.out, self.cfg = out, cfg

    def call(self, job: dict) -> dict:
        return work_task(job, self.out, self.cfg)

    def busy(self) -> bool:
        return bool(self.waiting)

    def next_done(self) -> dict:
        job = self.take()
        assert job is not None
        return self.call(job)


def one_cpu_task(job: dict, out: Store, cfg: JobConfig) -> dict:
    """work_task as a task holding one CPU of the pool. Ray sets OMP_NUM_THREADS for it, which
    OpenCV's pool and FFmpeg's frame threads do not read: each would start a thread per core
    beside the pool's other tasks, which only adds its own overhead (BENCHMARKS.md, issue 25).
    The same pixels and records: decoding and these OpenCV kernels do not depend on threads."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with decode_threads(1):
            return work_task(job, out, cfg)
    finally:
        cv2.setNumThreads(threads)


class RayPool(Pool):
    """Jobs as Ray tasks, one CPU each. Ray core tasks and ray.wait rather than Ray Data: a
    group depends on some segments of its own video, a join Ray Data's streaming operators
    cannot express without a barrier between two datasets (today's idle cores at the stage
    boundary)."""

    def __init__(self, out: Store, cfg: JobConfig):
        import ray

        super().__init__(max(1, int(ray.cluster_resources().get("CPU", 1))) + 1)
        self.ray = ray
        # Retries on purpose. A task lost with its worker or node (a raylet killed, a preempted
        # machine) runs again elsewhere, a few times, not forever, so a video that keeps
        # killing its worker ends the job instead of hanging it. The retry is idempotent: a
        # part is replaced atomically, present clips are kept, stray clip files are removed at
        # the end. An exception raised by a task is not retried: per-clip failures are records
        # already, so one escaping is a bug that would fail the same way.
        self.task = ray.remote(one_cpu_task).options(num_cpus=1, max_retries=3, retry_exceptions=False)
        self.args = ray.put(out), ray.put(cfg)
        self.running: list = []

    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def next_done(self) -> dict:
        while len(self.running) < self.slots and (job := self.take()) is not None:
            self.running.append(self.task.remote(job, *self.args))
        [ref], self.running = self.ray.wait(self.running, num_returns=1)
        return self.ray.get(ref)


@dataclass
class Video:
    """A segmented video's state in the driver: its segments back so far and its groups."""

    first: dict  # its first segment job (path, video_id, info, grid, of)
    segments: dict[int, dict] = field(default_factory=dict)  # k -> detect_segment's result
    sent: list[list[str]] = field(default_factory=list)  # clip ids of the groups started
    out: int = 0  # groups started and not back
    records: list[ClipRecord] = field(default_factory=list)  # the video's records, once all are final
    done: dict[str, ClipRecord] = field(default_factory=dict)  # clip_id -> record back from a group
    seconds: float = 0.0
    fallback: bool = False  # irregular: to the one-task path once its started groups are back

    def new_groups(self, sc: SplitConfig, slots: int) -> list[list[ClipRecord]]:
        """Groups now final and not yet started: about segment_s each while segments are out,
        then, once the last one is back, what is left in tail_groups (BENCHMARKS.md, issue 25:
        a video's last group of segment_s ran alone on one core for 12 s of its 84)."""
        k = 0
        while k in self.segments:
            k += 1
        if not k:
            return []
        info = VideoInfo(**self.first["info"])
        bounds, n, damaged = merge_segments([self.segments[i] for i in range(k)])
        span = int(sc.segment_s * info.avg_fps)
        if k == self.first["of"]:
            self.records = clip_records(info, bounds, n, damaged, sc)
            groups = group_records(self.records, span)
        else:
            groups = group_records(final_records(info, bounds, damaged, sc), span)[:-1]
        ids = [[r.clip_id for r in g] for g in groups]
        if ids[: len(self.sent)] != self.sent:  # cannot happen (see the module's docstring)
            raise RuntimeError(f"video {self.first['video_id']}: groups started early differ from its final groups")
        new = groups[len(self.sent) :]
        if k == self.first["of"] and new:
            new = tail_groups([r for g in new for r in g], slots, int(TAIL_LEAST_S * info.avg_fps), span)
        self.sent += [[r.clip_id for r in g] for g in new]
        self.out += len(new)
        return new


def final_records(info: VideoInfo, bounds: list[Boundary], damaged: np.ndarray, sc: SplitConfig) -> list[ClipRecord]:
    """The records of the shots that boundaries still to come cannot change: every shot before
    the last boundary's end (shots_from_boundaries drops the shot after it when told the video
    ends there)."""
    last = max((b.span[1] if b.span else b.frame for b in bounds), default=0)
    shots = shots_from_boundaries(bounds, last, info.avg_fps, sc.min_shot_s, sc.max_shot_s, sc.trim_frames)
    return shot_records(info, shots, damaged)


def run_videos(todo: list[dict], out: Store, cfg: JobConfig, pool: Pool | None = None):
    """Process `todo` (curate.plan's rows); yield one curate.ray_task-style summary per video
    as its part is written. Jobs run on `pool` (Ray tasks unless given)."""
    sc = cfg.split
    pool = pool or RayPool(out, cfg)
    for row in todo:
        pool.submit({**row, "kind": "plan"})
    videos: dict[str, Video] = {}
    while pool.busy():
        r = pool.next_done()
        if r["kind"] == "plan":
            for job in r["jobs"]:
                pool.submit(job)
            continue
        if r["kind"] == "whole":
            yield r["summary"]
            continue
        v = videos.setdefault(r["video_id"], Video(r))
        v.seconds += r["seconds"]
        if r["kind"] == "segment":
            v.segments[r["k"]] = r
            # timestamps cannot number its frames: from frame 0 (no new group; the rest are dropped)
            v.fallback = v.fallback or r["irregular"]
            if not v.fallback:
                for g in v.new_groups(sc, pool.slots):
                    pool.submit({**_video_fields(r), "kind": "group", "records": [x.to_row() for x in g]})
        else:
            v.out -= 1
            v.done.update((x.clip_id, x) for x in map(ClipRecord.from_row, r["records"]))
        if v.fallback:
            if not v.out and len(v.segments) == v.first["of"]:  # nothing of it left out: one task redoes it
                del videos[r["video_id"]]
                pool.submit({"path": r["path"], "video_id": r["video_id"], "retry": False, "kind": "whole"})
            continue
        if v.out or not v.records:
            continue
        del videos[r["video_id"]]
        records = [v.done.get(x.clip_id, x) for x in v.records]
        write_part(out, r["video_id"], records)
        yield {
            "path": r["path"],
            "video_id": r["video_id"],
            "n_records": len(records),
            "retried": 0,
            "n_ok": sum(x.status == "ok" for x in records),
            "n_errors": sum(x.status == "error" for x in records),
            "error": next((x.error for x in records if x.status == "error"), ""),
            "frames": max((x.end_frame for x in records), default=0),
            "seconds": v.seconds,
            "segments": v.first["of"],
        }


def _video_fields(job: dict) -> dict:
    return {k: job[k] for k in ("path", "video_id", "info", "grid")}
