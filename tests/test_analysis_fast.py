"""Issue 25: the analysis kernels rewritten for CPU (quality checks, the collector's resize,
the motion loop's glue) give today's results. Today's implementations are kept here as the
reference (ref_*, copied from the code they replaced) and compared on real inputs: clean synth
frames and the real damage processes (corrupt coded frames, telecine, starvation), exactly:
counts, flags and records equal, floats bit for bit."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from annotators.signals import motion, quality
from annotators.signals.frames import ClipCollector, area_resize, picture_box
from annotators.signals.motion import IDENTITY, MotionAnalyser, MotionResult, PairMotion
from pks.synth import synthesize_video
from pks.synth.processes import corrupt_coded_frames, starve, telecine

MB = 16

# ---- today's implementations, the reference ----


def ref_combing(y: np.ndarray, prev: np.ndarray | None = None, t: float = 12.0, rows: int = 5) -> float:
    """Share of pixels where two fields from different times leave teeth: the vertical second
    difference alternates in sign over `rows` consecutive rows (a moving edge seen in both
    fields). Line art differs: a 1 px line bends the profile over 3 rows only, a thicker one
    not at all. Where `prev` (an earlier frame) is given, teeth count only where the picture
    changed since: combing follows motion, while drawn scan lines and hatching stay put."""
    yi = y.astype(np.int16)
    d = 2 * yi[1:-1] - yi[:-2] - yi[2:]
    pos, neg = d > t, d < -t
    alt = (pos[:-1] & neg[1:]) | (neg[:-1] & pos[1:])  # rows r and r+1 bend opposite ways
    m = len(alt) - rows + 2
    teeth = alt[:m].copy()
    for k in range(1, rows - 1):
        teeth &= alt[k : m + k]
    if not teeth.size:
        return 0.0
    if prev is None:
        return float(np.count_nonzero(teeth) / teeth.size)
    # Counts, not boolean indexing: this runs on full-size frames (4x faster, same values).
    moved = (cv2.absdiff(y, prev) > t)[1 : 1 + len(teeth)]
    n_moved, n_teeth, both = np.count_nonzero(moved), np.count_nonzero(teeth), np.count_nonzero(teeth & moved)
    on_moving = both / n_moved if n_moved else 0.0
    on_still = (n_teeth - both) / (teeth.size - n_moved) if teeth.size > n_moved else 0.0
    # Teeth as dense where nothing moved are drawn (scan lines, hatching), not combing.
    return float(both / teeth.size) * max(0.0, 1.0 - on_still / max(on_moving, 1e-9))


def ref_grid_ratio(y: np.ndarray, tile: int = 64, floor: float = 2.0) -> float:
    """Mean step across 16-px block edges over the mean step elsewhere, for the whole frame
    (both directions together) and for its 64-px tiles (the smaller of the two directions:
    blocks have edges both ways, a drawn line only one). The frame's value is the larger of
    the whole frame's ratio and the 90th percentile of the tiles', so damage over a part of
    the frame counts. `floor` keeps flat frames and tiles (a white flash, a flat fill), where
    faint compression edges are all there is, quiet."""
    H, W = (y.shape[0] - 1) // tile * tile, (y.shape[1] - 1) // tile * tile
    if not H or not W:
        H, W = y.shape[0] - 1, y.shape[1] - 1
        tile = 0
    # uint8 steps and exact sums: this runs on full-size frames (4x faster than float32 arrays).
    dx = cv2.absdiff(y[:H, 1 : W + 1], y[:H, :W])  # step from column c to c + 1
    dy = cv2.absdiff(y[1 : H + 1, :W], y[:H, :W])
    on_x, on_y = dx[:, MB - 1 :: MB], dy[MB - 1 :: MB]  # steps across block edges
    n_on_x, n_on_y = on_x.size, on_y.size
    if not n_on_x + n_on_y:  # a frame narrower than one block: no block edges, so no block grid
        return 1.0
    s_on = float(on_x.sum(dtype=np.int64) + on_y.sum(dtype=np.int64))
    s_all = cv2.sumElems(dx)[0] + cv2.sumElems(dy)[0]
    whole_on = s_on / (n_on_x + n_on_y)
    whole_off = (s_all - s_on) / (dx.size + dy.size - n_on_x - n_on_y)
    whole = whole_on / max(whole_off, floor / 2)
    if not tile:
        return float(whole)
    th, tw, k = H // tile, W // tile, tile // MB

    def ratio(d, on, per_tile_on):
        total = cv2.resize(d.astype(np.float32), (tw, th), interpolation=cv2.INTER_AREA) * (tile * tile)  # tile sums
        edges = on.reshape(th, -1, tw, on.shape[1] // tw).sum((1, 3), dtype=np.int64)
        n_off = tile * tile - per_tile_on
        return (edges / per_tile_on) / np.maximum((total - edges) / n_off, floor)

    tiles = np.minimum(ratio(dx, on_x, tile * k), ratio(dy, on_y, tile * k))
    return float(max(whole, np.percentile(tiles, 90)))


def ref_flat_block_steps(y: np.ndarray, low: int = 2, high: int = 20) -> float:
    """How much more often than off the 16-px grid a faint step between two flat runs lies on
    it, both directions (1: no grid). A starved encoder codes blocks as flat patches, so the
    picture steps by a few grey levels exactly at block edges with no change on either side
    (as in standard no-reference blockiness metrics, which weigh grid steps against the
    activity beside them); drawn edges are stronger than `high` or spread over anti-aliased
    pixels, and sit on any column. `low`..`high` grey levels: above codec noise (1), under the
    contrast of drawn lines (20+)."""
    yi = y.astype(np.int16)
    on = off = 0.0
    for d in (np.abs(np.diff(yi, axis=1)), np.abs(np.diff(yi, axis=0)).T):  # steps c -> c + 1, by column
        if d.shape[1] < 2 * MB + 2:
            return 1.0
        mid = d[:, 1:-1]
        step = (mid >= low) & (mid <= high) & (np.maximum(d[:, :-2], d[:, 2:]) <= 1)
        per_col = np.count_nonzero(step, axis=0)
        phase = (np.arange(1, d.shape[1] - 1) + 1) % MB  # 0: the step from column MB k - 1 to MB k
        count = np.bincount(phase, weights=per_col, minlength=MB) / np.bincount(phase, minlength=MB)
        on, off = on + count[0], off + float(np.mean(count[1:]))
    return float(on / max(off, 1.0 / len(yi)))


def ref_has_detail(y: np.ndarray, min_std: float = 6.0) -> bool:
    """The centre of the frame varies. Flat frames (flashes, fades, cards) show nothing but
    faint compression edges, so they are not judged for block edges; the centre, so that
    black bars around a white flash do not count as detail."""
    h, w = y.shape[:2]
    return float(y[h // 4 : h - h // 4, w // 4 : w - w // 4].std()) >= min_std


def ref_dead_blocks(rgb: np.ndarray, k: int = 8) -> np.ndarray:
    """Per frame of [N, h, w, 3]: share of k x k blocks perfectly flat in every channel (lost data)."""
    n, h, w = rgb.shape[0], (rgb.shape[1] // k) * k, (rgb.shape[2] // k) * k
    b = rgb[:, :h, :w].reshape(n, h // k, k, w // k, k, 3)
    spread = b.max(axis=(2, 4)).astype(np.int16) - b.min(axis=(2, 4))
    return (spread.max(-1) <= 1).mean(axis=(1, 2))


def ref_lost_band(rgb: np.ndarray, diff: int = 40, row_share: float = 0.8) -> np.ndarray:
    """Per frame of [N, h, w, 3]: the share of the height, from the top or the bottom edge, whose
    rows differ across nearly the whole width from both the frame before and the frame after,
    while those two agree there (a slice lost for one frame and refilled with anything: flat
    colour, streaks, noise). Drawn motion changes a subject's part of a row, a flash or a cut
    the whole frame, and effects redrawn every frame (speed lines) differ between the
    neighbours too."""
    if len(rgb) < 3:
        return np.zeros(len(rgb))
    x = rgb[:, ::2, ::2]  # every other row and column is plenty
    (top, bottom), (left, right) = ref_picture_box(x.max(-1))  # inside any bars, which never change
    x = np.ascontiguousarray(x[:, top:bottom, left:right])
    n, h, w = x.shape[:3]
    flat = x.reshape(n, h * w * 3)

    def differ(a, b):  # in any channel (green garbage can match a picture's brightness)
        return (cv2.absdiff(a, b) > diff).reshape(-1, h, w, 3).any(-1)

    lost = (differ(flat[1:-1], flat[:-2]) & differ(flat[1:-1], flat[2:])).mean(2) > row_share
    moved = differ(flat[:-2], flat[2:]).mean(2)  # per row: the neighbours differ from each other
    out = np.zeros(n)
    for i in range(n - 2):
        for rows, m in ((lost[i], moved[i]), (lost[i, ::-1], moved[i, ::-1])):  # from the top, from the bottom
            k = quality._run(rows)
            if k and m[:k].mean() < 0.5:
                out[i + 1] = max(out[i + 1], k / h)
    return out


def ref_picture_box(gray: np.ndarray, dark: float = 30.0) -> tuple[tuple[int, int], tuple[int, int]]:
    """(top, bottom), (left, right) of the picture inside letterbox/pillarbox bars of [N, h, w]
    frames: rows and columns dark in every frame are bars (the whole frame when none is found,
    or when the rest is small)."""

    def inner(profile):
        lit = np.nonzero(profile >= dark)[0]
        if not len(lit) or lit[-1] + 1 - lit[0] < len(profile) // 2:
            return 0, len(profile)
        return int(lit[0]), int(lit[-1]) + 1

    return inner(gray.max(axis=(0, 2))), inner(gray.max(axis=(0, 1)))


class RefAnalyser(MotionAnalyser):
    """MotionAnalyser with today's run loop (its numpy glue)."""

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
        (top, bottom), (left, right) = ref_picture_box(np.stack(gray))
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
            diff = np.abs(warped.astype(np.int16) - cv2.GaussianBlur(b, (0, 0), 1.0))
            changed_mask = (diff > p.held_diff).astype(np.uint8)
            changed = float(changed_mask[m:-m, m:-m].mean())
            if p.open_px:  # thin strokes (speed and focus lines redrawn over the frame) are not the subject
                k = 2 * p.open_px + 1
                changed_mask = cv2.morphologyEx(changed_mask, cv2.MORPH_OPEN, np.ones((k, k), np.uint8))
            pm = PairMotion(M=M, changed=changed, flow_mag=float(np.linalg.norm(flow, axis=2).mean()))
            if len(src) >= 12:
                cam = src @ M[:, :2].T + M[:, 2]
                resid = dst - cam
                fg = np.linalg.norm(resid, axis=1) > p.foreground_px
                if fg.any():
                    pm.fg_mag = float(np.linalg.norm(resid[fg], axis=1).mean())
                # The deforming subject: textured points near what changed that the camera does
                # not explain (points of the background beside it would pull the fits to identity).
                k = 2 * p.region_grow + 1
                region = (cv2.dilate(changed_mask, np.ones((k, k), np.uint8))[yi[tex], xi[tex]] > 0) & fg
                if changed >= p.held_fraction and region.sum() >= 12:
                    pm.stretch, pm.area, pm.nonrigid = self._deformation(src[region], dst[region], M)
                    pm.deform = pm.stretch + pm.area + p.nonrigid_weight * pm.nonrigid
            out.pairs.append(pm)
        return out

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
            left &= np.linalg.norm(dst - (src @ S[:, :2].T + S[:, 2]), axis=1) > self.p.part_px
        return float(left.mean())


# ---- inputs: a short clean synth and its real damage processes ----


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """name -> path: a 320x176 24p synth of two shots (panned, shaken, drawn on 2s and 3s), and
    copies of it with corrupt coded frames, telecined (combing) and starved (blocking)."""
    d = tmp_path_factory.mktemp("fast")
    clean = d / "clean.mp4"
    synthesize_video(clean, 7, n_shots=2, size=(320, 176), fps="24", shot_frames=(24, 30), damage_p=0)
    out = {"clean": clean, "corrupt": d / "corrupt.mp4", "telecine": d / "telecine.mp4", "starve": d / "starve.mp4"}
    corrupt_coded_frames(clean, out["corrupt"], np.random.default_rng(0), n=3)
    telecine(clean, out["telecine"])
    starve(clean, out["starve"])
    return out


def collect(path, width):
    c = ClipCollector(width, fps=24.0)
    with av.open(str(path)) as container:
        for f in container.decode(video=0):
            c.add(f)
    return c.frames()


@pytest.fixture(scope="module")
def clips(videos):
    """name -> ClipFrames at the pipeline's default analysis width (192)."""
    return {name: collect(path, 192) for name, path in videos.items()}


def lumas(clip):
    ys = [clip.luma[k] for k in sorted(clip.luma)]
    # also a frame whose height is not a whole number of combing/flat-step strips, cropped off
    # the block grid, and a flat one (no detail, no steps)
    return ys + [ys[0][3:150, 5:301].copy(), np.full_like(ys[0], 128)]


# ---- the kernels ----


def test_full_size_luma_checks_equal_todays(clips):
    """combing (with and without the frame before), grid_ratio, flat_block_steps, has_detail
    and inside_bars give today's values on every sampled frame of every footage."""
    seen_combing = seen_block = False
    for name, clip in clips.items():
        ys = lumas(clip)
        for y, prev in zip(ys, ys[-1:] + ys[:-1]):
            if prev.shape != y.shape:
                prev = None
            assert quality.combing(y, prev) == ref_combing(y, prev), name
            assert quality.combing(y) == ref_combing(y), name
            assert quality.grid_ratio(y) == ref_grid_ratio(y), name
            assert quality.flat_block_steps(y) == ref_flat_block_steps(y), name
            assert quality.has_detail(y) == ref_has_detail(y), name
            seen_combing |= ref_combing(y, prev) > 0.004
            seen_block |= ref_flat_block_steps(y) > 3.6
    assert seen_combing and seen_block  # the damage was there to be measured


def test_small_frame_checks_and_picture_box_equal_todays(clips):
    seen_lost = False
    for name, clip in clips.items():
        rgb = clip.rgb
        for x in (rgb, rgb[:, :50, :77], rgb[:1]):
            np.testing.assert_array_equal(quality.dead_blocks(x), ref_dead_blocks(x), err_msg=name)
            np.testing.assert_array_equal(quality.lost_band(x), ref_lost_band(x), err_msg=name)
        lost = rgb.copy()  # slices lost for one frame: the top third of every 8th frame refilled green
        lost[4::8, : rgb.shape[1] // 3] = (0, 255, 0)
        seen_lost |= ref_lost_band(lost).max() > 0.05
        np.testing.assert_array_equal(quality.lost_band(lost), ref_lost_band(lost), err_msg=name)
        np.testing.assert_array_equal(quality.channel_mean(rgb), rgb.mean(-1))
        assert quality.channel_mean(rgb).dtype == np.float64
        gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb]
        assert picture_box(gray) == picture_box(np.stack(gray)) == ref_picture_box(np.stack(gray))
    assert seen_lost  # a band was measured, so the bands were compared
    # bars: a letterboxed and pillarboxed copy
    boxed = np.zeros((4, 120, 200), np.uint8)
    boxed[:, 20:100, 30:170] = np.random.default_rng(1).integers(40, 255, (4, 80, 140))
    assert picture_box(boxed) == ref_picture_box(boxed) == ((20, 100), (30, 170))


def test_area_resize_is_opencvs_inter_area():
    """Same pixels as cv2.resize INTER_AREA for every whole-number factor the fast path takes
    (and the ones it leaves to OpenCV), on noise, where every rounding tie shows."""
    rng = np.random.default_rng(0)
    for fx in range(1, 13):
        for fy in range(1, 13):
            p = rng.integers(0, 256, (9 * fy, 16 * fx), dtype=np.uint8)
            np.testing.assert_array_equal(area_resize(p, (16, 9)), cv2.resize(p, (16, 9), interpolation=cv2.INTER_AREA))
    p = rng.integers(0, 256, (1080, 1920), dtype=np.uint8)[:, :1900]  # a padded plane: a strided view
    for size in ((190, 108), (192, 108), (100, 60)):
        np.testing.assert_array_equal(area_resize(p, size), cv2.resize(p, size, interpolation=cv2.INTER_AREA))


def test_collector_frames_equal_todays(videos):
    """The collector's small frames equal cv2.resize INTER_AREA of the planes, at widths where
    the fast path runs (80 and 40: whole factors of 320x176) and where it does not (192)."""
    for width in (192, 80, 40):
        clip = collect(videos["telecine"], width)
        with av.open(str(videos["telecine"])) as c:
            for k, f in enumerate(c.decode(video=0)):
                h = max(2, int(round(f.height * width / f.width / 2)) * 2)
                planes = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in f.planes]
                small = np.dstack([cv2.resize(p, (width, h), interpolation=cv2.INTER_AREA) for p in planes])
                rgb = cv2.cvtColor(small, cv2.COLOR_YUV2RGB)
                np.testing.assert_array_equal(clip.rgb[k], rgb)
                if k % 2 == 0:
                    np.testing.assert_array_equal(clip.luma[k], planes[0])


def test_lengths_are_numpys_norm():
    v = np.random.default_rng(2).normal(0, 3, (50, 40, 2)).astype(np.float32)
    np.testing.assert_array_equal(motion._lengths(v), np.linalg.norm(v, axis=2))
    np.testing.assert_array_equal(motion._lengths(v[0]), np.linalg.norm(v[0], axis=1))


# ---- the records ----


def pairs_equal(a: MotionResult, b: MotionResult):
    assert len(a.pairs) == len(b.pairs)
    for p, q in zip(a.pairs, b.pairs):
        assert isinstance(p, PairMotion)
        np.testing.assert_array_equal(p.M, q.M)
        assert (p.changed, p.flow_mag, p.fg_mag, p.deform, p.stretch, p.area, p.nonrigid) == (
            q.changed,
            q.flow_mag,
            q.fg_mag,
            q.deform,
            q.stretch,
            q.area,
            q.nonrigid,
        )


def test_motion_and_quality_flags_equal_todays(clips, monkeypatch):
    """Per pair motion bit for bit, and quality_flags' flags and stats, against today's code
    swapped back in (the reference kernels under the names quality_flags calls)."""
    seen = set()
    for name, clip in clips.items():
        res = MotionAnalyser().run(clip.rgb)
        pairs_equal(res, RefAnalyser().run(clip.rgb))
        args = (clip.rgb, clip.luma, [q.changed for q in res.pairs], clip.fps, None, 0, [q.flow_mag for q in res.pairs])
        new = quality.quality_flags(*args)
        with monkeypatch.context() as m:
            for fn in ("combing", "grid_ratio", "flat_block_steps", "has_detail", "dead_blocks", "lost_band"):
                m.setattr(quality, fn, globals()["ref_" + fn])
            m.setattr(quality, "picture_box", lambda g: ref_picture_box(np.stack(g)))  # (inside_bars stacked)
            m.setattr(quality, "channel_mean", lambda x: x.mean(-1))
            old = quality.quality_flags(*args)
        assert new == old, name
        seen |= set(new[0])
    assert {"interlaced", "block_corruption"} <= seen  # the damage was flagged, so the flags were compared
