"""Real timing for variable-frame-rate sources.

A clip of a variable-rate video (frames shown for uneven durations: 16 fps stretches inside 24
fps ones, a screen recording, a phone) cannot be written one frame per tick of its average rate
without running fast in some places and slow in others, and everything downstream (analysis,
the training loader's windows at `data.fps`) assumes a constant rate. So such a clip is
resampled onto a constant-rate grid by its frames' own timestamps: each tick shows the frame on
screen at that moment. A frame held longer than a tick appears on several ticks, one shorter
than a tick may appear on none; the clip's record states both counts (`retimed`).
"""

from __future__ import annotations

import av
import numpy as np


def frame_times(path: str) -> np.ndarray:
    """Seconds from the first frame to each frame, in display order, from the video stream's
    packet timestamps (a demux, nothing decoded). Empty when the stream has no timestamps."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = [p.pts for p in container.demux(stream) if p.size and p.pts is not None]
        tb = float(stream.time_base or 0)
    if not pts or not tb:
        return np.zeros(0)
    ts = np.sort(np.asarray(pts, np.int64))
    return (ts - ts[0]) * tb


def span_times(times: np.ndarray, start: int, end: int) -> tuple[float, float]:
    """(start, end) seconds of frames [start, end): the end is when frame `end` appears, or for
    the video's last frame its time plus the median frame duration."""
    last = len(times) - 1
    t0 = float(times[min(start, last)])
    if end <= last:
        return t0, float(times[end])
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    return t0, float(times[last]) + step * (end - last)


def constant_rate(times: np.ndarray, start: int, end: int, fps: float) -> np.ndarray:
    """The source frame shown at each tick of a `fps` grid laid over frames [start, end): as
    many ticks as the span's duration holds (rounded), tick j at start time + j / fps."""
    t0, t1 = span_times(times, start, end)
    n = max(1, int(round((t1 - t0) * fps)))
    # a tick that lands on a frame's timestamp (to a thousandth of a tick) shows that frame
    at = t0 + np.arange(n) / fps + 1e-3 / fps
    shown = np.searchsorted(times[start : min(end, len(times))], at, side="right") - 1 + start
    return np.clip(shown, start, end - 1)


def retime_note(shown: np.ndarray, start: int, end: int, fps: float) -> str:
    """What a resampling did, for the record: '<n> frames at <fps> from <m>: <r> repeated, <d> dropped'."""
    counts = np.bincount(shown - start, minlength=end - start)
    repeated = int((counts[counts > 1] - 1).sum())
    dropped = int((counts == 0).sum())
    return f"{len(shown)} frames at {fps:.3f} fps from {end - start}: {repeated} repeated, {dropped} dropped"
