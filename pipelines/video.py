"""One video's work, as plain functions: ingest (probe), split (shot detection into clip
records), then cut, analyse and caption its clips (pipelines.clipwork decodes once for cut and
analysis); `ray_task` is the thin Ray wrapper that persists the video's part."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any, overload

import numpy as np

from annotators.caption.backends import make_backend
from annotators.caption.captioner import CAPTION_ERROR, caption_records
from annotators.shots import Boundary, Shot, ShotDetector, get_detector, shots_from_boundaries
from pipelines.clipwork import analyse_one, clip_pass, stage_error
from pipelines.parts import part_key, read_part, write_part
from pks.decode import decode_small
from pks.jobconfig import JobConfig, SplitConfig
from pks.probe import ProbeError, VideoInfo, content_hash, probe_grid
from pks.record import ClipRecord
from pks.seek import Grid
from pks.store import Store, as_store, is_url, open_input, staged
from pks.timing import frame_times

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
    return ingest_grid(path, vid)[0]


def ingest_grid(path: str, vid: str) -> tuple[VideoInfo | ClipRecord, Grid | None]:
    """`ingest` and the video's frame grid (pks.seek) from the same demux, None with an error record."""
    if vid.startswith(UNREADABLE):
        return ClipRecord(video_id=vid, source_path=path, status="error", error="cannot read file"), None
    try:
        return probe_grid(path, video_id=vid)
    except ProbeError as e:
        return ClipRecord(video_id=vid, source_path=path, status="error", error=str(e)), None
    except OSError as e:  # gone since it was hashed, or a remote input that could not be fetched
        return ClipRecord(video_id=vid, source_path=path, status="error", error=f"cannot read file: {e}"), None


_DETECTORS: dict[str, ShotDetector] = {}


def worker_detector(sc: SplitConfig) -> ShotDetector:
    """One shot detector per worker process and (name, params): TransNetV2 (and the hybrid)
    load their weights once, not once per video and segment. Safe to share: no detector keeps
    state from one detect() call to the next (AnimeDetector and HybridDetector hold settings
    only, TransNetV2Detector its model in eval mode under inference_mode, SceneDetectDetector
    makes a fresh PySceneDetect detector per call)."""
    key = json.dumps([sc.detector, sc.params], sort_keys=True, default=repr)
    if key not in _DETECTORS:
        _DETECTORS[key] = get_detector(sc.detector, **sc.params)
    return _DETECTORS[key]


def split(info: VideoInfo, cfg: JobConfig) -> list[ClipRecord]:
    """Detect shots and turn them into clip records (or one rejected record if none is long enough)."""
    sc = cfg.split
    detector = worker_detector(sc)
    frames = decode_small(info.path, detector.frame_size)
    boundaries = detector.detect(frames.rgb, info.avg_fps) if len(frames.rgb) else []
    assert frames.damaged is not None  # decode_small always gives the mask
    return clip_records(info, boundaries, len(frames.rgb), frames.damaged, sc)


def clip_records(
    info: VideoInfo, boundaries: list[Boundary], n: int, damaged: np.ndarray, sc: SplitConfig
) -> list[ClipRecord]:
    """A video's clip records from its shot boundaries, `n` decodable frames and the frames the
    decoder could not give as coded (pks.decode.DecodeMarks.damaged: a clip holding one is
    flagged decode_error)."""
    base: dict[str, Any] = dict(
        video_id=info.video_id, source_path=info.path, fps=info.avg_fps, width=info.width, height=info.height
    )
    if n == 0:
        return [ClipRecord(**base, status="error", error="no decodable frames")]
    shots = shots_from_boundaries(boundaries, n, info.avg_fps, sc.min_shot_s, sc.max_shot_s, sc.trim_frames)
    if not shots:
        return [
            ClipRecord(
                **base,
                end_frame=n,
                status="rejected",
                error=f"no shot of at least {sc.min_shot_s}s",
                quality_flags=["too_short"],
            )
        ]
    return shot_records(info, shots, damaged)


def shot_records(info: VideoInfo, shots: list[Shot], damaged: np.ndarray) -> list[ClipRecord]:
    """One ok record per shot (flagged decode_error where it holds a frame `damaged` marks)."""
    return [
        ClipRecord(
            video_id=info.video_id,
            source_path=info.path,
            fps=info.avg_fps,
            width=info.width,
            height=info.height,
            start_frame=s.start_frame,
            end_frame=s.end_frame,
            transition_in=s.transition_in,
            quality_flags=["decode_error"] if damaged[s.start_frame : s.end_frame].any() else [],
        )
        for s in shots
    ]


def caption_clips(records: list[ClipRecord], out: Path, cfg: JobConfig) -> list[ClipRecord]:
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


def worker_backend(cfg: JobConfig):
    """One caption backend per worker process and caption config: a local model loads once,
    not once per video."""
    key = json.dumps(dataclasses.asdict(cfg.caption), sort_keys=True)
    if key not in _BACKENDS:
        _BACKENDS[key] = make_backend(cfg.caption)
    return _BACKENDS[key]


def retry_copy(r: ClipRecord) -> ClipRecord:
    """A clip-level error record made ok again, so the stages that failed run once more."""
    return dataclasses.replace(r, status="ok", error="")


def clip_stages(info: VideoInfo, records: list[ClipRecord], out: Path, cfg: JobConfig, grid=None) -> list[ClipRecord]:
    """Cut, analyse and caption `records` (the ok ones); each failure stays on its clip. Cut
    and analysis share one decode of the records' span (seeking to it with a `grid`, see
    pks.seek)."""
    times = frame_times(info.path) if info.vfr else None  # a variable-rate source: clips resampled by them
    records = clip_pass(
        info.path,
        info.rotation,
        records,
        out,
        cfg,
        lambda r, frames: analyse_one(r, frames, out, cfg.analyse, cfg.curriculum),
        grid,
        times,
    )
    if cfg.caption.captioner != "none" and not worker_backend(cfg).batch:
        records = caption_clips(records, out, cfg)
    return records


def process_video(
    path: str, vid: str, out: Path, cfg: JobConfig, previous: list[ClipRecord] | None = None
) -> list[ClipRecord]:
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
        return [
            ClipRecord(
                video_id=vid,
                source_path=path,
                fps=got.avg_fps,
                width=got.width,
                height=got.height,
                status="error",
                error=stage_error("split", e),
            )
        ]
    return clip_stages(got, records, out, cfg)


@overload
def with_source(records: list[ClipRecord], path: str) -> list[ClipRecord]: ...
@overload
def with_source(records: None, path: str) -> None: ...
def with_source(records: list[ClipRecord] | None, path: str) -> list[ClipRecord] | None:
    """The records with source_path `path` (a remote input is processed from a local copy)."""
    return records and [dataclasses.replace(r, source_path=path) for r in records]


def ray_task(row: dict, out: str | Store, cfg: JobConfig) -> dict:
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
    return {
        "path": row["path"],
        "video_id": row["video_id"],
        "n_records": len(records),
        "retried": retried,
        "n_ok": sum(r.status == "ok" for r in records),
        "n_errors": sum(r.status == "error" for r in records),
        "error": next((r.error for r in records if r.status == "error"), ""),
        "frames": max((r.end_frame for r in records), default=0),
        "seconds": time.perf_counter() - t0,
    }
