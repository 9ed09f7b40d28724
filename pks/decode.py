"""Decode a video once into small frames for analysis (shot detection, signals).

Analysis needs tiny frames, so we read the decoder's YUV planes directly and shrink them
with an area filter (pks.resize: OpenCV's INTER_AREA pixels as numpy block sums): several
times cheaper than asking swscale for scaled RGB. The loop filter is skipped by default (a
deblocking pass that changes nothing a detector needs).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import av
import cv2
import numpy as np

from pks.resize import area_resize

FAST_FORMATS = {"yuv420p", "yuvj420p"}


@dataclass
class SmallFrames:
    rgb: np.ndarray  # [N, h, w, 3] uint8
    fps: float
    source_size: tuple[int, int]  # (w, h) as decoded
    filled: np.ndarray | None = None  # bool [N]: frame repeated because its data was corrupt


def _plane(p) -> np.ndarray:
    return np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width]


def _small_yuv(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    if frame.format.name not in FAST_FORMATS:  # 10-bit, 4:4:4, RGB...: let swscale convert
        frame = frame.reformat(format="yuv420p")
    planes = [area_resize(_plane(p), size) for p in frame.planes[:3]]
    return np.dstack(planes)


def iter_decoded(path: str, fast: bool = False):
    """Yield (index, av.VideoFrame, filled) for every frame position of the video.

    A corrupt packet does not end the video: it is skipped, and where the timestamps after it
    show frames are missing, the last good frame is repeated at their positions (yielded with
    filled=True), so frame indices stay aligned with the source's frame count. Only after a
    decode error: irregular timestamps alone (variable frame rate) are not gaps.
    """
    with open_stream(path, fast) as (container, stream):
        step = None
        if stream.average_rate and stream.time_base:
            step = 1.0 / (float(stream.average_rate) * float(stream.time_base))  # pts ticks per frame
        i, last, last_pts = 0, None, None
        for frame, broken in decoded_frames(container, stream):
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
        if fast:
            stream.codec_context.options = {"skip_loop_filter": "all"}
        yield container, stream


def decoded_frames(container, stream):
    """Yield (frame, a frame lost to a corrupt packet may be missing just before it) for every
    decoded frame: a packet that fails to decode is skipped, not the end of the video.

    The failure is reported when the packet is sent, but frames come out later, in display
    order (B-frames reorder, frame threads hold a few packets each), so the gap the lost frame
    leaves can show several frames after the error. The flag is therefore held until a frame
    passes the highest timestamp sent when the packet failed (the lost frame's is no higher);
    without packet timestamps it is held for the next frame only."""
    sent = None  # highest pts sent to the decoder so far
    until = None  # while set: a lost frame may still show as a gap, up to this pts
    for packet in container.demux(stream):
        if packet.pts is not None:
            sent = packet.pts if sent is None else max(sent, packet.pts)
        try:
            frames = packet.decode()
        except av.error.FFmpegError:
            until = float("-inf") if sent is None else sent
            continue
        for frame in frames:
            pts = frame.pts  # read before yielding: a consumer may restamp the frame
            yield frame, until is not None
            if until is not None and (pts is None or pts > until):
                until = None


def iter_frames(path: str, size: tuple[int, int], fast: bool = True):
    """Yield (index, small YUV frame, filled) over the whole video (see iter_decoded)."""
    for i, frame, filled in iter_decoded(path, fast):
        yield i, _small_yuv(frame, size), filled


def decode_small(path: str, size: tuple[int, int] = (64, 36), fast: bool = True) -> SmallFrames:
    """All frames of `path` as small RGB frames, decoded once."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate or s.guessed_rate or 0)
        src = (s.codec_context.width, s.codec_context.height)
    yuv, filled = [], []
    for _, f, gap in iter_frames(path, size, fast):
        yuv.append(f)
        filled.append(gap)
    if not yuv:
        return SmallFrames(np.zeros((0, size[1], size[0], 3), np.uint8), fps, src, np.zeros(0, bool))
    arr = np.stack(yuv)
    n, h, w, _ = arr.shape
    rgb = cv2.cvtColor(arr.reshape(n * h, w, 3), cv2.COLOR_YUV2RGB).reshape(n, h, w, 3)
    return SmallFrames(rgb, fps, src, np.array(filled))
