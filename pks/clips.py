"""Cut shots out of a source video into their own H.264 clips, frame-accurately.

One sequential decode of the source feeds every clip's writer, so the cost is one decode
plus the encodes, and clip i holds exactly frames [start, end) of the source (the same frame
numbering the detectors saw, gaps from corrupt data included). Each clip is written under a
temporary name of its own and renamed when complete: a retried task can overlap the attempt
it replaces (a node taken for dead keeps running its tasks for a while), and two writers of
one clip must not share a file.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np

from pks.decode import iter_decoded
from pks.videoio import Mp4Writer


def clip_path(out: str | Path, clip_id: str) -> Path:
    """Where a run keeps a clip's video: OUT/clips/{clip_id}.mp4."""
    return Path(out) / "clips" / f"{clip_id}.mp4"


def _upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Apply the display rotation (degrees counter-clockwise, as in the display matrix)."""
    k = {90: 1, 180: 2, 270: 3}.get(rotation % 360, 0)
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb


def write_clips(source: str, spans: list[tuple[int, int, Path]], fps: float, rotation: int = 0,
                crf: int = 18, preset: str = "veryfast", written: dict[Path, int] | None = None) -> dict[Path, int]:
    """Write each (start, end, path) span of `source`. Returns frames written per path; pass
    `written` to see them also when a failure ends the pass (finished clips stay)."""
    spans = sorted(spans)
    written = {} if written is None else written
    open_: dict[Path, tuple[Mp4Writer, Path, int]] = {}  # path -> (writer, temp path, end)
    k = 0  # index of the next span to open
    try:
        for i, frame, _ in iter_decoded(source):
            while k < len(spans) and spans[k][0] <= i:
                s, e, path = spans[k]
                tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.part")  # one per writer (see above)
                h, w = frame.height, frame.width
                if rotation % 180 == 90:
                    w, h = h, w
                open_[path] = (Mp4Writer(tmp, fps, w - w % 2, h - h % 2, crf=crf, preset=preset, fmt="mp4"), tmp, e)
                written[path] = 0
                k += 1
            if not open_:
                if k >= len(spans):
                    break
                continue
            rgb = _upright(frame.to_ndarray(format="rgb24"), rotation)
            for path, (writer, tmp, e) in list(open_.items()):
                if i < e:
                    writer.write(rgb[: rgb.shape[0] - rgb.shape[0] % 2, : rgb.shape[1] - rgb.shape[1] % 2])
                    written[path] += 1
                if i + 1 >= e:
                    writer.close()
                    os.replace(tmp, path)
                    del open_[path]
    finally:
        for writer, tmp, _ in open_.values():  # a span past the decodable end: leave no partial file
            try:
                writer.close()
            finally:
                tmp.unlink(missing_ok=True)
    return written
