"""Cut and analyse a run of clips from one decode of their source span.

The span [first start, last end) is decoded once (seeking to it where the video allows, see
pks.seek); each decoded frame goes to the writer of every clip open at that position and to
that clip's analysis collector. A clip is analysed as soon as its last frame is in, and its
frames are dropped, so memory holds the clips open at one position (one, as shots do not
overlap), never the span. Clips stay frame-exact: clip i holds frames [start, end) of the
source in iter_decoded's numbering. Analysis always reads the source frames (upright), so a
clip analysed with clips.write false, or retried later, gets the same fields. A clip of a
variable-rate source is the exception to one frame per frame: given the frames' `times`, its
span is resampled onto its constant rate (pks.timing), for the clip file and the analysis alike.
"""

from __future__ import annotations

import contextlib
import dataclasses
import traceback
from pathlib import Path

import av
import numpy as np

from annotators.signals import analyse
from annotators.signals.embed import embedder
from annotators.signals.frames import ClipCollector
from pks.clips import clip_path, upright
from pks.jobconfig import AnalyseConfig, CurriculumConfig, JobConfig
from pks.record import ClipRecord
from pks.seek import Irregular, iter_range
from pks.store import AtomicFile, atomic_path
from pks.timing import constant_rate, retime_note, span_times
from pks.videoio import Mp4Writer, pick_encoder


def stage_error(stage: str, e: Exception) -> str:
    """An error reason naming the stage, the exception and where it was raised (a bug's
    location is what its reader needs first)."""
    tb = traceback.extract_tb(e.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{stage}: {type(e).__name__}: {e}{where}"


def analyse_one(r: ClipRecord, frames, out: Path, a: AnalyseConfig, cur: CurriculumConfig) -> ClipRecord:
    """The analysis fields of one ok record, from its frames (pipelines.clipwork decodes them)."""
    fields = analyse(frames, a, cur)
    fields["quality_flags"] = sorted(set(r.quality_flags) | set(fields["quality_flags"]))
    ce = a.clip_embeddings
    if ce.checkpoint:  # semantic embedding, kept beside the manifest for the duplicate search
        vec = embedder(ce.arch, str(ce.checkpoint)).embed(frames.rgb)
        # a temporary name per attempt: a retry may run beside the attempt it replaces
        with atomic_path(out / "embeddings" / f"{r.clip_id}.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, vec.astype(np.float32))
    return dataclasses.replace(r, **fields)


def clip_size(width: int, height: int, rotation: int, max_height: int = 0) -> tuple[int, int]:
    """(w, h) of a clip cut from frames decoded at width x height: upright, even (an odd row or
    column is cropped), and no taller than `max_height` when it is set (scaled down, aspect kept)."""
    if rotation % 180 == 90:
        width, height = height, width
    if max_height and height > max_height:
        h = max_height - max_height % 2
        return max(2, int(round(width * h / height / 2)) * 2), h
    return width - width % 2, height - height % 2


class _ClipEncoder:
    """Turns decoded frames into what a clip writer takes: the yuv420p frame itself where no
    pixel has to move, else one swscale pass (scale and/or convert) and a rotation."""

    def __init__(self, frame: av.VideoFrame, rotation: int, max_height: int):
        self.rotation = rotation
        self.size = clip_size(frame.width, frame.height, rotation, max_height)
        w, h = self.size
        self.scaled = (w, h) != clip_size(frame.width, frame.height, rotation)
        self.coded = (h, w) if rotation % 180 == 90 else (w, h)  # the size before rotation
        self.direct = rotation % 360 == 0 and (self.scaled or (frame.width, frame.height) == (w, h))

    def convert(self, frame: av.VideoFrame):
        if self.direct:
            if self.scaled or frame.format.name != "yuv420p":
                return frame.reformat(width=self.coded[0], height=self.coded[1], format="yuv420p")
            return frame
        if self.scaled:
            rgb = frame.reformat(width=self.coded[0], height=self.coded[1], format="rgb24").to_ndarray()
        else:
            rgb = frame.to_ndarray(format="rgb24")
        rgb = upright(rgb, self.rotation)
        w, h = self.size
        return np.ascontiguousarray(rgb[:h, :w])


class _Open:
    """One clip in progress: its writer (if it is being written) and its analysis collector."""

    def __init__(self, rec: ClipRecord, times=None):
        self.writer: Mp4Writer | None = None
        self.file: AtomicFile | None = None
        self.collector: ClipCollector | None = None
        self.written = 0
        self.repeats = None  # per source frame, how many ticks of the clip show it (retimed only)
        if times is not None and len(times):
            shown = constant_rate(times, rec.start_frame, rec.end_frame, rec.fps)
            self.repeats = np.bincount(shown - rec.start_frame, minlength=rec.n_frames)
            start_s, end_s = span_times(times, rec.start_frame, rec.end_frame)
            rec = dataclasses.replace(
                rec,
                start_s=start_s,
                end_s=end_s,
                clip_frames=len(shown),
                retimed=retime_note(shown, rec.start_frame, rec.end_frame, rec.fps),
            )
        self.rec = rec

    def times_shown(self, i: int) -> int:
        return 1 if self.repeats is None else int(self.repeats[i - self.rec.start_frame])


def clip_pass(
    path: str, rotation: int, records: list[ClipRecord], out: Path, cfg: JobConfig, analyse_one, grid=None, times=None
) -> list[ClipRecord]:
    """Write the clip of each ok record that has none yet (clips.write) and analyse each ok
    record not analysed yet (analyse.enabled), from one decode. `analyse_one(record, frames)`
    returns the analysed record. `times` (seconds of each source frame, pks.timing.frame_times)
    marks a variable-rate source: its clips are resampled to their constant rate. A failure stays on its clip: a clip that comes out short, or
    that a decode failure left unwritten, becomes that record's error; so does an analysis
    failure (the clip file stays)."""
    write = cfg.clips.write
    analyse = cfg.analyse.enabled
    to_write = {r.clip_id for r in records if write and r.status == "ok" and not clip_path(out, r.clip_id).exists()}
    to_analyse = {r.clip_id for r in records if analyse and r.status == "ok" and r.curriculum_stage is None}
    work = sorted((r for r in records if r.clip_id in to_write | to_analyse), key=lambda r: r.start_frame)
    done: dict[str, ClipRecord] = {}
    try:
        try:
            _decode_pass(path, rotation, work, to_write, to_analyse, out, cfg, analyse_one, grid, times, done)
        except Irregular:  # timestamps cannot be trusted here: the unfinished clips again, from frame 0
            _decode_pass(
                path,
                rotation,
                [r for r in work if r.clip_id not in done],
                to_write,
                to_analyse,
                out,
                cfg,
                analyse_one,
                None,
                times,
                done,
            )
    except Exception as e:  # noqa: BLE001 (recorded on the clips it left unfinished, the retry's failure too)
        failure = e
        for r in work:
            if r.clip_id not in done:
                stage = "cut" if r.clip_id in to_write else "analyse"
                done[r.clip_id] = r.error_copy(stage_error(stage, failure))
    return [done.get(r.clip_id, r) for r in records]


def _decode_pass(path, rotation, work, to_write, to_analyse, out, cfg, analyse_one, grid, times, done) -> None:
    if not work:
        return
    cc = cfg.clips
    encoder = pick_encoder(cc.encoder)
    start, end = work[0].start_frame, max(r.end_frame for r in work)
    open_: list[_Open] = []
    k, conv = 0, None

    def finish(o: _Open, complete: bool) -> None:
        r = o.rec
        if o.writer is not None:
            writer, o.writer = o.writer, None  # closed once, even when closing fails
            assert o.file is not None  # opened with the writer
            try:
                writer.close()
            except Exception:
                o.file.abort()  # a failed close leaves no partial file
                raise
            if complete and o.written == r.frames_in_clip:
                o.file.commit()
            else:
                o.file.abort()
                done[r.clip_id] = r.error_copy(f"clip has {o.written} of {r.frames_in_clip} frames")
                return
        if o.collector is not None:
            try:
                r = analyse_one(r, o.collector.frames())
            except Exception as e:  # noqa: BLE001 (one clip's failure must not take its video down)
                r = r.error_copy(stage_error("analyse", e))
        done[r.clip_id] = r

    try:
        for i, frame, _ in iter_range(path, start, end, grid):
            while k < len(work) and work[k].start_frame <= i:
                o = _Open(work[k], times)
                if o.rec.clip_id in to_write:
                    conv = conv or _ClipEncoder(frame, rotation, cc.max_height)
                    o.file = AtomicFile(clip_path(out, o.rec.clip_id))
                    o.writer = Mp4Writer(
                        o.file.tmp,
                        o.rec.fps,
                        *conv.size,
                        crf=cc.crf,
                        preset=cc.preset,
                        fmt="mp4",
                        encoder=encoder,
                        threads=cc.threads,
                    )
                if o.rec.clip_id in to_analyse:
                    o.collector = ClipCollector(cfg.analyse.width, fps=o.rec.fps, rotation=rotation)
                open_.append(o)
                k += 1
            picture = None
            for o in list(open_):
                for _ in range(o.times_shown(i)):
                    if o.writer is not None:
                        if picture is None:
                            assert conv is not None  # made with the first writer
                            picture = conv.convert(frame)
                        if isinstance(picture, av.VideoFrame):
                            o.writer.write_frame(picture)
                        else:
                            o.writer.write(picture)
                        o.written += 1
                    if o.collector is not None:
                        o.collector.add(frame)
                if i + 1 >= o.rec.end_frame:
                    open_.remove(o)
                    finish(o, True)
        while open_:  # spans past the decodable end: short clips, analysed as far as they go
            finish(open_.pop(0), False)
    finally:
        for o in open_:  # a failure mid-pass: close every writer, leave no partial file
            if o.writer is not None:
                with contextlib.suppress(Exception):  # the pass's own error is the one to report
                    o.writer.close()
                assert o.file is not None  # opened with the writer
                o.file.abort()
