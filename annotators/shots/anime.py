"""The anime-aware shot detector (default, CPU).

Why the usual detectors fail on anime and what this one does instead:
- Drawings are held on twos/threes while the camera moves on ones, so the frame-to-frame
  change alternates between a small camera step and a drawing change. The adaptive baseline
  is a high percentile of the neighbours' changes, i.e. the size of a *drawing change*, not
  the median (a camera step or a held frame), so a new drawing is not a spike.
- Frames are blurred small frames normalised to zero mean and unit variance: invariant to
  brightness and contrast (a fade does not look like motion) and tolerant of small shifts
  (a pan moves a 64-px frame by about a pixel a frame). The change between two frames is a
  low percentile of per-tile differences: a cut changes most of the frame, while a drawing
  change, a smear or a moving character changes only part of it.
- Speed and focus lines redrawn every frame change most tiles too, so a cut into or out of
  such a shot hardly stands out from the redraws; averaged over a few frames either side the
  lines wash out and the layout change of the cut stands out (`_layout`).
- Impact frames and white flashes last 1-2 frames: a jump is refused as a cut when a frame
  before it correlates again with a frame a few frames after it (the shot came back).
- Fades are contrast valleys with ramps on both sides; dissolves are found by a blend test:
  a frame in a dissolve lies on the line between the frames k before and k after (it is
  their mix), while those two are different shots. Effects redrawn every drawing (focus
  lines) are off that line. The test needs only frame correlations, so it is vectorised.
- Black, flat and title-on-black frames between shots (cuts to black, cards, eyecatches, fades
  to black and back) are one boundary whose span covers them and their fades: no clip holds
  them, and a clip never spans two shots through a black card. Letterbox and pillarbox bars
  are cropped first: identical in every shot, they would dilute every change.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from annotators.shots.base import Boundary, ShotDetector


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """The runs [start, end) of True in a 1-D boolean array."""
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return list(zip(np.nonzero(edges == 1)[0].tolist(), np.nonzero(edges == -1)[0].tolist()))


def span_of(b: Boundary) -> tuple[int, int]:
    """A gradual boundary's [start, end) (fades, dissolves and blank runs always have one)."""
    assert b.span is not None
    return b.span


@dataclass
class AnimeDetector(ShotDetector):
    name: str = "anime"
    frame_size: tuple[int, int] = (64, 36)
    blur_sigma: float = 1.0
    tile: tuple[int, int] = (8, 6)  # (w, h) of the tiles whose changes are ranked
    quantile: float = 40.0  # the tile-change percentile that measures a frame change
    cut_threshold: float = 0.35  # minimum distance of a cut
    ratio: float = 1.9  # a cut's jump over the local baseline of drawing changes
    quiet_cut: float = 0.1  # a smaller jump is a cut too where it stands out this much more...
    quiet_ratio: float = 6.0  # ...over the baseline: a cut within one place, to a new framing
    window: int = 12  # frames either side for the baseline
    baseline_percentile: float = 90.0  # of the neighbours' jumps: the size of a drawing change
    layout_frames: int = 4  # frames averaged either side of a jump for its layout change: two
    # drawings on 2s, four redraws of lines redrawn every frame (their noise falls by half)
    flash_lookahead: int = 6  # frames after a jump in which the shot may come back
    flash_similarity: float = 0.5  # came back = distance under this share of the jump
    fade_contrast: float = 0.25  # valley contrast under this share of both sides' contrast
    fade_min_ramp: int = 2  # frames of monotonic ramp needed on each side of a fade
    dissolve_scales: tuple[int, ...] = (3, 6, 10)
    dissolve_residual: float = 0.2  # share of the ends' difference the blend leaves unexplained
    dissolve_min_weight: float = 0.15  # the mix must lie between the ends, not at one
    dissolve_step: float = 0.5  # no step inside may exceed this share of the change across
    dissolve_across: float = 0.6  # change between the frames just outside the span
    dissolve_aligned: float = 0.7  # ...and what remains of it after undoing a camera move
    min_gap: int = 6  # boundaries closer than this are one boundary
    dark_luma: float = 32.0  # a blank frame: mean luma under this (video black decodes at 16-24)...
    dark_bright_share: float = 0.1  # ...with at most this share of it brighter than bright_luma (title text)
    blank_max_flash: int = 2  # blank runs this short are flashes when the shot comes back
    ramp_max: int = 30  # frames a fade into or out of a blank run may take
    # The values below were literals inside the methods until issue 23. Where a value's
    # derivation was never recorded (set by hand with the detector in f34923a, or with the
    # painted family in issue 12, 389daf5, and kept because the shot tests and benchmarks
    # passed), the comment says so.
    std_floor: float = 1e-3  # a numerical guard: flat frames are not divided by ~0 when normalised
    align_scales: tuple[float, ...] = (0.87, 0.93, 1.0, 1.07, 1.15)  # zooms tried when undoing a camera
    # move between a dissolve's ends: about +-15 % in ~7 % steps (derivation not recorded)
    bar_percentile: float = 98.0  # a bar row/column is dark in this share of frames (nearly every
    # frame: a dark shot must not be read as a bar; derivation not recorded, issue 12)
    min_picture_divisor: int = 3  # the picture inside bars is at least 1/3 of the frame, else no
    # bars are cropped (a dark frame is not all bar; derivation not recorded, issue 12)
    bright_luma: float = 80.0  # a pixel brighter than this on a dark frame is title text (black
    # decodes at 16-24, text is drawn far above it; derivation not recorded, issue 12)
    flat_ref_percentile: float = 75.0  # a clip's typical contrast: this percentile of its frames'
    flat_contrast: float = 3.0  # a frame is flat under this contrast (std of 0-255 values)...
    flat_share: float = 0.08  # ...or under this share of the typical contrast (both not recorded, f34923a)
    fade_ref_frames: int = 8  # a fade frame is compared with the median of this many frames beyond it
    fade_drop: float = 0.92  # ...and is faded when under this share of it (not recorded, issue 12)
    fade_window: int = 30  # frames either side whose highest contrast a fade valley is measured against
    fade_floor_ratio: float = 1.2  # a valley floor (a hold on black) continues while contrast stays
    fade_floor_offset: float = 1.0  # under ratio x the floor + offset (not recorded, f34923a)
    fade_ramp_step: float = 1.02  # a fade's ramp rises at least 2 % a frame (not recorded, f34923a)

    # ---- features -----------------------------------------------------------------------
    def _features(self, frames: np.ndarray):
        n = len(frames)
        x = frames.astype(np.float32)
        if self.blur_sigma > 0:
            x = np.stack([cv2.GaussianBlur(f, (0, 0), self.blur_sigma) for f in x])
        flat = x.reshape(n, -1)
        mean = flat.mean(1, keepdims=True)
        std = flat.std(1, keepdims=True)
        z = (flat - mean) / np.maximum(std, self.std_floor)
        return z, std[:, 0], x  # x: the blurred frames, for camera alignment of dissolve candidates

    def _aligned_dist(self, blurred: np.ndarray, a: int, b: int) -> float:
        """Distance between frames a and b after undoing a camera move (shift and zoom)
        between them: small when a pan or zoom, not a dissolve, explains the change."""
        fa, fb = blurred[a], blurred[b]
        ga = cv2.cvtColor(fa, cv2.COLOR_RGB2GRAY)
        h, w = ga.shape
        best = np.inf
        for scale in self.align_scales:
            M = cv2.getRotationMatrix2D((w / 2, h / 2), 0, scale)
            wb = cv2.warpAffine(fb, M, (w, h), borderMode=cv2.BORDER_REPLICATE)
            (dx, dy), _ = cv2.phaseCorrelate(ga, cv2.cvtColor(wb, cv2.COLOR_RGB2GRAY))
            M[:, 2] -= np.array((dx, dy))
            wb = cv2.warpAffine(fb, M, (w, h), borderMode=cv2.BORDER_REPLICATE)
            # Ignore the replicated border (but keep at least half the frame).
            m = min(w // 4, int(abs(dx)) + 1), min(h // 4, int(abs(dy)) + 1)
            pair = np.stack([fa, wb])[:, m[1] : h - m[1], m[0] : w - m[0]]
            flat = pair.reshape(2, -1)
            zz = (flat - flat.mean(1, keepdims=True)) / np.maximum(flat.std(1, keepdims=True), self.std_floor)
            best = min(best, float(np.abs(zz[0] - zz[1]).mean()))
        return best

    @staticmethod
    def _corr(z: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Pearson correlation of frames a[i] and b[i]."""
        return np.einsum("ij,ij->i", z[a], z[b]) / z.shape[1]

    def _dist(self, z: np.ndarray, a, b) -> np.ndarray:
        """Change between frames a[i] and b[i]: a low percentile of per-tile mean differences."""
        return self._change(z[a], z[b])

    def _change(self, za: np.ndarray, zb: np.ndarray) -> np.ndarray:
        w, h = self.frame_size
        tw, th = self.tile
        d = np.abs(za - zb).reshape(len(za), h // th, th, w // tw, tw * 3)
        return np.percentile(d.mean((2, 4)).reshape(d.shape[0], -1), self.quantile, axis=1)

    def _layout(self, z: np.ndarray) -> np.ndarray:
        """layout[t]: the change between the mean of the k frames before t and of the k from t
        on. Effects redrawn every frame (speed and focus lines at new places) average out over
        k frames and the shot's layout stays, so a cut into or out of such a shot stands out
        here where its frame-to-frame jump is hardly bigger than a redraw."""
        n, k = len(z), self.layout_frames
        out = np.zeros(n, np.float32)
        if n < 2 * k:
            return out
        c = np.concatenate([np.zeros((1, z.shape[1]), np.float32), np.cumsum(z, 0, dtype=np.float32)])
        t = np.arange(k, n - k + 1)

        def standard(x):
            return (x - x.mean(1, keepdims=True)) / np.maximum(x.std(1, keepdims=True), self.std_floor)

        out[t] = self._change(standard(c[t] - c[t - k]), standard(c[t + k] - c[t]))
        return out

    # ---- detection ----------------------------------------------------------------------
    def detect(self, frames: np.ndarray, fps: float) -> list[Boundary]:
        if len(frames) < 3:
            return []
        frames = self._unmatted(frames)
        z, jump, low, gradual = self.gradual(frames)
        return self._merge(self._cuts(z, jump, low, gradual) + gradual, jump)

    def _unmatted(self, frames: np.ndarray) -> np.ndarray:
        """The picture without letterbox or pillarbox bars (rows or columns dark in nearly
        every frame), stretched back to `frame_size`: bars are the same in every shot, and
        left in they would dilute every change."""
        grey = frames.astype(np.float32).mean(-1)
        rows = np.percentile(grey.max(2), self.bar_percentile, axis=0) < self.dark_luma
        cols = np.percentile(grey.max(1), self.bar_percentile, axis=0) < self.dark_luma

        def inner(dark):
            a, b = 0, len(dark)
            while a < b and dark[a]:
                a += 1
            while b > a and dark[b - 1]:
                b -= 1
            return a, b

        (top, bottom), (left, right) = inner(rows), inner(cols)
        if (
            (top, bottom, left, right) == (0, len(rows), 0, len(cols))
            or bottom - top < len(rows) // self.min_picture_divisor
            or right - left < len(cols) // self.min_picture_divisor
        ):
            return frames
        return np.stack(
            [cv2.resize(f[top:bottom, left:right], self.frame_size, interpolation=cv2.INTER_LINEAR) for f in frames]
        )

    def gradual(self, frames: np.ndarray):
        """Features, frame-to-frame changes, flat frames, and the fades and dissolves.
        Returns (z, jump, low, gradual); jump[t] is the change between frames t-1 and t."""
        n = len(frames)
        z, contrast, blurred = self._features(frames)
        idx = np.arange(1, n)
        jump = np.zeros(n, np.float32)
        jump[1:] = self._dist(z, idx - 1, idx)
        low = self._low_contrast(contrast)
        blank = self._blank_runs(frames, z, contrast, low)
        covered = np.zeros(n, bool)
        for b in blank:
            covered[slice(*span_of(b))] = True
        fades = [f for f in self._fades(z, contrast, low) if not covered[slice(*span_of(f))].any()] + blank
        return z, jump, low, fades + self._dissolves(z, blurred, jump, low, fades)

    def _blank_runs(self, frames: np.ndarray, z, contrast, low) -> list[Boundary]:
        """Black frames, title cards on black and flat frames between shots: a boundary whose
        span covers the run and the fades into and out of it, so no clip holds them. Cuts to
        black, fades to black and back (even into the same scene) and cards all end a shot;
        only a run of 1-2 frames after which the shot comes back is a flash, not a boundary."""
        n = len(frames)
        luma = frames.astype(np.float32).mean(-1).reshape(n, -1)
        dark = (luma.mean(1) < self.dark_luma) & ((luma > self.bright_luma).mean(1) <= self.dark_bright_share)
        blank = dark | low
        out = []
        for a, b in runs(blank):
            if a == 0 and b == n:
                break
            if (
                b - a <= self.blank_max_flash
                and 0 < a
                and b < n
                and self._comes_back(z, a, max(float(self._dist(z, [a - 1], [a])[0]), self.cut_threshold))
            ):
                continue  # a white flash or a flat impact frame inside the shot
            lo = a
            while lo > 0 and a - lo < self.ramp_max and self._faded(contrast, lo - 1, -1):
                lo -= 1  # fading out into the run
            hi = b
            while hi < n and hi - b < self.ramp_max and self._faded(contrast, hi, 1):
                hi += 1  # fading in out of it
            out.append(Boundary(int(min(b, n - 1)) if a > 0 else int(a), "fade", (int(lo), int(hi))))
        return out

    def _low_contrast(self, contrast: np.ndarray) -> np.ndarray:
        """Frames too flat for correlation to mean anything (black/white/flat fills)."""
        ref = np.percentile(contrast, self.flat_ref_percentile) if len(contrast) else 1.0
        return contrast < max(self.flat_contrast, self.flat_share * ref)

    def _faded(self, contrast, t: int, away: int) -> bool:
        """Frame t is part of a fade toward the blank run on its other side: its contrast is
        clearly under that of the frames further away, which rise toward the shot's own."""
        k = self.fade_ref_frames
        ref = contrast[t + 1 : t + 1 + k] if away > 0 else contrast[max(0, t - k) : t][::-1]  # nearest first
        return len(ref) > 0 and contrast[t] < self.fade_drop * float(np.median(ref)) and contrast[t] < ref[0]

    def _cuts(self, z, jump, low, gradual) -> list[Boundary]:
        n = len(jump)
        inside = np.zeros(n, bool)
        for b in gradual:
            inside[max(0, b.span[0] - 1) : b.span[1] + 1] = True
        cuts = []
        cand = np.nonzero((jump > self.quiet_cut) & ~low & ~np.roll(low, 1) & ~inside)[0]
        layout = None  # computed once, and only when some big jump needs it (most videos: never)
        for t in cand.tolist():
            big = jump[t] > self.cut_threshold
            stands_out = jump[t] >= (self.ratio if big else self.quiet_ratio) * self._baseline(jump, t, 1)
            if big and not stands_out:  # a cut into or out of lines redrawn every frame
                layout = self._layout(z) if layout is None else layout
                stands_out = layout[t] >= self.ratio * self._baseline(layout, t, self.layout_frames)
            if not stands_out or self._comes_back(z, t, jump[t]):
                continue
            cuts.append(Boundary(t, "cut"))
        return cuts

    def _baseline(self, change: np.ndarray, t: int, near: int) -> float:
        """The size of the changes around t (a drawing change, a redraw): the baseline percentile
        of those `near` to `near + window` frames away (closer ones still see t's own change)."""
        neigh = np.r_[
            change[max(1, t - near - self.window + 1) : max(1, t - near + 1)], change[t + near : t + near + self.window]
        ]
        return float(np.percentile(neigh, self.baseline_percentile)) if len(neigh) else 0.0

    def _comes_back(self, z, t: int, size: float) -> bool:
        """Flash / impact-frame test: does some frame just before `t` reappear just after it?"""
        n = len(z)
        K = self.flash_lookahead
        a = np.arange(max(0, t - K), t)
        b = np.arange(t, min(n, t + K + 1))
        aa, bb = np.meshgrid(a, b, indexing="ij")
        keep = (bb - aa >= 2) & (bb - aa <= K + 1)
        if not keep.any():
            return False
        d = self._dist(z, aa[keep], bb[keep])
        return bool(d.min() < self.flash_similarity * size)

    def _fades(self, z, contrast, low) -> list[Boundary]:
        """Contrast valleys with monotonic ramps on both sides, joining different content."""
        n = len(contrast)
        out = []
        t = 1
        while t < n - 1:
            around = contrast[max(0, t - self.fade_window) : t + self.fade_window + 1].max()
            is_valley = contrast[t] <= contrast[t - 1] and contrast[t] <= contrast[t + 1]
            if not is_valley or contrast[t] >= self.fade_contrast * around:
                t += 1
                continue
            # The valley floor may be several frames long (a hold on black).
            e = t
            while e + 1 < n and contrast[e + 1] <= contrast[t] * self.fade_floor_ratio + self.fade_floor_offset:
                e += 1
            left = t
            while left > 0 and contrast[left - 1] > contrast[left] * self.fade_ramp_step:
                left -= 1
            right = e
            while right < n - 1 and contrast[right + 1] > contrast[right] * self.fade_ramp_step:
                right += 1
            floor = contrast[t : e + 1].min()
            ramps_ok = (t - left) >= self.fade_min_ramp and (right - e) >= self.fade_min_ramp
            deep = floor < self.fade_contrast * min(contrast[left], contrast[right])
            if ramps_ok and deep and not low[left] and not low[right]:
                if self._dist(z, [left], [right])[0] > self.cut_threshold:
                    mid = (t + e) // 2 + 1
                    out.append(Boundary(int(mid), "fade", (int(left), int(right + 1))))
            t = e + 1
        return out

    def _dissolves(self, z, blurred, jump, low, fades) -> list[Boundary]:
        """Blend test at several scales: z_t lies between z_{t-k} and z_{t+k}, which differ;
        no single step inside explains the change (that would be a cut or a redrawn effect)."""
        n = len(z)
        hit = np.zeros(n, bool)
        reach = np.zeros(n, int)
        for k in self.dissolve_scales:
            if n <= 2 * k:
                continue
            t = np.arange(k, n - k)
            rxy = self._corr(z, t - k, t + k)
            rtx = self._corr(z, t, t - k)
            rty = self._corr(z, t, t + k)
            # u = z[t+k] - z[t-k], v = z[t] - z[t-k]; a dissolve puts v on u: v = lam * u.
            uu = np.maximum(2.0 * (1.0 - rxy), 1e-6)
            vu = 1.0 + rty - rtx - rxy
            vv = 2.0 * (1.0 - rtx)
            lam = vu / uu
            resid = np.maximum(vv - vu * vu / uu, 0.0) / uu
            ends = self._dist(z, t - k, t + k)
            biggest_step = np.lib.stride_tricks.sliding_window_view(jump[1:], 2 * k).max(1)[: len(t)]
            ok = (
                (ends > self.cut_threshold)
                & (resid < self.dissolve_residual)
                & (biggest_step < self.dissolve_step * ends)
                & (lam > self.dissolve_min_weight)
                & (lam < 1.0 - self.dissolve_min_weight)
                & ~low[t]
                & ~low[t - k]
                & ~low[t + k]
            )
            hit[t[ok]] = True
            reach[t[ok]] = np.maximum(reach[t[ok]], k)
        covered = np.zeros(n, bool)
        for f in fades:
            covered[f.span[0] : f.span[1]] = True
        out = []
        for s, end in runs(hit):
            e = end - 1
            k = int(reach[s : e + 1].max())
            span = (max(0, s - k + 1), min(n, e + k))
            # The shots on either side must differ, also once a camera move is undone.
            before, after = max(0, span[0] - 1), min(n - 1, span[1])
            if (
                not covered[s : e + 1].any()
                and self._dist(z, [before], [after])[0] > self.dissolve_across
                and self._aligned_dist(blurred, before, after) > self.dissolve_aligned
            ):
                out.append(Boundary(int((s + e + 1) // 2), "dissolve", span))
        return out

    def _merge(self, bounds: list[Boundary], jump) -> list[Boundary]:
        """Boundaries closer than `min_gap`: keep gradual ones over cuts, bigger jumps over smaller.
        Dissolves whose spans overlap are one dissolve (found at two scales or two stretches)."""
        out: list[Boundary] = []
        for b in sorted(bounds, key=lambda b: b.frame):
            if out and b.kind == out[-1].kind == "dissolve" and span_of(b)[0] < span_of(out[-1])[1]:
                lo, hi = span_of(out[-1])[0], max(span_of(out[-1])[1], span_of(b)[1])
                out[-1] = Boundary((lo + hi) // 2, "dissolve", (lo, hi))
                continue
            if out and b.frame - out[-1].frame < self.min_gap:
                prev = out[-1]
                if (b.kind != "cut", jump[b.frame]) > (prev.kind != "cut", jump[prev.frame]):
                    out[-1] = b
                continue
            out.append(b)
        return out
