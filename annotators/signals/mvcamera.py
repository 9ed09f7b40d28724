"""Camera motion from the bitstream's own motion vectors: a nearly free first estimate.

H.264 decoders can export each inter block's motion vector as frame side data (FFmpeg's
`flags2=+export_mvs`, read through PyAV as `frame.side_data["MOTION_VECTORS"]`), as NVIDIA
NeMo Curator's motion filter reads them. The vectors come out of the decode the pipeline
already does, so the cost is reading them and one robust fit per frame, instead of dense flow.

Only P-frames are used. A vector says only whether its block comes from the past or the
future (`source` -1 / +1), never from which reference frame. A P-frame predicts mostly from
the previous anchor (I or P) in display order, so the distance is known from the timestamps.
B-frames are left out: with B-pyramids (x264's default) a B-frame's past reference may be
another B-frame, which the side data does not name. Blocks of an encode with several
reference frames that point further back than the previous anchor are outliers to the fit
(RANSAC leaves them out; benchmarks/mv_camera.py --preset slow measures such encodes).

Per P-frame: the blocks' (source position -> position in this frame) pairs, kept where the
picture has texture (in flat cel fills the encoder's vectors are whatever codes cheapest, not
motion), a RANSAC similarity fitted as motion.py fits flow, and `camera_terms` of it over the
anchor distance, turned into per-frame terms (per_frame_terms says how). These go through
motion.py's `camera_tags` with the configured thresholds, so both estimates are judged by the
same rule.

Not wired into the pipeline: the flow pass that gives the camera also gives held drawings,
foreground motion and deformation, so the camera alone from the vectors saves no flow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import av
import cv2
import numpy as np
from av.video.frame import PictureType

from annotators.signals.motion import MotionParams, camera_tags, camera_terms
from pks.decode import FAST_FORMATS, _plane

MV_OPTIONS = {"flags2": "+export_mvs"}
# RANSAC's cost grows with the blocks, while a 4-parameter camera is pinned well inside its
# tolerance by far fewer: a 640x360 frame (920 macroblocks) has fewer textured vectors than
# this, all used, and there the vectors matched the flow's accuracy (benchmarks/mv_camera.py);
# a 1080p P-frame has ~6,000 vectors, thinned to this many.
MAX_BLOCKS = 1024


@dataclass
class MvFit:
    terms: np.ndarray  # [4] (tx, ty, log scale, rotation) as motion.camera_terms, over the whole gap
    gap: int  # frames since the anchor this P-frame predicts from
    blocks: int  # textured blocks fitted
    inliers: float  # share of them the fitted camera explains (agreement of the vectors)


@dataclass
class MvCollector:
    """Collects the camera fits of a span's P-frames one decoded frame at a time (frames in
    display order, from a stream opened with MV_OPTIONS), beside other consumers of the same
    decode. A P-frame whose anchor was not seen (the span starts between them) is skipped."""

    params: MotionParams = field(default_factory=MotionParams)
    width: int = 192  # analyse.width: texture and the RANSAC tolerance are judged at it
    fits: list[MvFit] = field(default_factory=list)
    frames: int = 0
    _anchor_pts: int | None = None

    def add(self, frame: av.VideoFrame, step: float | None, small: np.ndarray | None = None) -> None:
        """`step`: pts ticks per frame (stream_step; None: no rate, nothing is fitted). `small`:
        this frame at the analysis width (grey or RGB) where the caller has made it already, as
        the pipeline's ClipCollector does; otherwise it is made here (at 1080p that shrink is
        most of the cost: ~1.4 ms of ~2.3 ms per P-frame)."""
        self.frames += 1
        kind = PictureType(int(frame.pict_type))  # (PyAV 18 hands an int)
        pts = frame.pts
        if kind not in (PictureType.I, PictureType.P) or pts is None:
            return
        anchor, self._anchor_pts = self._anchor_pts, pts
        if kind != PictureType.P or anchor is None or step is None:
            return
        gap = int(round((pts - anchor) / step))
        if gap < 1:
            return
        fit = fit_frame(frame, gap, self.params, self.width, small)
        if fit is not None:
            self.fits.append(fit)


def _vectors(frame: av.VideoFrame) -> np.ndarray | None:
    try:
        sd = frame.side_data["MOTION_VECTORS"]
    except KeyError:
        return None
    a = sd.to_ndarray()
    return a[a["source"] < 0]


def fit_frame(
    frame: av.VideoFrame, gap: int, p: MotionParams, width: int = 192, small: np.ndarray | None = None
) -> MvFit | None:
    """The camera of one P-frame from its motion vectors, over the `gap` to its anchor;
    `width`: the analysis width (analyse.width), at which texture and tolerance are judged;
    `small`: the frame already shrunk to it (see MvCollector.add)."""
    a = _vectors(frame)
    if a is None or len(a) < 12:
        return None
    w, h = frame.width, frame.height
    scale = a["motion_scale"].astype(np.float32)
    # motion = source - destination, in 1/motion_scale pixels: the block's content moved by -motion.
    dst = np.stack([a["dst_x"], a["dst_y"]], 1).astype(np.float32)
    src = dst + np.stack([a["motion_x"] / scale, a["motion_y"] / scale], 1)
    # Texture at each block, judged as motion.py judges it: Sobel magnitude above `texture` on
    # the luma shrunk to the analysis width (`width`, the configured analyse.width), so
    # both estimates read motion where there is any (a frame the pipeline already shrinks).
    if small is None:
        y = _plane(frame.planes[0]) if frame.format.name in FAST_FORMATS else frame.to_ndarray(format="gray")
        small = cv2.resize(y, (width, max(2, int(round(h * width / w)))), interpolation=cv2.INTER_AREA)
    elif small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    f = small.shape[1] / w
    sob = np.abs(cv2.Sobel(small, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(small, cv2.CV_32F, 0, 1))
    bx = np.clip((dst[:, 0] * f).astype(int), 0, small.shape[1] - 1)
    by = np.clip((dst[:, 1] * f).astype(int), 0, small.shape[0] - 1)
    keep = sob[by, bx] > p.texture
    if keep.sum() < 12:
        return None
    src, dst = src[keep], dst[keep]
    if len(src) > MAX_BLOCKS:  # evenly thinned (blocks come in raster order: still spread over the frame)
        every = np.arange(0, len(src), -(-len(src) // MAX_BLOCKS))
        src, dst = src[every], dst[every]
    # motion.py's RANSAC tolerance is in analysis pixels; vectors are at source size.
    thr = p.ransac_px / f
    M, inl = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=thr)
    if M is None:
        return None
    terms = np.array(camera_terms(M.astype(np.float32), w, h))
    return MvFit(terms, gap, int(len(src)), float(inl.mean()))


def per_frame_terms(fits: list[MvFit]) -> np.ndarray:
    """[n, 4] per-frame camera terms for camera_tags from P-frame fits over gaps of g frames.

    A P-frame sees the camera's move over g frames: a drift (pan, zoom) g times over, but
    position noise (shake: the camera's place jumps each frame) once, as one frame's move shows
    it. So the drift is counted once per fit and what is left is kept whole: a pan reads its
    per-frame rate, a shake its per-frame jitter, and camera_tags judges both with the flow's
    thresholds. The drift is local (the median rate of the fit and its neighbours), as eased
    moves speed up and slow down: a span-wide rate would flip the sign of the slow ends."""
    raw = np.stack([f.terms for f in fits])
    gap = np.array([f.gap for f in fits], np.float64)[:, None]
    rate = raw / gap
    padded = np.concatenate([rate[:1], rate, rate[-1:]])
    drift = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
    return raw - (gap - 1) * drift


def mv_camera(fits: list[MvFit], cam: dict) -> tuple[list[str], dict]:
    """Taxonomy camera tags (motion.camera_tags, same thresholds) from a span's P-frame fits;
    ["static"] when no P-frame could be fitted."""
    if not fits:
        return ["static"], {"p_frames": 0}
    tags, stats = camera_tags(per_frame_terms(fits), cam)
    stats["p_frames"] = len(fits)
    stats["inliers"] = round(float(np.median([f.inliers for f in fits])), 3)
    return tags, stats


def stream_step(stream) -> float | None:
    """pts ticks per frame of a stream, or None without a rate."""
    if stream.average_rate and stream.time_base:
        return 1.0 / (float(stream.average_rate) * float(stream.time_base))
    return None


def read_spans(
    path: str, spans: list[tuple[int, int]], params: MotionParams | None = None, width: int = 192
) -> list[MvCollector]:
    """One decode of `path` with vectors exported; a collector per [start, end) span (frames
    numbered in display order from 0; corrupt-packet gaps are not filled as pks.decode does)."""
    cols = [MvCollector(params or MotionParams(), width) for _ in spans]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.options = dict(MV_OPTIONS)
        step = stream_step(stream)
        for i, frame in enumerate(container.decode(stream)):
            for c, (s, e) in zip(cols, spans):
                if s <= i < e:
                    c.add(frame, step)
    return cols
