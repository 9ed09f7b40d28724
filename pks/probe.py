"""Ingest: find input videos, hash them, and probe container and stream with PyAV."""

from __future__ import annotations

import contextlib
import glob as globlib
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from pks.errors import UserError
from pks.seek import Grid, grid_of
from pks.store import is_url, storage_errors

VIDEO_EXTS = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv"}


class ProbeError(Exception):
    """The file is not a usable video; the message is the reason recorded for it."""


@dataclass
class VideoInfo:
    path: str
    video_id: str
    codec: str
    pix_fmt: str
    bit_depth: int
    width: int  # as displayed (after rotation)
    height: int
    rotation: int  # degrees, from the display matrix
    avg_fps: float
    real_fps: float  # the stream's base (r_frame_rate) rate
    vfr: bool
    n_frames: int
    duration: float

    def to_dict(self) -> dict:
        return asdict(self)


def content_hash(path: str | Path | BinaryIO, chunk: int = 1 << 20) -> str:
    """First 16 hex digits of BLAKE2b over the bytes (of a file, or of an open binary file):
    identical files share a video_id."""
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") if isinstance(path, (str, Path)) else contextlib.nullcontext(path) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def probe(path: str | Path, video_id: str | None = None) -> VideoInfo:
    """Probe a video. Demuxes every packet (no decoding) for an exact frame count and timing,
    and decodes the first frame to prove the stream is decodable."""
    return probe_grid(path, video_id)[0]


def probe_grid(path: str | Path, video_id: str | None = None) -> tuple[VideoInfo, Grid | None]:
    """`probe` and, from the same demux, `pks.seek.frame_grid`'s grid: a long video's plan
    reads the container once instead of twice."""
    path = str(path)
    if Path(path).stat().st_size == 0:
        raise ProbeError("empty file (0 bytes)")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or str(e)
        raise ProbeError(f"not a readable media container (corrupt, truncated or not a video): {why}") from None
    with container:
        if not container.streams.video:
            kinds: list[str] = sorted({s.type for s in container.streams}) or ["none"]
            raise ProbeError(f"no video stream (streams: {', '.join(kinds)})")
        stream = container.streams.video[0]
        cc = stream.codec_context
        pts = []
        gridded = True  # every packet has a timestamp and the demux ran to the end (frame_grid's terms)
        try:
            for pkt in container.demux(stream):
                if pkt.size:
                    if pkt.pts is not None:
                        pts.append(pkt.pts)
                    else:
                        gridded = False
        except av.error.FFmpegError as e:
            gridded = False
            if not pts:
                raise ProbeError(f"cannot demux video packets: {e}") from None
        if not pts:
            raise ProbeError("video stream has no frames")
        container.seek(0)
        rotation = 0
        try:
            first = next(container.decode(stream))
            rotation = int(round(getattr(first, "rotation", 0) or 0)) % 360
        except (StopIteration, av.error.FFmpegError) as e:
            raise ProbeError(f"no decodable video frame: {e}") from None
        tb = float(stream.time_base or 0)
        ts = np.sort(np.asarray(pts, dtype=np.int64))
        deltas = np.diff(ts)
        duration = float((ts[-1] - ts[0] + (np.median(deltas) if len(deltas) else 0)) * tb) if tb else 0.0
        avg = float(stream.average_rate or 0) or (len(ts) / duration if duration else 0.0)
        base = float(stream.base_rate or stream.guessed_rate or 0) or avg
        # Variable frame rate: packet spacing varies beyond timestamp rounding (1 tick + 1%).
        vfr = bool(len(deltas) > 1 and (deltas.max() - deltas.min()) > max(1, 0.01 * np.median(deltas)) + 1)
        w, h = cc.width, cc.height
        if rotation in (90, 270):
            w, h = h, w
        pix = cc.pix_fmt or first.format.name
        depth = 10 if "10" in pix else 12 if "12" in pix else 8
        info = VideoInfo(
            path=path,
            video_id=video_id or content_hash(path),
            codec=cc.name,
            pix_fmt=pix,
            bit_depth=depth,
            width=w,
            height=h,
            rotation=rotation,
            avg_fps=avg,
            real_fps=base,
            vfr=vfr,
            n_frames=len(ts),
            duration=duration,
        )
        grid = grid_of(ts, stream.average_rate, stream.time_base) if gridded else None
        return info, grid


def list_inputs(spec: str, storage_options: dict | None = None) -> list[str]:
    """Expand an input spec: a folder (recursive, video extensions), a glob, a list file
    (one path per line, `#` comments), a single file, or an fsspec URL (s3://, gs://, http(s)://
    of one file, a prefix or a glob)."""
    if is_url(spec):
        with storage_errors(spec):  # a missing client, bucket or credentials: one line
            import fsspec

            fs, _, paths = fsspec.get_fs_token_paths(spec, storage_options=storage_options)
            if len(paths) == 1 and not fs.isfile(paths[0]):  # a file first: HTTP's isdir reads the page
                paths = [p for p in fs.find(paths[0]) if Path(p).suffix.lower() in VIDEO_EXTS]
        if not paths:
            raise UserError(f"no input matches {spec!r}")
        proto = spec.split("://", 1)[0]
        return sorted(f"{proto}://{p}" if "://" not in p else p for p in paths)
    spec = spec.removeprefix("file://")
    p = Path(spec)
    if p.is_dir():
        return sorted(str(x) for x in p.rglob("*") if x.is_file() and x.suffix.lower() in VIDEO_EXTS)
    if p.is_file() and p.suffix.lower() in (".txt", ".lst", ".list"):
        lines = (ln.strip() for ln in p.read_text().splitlines())
        return [ln for ln in lines if ln and not ln.startswith("#")]
    if p.is_file():
        return [str(p)]
    matches = sorted(globlib.glob(spec, recursive=True))
    if not matches:
        raise UserError(f"no input matches {spec!r}")
    return [m for m in matches if Path(m).is_file()]
