"""Decode a frame range [start, end) of a video without decoding from frame 0.

Frame numbers are positions in the source as `pks.decode.iter_decoded` counts them (gaps left
by corrupt packets filled with the last good frame). After a seek the count is lost, so the
index of a decoded frame is read from its timestamp instead: exact when every packet lies on
the constant-rate grid `pts0 + k * step` with no hole (checked by demuxing, without decoding,
in `frame_grid`). Where it does not (variable frame rate, missing timestamps), or a seek lands
past `start`, the range is read by decoding from frame 0 as before: slower, never wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

from pks.bitstream import PacketWatch
from pks.decode import decoded_frames, iter_decoded, open_stream


@dataclass(frozen=True)
class Grid:
    pts0: int  # pts of frame 0
    step: float  # pts ticks per frame
    n_frames: int  # packets (= frame positions) in the stream


def frame_grid(path: str) -> Grid | None:
    """The constant-rate grid every packet of `path` lies on, or None when some packet does
    not (then a frame's index cannot be told from its timestamp). Demux only: ~1 ms per 70
    packets (pks.probe.probe_grid gives it from the probe's own demux)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = []
        try:
            for pkt in container.demux(stream):
                if pkt.size:
                    if pkt.pts is None:
                        return None
                    pts.append(pkt.pts)
        except av.error.FFmpegError:
            return None
        return grid_of(np.asarray(pts, np.int64), stream.average_rate, stream.time_base)


def grid_of(pts: np.ndarray, average_rate, time_base) -> Grid | None:
    """The grid of a stream's packet timestamps (every packet's, in any order), or None."""
    if not (average_rate and time_base) or not len(pts):
        return None
    step = 1.0 / (float(average_rate) * float(time_base))
    ts = np.sort(np.asarray(pts, np.int64))
    k = np.rint((ts - ts[0]) / step)
    if not np.array_equal(k, np.arange(len(ts))) or np.abs(ts - ts[0] - k * step).max() > 0.25 * step:
        return None
    return Grid(int(ts[0]), step, len(ts))


class Irregular(Exception):
    """The timestamps after a seek cannot give iter_decoded's numbering: a frame is missing
    without a decode error (iter_decoded does not fill such a hole, so every later index is
    one lower than its timestamp says), or the seek landed past `start`. Decode from frame 0."""


def iter_range(
    path: str,
    start: int = 0,
    end: int | None = None,
    grid: Grid | None = None,
    fast: bool = False,
    watch: PacketWatch | None = None,
):
    """Yield (index, av.VideoFrame, filled) for start <= index < end, numbered as iter_decoded
    numbers them. Without a `grid` (see frame_grid) it decodes from frame 0. With one it seeks
    to the keyframe before `start` and raises Irregular where timestamps cannot be trusted: the
    caller then decodes from 0, and the hole also tells it that later seeks in this video are
    off by its size. A hole before the seek point is invisible here: callers seek only in
    videos whose every position some earlier range decode has seen (see pipelines/segments.py).
    `watch`: see pks.decode.decoded_frames."""
    if end is not None and end <= start:
        return
    if grid is None:
        yield from _from_zero(path, start, end, fast, watch)
        return
    end = grid.n_frames if end is None else min(end, grid.n_frames)
    last = None  # (index, frame) of the last frame decoded
    for i, frame, broken in _decode_after_seek(path, start, grid, fast, watch):
        if last is None and i > start:
            raise Irregular(f"seek to frame {start} landed on frame {i}")
        if last is not None and i <= last[0]:
            continue  # a frame before the keyframe in display order, or a repeated timestamp
        if last is not None and i > last[0] + 1:
            if not broken:
                raise Irregular(f"frames {last[0] + 1}..{i - 1} missing without a decode error")
            for j in range(
                max(last[0] + 1, start), min(i, end)
            ):  # lost to corrupt packets: filled as iter_decoded fills
                yield j, last[1], True
        if i >= end:
            return
        if i >= start:
            yield i, frame, False
        last = (i, frame)


def _from_zero(path, start, end, fast, watch):
    for i, frame, filled in iter_decoded(path, fast, watch):
        if end is not None and i >= end:
            return
        if i >= start:
            yield i, frame, filled


def _decode_after_seek(path, start, grid, fast, watch):
    """(index from pts, frame, a decode error came before it) for every frame decoded after
    seeking to the keyframe before `start`."""
    with open_stream(path, fast) as (container, stream):
        # A few frames early: mp4 seeks by decode time, which B-frames put before display time.
        container.seek(int(grid.pts0 + max(0, start - 4) * grid.step), stream=stream, backward=True, any_frame=False)
        pending = False  # a corrupt packet was skipped since the last frame yielded
        for frame, broken in decoded_frames(container, stream, watch):
            pending = pending or broken
            if frame.pts is None:
                continue
            yield int(round((frame.pts - grid.pts0) / grid.step)), frame, pending
            pending = False
