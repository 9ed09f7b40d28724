"""Decode a clip once for analysis: small RGB frames for flow, sampled full-size luma for
quality checks that downscaling would erase (interlace combing, macroblock edges)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pks.decode import _plane, iter_decoded


@dataclass
class ClipFrames:
    rgb: np.ndarray  # [N, h, w, 3] uint8 at analysis width
    luma: dict[int, np.ndarray]  # frame index -> full-size Y plane (every `luma_every` frames)
    fps: float

    def span(self, start: int, end: int) -> "ClipFrames":
        """Frames [start, end) of this clip, indices renumbered from 0."""
        return ClipFrames(self.rgb[start:end], {k - start: v for k, v in self.luma.items() if start <= k < end},
                          self.fps)


def load_clip(path: str, start: int = 0, end: int | None = None, width: int = 192, luma_every: int = 2,
              fps: float = 0.0) -> ClipFrames:
    small, luma = [], {}
    for i, frame, _ in iter_decoded(path):
        if i < start:
            continue
        if end is not None and i >= end:
            break
        if frame.format.name not in ("yuv420p", "yuvj420p"):
            frame = frame.reformat(format="yuv420p")
        y = _plane(frame.planes[0])
        k = i - start
        if k % luma_every == 0:
            luma[k] = y.copy()
        h = max(2, int(round(frame.height * width / frame.width / 2)) * 2)
        planes = [cv2.resize(_plane(p), (width, h), interpolation=cv2.INTER_AREA) for p in frame.planes[:3]]
        small.append(np.dstack(planes))
    if not small:
        return ClipFrames(np.zeros((0, 2, width, 3), np.uint8), luma, fps)
    arr = np.stack(small)
    n, h, w, _ = arr.shape
    rgb = cv2.cvtColor(arr.reshape(n * h, w, 3), cv2.COLOR_YUV2RGB).reshape(n, h, w, 3)
    return ClipFrames(rgb, luma, fps)


def picture_box(gray: np.ndarray, dark: float = 30.0) -> tuple[tuple[int, int], tuple[int, int]]:
    """(top, bottom), (left, right) of the picture inside letterbox/pillarbox bars of [N, h, w]
    frames: rows and columns dark in every frame are bars (the whole frame when none is found,
    or when the rest is small)."""
    def inner(profile):
        lit = np.nonzero(profile >= dark)[0]
        if not len(lit) or lit[-1] + 1 - lit[0] < len(profile) // 2:
            return 0, len(profile)
        return int(lit[0]), int(lit[-1]) + 1
    return inner(gray.max(axis=(0, 2))), inner(gray.max(axis=(0, 1)))
