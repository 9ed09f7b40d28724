"""Long videos in segments: seeking is frame-exact, segment detection reconciles to the whole
video's boundaries (edges inside shots and on cuts), a segmented run gives the unsegmented
run's records and frame-exact clips, memory is windowed, and the clip options work."""

import dataclasses
import hashlib
import types

import decord
import numpy as np
import pytest

from annotators.shots import get_detector
from badfiles import _encode, _frames, make_bad_inputs
from pipelines import clipwork, segments, video
from pipelines.curate import run
from pipelines.video import process_video, video_key
from pks import seek
from pks.config import load_config, replace_config
from pks.decode import decode_small, iter_decoded
from pks.errors import ConfigError
from pks.probe import probe
from pks.record import read_parquet
from pks.seek import Irregular, frame_grid, iter_range
from pks.store import as_store
from pks.synth import synthesize_video


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    """~15 s of 320x180 footage, 8 shots (cuts, dissolves, fades), B-frames, a keyframe every 24."""
    d = tmp_path_factory.mktemp("long")
    truth = synthesize_video(d / "src.mp4", 11, n_shots=8, size=(320, 180), fps="24", shot_frames=(30, 60))
    _encode(d / "long.mp4", _frames(d / "src.mp4"), options={"g": "24", "bf": "3", "crf": "18"})
    return d / "long.mp4", truth


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory, long_video):
    d = tmp_path_factory.mktemp("bad")
    return make_bad_inputs(long_video[0], d)["corrupt_middle"]


def digest(frame):
    return hashlib.md5(frame.to_ndarray(format="rgb24").tobytes()).hexdigest()


def test_seeking_gives_iter_decodeds_frames(long_video, corrupt):
    path, _ = long_video
    ref = [(i, digest(f), gap) for i, f, gap in iter_decoded(str(path))]
    grid = frame_grid(str(path))
    assert grid and grid.n_frames == len(ref)
    for s, e in ((0, 5), (1, 9), (23, 25), (100, 161), (len(ref) - 3, len(ref) + 5)):
        assert [(i, digest(f), gap) for i, f, gap in iter_range(str(path), s, e, grid)] == ref[s:e]
    # Frames lost to decode errors: seeking numbers and fills them as decoding from frame 0 does
    # (only the pixels the decoder conceals may differ: they depend on what it decoded before).
    ref = [(i, gap) for i, _, gap in iter_decoded(str(corrupt))]
    grid = frame_grid(str(corrupt))
    assert grid.n_frames == len(ref) and any(gap for _, gap in ref)
    for s in range(1, grid.n_frames, 24):
        assert [(i, gap) for i, _, gap in iter_range(str(corrupt), s, s + 30, grid)] == ref[s : s + 30]
    assert frame_grid(str(path.with_name("src.mp4"))) is not None


def test_seeking_refuses_a_frame_missing_without_a_decode_error(long_video, monkeypatch):
    path, _ = long_video
    grid = frame_grid(str(path))
    real = seek.decoded_frames

    def dropping(container, stream, watch=None):  # frame 100 lost with no decode error to say so
        return ((f, broken) for f, broken in real(container, stream, watch) if f.pts != grid.pts0 + 100 * grid.step)

    monkeypatch.setattr(seek, "decoded_frames", dropping)
    with pytest.raises(Irregular):
        list(iter_range(str(path), 90, 120, grid))


def test_segments_reconcile_to_the_whole_videos_boundaries(long_video, monkeypatch):
    path, truth = long_video
    sc = dataclasses.replace(load_config().split, overlap_s=2.0)
    det = get_detector("anime")
    small = decode_small(str(path), det.frame_size)
    whole = [(b.frame, b.kind, list(b.span) if b.span else None) for b in det.detect(small.rgb, 24.0)]
    assert len(whole) >= 6
    n = len(small.rgb)
    cut = next(b["frame"] for b in truth["boundaries"] if b["type"] == "cut")
    inside = next(s for s in truth["shots"] if s["start_frame"] > cut)
    mid = (inside["start_frame"] + inside["end_frame"]) // 2
    windows = []

    def recording(sc):  # a detector of its own: the worker's cached one stays as it is
        d = get_detector(sc.detector, **sc.params)
        detect = d.detect
        d.detect = lambda frames, fps: windows.append(len(frames)) or detect(frames, fps)
        return d

    monkeypatch.setattr(segments, "worker_detector", recording)
    grid = frame_grid(str(path))
    for cores in (
        [(0, cut), (cut, mid), (mid, n)],  # edges on a cut and inside a shot
        segments.plan_segments(n, 24.0, 1.3),
    ):  # many short segments
        results = [segments.detect_segment(str(path), c, grid, 24.0, sc) for c in cores]
        bounds, got_n, damaged = segments.merge_segments(results)
        assert got_n == n and not damaged.any()
        assert [(b.frame, b.kind, list(b.span) if b.span else None) for b in bounds] == whole, cores
        # Memory is windowed: no detector call saw more than its core plus the overlap either side.
        assert max(windows) <= max(e - s for s, e in cores) + 2 * 48
        windows.clear()


def test_a_segmented_run_gives_the_unsegmented_records_and_exact_clips(long_video, corrupt, tmp_path):
    import ray

    src = tmp_path / "in"
    src.mkdir()
    for p in (long_video[0], corrupt):
        (src / p.name).write_bytes(p.read_bytes())
    cfg = load_config(None, {"split.segment_s": 2.5, "split.overlap_s": 2.0, "shard.enabled": False})
    whole = {
        p.name: process_video(
            str(p), video_key(str(p)), tmp_path / "whole", replace_config(cfg, {"clips.write": False})
        )
        for p in src.iterdir()
    }
    msgs = []
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "out"
        s = run(str(src), out, cfg, progress=msgs.append)
    finally:
        ray.shutdown()
    assert s["processed"] == 2 and s["errors"] == 0
    k = len(segments.plan_segments(frame_grid(str(long_video[0])).n_frames, 24.0, 2.5))
    assert k >= 5 and any("long.mp4" in m and f"in {k} segments" in m for m in msgs), msgs
    # frames lost to decode errors are numbered after a seek as from frame 0: no need to go back
    assert any("corrupt_middle" in m and "segments" in m for m in msgs)
    for p in src.iterdir():
        got = read_parquet(out / "parts" / f"{video_key(str(p))}.parquet")
        if p.name == corrupt.name:  # how a decoder conceals corrupt data varies; the spans must not
            assert [(r.clip_id, r.status) for r in got] == [(r.clip_id, r.status) for r in whole[p.name]]
            assert all(
                len(decord.VideoReader(str(out / "clips" / f"{r.clip_id}.mp4"))) == r.n_frames
                for r in got
                if r.status == "ok"
            )
            continue
        assert got == whole[p.name]  # spans, ids, analysis: identical
        for r in got:
            if r.status == "ok":
                assert len(decord.VideoReader(str(out / "clips" / f"{r.clip_id}.mp4"))) == r.n_frames


def test_clip_pass_analyses_each_clip_when_it_ends_and_cuts_to_max_height(long_video, tmp_path, monkeypatch):
    path, _ = long_video
    out = tmp_path / "out"
    (out / "clips").mkdir(parents=True)
    cfg = load_config(None, {"clips.max_height": 120, "clips.encoder": "auto", "clips.threads": 1})
    records = segments.clip_records(probe(str(path), "v" * 16), *_whole_boundaries(path), cfg.split)
    position = []
    real = clipwork.iter_range

    def watched(*a, **k):
        for item in real(*a, **k):
            position.append(item[0])
            yield item

    monkeypatch.setattr(clipwork, "iter_range", watched)
    analysed = []

    def analyse_one(r, frames):
        assert position[-1] == r.end_frame - 1 and len(frames.rgb) == r.n_frames  # analysed as its last frame is in
        analysed.append(r.clip_id)
        return r

    got = clipwork.clip_pass(str(path), 0, records, out, cfg, analyse_one, frame_grid(str(path)))
    ok = [r for r in got if r.status == "ok"]
    assert len(ok) >= 6 and analysed == [r.clip_id for r in ok]
    for r in ok:
        vr = decord.VideoReader(str(out / "clips" / f"{r.clip_id}.mp4"))
        assert len(vr) == r.n_frames and vr[0].shape[:2] == (120, 214)  # 320x180 scaled, even sizes
    assert clipwork.clip_size(1080, 1920, 90, 720) == (1280, 720) and clipwork.clip_size(321, 181, 0) == (320, 180)
    with pytest.raises(ConfigError):
        load_config(None, {"clips.encoder": "x265"})


def test_a_failure_in_the_decode_retry_is_the_clips_error(long_video, tmp_path, monkeypatch):
    path, _ = long_video
    out = tmp_path / "out"
    (out / "clips").mkdir(parents=True)
    cfg = load_config()
    records = segments.clip_records(probe(str(path), "v" * 16), *_whole_boundaries(path), cfg.split)

    def failing(path, start, end, grid=None, fast=False):  # the seek untrustworthy, then the decode from 0 fails
        raise Irregular("seek landed past start") if grid else OSError("disk gone")
        yield

    monkeypatch.setattr(clipwork, "iter_range", failing)
    got = clipwork.clip_pass(str(path), 0, records, out, cfg, lambda r, frames: r, frame_grid(str(path)))
    assert len(got) == len(records) >= 6
    assert all(r.status == "error" and "OSError: disk gone" in r.error for r in got)
    assert not list((out / "clips").iterdir())


def _whole_boundaries(path):
    det = get_detector("anime")
    small = decode_small(str(path), det.frame_size)
    return det.detect(small.rgb, 24.0), len(small.rgb), small.damaged


def test_a_writer_failure_mid_pass_closes_every_writer_and_reports_its_own_error(long_video, tmp_path, monkeypatch):
    """A clip writer that fails mid-pass, while closing fails too: every open writer is closed,
    no partial clip file is left, and the rows carry the write's error, not the close's."""
    path, _ = long_video
    out = tmp_path / "out"
    (out / "clips").mkdir(parents=True)
    cfg = load_config()
    records = segments.clip_records(probe(str(path), "v" * 16), *_whole_boundaries(path), cfg.split)
    opened, closed = [], []
    real_init, real_close, real_write = (
        clipwork.Mp4Writer.__init__,
        clipwork.Mp4Writer.close,
        clipwork.Mp4Writer.write_frame,
    )

    def init(self, *a, **kw):
        opened.append(self)
        real_init(self, *a, **kw)

    def write(self, frame):
        if self.count >= 5:
            raise OSError("disk full")
        real_write(self, frame)

    def close(self):
        closed.append(self)
        real_close(self)
        raise OSError("close failed")

    monkeypatch.setattr(clipwork.Mp4Writer, "__init__", init)
    monkeypatch.setattr(clipwork.Mp4Writer, "write_frame", write)
    monkeypatch.setattr(clipwork.Mp4Writer, "close", close)
    got = clipwork.clip_pass(str(path), 0, records, out, cfg, lambda r, frames: r, None)
    assert got and all(r.status == "error" and "disk full" in r.error for r in got), {r.error for r in got}
    assert opened and sorted(map(id, closed)) == sorted(map(id, opened))  # each writer closed, once
    assert not list((out / "clips").iterdir())


def test_a_worker_loads_each_detector_once_and_it_detects_as_a_fresh_one(long_video, monkeypatch):
    from annotators.shots import transnet

    loads = []
    real = transnet.TransNetV2Detector.model

    def counting(self):
        loads.append(self._model is None)
        return real(self)

    monkeypatch.setattr(transnet.TransNetV2Detector, "model", counting)
    monkeypatch.setattr(video, "_DETECTORS", {})  # this process's cache, as a fresh worker's
    sc = dataclasses.replace(load_config().split, detector="hybrid", params={})
    det = video.worker_detector(sc)
    rgb = decode_small(str(long_video[0]), det.frame_size).rgb[170:220]  # a cut; one TransNetV2 window (slow on a CPU)
    first = det.detect(rgb, 24.0)
    again = video.worker_detector(sc)
    assert again is det and again.detect(rgb, 24.0) == first and len(first) >= 1
    assert sum(loads) == 1  # TransNetV2's weights loaded once for both calls
    assert get_detector("hybrid").detect(rgb, 24.0) == first  # the shared one holds no state
    anime = dataclasses.replace(sc, detector="anime")
    assert (
        video.worker_detector(anime)
        is video.worker_detector(anime)
        is not video.worker_detector(dataclasses.replace(anime, params={"cut_threshold": 0.5}))
    )


class Watched(segments.InProcess):
    """The in-process pool, noting each job's kind (and a segment's index) as it runs."""

    def __init__(self, out, cfg):
        super().__init__(out, cfg)
        self.ran = []

    def call(self, job):
        self.ran.append((job["kind"], job.get("k")))
        return super().call(job)


def watched_run(path, tmp_path, cfg, slots=1):
    """process_video's records, then the same video through run_videos on a Watched pool of
    `slots`: (those records, the part's, the pool, run_videos' summary)."""
    vid = video_key(str(path))
    whole = process_video(str(path), vid, tmp_path / "whole", cfg)
    out = as_store(tmp_path / "out")
    (tmp_path / "out" / "parts").mkdir(parents=True)
    pool = Watched(out, cfg)
    pool.slots = slots
    [summary] = segments.run_videos([{"path": str(path), "video_id": vid, "retry": False}], out, cfg, pool)
    return whole, read_parquet(tmp_path / "out" / "parts" / f"{vid}.parquet"), pool, summary


def test_a_videos_last_groups_shrink_toward_its_end_and_keep_its_records_in_order():
    """Guided self-scheduling of the work left once every segment is back: the first group
    about a (2 x slots)-th of it, then smaller, none over the span nor (but the last) under
    the least; nothing lost, reordered or split."""
    rng = np.random.default_rng(0)
    starts = np.cumsum(rng.integers(20, 200, 61))
    recs = [types.SimpleNamespace(start_frame=int(a), end_frame=int(b)) for a, b in zip(starts, starts[1:])]
    groups = segments.tail_groups(recs, 3, 120, 1500)
    sizes = [sum(r.end_frame - r.start_frame for r in g) for g in groups]
    assert [r for g in groups for r in g] == recs
    total = recs[-1].end_frame - recs[0].start_frame
    assert total / 6 <= sizes[0] < total / 6 + 200
    assert max(sizes) <= 1500 and min(sizes[:-1]) >= 120
    assert sizes[-1] < sizes[0] / 4 and len(sizes) >= 8
    # a span shorter than the share: every group within it, as group_records keeps them
    assert all(sum(r.end_frame - r.start_frame for r in g) <= 300 for g in segments.tail_groups(recs, 1, 120, 300))


def test_groups_start_before_the_last_segment_and_the_records_are_the_unsegmented_ones(long_video, tmp_path):
    path = long_video[0]
    cfg = load_config(None, {"split.segment_s": 2.5, "split.overlap_s": 2.0, "clips.write": False})
    whole, part, pool, summary = watched_run(path, tmp_path, cfg)
    k = summary["segments"]
    assert k >= 5 and sorted(i for kind, i in pool.ran if kind == "segment") == list(range(k))
    # Streaming: groups ran while segments were still to run (today's barrier ran them all after).
    assert pool.ran.index(("group", None)) < pool.ran.index(("segment", k - 1))
    assert sum(kind == "group" for kind, _ in pool.ran) >= 3
    assert part == whole  # spans, ids, analysis


def test_a_tail_cut_finer_than_segment_s_gives_the_same_records(long_video, tmp_path, monkeypatch):
    path = long_video[0]
    monkeypatch.setattr(segments, "TAIL_LEAST_S", 0.0)  # the tail as fine as it gets
    cfg = load_config(None, {"split.segment_s": 10.0, "split.overlap_s": 2.0, "clips.write": False})
    whole, part, pool, summary = watched_run(path, tmp_path, cfg, slots=4)  # cut as for 4 tasks in flight
    assert summary["segments"] == 2
    # more groups than segment_s's spans make: the ones after the last segment are cut finer
    assert sum(kind == "group" for kind, _ in pool.ran) > len(segments.group_records(whole, int(10.0 * 24))) + 1
    assert part == whole


def test_tasks_holding_one_cpu_decode_and_analyse_on_it_and_give_the_same_records(long_video, tmp_path, monkeypatch):
    """RayPool's tasks (segments.one_cpu_task) keep OpenCV's pool and FFmpeg's frame threads to
    the one CPU Ray gave them; the records are those of the default threads."""
    import cv2

    from pks import decode

    path = long_video[0]
    cfg = load_config(None, {"split.segment_s": 2.5, "split.overlap_s": 2.0, "clips.write": False})
    vid = video_key(str(path))
    whole = process_video(str(path), vid, tmp_path / "whole", cfg)
    seen = []
    work = segments.work_task

    def watched_work(job, out, cfg):
        with decode.open_stream(path) as (_, stream):
            seen.append((cv2.getNumThreads(), stream.codec_context.thread_count))
        return work(job, out, cfg)

    monkeypatch.setattr(segments, "work_task", watched_work)

    class OneCpu(segments.InProcess):
        def call(self, job):
            return segments.one_cpu_task(job, self.out, self.cfg)

    before = cv2.getNumThreads()
    threads = max(2, before)
    cv2.setNumThreads(threads)
    out = as_store(tmp_path / "out")
    (tmp_path / "out" / "parts").mkdir(parents=True)
    try:
        [_] = segments.run_videos([{"path": str(path), "video_id": vid, "retry": False}], out, cfg, OneCpu(out, cfg))
        assert seen and set(seen) == {(1, 1)}
        assert cv2.getNumThreads() == threads  # given back after each task
    finally:
        cv2.setNumThreads(before)  # the process's OpenCV setting, for the tests after this one
    with decode.open_stream(path) as (_, stream):
        assert stream.codec_context.thread_count == 0  # FFmpeg's choice again
    assert read_parquet(tmp_path / "out" / "parts" / f"{vid}.parquet") == whole


def test_an_irregular_segment_sends_its_video_to_one_task_after_its_started_groups(long_video, tmp_path, monkeypatch):
    path = long_video[0]
    cfg = load_config(None, {"split.segment_s": 2.5, "split.overlap_s": 2.0, "clips.write": False})
    vid = video_key(str(path))
    whole = process_video(str(path), vid, tmp_path / "whole", cfg)
    real = segments.detect_segment
    k_bad = 4

    def late_irregular(p, core, grid, fps, sc):  # a hole the 5th segment's seek runs into
        got = real(p, core, grid, fps, sc)
        return (
            {**got, "irregular": True} if core[0] == segments.plan_segments(grid.n_frames, fps, 2.5)[k_bad][0] else got
        )

    monkeypatch.setattr(segments, "detect_segment", late_irregular)
    out = as_store(tmp_path / "out")
    (tmp_path / "out" / "parts").mkdir(parents=True)
    pool = Watched(out, cfg)
    [summary] = segments.run_videos([{"path": str(path), "video_id": vid, "retry": False}], out, cfg, pool)
    kinds = [kind for kind, _ in pool.ran]
    assert "group" in kinds and kinds[-1] == "whole" and "segments" not in summary
    assert kinds.index("whole") > max(i for i, kind in enumerate(kinds) if kind in ("group", "segment"))
    assert read_parquet(tmp_path / "out" / "parts" / f"{vid}.parquet") == whole
