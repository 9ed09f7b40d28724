"""Video I/O on PyAV: an H.264 writer with constant frame rate and exact frame count."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

COMMON_RATES = {23.976: Fraction(24000, 1001), 29.97: Fraction(30000, 1001), 59.94: Fraction(60000, 1001)}


def as_rate(fps: float | Fraction | str) -> Fraction:
    """Frame rate as an exact fraction (23.976 -> 24000/1001), as containers store it."""
    if isinstance(fps, Fraction):
        return fps
    if isinstance(fps, str):
        return Fraction(fps)
    for approx, exact in COMMON_RATES.items():
        if abs(fps - approx) < 0.005 or abs(fps - float(exact)) < 1e-6:
            return exact
    return Fraction(fps).limit_denominator(1001)


class Mp4Writer:
    """Write RGB uint8 frames to an H.264 mp4, one frame per tick of a constant rate.

    pts are set explicitly so decoders count exactly the frames written.
    """

    def __init__(self, path: str | Path, fps, width: int, height: int, crf: int = 20,
                 preset: str = "veryfast", gop: int | None = None, fmt: str | None = None):
        if width % 2 or height % 2:
            raise ValueError(f"yuv420p needs even sizes, got {width}x{height}")
        self.rate = as_rate(fps)
        self.container = av.open(str(path), mode="w", format=fmt)
        self.stream = self.container.add_stream("libx264", rate=self.rate)
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        opts = {"crf": str(crf), "preset": preset}
        if gop:
            opts["g"] = str(gop)
        self.stream.options = opts
        self.count = 0

    def write(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.count
        frame.time_base = 1 / self.rate
        self.container.mux(self.stream.encode(frame))
        self.count += 1

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
