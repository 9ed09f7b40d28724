"""Decode a video once into small frames for analysis (shot detection, signals).

Analysis needs tiny frames, so we read the decoder's YUV planes directly and shrink them
with an area filter (pks.resize: OpenCV's INTER_AREA pixels as numpy block sums): several
times cheaper than asking swscale for scaled RGB. The loop filter is skipped by default (a
deblocking pass that changes nothing a detector needs).
"""

from __future__ import annotations

import bisect
import contextlib
from dataclasses import dataclass, field

import av
import cv2
import numpy as np

from pks.bitstream import PacketWatch
from pks.resize import area_resize

FAST_FORMATS = {"yuv420p", "yuvj420p"}
_threads = 0  # decoder threads per stream (0: FFmpeg's choice, one per core); see decode_threads


@contextlib.contextmanager
def decode_threads(n: int):
    """Streams opened inside decode with `n` threads (0: FFmpeg's choice). A task that holds
    one of the pool's CPUs decodes on that CPU: frame threads beside the pool's other tasks
    only add their own overhead (BENCHMARKS.md, issue 25)."""
    global _threads
    old, _threads = _threads, n
    try:
        yield
    finally:
        _threads = old


@dataclass
class SmallFrames:
    rgb: np.ndarray  # [N, h, w, 3] uint8
    fps: float
    source_size: tuple[int, int]  # (w, h) as decoded
    damaged: np.ndarray | None = None  # bool [N]: see DecodeMarks.damaged


def _plane(p) -> np.ndarray:
    return np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width]


def _small_yuv(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    if frame.format.name not in FAST_FORMATS:  # 10-bit, 4:4:4, RGB...: let swscale convert
        frame = frame.reformat(format="yuv420p")
    planes = [area_resize(_plane(p), size) for p in frame.planes[:3]]
    return np.dstack(planes)


def iter_decoded(path: str, fast: bool = False, watch: PacketWatch | None = None):
    """Yield (index, av.VideoFrame, filled) for every frame position of the video.

    A corrupt packet does not end the video: it is skipped, and where the timestamps after it
    show frames are missing, the last good frame is repeated at their positions (yielded with
    filled=True), so frame indices stay aligned with the source's frame count. Only after a
    decode error: irregular timestamps alone (variable frame rate) are not gaps. `watch`:
    see decoded_frames.
    """
    with open_stream(path, fast) as (container, stream):
        step = None
        if stream.average_rate and stream.time_base:
            step = 1.0 / (float(stream.average_rate) * float(stream.time_base))  # pts ticks per frame
        i, last, last_pts = 0, None, None
        for frame, broken in decoded_frames(container, stream, watch):
            pts = frame.pts  # read before yielding: a consumer may restamp the frame (a clip writer does)
            if broken and step and last is not None and pts is not None and last_pts is not None:
                missing = int(round((pts - last_pts) / step)) - 1
                for _ in range(max(0, missing)):
                    yield i, last, True
                    i += 1
            yield i, frame, False
            i += 1
            last, last_pts = frame, pts


@contextlib.contextmanager
def open_stream(path: str, fast: bool = False):
    """(container, its first video stream) set up for decoding: threaded, and with `fast`
    the loop filter skipped."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = _threads
        if fast:
            stream.codec_context.options = {"skip_loop_filter": "all"}
        yield container, stream


def decoded_frames(container, stream, watch: PacketWatch | None = None):
    """Yield (frame, a frame lost to a corrupt packet may be missing just before it) for every
    decoded frame: a packet that fails to decode is skipped, not the end of the video.

    The failure is reported when the packet is sent, but frames come out later, in display
    order (B-frames reorder, frame threads hold a few packets each), so the gap the lost frame
    leaves can show several frames after the error. The flag is therefore held until a frame
    passes the highest timestamp sent when the packet failed (the lost frame's is no higher);
    without packet timestamps it is held for the next frame only.

    `watch`, when given, sees every packet before it is decoded and every frame before it is
    yielded (pks.bitstream: pictures muxed twice or missing)."""
    sent = None  # highest pts sent to the decoder so far
    until = None  # while set: a lost frame may still show as a gap, up to this pts
    if watch is not None:
        watch.start(stream)
    for packet in container.demux(stream):
        if packet.pts is not None:
            sent = packet.pts if sent is None else max(sent, packet.pts)
        if watch is not None:
            watch.packet(packet)
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            until = float("-inf") if sent is None else sent
            continue
        for frame in frames:
            pts = frame.pts  # read before yielding: a consumer may restamp the frame
            if watch is not None:
                watch.shown(pts)
            yield frame, until is not None
            if until is not None and (pts is None or pts > until):
                until = None


@dataclass
class DecodeMarks:
    """What the decoder said of the frame positions it gave, collected frame by frame (`add`)
    as index lists, so that segments of one video can report theirs and be merged (`union`).

    - filled: lost to a corrupt packet and repeated from the last good frame (iter_decoded).
    - concealed: decoded with errors that FFmpeg's error concealment drew over (the frame's
      decode_error_flags, or the corrupt flag; PyAV's VideoFrame.is_corrupt).
    - leading: B-frames shown between the previous I/P frame and a concealed I/P frame; they
      are predicted from it, so its concealed picture reaches them although they show first.
    - repeated: decoded from a coded picture muxed a second time, and after_gap: shown right
      after a picture missing from the stream (pks.bitstream; pass `watch` to the decode).
    - keys: keyframes, where predictions from earlier frames end.
    """

    filled: list[int] = field(default_factory=list)
    concealed: list[int] = field(default_factory=list)
    leading: list[int] = field(default_factory=list)
    repeated: list[int] = field(default_factory=list)
    after_gap: list[int] = field(default_factory=list)
    keys: list[int] = field(default_factory=list)
    watch: PacketWatch = field(default_factory=PacketWatch, repr=False)
    _since_anchor: list[int] = field(default_factory=list, repr=False)

    KINDS = ("filled", "concealed", "leading", "repeated", "after_gap", "keys")

    def add(self, i: int, frame: av.VideoFrame, filled: bool) -> None:
        """Record position `i` as the decode yields it (frame, filled), before anything restamps
        the frame."""
        if filled:  # the last good frame again: its own marks are already recorded
            self.filled.append(i)
            return
        if frame.pts in self.watch.repeated:
            self.repeated.append(i)
        if frame.pts in self.watch.after_gap:
            self.after_gap.append(i)
        anchor = frame.key_frame or frame.pict_type in (av.video.frame.PictureType.I, av.video.frame.PictureType.P)
        if frame.key_frame:
            self.keys.append(i)
        if frame.is_corrupt:
            self.concealed.append(i)
            if anchor:
                self.leading += self._since_anchor
        self._since_anchor = [] if anchor else self._since_anchor + [i]

    def within(self, lo: int, hi: int) -> dict[str, list[int]]:
        """The lists restricted to positions lo <= i < hi (a segment's core), as plain data."""
        return {k: [i for i in getattr(self, k) if lo <= i < hi] for k in self.KINDS}

    @classmethod
    def union(cls, parts: list[dict[str, list[int]]]) -> DecodeMarks:
        """The marks of a whole video from its segments' `within` (cores that tile it)."""
        merged = cls()
        for k in cls.KINDS:
            setattr(merged, k, sorted({i for p in parts for i in p[k]}))
        return merged

    def damaged(self, n: int) -> np.ndarray:
        """bool [n]: frames the decoder could not give as coded: filled, repeated, after a gap,
        concealed, and every
        frame predicted from a concealed one, which is every frame from it up to the next
        keyframe (a P or B picture may be a reference, and a decoded frame does not say
        whether it is one, so any concealment counts until the next keyframe) and the
        B-frames leading it. The truth of pks.synth.processes (frames that differ visibly from
        the clean decode) lies inside this span: concealment that happens to look right is
        still counted, as the decoder did report it."""
        mask = np.zeros(n, bool)
        mask[[i for i in self.filled + self.leading + self.repeated + self.after_gap if i < n]] = True
        for c in self.concealed:
            k = bisect.bisect_right(self.keys, c)
            mask[c : self.keys[k] if k < len(self.keys) else n] = True
        return mask


def decode_marks(path: str, fast: bool = True) -> tuple[DecodeMarks, int]:
    """The decoder's marks of every frame position of `path`, and how many positions there are
    (no pixels kept)."""
    marks, n = DecodeMarks(), 0
    for i, frame, filled in iter_decoded(path, fast, marks.watch):
        marks.add(i, frame, filled)
        n = i + 1
    return marks, n


def decode_small(path: str, size: tuple[int, int] = (64, 36), fast: bool = True) -> SmallFrames:
    """All frames of `path` as small RGB frames, decoded once."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate or s.guessed_rate or 0)
        src = (s.codec_context.width, s.codec_context.height)
    yuv, marks = [], DecodeMarks()
    for i, frame, filled in iter_decoded(path, fast, marks.watch):
        yuv.append(_small_yuv(frame, size))
        marks.add(i, frame, filled)
    if not yuv:
        return SmallFrames(np.zeros((0, size[1], size[0], 3), np.uint8), fps, src, np.zeros(0, bool))
    arr = np.stack(yuv)
    n, h, w, _ = arr.shape
    rgb = cv2.cvtColor(arr.reshape(n * h, w, 3), cv2.COLOR_YUV2RGB).reshape(n, h, w, 3)
    return SmallFrames(rgb, fps, src, marks.damaged(n))
