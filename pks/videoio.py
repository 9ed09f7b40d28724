"""Video I/O on PyAV: an H.264 writer with constant frame rate and exact frame count."""

from __future__ import annotations

import contextlib
import functools
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


ENCODERS = ("auto", "libx264", "h264_nvenc")


@functools.cache
def encoder_works(name: str) -> bool:
    """Whether this FFmpeg build has `name` and it opens here (NVENC needs an NVIDIA GPU and
    driver, not only the build flag)."""
    if name not in av.codecs_available:
        return False
    try:
        cc = av.CodecContext.create(name, "w")
        assert isinstance(cc, av.VideoCodecContext)  # an encoder name from ENCODERS
        cc.width, cc.height, cc.pix_fmt, cc.time_base = 256, 144, "yuv420p", Fraction(1, 24)
        cc.open()
        return True
    except (av.error.FFmpegError, ValueError):
        return False


def pick_encoder(name: str = "auto") -> str:
    """`auto`: h264_nvenc where it works, else libx264; a named encoder as it is."""
    if name == "auto":
        return "h264_nvenc" if encoder_works("h264_nvenc") else "libx264"
    return name


class Mp4Writer:
    """Write frames (RGB uint8 arrays, or decoded av.VideoFrames) to an H.264 mp4, one frame
    per tick of a constant rate.

    pts are set explicitly so decoders count exactly the frames written. `crf` is x264's
    constant quality; NVENC gets the same number as its constant-quality target (cq).
    `threads` 0 lets the encoder choose.
    """

    def __init__(
        self,
        path: str | Path,
        fps,
        width: int,
        height: int,
        crf: int = 20,
        preset: str = "veryfast",
        gop: int | None = None,
        fmt: str | None = None,
        encoder: str = "libx264",
        threads: int = 0,
    ):
        if width % 2 or height % 2:
            raise ValueError(f"yuv420p needs even sizes, got {width}x{height}")
        self.rate = as_rate(fps)
        self.container = av.open(str(path), mode="w", format=fmt)
        stream = self.container.add_stream(encoder, rate=self.rate)
        assert isinstance(stream, av.VideoStream)  # a video encoder's stream
        self.stream = stream
        self.stream.width, self.stream.height = width, height
        self.stream.pix_fmt = "yuv420p"
        if encoder == "h264_nvenc":
            opts: dict[str, object] = {"rc": "vbr", "cq": str(crf), "b": "0"}
        else:
            opts = {"crf": str(crf), "preset": preset}
        if gop:
            opts["g"] = str(gop)
        self.stream.options = opts
        if threads:
            self.stream.codec_context.thread_count = threads
        self.count = 0

    def write(self, rgb: np.ndarray) -> None:
        self.write_frame(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24"))

    def write_frame(self, frame: av.VideoFrame) -> None:
        """Encode a frame of the stream's size as it is (a decoded yuv420p frame goes in
        without a round trip through RGB). The frame's own timestamp is replaced."""
        frame.pts = self.count
        frame.pict_type = av.video.frame.PictureType.NONE  # a decoded frame's type would force the encoder's
        frame.time_base = 1 / self.rate
        self.container.mux(self.stream.encode(frame))
        self.count += 1

    def close(self) -> None:
        """Flush the encoder and close the file; the file is closed even when the flush fails."""
        try:
            self.container.mux(self.stream.encode(None))
        finally:
            self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
            return
        with contextlib.suppress(Exception):  # the block's own error is the one to report
            self.close()
