"""Timing, camera motion, foreground motion and deformation from one pass of optical flow.

For each consecutive frame pair: dense DIS flow, sampled where the image has texture (cel
fills are flat, so flow there is interpolation, not evidence), and a RANSAC similarity model
of the camera fitted to it. Then:

- held drawing: the frame equals the previous one once the camera move is undone;
- camera: the per-frame models, about the frame centre, aggregated into taxonomy tags;
- foreground: flow the camera does not explain. At each new drawing the foreground's flow is
  split into what is rigid and what is not. An affine fit gives anisotropic stretch and shear
  (squash-and-stretch, smears) and area change; then up to `rigid_parts` rigid pieces
  (translation, rotation, uniform scale: a body sliding, a head turning, a limb swinging) are
  peeled off one after another, and the share of the foreground that none of them explains is
  the non-rigid rest (wobble, melting, a new pose). Only the non-rigid part is deformation, so
  a fast pan, a rigid slide or an arm swing scores near zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from annotators.signals.frames import picture_box

IDENTITY = np.array([[1, 0, 0], [0, 1, 0]], np.float32)


@dataclass
class MotionParams:
    despeckle: int = 5  # median filter size applied before everything (0: off); see MotionAnalyser.run
    texture: float = 20.0  # Sobel magnitude above which flow is trusted
    grid: int = 3  # sample every `grid` px
    ransac_px: float = 0.7
    held_diff: int = 25  # grey levels: a pixel changed
    held_fraction: float = 0.02  # share of changed pixels under which the drawing is held...
    held_relative: float = 0.35  # ...or under this share of the clip's typical drawing change
    cadence_contrast: float = 1.3  # a new drawing changes this much more than the held frames after it...
    cadence_fit: float = 0.67  # ...in this share of the runs, for a shot to be read as steadily on 2s, 3s or 4s
    cadence_windows: int = 4  # runs needed to say so
    # Limited TV animation holds drawings on 6s and 8s (a third of a second at 24 fps) besides
    # 2s-4s; beyond 8 a hold is a held drawing, not a cadence. Also the cap of the cadence read
    # from the share of held frames (1 / (1 - held_ratio)) when no steady rhythm fits.
    cadence_max: int = 8
    foreground_px: float = 0.7  # residual flow (px) that marks a foreground point
    open_px: int = 1  # changes thinner than 2 * open_px + 1 px are strokes, not drawing changes
    region_grow: int = 2  # px the changed region is grown by to take in the subject's still parts
    smear_ratio: float = 1.5  # a smear differs from each neighbour this much more than they differ
    smear_min: float = 0.02  # ...and changes at least this share of the frame
    impact_change: float = 0.5  # share of pixels changed by an impact/flash frame
    # Impact sequences run 1-4 frames at 24 fps (up to ~170 ms: a flash, or a held inverted or
    # two-tone drawing); a break that comes back within this many frames is an impact, not a cut.
    impact_max_frames: int = 4
    # Measured, off (0): a missed cut must also stand out from the shot's own frame-to-frame
    # change, at least this many times the median change of the 3 pairs either side (3 is
    # PySceneDetect's AdaptiveDetector default). It clears speed lines redrawn every frame
    # under a zoom, and loses as many cuts between shots with such lines (BENCHMARKS.md,
    # issue 24, `benchmarks/missed_cuts.py`).
    cut_ratio: float = 0.0
    rigid_parts: int = 3  # rigid pieces peeled off the foreground before measuring the rest
    part_px: float = 1.0  # flow error (px) within which a point moves with a rigid piece
    nonrigid_weight: float = 0.8  # weight of the unexplained foreground share in the raw deformation
    smear_weight: float = 0.5  # weight of the share of smear frames in the raw deformation
    deformation_scale: float = 0.5  # raw deformation giving score 1 - 1/e (median clip ~0.5)


@dataclass
class PairMotion:
    M: np.ndarray  # 2x3 camera model, previous -> current
    changed: float  # share of pixels changed after camera compensation
    flow_mag: float  # mean |flow| (baseline "motion score"), px
    fg_mag: float = 0.0  # mean residual flow on the foreground, px
    deform: float | None = None  # non-rigid deformation of the foreground at a new drawing
    stretch: float = 0.0  # log axis ratio of the foreground affine
    area: float = 0.0  # |log area change| of the foreground affine
    nonrigid: float = 0.0  # share of the foreground that no rigid piece explains


@dataclass
class MotionResult:
    pairs: list[PairMotion] = field(default_factory=list)
    width: int = 0
    height: int = 0
    gray: list = field(default_factory=list, repr=False)  # the analysis frames, for smear checks


def _lengths(v: np.ndarray) -> np.ndarray:
    """np.linalg.norm(v, axis=-1) of 2-vectors, the same values (x * x + y * y, then the root,
    in v's dtype) without numpy's reduction over a last axis of length 2 (5x slower)."""
    x, y = v[..., 0], v[..., 1]
    return np.sqrt(x * x + y * y)


def _affine_parts(A: np.ndarray) -> tuple[float, float]:
    """(log axis ratio, |log area change|) of a 2x2 linear map; 0 for a rotation."""
    s = np.linalg.svd(A.astype(np.float64), compute_uv=False)
    s = np.maximum(s, 1e-6)
    return float(math.log(s[0] / s[1])), float(abs(math.log(s[0] * s[1])))


class MotionAnalyser:
    def __init__(self, params: MotionParams | None = None):
        self.p = params or MotionParams()
        self.dis = cv2.DISOpticalFlow.create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)

    def run(self, rgb: np.ndarray) -> MotionResult:
        p = self.p
        gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb]
        # Screen effects redrawn every frame (thin speed and focus lines, particles) are
        # thinner than the median filter at analysis width: gone before flow is computed, so
        # the camera is fitted to the world. Held drawings and deformation are judged on the
        # unfiltered frames, where small drawing changes survive.
        seen = [cv2.medianBlur(g, p.despeckle) for g in gray] if p.despeckle else gray
        out = MotionResult(width=rgb.shape[2] if len(rgb) else 0, height=rgb.shape[1] if len(rgb) else 0, gray=gray)
        if len(gray) < 2:
            return out
        h, w = gray[0].shape
        (top, bottom), (left, right) = picture_box(gray)
        # Flow is sampled inside the picture only: the edge of a letterbox or pillarbox bar is
        # strong texture that never moves, and would pull the camera fit toward a zoom.
        ys, xs = np.mgrid[top + 4 : bottom - 4 : p.grid, left + 4 : right - 4 : p.grid]
        pts = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
        xi, yi = pts[:, 0].astype(int), pts[:, 1].astype(int)
        m = 6  # border left out of comparisons (warping replicates it)
        for (a, b), (fa, fb) in zip(zip(gray, gray[1:]), zip(seen, seen[1:])):
            flow = self.dis.calc(fa, fb, None)  # type: ignore[call-overload]  # (stubs: no None for the output flow)
            tex = (np.abs(cv2.Sobel(fa, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(fa, cv2.CV_32F, 0, 1)))[
                yi, xi
            ] > p.texture
            src = pts[tex]
            dst = src + flow[yi[tex], xi[tex]]
            M = None
            if len(src) >= 12:
                M, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=p.ransac_px)
            M = IDENTITY if M is None else M.astype(np.float32)
            # Blur before comparing: sub-pixel resampling of outlines is not a new drawing.
            warped = cv2.GaussianBlur(cv2.warpAffine(a, M, (w, h), borderMode=cv2.BORDER_REPLICATE), (0, 0), 1.0)
            diff = cv2.absdiff(warped, cv2.GaussianBlur(b, (0, 0), 1.0))
            changed_mask = cv2.compare(diff, p.held_diff, cv2.CMP_GT)  # type: ignore[call-overload]  # (a scalar: fine)
            inner = changed_mask[m:-m, m:-m]
            changed = cv2.countNonZero(inner) / inner.size if inner.size else float(inner.mean())
            if p.open_px:  # thin strokes (speed and focus lines redrawn over the frame) are not the subject
                k = 2 * p.open_px + 1
                changed_mask = cv2.morphologyEx(changed_mask, cv2.MORPH_OPEN, np.ones((k, k), np.uint8))
            pm = PairMotion(M=M, changed=changed, flow_mag=float(_lengths(flow).mean()))
            if len(src) >= 12:
                cam = src @ M[:, :2].T + M[:, 2]
                resid = _lengths(dst - cam)
                fg = resid > p.foreground_px
                if fg.any():
                    pm.fg_mag = float(resid[fg].mean())
                # The deforming subject: textured points near what changed that the camera does
                # not explain (points of the background beside it would pull the fits to identity).
                k = 2 * p.region_grow + 1
                region = (cv2.dilate(changed_mask, np.ones((k, k), np.uint8))[yi[tex], xi[tex]] > 0) & fg
                if changed >= p.held_fraction and region.sum() >= 12:
                    pm.stretch, pm.area, pm.nonrigid = self._deformation(src[region], dst[region], M)
                    pm.deform = pm.stretch + pm.area + p.nonrigid_weight * pm.nonrigid
            out.pairs.append(pm)
        return out

    def _deformation(self, src: np.ndarray, dst: np.ndarray, M: np.ndarray) -> tuple[float, float, float]:
        """Non-rigid part of the foreground's motion between two drawings (camera removed)."""
        Minv = cv2.invertAffineTransform(M)
        d = dst @ Minv[:, :2].T + Minv[:, 2]  # back into the previous frame's coordinates
        A, _ = cv2.estimateAffine2D(src, d, method=cv2.RANSAC, ransacReprojThreshold=1.5)
        if A is None:
            return 0.0, 0.0, 0.0
        stretch, area = _affine_parts(A[:, :2])
        return stretch, area, self._nonrigid_share(src, d)

    def _nonrigid_share(self, src: np.ndarray, dst: np.ndarray) -> float:
        """Share of point moves src -> dst that none of up to `rigid_parts` rigid pieces explains:
        the largest piece (a RANSAC similarity) is taken out, then the largest of what is left..."""
        left = np.ones(len(src), bool)
        for _ in range(self.p.rigid_parts):
            if left.sum() < 6:  # too few points left to be a piece: what remains is non-rigid
                break
            S, _ = cv2.estimateAffinePartial2D(
                src[left], dst[left], method=cv2.RANSAC, ransacReprojThreshold=self.p.part_px
            )
            if S is None:
                break
            left &= _lengths(dst - (src @ S[:, :2].T + S[:, 2])) > self.p.part_px
        return float(left.mean())


def camera_terms(M: np.ndarray, w: int, h: int) -> tuple[float, float, float, float]:
    """(tx, ty) of the frame centre in frame widths, log scale and rotation (rad) of a model."""
    c = np.array([w / 2, h / 2], np.float32)
    moved = M[:, :2] @ c + M[:, 2] - c
    scale = float(math.hypot(M[0, 0], M[1, 0]))
    return float(moved[0] / w), float(moved[1] / w), math.log(max(scale, 1e-6)), math.atan2(M[1, 0], M[0, 0])


def summarise(res: MotionResult, p: MotionParams, cam: dict) -> dict:
    """Clip-level timing, camera, motion and deformation fields from per-pair motion."""
    pairs = res.pairs
    n = len(pairs) + 1
    if not pairs:
        return {
            "cadence": 1.0,
            "held_ratio": 0.0,
            "camera_motion": ["static"],
            "motion_score": 0.0,
            "deformation_score": 0.0,
            "smear_frames": 0,
            "impact_frames": 0,
            "scene_changes": 0,
            "camera": {},
            "deformation_raw": 0.0,
            "flow_magnitude": 0.0,
            "smear_at": [],
            "impact_at": [],
        }
    changed = np.array([q.changed for q in pairs])
    impact = _impacts(
        changed, p.impact_change, p.impact_max_frames, lambda a, b: _changed_between(res, a, b, p, steady=True)
    )
    # A change as big as an impact that does not come back is a cut the shot detector missed:
    # the clip holds two shots. Counted (the caller flags the clip) and kept out of deformation.
    # Only where frames on both sides can show it: a flash on a clip's first or last frames
    # looks the same as a cut there.
    cuts = [
        i
        for i in range(2, len(pairs) - 2)
        if changed[i] >= p.impact_change
        and i not in impact
        and i + 1 not in impact
        and _stands_out(changed, i, p.cut_ratio)
        and _changed_between(res, i - 1, i + 3, p) >= p.impact_change
    ]
    # Impact frames are not drawings of the shot: leave them out of timing and deformation.
    normal = [i for i in range(len(pairs)) if i not in impact and i + 1 not in impact and i not in cuts]
    typical = float(np.percentile(changed[normal], 80)) if normal else 0.0
    held_thr = min(p.held_fraction, max(0.002, p.held_relative * typical))
    held = np.array([changed[i] < held_thr for i in normal], bool)
    held_ratio = float(held.mean()) if len(held) else 0.0
    cadence = _steady_cadence(changed, set(normal), held_thr, p) or float(
        1.0 / max(1.0 - held_ratio, 1.0 / (p.cadence_max + 0.5))
    )
    terms = np.array([camera_terms(q.M, res.width, res.height) for q in pairs])
    tags, stats = camera_tags(terms[normal] if normal else terms, cam)
    deforms = [d for d in (pairs[i].deform for i in normal) if d is not None]
    raw = float(np.mean(deforms)) if deforms else 0.0
    starts = [i + 1 for i in normal if changed[i] >= held_thr]  # frames where a new drawing appears
    smear_at = _smears(res, starts, impact, p)
    smear_frames = len(smear_at)
    raw += p.smear_weight * smear_frames / n  # smears are deformation too: the most extreme kind
    return {
        "cadence": round(cadence, 3),
        "held_ratio": round(held_ratio, 4),
        "camera_motion": tags,
        "motion_score": round(float(np.mean([q.fg_mag for q in pairs])) / max(1, res.width), 6),
        "deformation_score": round(1.0 - math.exp(-raw / p.deformation_scale), 4),
        "smear_frames": smear_frames,
        "impact_frames": len(impact),
        "scene_changes": len(cuts),
        "camera": stats,
        "deformation_raw": round(raw, 4),
        "flow_magnitude": round(float(np.mean([q.flow_mag for q in pairs])) / max(1, res.width), 6),
        "smear_at": smear_at,
        "impact_at": sorted(impact),
    }


def _steady_cadence(changed: np.ndarray, normal: set[int], held_thr: float, p: MotionParams) -> float | None:
    """The cadence c of a shot animated steadily on c's: in nearly every run of c frames where
    something stands out from the floor of held frames, it is the first frame that changes, and
    clearly more than the others. That holds where effects redrawn every frame or a moving
    camera keep every frame from being held. A shot on c's also fits every divisor of c (runs
    of 2 on 6s: the runs holding a change start with it), never a multiple: the largest c in
    2..cadence_max that fits is the cadence (searched as multiples of the smallest that fits).
    None when none fits (then the share of held frames gives the cadence, which also covers
    mixed timing)."""
    for c in range(2, p.cadence_max + 1):
        if _fits(changed, normal, held_thr, p, c):
            best = c
            for m in range(2 * c, p.cadence_max + 1, c):
                if _fits(changed, normal, held_thr, p, m):
                    best = m
            return float(best)
    return None


def _fits(changed: np.ndarray, normal: set[int], held_thr: float, p: MotionParams, c: int) -> bool:
    """Some phase of runs of c frames has the rhythm of a shot on c's (see _steady_cadence)."""
    for phase in range(c):
        runs = [
            changed[s : s + c]
            for s in range(phase, len(changed) - c + 1, c)
            if all(i in normal for i in range(s, s + c))
        ]  # impact frames say nothing about timing
        if len(runs) < p.cadence_windows:
            continue
        floor = float(np.median([r[1:] for r in runs]))  # held frames, effects and all
        runs = [r for r in runs if r.max() >= max(held_thr, p.cadence_contrast * floor)]  # not a held stretch
        fits = sum(bool(r[0] > p.cadence_contrast * r[1:].max()) for r in runs)
        if len(runs) >= p.cadence_windows and fits >= p.cadence_fit * len(runs):
            return True
    return False


def _changed_between(res: MotionResult, a: int, b: int, p: MotionParams, steady: bool = False) -> float:
    """Share of pixels that differ between frames a < b once the camera moves between them
    (composed from the per-pair models) are undone. `steady`: the frames between may not be
    the shot's (an impact: the camera fit on them is meaningless), so the camera is taken to
    keep the move it made into frame a."""
    M = np.vstack([IDENTITY, [0, 0, 1]]).astype(np.float64)
    for k in range(a, b):
        q = res.pairs[max(a - 1, 0)] if steady and a > 0 else (None if steady else res.pairs[k])
        M = (np.vstack([q.M, [0, 0, 1]]) if q is not None else np.eye(3)) @ M
    h, w = res.gray[a].shape
    warped = cv2.GaussianBlur(
        cv2.warpAffine(res.gray[a], M[:2].astype(np.float32), (w, h), borderMode=cv2.BORDER_REPLICATE), (0, 0), 1.0
    )
    diff = np.abs(warped.astype(np.int16) - cv2.GaussianBlur(res.gray[b], (0, 0), 1.0))[6:-6, 6:-6]
    return float((diff > p.held_diff).mean())


def _smears(res: MotionResult, starts: list[int], impact: set[int], p: MotionParams) -> list[int]:
    """Frames showing a smear drawing: one that neither neighbouring drawing explains, while
    the neighbours explain each other (the pose before and after a smear are close)."""
    frames: list[int] = []
    for k in range(1, len(starts) - 1):
        s, e = starts[k], starts[k + 1]  # the drawing held over [s, e)
        if s in impact or (e - 1) in impact:
            continue
        into = res.pairs[s - 1].changed
        out_of = res.pairs[e - 1].changed
        across = _changed_between(res, s - 1, e, p)
        if min(into, out_of) > p.smear_ratio * across and min(into, out_of) > p.smear_min:
            frames += range(s, e)
    return frames


def _stands_out(changed: np.ndarray, i: int, ratio: float) -> bool:
    """Pair i changes at least `ratio` times the median change of the 3 pairs either side."""
    around = np.concatenate([changed[max(0, i - 3) : i], changed[i + 1 : i + 4]])
    return bool(changed[i] >= ratio * np.median(around))


def _impacts(changed: np.ndarray, threshold: float, longest: int = 4, between=None) -> set[int]:
    """Frames (as pair indices into the clip) that break from the shot and come back within
    `longest` frames: a big change in, a big change out, and (where `between(a, b)`, the
    change from frame a to frame b, is given) the frame after them close to the frame before,
    so that effects redrawn big with every drawing (speed and focus lines) are not impacts."""
    frames: set[int] = set()
    for i in range(len(changed)):
        if changed[i] < threshold:
            continue
        for L in range(1, longest + 1):
            if i + L < len(changed) and changed[i + L] >= threshold:
                # back: the frames either side are at least twice as close to each other as
                # to the break (a drawing change on 2s under redrawn speed lines is not)
                if between is None or between(i, i + L + 1) < 0.5 * min(changed[i], changed[i + L]):
                    frames.update(range(i + 1, i + L + 1))
                break
    return frames


def camera_tags(terms: np.ndarray, cam: dict) -> tuple[list[str], dict]:
    """Taxonomy camera tags from per-frame (tx, ty, log scale, rotation)."""
    tx, ty, ls, rot = (terms[:, k] for k in range(4))
    n = len(tx)
    mx, my = float(np.median(tx)), float(np.median(ty))
    jitter = float(np.sqrt(np.median(np.diff(tx) ** 2 + np.diff(ty) ** 2))) if n > 2 else 0.0
    zoom = float(np.median(ls))
    steady_zoom = float(np.mean(np.sign(ls) == np.sign(zoom))) >= cam["zoom_agreement"]
    roll = float(np.median(rot))
    # A pan or tilt reads when the median drift clears both `pan` (a physical floor: half the
    # slowest pan worth naming, 0.5 px/frame on a 1920 px frame = 0.00026 widths, so a drift
    # the flow reads 50% low still counts) and `pan_sigmas` standard errors of that median
    # (1.25 sigma / sqrt(n) for a median; the per-frame sigma is the frame-to-frame jitter over
    # sqrt(2)): a static camera over subjects animated on ones leaves per-frame flow noise
    # whose median wanders by up to 0.00013 widths on the tuning footage, where the floor alone
    # would be too close to call, while a real slow pan is steady (small jitter).
    # A zoom toward a point off the frame centre moves the centre too: by |log scale| x the
    # point's offset, and framing keeps what a zoom closes on within the centre half of the
    # frame (offset <= 1/4 width), so a drift under `pan_per_zoom` (0.25) x the zoom is the
    # zoom's own.
    drift_floor = max(cam["pan"], cam["pan_per_zoom"] * abs(float(np.median(ls))))
    if n > 2:
        drift_floor = max(drift_floor, cam["pan_sigmas"] * 1.25 * jitter / math.sqrt(2 * n))
    tags = []
    if jitter > cam["shake"] and jitter > cam["shake_ratio"] * math.hypot(mx, my):
        tags.append("shake")
    else:
        if abs(mx) > drift_floor and abs(mx) >= 0.5 * abs(my):
            tags.append("pan_left" if mx > 0 else "pan_right")  # background moves right: view goes left
        if abs(my) > drift_floor and abs(my) >= 0.5 * abs(mx):
            tags.append("tilt_up" if my > 0 else "tilt_down")
    # A translation's flow carries a small scale error (flow is biased low where texture is
    # sparse, as in a sky), so a zoom beside a pan or tilt must also exceed a share of it.
    if abs(zoom) > cam["zoom"] + cam["zoom_per_pan"] * math.hypot(mx, my) and steady_zoom:
        tags.append("zoom_in" if zoom > 0 else "zoom_out")
    if abs(roll) > cam["roll"]:
        tags.append("roll")
    if not tags:
        tags = ["static"]
    stats = {
        "pan_per_frame": round(mx, 5),
        "tilt_per_frame": round(my, 5),
        "zoom_per_frame": round(zoom, 5),
        "roll_per_frame": round(roll, 5),
        "jitter": round(jitter, 5),
    }
    return tags, stats


def _size(x: float) -> str:
    """Two significant figures under 1, one decimal above (0.083, 0.4, 1.2, 12.5)."""
    return f"{x:.1f}" if x >= 1 else f"{x:.2g}"


def _widths(v: float) -> str:
    return f"{_size(abs(v) * 100)}% of the frame width per frame"


def _scale(v: float) -> str:
    return f"{_size(abs(math.expm1(v)) * 100)}% per frame"  # log scale -> the picture's change in size


# tag -> (the camera_tags stat that sizes it, that stat in words). Kept beside camera_tags so
# the units cannot drift apart: pan and tilt are both in frame *widths* (camera_terms divides
# both by w, so they compare), zoom is a log scale per frame (said as the picture's change in
# size), roll is radians per frame (said in degrees), jitter is widths from frame to frame.
_SIZES = {
    "pan_left": ("pan_per_frame", _widths),
    "pan_right": ("pan_per_frame", _widths),
    "tilt_up": ("tilt_per_frame", _widths),
    "tilt_down": ("tilt_per_frame", _widths),
    "zoom_in": ("zoom_per_frame", _scale),
    "zoom_out": ("zoom_per_frame", _scale),
    "roll": ("roll_per_frame", lambda v: f"{_size(math.degrees(abs(v)))}° per frame"),
    "shake": ("jitter", lambda v: f"{_size(abs(v) * 100)}% of the frame width from frame to frame"),
}


def camera_phrase(tags: list[str] | None, camera: dict | None) -> str:
    """The measured camera in words and units, for people (the audit's clip page): each tag of
    a record's `camera_motion` sized by its measurement in `signals["camera"]` (camera_tags'
    stats), e.g. "pan left, 1.2% of the frame width per frame; zoom in, 0.8% per frame". The
    direction is the tag's; a tag whose measurement is missing from `signals` is said without
    a size rather than with a made-up one."""
    if not tags:
        return "not measured"
    camera = camera or {}
    said = []
    for tag in tags:
        words = tag.replace("_", " ")
        stat, say = _SIZES.get(tag, (None, None))
        v = camera.get(stat) if stat else None
        if isinstance(v, (int, float)) and math.isfinite(v):
            assert say is not None  # found with its stat
            words += ", " + say(v)
        elif stat:
            words += " (no measurement)"
        said.append(words)
    return "; ".join(said)
