"""Decode a clip once for analysis: small RGB frames for flow, sampled full-size luma for
quality checks that downscaling would erase (interlace combing, macroblock edges)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pks.decode import _plane
from pks.resize import area_resize


@dataclass
class ClipFrames:
    rgb: np.ndarray  # [N, h, w, 3] uint8 at analysis width
    luma: dict[int, np.ndarray]  # frame index -> full-size Y plane (every `luma_every` frames)
    fps: float

    def span(self, start: int, end: int) -> ClipFrames:
        """Frames [start, end) of this clip, indices renumbered from 0."""
        return ClipFrames(
            self.rgb[start:end], {k - start: v for k, v in self.luma.items() if start <= k < end}, self.fps
        )


class ClipCollector:
    """Collects a clip's analysis frames one decoded frame at a time, so one decode of a source
    span can feed analysis beside other consumers (the clip writers). `rotation` (degrees
    counter-clockwise, as in the display matrix) turns the frames upright, as clips are."""

    def __init__(self, width: int = 192, luma_every: int = 2, fps: float = 0.0, rotation: int = 0):
        self.width, self.luma_every, self.fps = width, luma_every, fps
        self.turns = {90: 1, 180: 2, 270: 3}.get(rotation % 360, 0)
        self.small: list[np.ndarray] = []
        self.luma: dict[int, np.ndarray] = {}

    def add(self, frame) -> None:
        if frame.format.name not in ("yuv420p", "yuvj420p"):
            frame = frame.reformat(format="yuv420p")
        k = len(self.small)
        if k % self.luma_every == 0:
            self.luma[k] = np.rot90(_plane(frame.planes[0]), self.turns).copy()  # (the decoder reuses its buffers)
        fw, fh = (frame.height, frame.width) if self.turns % 2 else (frame.width, frame.height)
        h = max(2, int(round(fh * self.width / fw / 2)) * 2)
        size = (h, self.width) if self.turns % 2 else (self.width, h)  # resized before turning
        planes = [area_resize(_plane(p), size) for p in frame.planes[:3]]
        self.small.append(np.rot90(np.dstack(planes), self.turns))

    def frames(self) -> ClipFrames:
        if not self.small:
            return ClipFrames(np.zeros((0, 2, self.width, 3), np.uint8), self.luma, self.fps)
        arr = np.stack(self.small)
        n, h, w, _ = arr.shape
        rgb = cv2.cvtColor(arr.reshape(n * h, w, 3), cv2.COLOR_YUV2RGB).reshape(n, h, w, 3)
        return ClipFrames(rgb, self.luma, self.fps)


def load_clip(
    path: str,
    start: int = 0,
    end: int | None = None,
    width: int = 192,
    luma_every: int = 2,
    fps: float = 0.0,
    grid=None,
) -> ClipFrames:
    """Frames [start, end) of `path` for analysis. With a `grid` (pks.seek.frame_grid) it seeks
    to the keyframe before `start` instead of decoding from frame 0."""
    from pks.seek import Irregular, iter_range

    try:
        c = ClipCollector(width, luma_every, fps)
        for _, frame, _ in iter_range(path, start, end, grid):
            c.add(frame)
    except Irregular:
        c = ClipCollector(width, luma_every, fps)
        for _, frame, _ in iter_range(path, start, end):
            c.add(frame)
    return c.frames()


def picture_box(gray, dark: float = 30.0) -> tuple[tuple[int, int], tuple[int, int]]:
    """(top, bottom), (left, right) of the picture inside letterbox/pillarbox bars of frames
    ([N, h, w] uint8, or a sequence of [h, w]): rows and columns dark in every frame are bars
    (the whole frame when none is found, or when the rest is small)."""

    def inner(profile):
        lit = np.nonzero(profile >= dark)[0]
        if not len(lit) or lit[-1] + 1 - lit[0] < len(profile) // 2:
            return 0, len(profile)
        return int(lit[0]), int(lit[-1]) + 1

    # The brightest value of each pixel over the frames, one frame at a time, then of each row
    # and column: no stacked copy of full-size frames, and OpenCV's kernels (same values).
    frames = iter(gray)
    peak = np.array(next(frames))
    for f in frames:
        cv2.max(peak, f, dst=peak)
    return inner(cv2.reduce(peak, 1, cv2.REDUCE_MAX).ravel()), inner(cv2.reduce(peak, 0, cv2.REDUCE_MAX).ravel())
