"""Make the awkward inputs a curation job meets in the wild, from a clean synthetic video."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def _frames(src: Path, limit: int = 10**9):
    with av.open(str(src)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= limit:
                return
            yield f.to_ndarray(format="rgb24")


def _encode(
    dst: Path,
    frames,
    rate=24,
    pix_fmt="yuv420p",
    codec="libx264",
    pts=None,
    rotation=None,
    options=None,
    container_options=None,
):
    with av.open(str(dst), "w", options=container_options or {}) as c:
        s = c.add_stream(codec, rate=rate)
        if pts is not None:  # the encoder's clock must resolve the given timestamps
            s.codec_context.time_base = Fraction(1, 48)
        first = True
        for i, rgb in enumerate(frames):
            if first:
                s.height, s.width = rgb.shape[:2]
                s.pix_fmt = pix_fmt
                s.options = options or {}
                if rotation is not None:
                    s.set_display_rotation(rotation)
                first = False
            f = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            f.pts = pts[i] if pts is not None else i
            f.time_base = Fraction(1, 48) if pts is not None else 1 / Fraction(rate)
            c.mux(s.encode(f))
        c.mux(s.encode(None))


def make_bad_inputs(src: Path, out: Path) -> dict[str, Path]:
    """Returns {kind: path}; `src` is a clean synthetic mp4 of a few shots."""
    out.mkdir(parents=True, exist_ok=True)
    p = {
        k: out / f"{k}.mp4"
        for k in (
            "zero_byte",
            "truncated",
            "truncated_faststart",
            "text",
            "audio_only",
            "corrupt_middle",
            "vfr",
            "rotated",
            "ten_bit",
        )
    }
    p["zero_byte"].write_bytes(b"")
    data = src.read_bytes()
    p["truncated"].write_bytes(data[: len(data) * 2 // 5])  # moov at the end: index lost
    _encode(p["truncated_faststart"], _frames(src), container_options={"movflags": "faststart"})
    fs = p["truncated_faststart"].read_bytes()
    p["truncated_faststart"].write_bytes(fs[: len(fs) * 3 // 5])  # index kept, the tail missing
    p["text"].write_text("this is a shopping list, not a video\n" * 20)
    with av.open(str(p["audio_only"]), "w") as c:
        s = c.add_stream("aac", rate=48000)
        t = np.arange(48000 * 2) / 48000
        wave = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
        for i in range(0, wave.shape[1], 1024):
            fr = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, i : i + 1024]), format="fltp", layout="mono")
            fr.sample_rate = 48000
            fr.pts = i
            c.mux(s.encode(fr))
        c.mux(s.encode(None))
    # Garbage over a stretch of the middle of the media data: the decoder sees corrupt slices.
    raw = bytearray(data)
    mid = len(raw) // 2
    rng = np.random.default_rng(0)
    raw[mid : mid + 6000] = rng.integers(0, 256, 6000, dtype=np.uint8).tobytes()
    p["corrupt_middle"].write_bytes(bytes(raw))
    make_vfr(src, p["vfr"])
    _encode(p["rotated"], _frames(src, 72), rotation=90)
    _encode(p["ten_bit"], _frames(src, 72), pix_fmt="yuv420p10le")
    return p


def make_vfr(src: Path, dst: Path, frames: int = 120) -> None:
    """The first `frames` frames of `src` at a variable rate: each frame shown for 1/16 s, then
    two for 1/24 s, over and over (timestamps in 1/48 s)."""
    steps = np.where(np.arange(frames) % 3 == 0, 3, 2)
    _encode(dst, _frames(src, frames), pts=np.r_[0, np.cumsum(steps)[:-1]].tolist())


def corrupt_packets(src: Path, dst: Path, at: tuple[float, ...] = (0.3, 0.5, 0.7), nbytes: int = 32) -> list[int]:
    """Remux `src` to `dst` (nothing re-encoded) with the first `nbytes` of a few non-key packets
    overwritten (at these fractions of the stream), so the decoder rejects those packets as real
    damage does. Returns the pts of the packets corrupted."""
    with av.open(str(src)) as c:
        packets = [(p.pts, p.is_keyframe) for p in c.demux(c.streams.video[0]) if p.size]
    targets = set()
    for f in at:
        k = int(f * len(packets))
        while packets[k][1]:
            k += 1
        targets.add(packets[k][0])
    with av.open(str(src)) as c, av.open(str(dst), "w") as o:
        stream = o.add_stream_from_template(c.streams.video[0])
        for p in c.demux(c.streams.video[0]):
            if not p.size:
                continue
            if p.pts in targets:
                data = bytearray(bytes(p))
                data[:nbytes] = b"\xff" * nbytes
                q = av.Packet(bytes(data))
                q.pts, q.dts, q.time_base = p.pts, p.dts, p.time_base
                p = q
            p.stream = stream
            o.mux(p)
    return sorted(targets)


if __name__ == "__main__":
    import sys

    src = Path(sys.argv[1])
    for k, v in make_bad_inputs(src, Path(sys.argv[2])).items():
        print(k, v, v.stat().st_size)
