"""Failure flags: defects of the footage, never of the art. A smear or a squash is drawn on
purpose and changes the drawing smoothly inside the subject; these checks look for what no
animator draws: macroblock grids, combing between fields, lost slices, bars, black, freezes."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from annotators.signals.frames import picture_box

MB = 16


@dataclass
class QualityParams:
    comb: float = 0.004  # share of combing teeth (see combing) in an interlaced frame; 1 px lines give < 0.0012
    # Share of sampled frames that must comb (and at least comb_min of them). A 2:3 pulldown
    # weaves 2 of every 5 frames from two film frames, but only where the picture changes
    # between them shows it: on ones 0.4 of the frames comb, on 2s about 0.2, on 3s with a
    # still camera about 0.1 (measured 0.08-0.12 on telecined tuning shots; clean shots of
    # both families: no sampled frame combs at all), so half of the 3s figure.
    comb_frames: float = 0.05
    comb_min: int = 2
    # Which combs are weave. A 2:3 pulldown weaves 2 adjacent frames of every 5, so its combed
    # frames repeat with the period 5 and at most 2 of 5 frames comb; interlaced video (each
    # field its own instant) combs every frame that moves. Drawn lines comb where the art puts
    # them (speed lines two rows apart), at no period. So: weave when more than the pulldown's
    # 2 of 5 sampled frames comb, or when the combed frames keep the 5-frame cadence: at least
    # twice the share of them that random frames would put in the best 2 of 5 phases (2/5).
    comb_video: float = 0.4
    comb_cadence: float = 0.8
    block_ratio: float = 3.0  # edge energy on the 16-px grid over elsewhere, in a corrupt frame
    block_jump: float = 1.8  # ...and over the clip's own median (compression is steady, corruption bursts)
    # A whole clip blocky (a starved encode: blocking in every frame, so no burst over the
    # clip's own median): the clip's median of flat_block_steps over this. Measured on tuning
    # footage (cel 2027, painted 3100, 3 videos each at 640x360, 39 clean shots, crf 16-25):
    # clean shots' medians 0.97-2.87 (a normal encode leaves a few faint block steps in
    # gradients), and up to 3.25 on a crf-30 source at 320x176 (the worst quality the synthetic
    # sources use; tests/test_persistent_damage.py); starved re-encodes of the same shots
    # (pks.synth.processes.starve) 2.62-8.2 at 640x360 (30 of 39 over 3.6), 6.1-7.5 at 320x176;
    # rendered frames before any encode ~0.4 (drawn edges are strong or anti-aliased, not
    # faint steps between flat runs). 3.6 is 1.1x the largest clean value. (The grid ratio's
    # clip median cannot do this: drawn windows on the grid of a still shot reach 2.1 before
    # any encode.)
    block_steady: float = 3.6
    garbage_flat: float = 0.25  # extra share of dead (flat) blocks over the frames around
    garbage_band: float = 0.05  # share of the height lost at the top or bottom for one frame (see lost_band)
    bar_luma: float = 20.0  # letterbox bars: darker than this...
    bar_std: float = 4.0  # ...and this flat
    bar_min: float = 0.04  # ...over at least this share of the height (width) on both sides
    black_luma: float = 18.0
    frozen_change: float = 0.0005  # changed share under which no drawing changes...
    frozen_flow: float = 0.05  # ...and mean flow (px) under which the camera does not move either


_BEND = np.array([[-1], [2], [-1]], np.float32)  # the vertical second difference: 2 y[r] - y[r-1] - y[r+1]
# Rows of full-size luma handled at a time by combing: its masks for 128 rows of a 1920 px frame
# stay in a core's cache (1080p, measured: 128 rows 1.5 ms a frame, 32 rows 2.0, the whole frame 2.2).
_STRIP = 128


def combing(y: np.ndarray, prev: np.ndarray | None = None, t: float = 12.0, rows: int = 5) -> float:
    """Share of pixels where two fields from different times leave teeth: the vertical second
    difference alternates in sign over `rows` consecutive rows (a moving edge seen in both
    fields). Line art differs: a 1 px line bends the profile over 3 rows only, a thicker one
    not at all. Where `prev` (an earlier frame) is given, teeth count only where the picture
    changed since: combing follows motion, while drawn scan lines and hatching stay put."""
    m = y.shape[0] - rows - 1  # rows of teeth: each needs `rows` bends, each bend 3 rows of y
    if m <= 0:
        return 0.0
    # Counts over strips of rows with OpenCV's integer kernels: this runs on full-size frames,
    # where a whole-frame mask per step is memory traffic (5x faster, same counts).
    n_teeth = n_moved = both = 0
    for r0 in range(0, m, _STRIP):
        n = min(_STRIP, m - r0)
        part = y[r0 : r0 + n + rows + 1]
        d = cv2.filter2D(part, cv2.CV_16S, _BEND, anchor=(0, 1), borderType=cv2.BORDER_CONSTANT)[1:-1]
        # (the stubs know no scalar second operand, which OpenCV takes)
        pos, neg = cv2.compare(d, t, cv2.CMP_GT), cv2.compare(d, -t, cv2.CMP_LT)  # type: ignore[call-overload]
        # rows r and r + 1 bend opposite ways
        alt = cv2.bitwise_or(cv2.bitwise_and(pos[:-1], neg[1:]), cv2.bitwise_and(neg[:-1], pos[1:]))
        teeth = alt[:n].copy()
        for k in range(1, rows - 1):
            cv2.bitwise_and(teeth, alt[k : n + k], dst=teeth)
        n_teeth += cv2.countNonZero(teeth)
        if prev is not None:
            change = cv2.absdiff(y[r0 + 1 : r0 + 1 + n], prev[r0 + 1 : r0 + 1 + n])
            moved = cv2.compare(change, t, cv2.CMP_GT)  # type: ignore[call-overload]
            n_moved += cv2.countNonZero(moved)
            both += cv2.countNonZero(cv2.bitwise_and(teeth, moved))
    size = m * y.shape[1]
    if prev is None:
        return float(n_teeth / size)
    on_moving = both / n_moved if n_moved else 0.0
    on_still = (n_teeth - both) / (size - n_moved) if size > n_moved else 0.0
    # Teeth as dense where nothing moved are drawn (scan lines, hatching), not combing.
    return float(both / size) * max(0.0, 1.0 - on_still / max(on_moving, 1e-9))


def pulldown_cadence(frames: list[int]) -> float:
    """The largest share of `frames` (indices in one clip) that fall on two adjacent phases of
    a 5-frame period: 1.0 for the woven frames of a 2:3 pulldown, whose cadence holds through
    a clip; about 2/5 for frames at no period."""
    phases = np.bincount(np.asarray(frames) % 5, minlength=5)
    return float((phases + np.roll(phases, -1)).max() / max(len(frames), 1))


def grid_ratio(y: np.ndarray, tile: int = 64, floor: float = 2.0) -> float:
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

    def whole(s_on: float, s_all: float, n_on: int, n_all: int) -> float:
        return (s_on / n_on) / max((s_all - s_on) / (n_all - n_on), floor / 2)

    if not tile:
        # uint8 steps and exact sums (4x faster than float32 arrays)
        dx = cv2.absdiff(y[:H, 1 : W + 1], y[:H, :W])  # step from column c to c + 1
        dy = cv2.absdiff(y[1 : H + 1, :W], y[:H, :W])
        on_x, on_y = dx[:, MB - 1 :: MB], dy[MB - 1 :: MB]  # steps across block edges
        if not on_x.size + on_y.size:  # a frame narrower than one block: no block edges, so no block grid
            return 1.0
        s_on = float(on_x.sum(dtype=np.int64) + on_y.sum(dtype=np.int64))
        s_all = cv2.sumElems(dx)[0] + cv2.sumElems(dy)[0]
        return float(whole(s_on, s_all, on_x.size + on_y.size, dx.size + dy.size))
    th, tw, k = H // tile, W // tile, tile // MB
    # A band of tile rows at a time (its uint8 steps stay in cache; whole-frame temporaries
    # cost more in page faults than in arithmetic), column sums by OpenCV's reduce, then per
    # tile: exact integer sums, as the float32 area resize of before gave them (sums under
    # 2^24, divided and multiplied by powers of two), at a fifth of the cost.
    sums = [np.zeros((th, W), np.int64) for _ in range(3)]  # all of dx, all of dy, dy on grid rows
    for i in range(th):
        r = i * tile
        dx = cv2.absdiff(y[r : r + tile, 1 : W + 1], y[r : r + tile, :W])  # step from column c to c + 1
        dy = cv2.absdiff(y[r + 1 : r + tile + 1, :W], y[r : r + tile, :W])  # from row r to r + 1
        sums[0][i] = cv2.reduce(dx, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[0]
        sums[1][i] = cv2.reduce(dy, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[0]
        sums[2][i] = cv2.reduce(dy[MB - 1 :: MB], 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[0]  # across block edges
    total_x, total_y = (t.reshape(th, tw, tile).sum(-1) for t in sums[:2])
    edges_x = sums[0][:, MB - 1 :: MB].reshape(th, tw, k).sum(-1)  # columns across block edges
    edges_y = sums[2].reshape(th, tw, tile).sum(-1)
    s_on, s_all = float(edges_x.sum() + edges_y.sum()), float(total_x.sum() + total_y.sum())
    n_on = H * (W // MB) + (H // MB) * W  # (H and W are whole tiles, so whole blocks)
    frame = whole(s_on, s_all, n_on, 2 * H * W)

    def ratio(total, edges, per_tile_on):
        n_off = tile * tile - per_tile_on
        return (edges / per_tile_on) / np.maximum((total.astype(np.float32) - edges) / n_off, floor)

    tiles = np.minimum(ratio(total_x, edges_x, tile * k), ratio(total_y, edges_y, tile * k))
    return float(max(frame, np.percentile(tiles, 90)))


def inside_bars(ys: list[np.ndarray]) -> list[np.ndarray]:
    """The frames cropped to the picture inside any letterbox or pillarbox bars, on the block
    grid (the crop starts and ends on multiples of MB, so grid phases are kept): a bar's edge
    is a sharp step the whole height or width of the frame, and on a grid line it is read as
    blocking in every frame (a picture 80 px inside pillarbox bars: grid ratio 3, measured)."""
    if not ys:
        return ys
    (top, bottom), (left, right) = picture_box(ys)
    t, lft = -(-top // MB) * MB, -(-left // MB) * MB
    b, r = bottom // MB * MB, right // MB * MB
    if b - t < 2 * MB or r - lft < 2 * MB:
        return ys
    return [np.ascontiguousarray(y[t:b, lft:r]) for y in ys]


def flat_block_steps(y: np.ndarray, low: int = 2, high: int = 20) -> float:
    """How much more often than off the 16-px grid a faint step between two flat runs lies on
    it, both directions (1: no grid). A starved encoder codes blocks as flat patches, so the
    picture steps by a few grey levels exactly at block edges with no change on either side
    (as in standard no-reference blockiness metrics, which weigh grid steps against the
    activity beside them); drawn edges are stronger than `high` or spread over anti-aliased
    pixels, and sit on any column. `low`..`high` grey levels: above codec noise (1), under the
    contrast of drawn lines (20+)."""
    # Steps and their masks as OpenCV uint8 kernels on strips of rows, not int16 arrays and a
    # transposed copy of the whole frame: this runs on full-size frames (10x faster, same counts).
    H, W = y.shape[:2]
    if W - 1 < 2 * MB + 2 or H - 1 < 2 * MB + 2:
        return 1.0

    def steps(d, mid, beside):  # mask of faint steps between flat runs
        return cv2.bitwise_and(cv2.inRange(mid, low, high), cv2.compare(beside, 1, cv2.CMP_LE))

    per_col = np.zeros(W - 3, np.int64)  # steps c -> c + 1 for c in 1..W-3, by column
    per_row = np.zeros(H - 3, np.int64)  # steps r -> r + 1 for r in 1..H-3, by row
    for r0 in range(0, H, _STRIP):
        part = y[r0 : r0 + _STRIP]
        d = cv2.absdiff(part[:, 1:], part[:, :-1])
        step = steps(d, d[:, 1:-1], cv2.max(d[:, :-2], d[:, 2:]))
        per_col += cv2.reduce(step, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[0] // 255
        a, b = max(r0, 1), min(r0 + _STRIP, H - 2)  # the steps r -> r + 1 of this strip, r in a..b-1
        if a < b:
            d = cv2.absdiff(y[a - 1 : b + 2][1:], y[a - 1 : b + 2][:-1])  # steps r - 1 .. r + 1 -> r + 2
            step = steps(d, d[1:-1], cv2.max(d[:-2], d[2:]))
            per_row[a - 1 : b - 1] = cv2.reduce(step, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S)[:, 0] // 255
    on = off = 0.0
    for per in (per_col, per_row):
        phase = (np.arange(1, len(per) + 1) + 1) % MB  # 0: the step from column MB k - 1 to MB k
        count = np.bincount(phase, weights=per, minlength=MB) / np.bincount(phase, minlength=MB)
        on, off = on + count[0], off + float(np.mean(count[1:]))
    return float(on / max(off, 1.0 / len(y)))


def dead_blocks(rgb: np.ndarray, k: int = 8) -> np.ndarray:
    """Per frame of [N, h, w, 3]: share of k x k blocks perfectly flat in every channel (lost data)."""
    n, h, w = rgb.shape[0], (rgb.shape[1] // k) * k, (rgb.shape[2] // k) * k
    # Down each block's k rows first, then across its k columns: numpy reduces over a
    # contiguous last axis fast and over two interleaved ones slowly (4x, same values).
    rows = rgb[:, :h, :w].reshape(n * (h // k), k, w * 3)

    def over_blocks(reduce):
        return reduce(rows, axis=1).reshape(n, h // k, w // k, k, 3)

    spread = np.max(over_blocks(np.max), axis=3).astype(np.int16) - np.min(over_blocks(np.min), axis=3)
    return (spread.max(-1) <= 1).mean(axis=(1, 2))


def repeated_rows(rgb: np.ndarray) -> np.ndarray:
    """Per frame of [N, h, w, 3]: share of rows equal to the row above across the whole width
    (the last good row of a lost slice smeared down the frame in vertical streaks)."""
    d = np.abs(np.diff(rgb.astype(np.int16), axis=1)).max(axis=(2, 3))
    return (d <= 4).mean(axis=1)  # (compression leaves a few levels of noise on the streaks)


def lost_band(rgb: np.ndarray, diff: int = 40, row_share: float = 0.8) -> np.ndarray:
    """Per frame of [N, h, w, 3]: the share of the height, from the top or the bottom edge, whose
    rows differ across nearly the whole width from both the frame before and the frame after,
    while those two agree there (a slice lost for one frame and refilled with anything: flat
    colour, streaks, noise). Drawn motion changes a subject's part of a row, a flash or a cut
    the whole frame, and effects redrawn every frame (speed lines) differ between the
    neighbours too."""
    if len(rgb) < 3:
        return np.zeros(len(rgb))
    x = rgb[:, ::2, ::2]  # every other row and column is plenty
    (top, bottom), (left, right) = picture_box(x.max(-1))  # inside any bars, which never change
    x = np.ascontiguousarray(x[:, top:bottom, left:right])
    n, h, w = x.shape[:3]
    flat = x.reshape(n, h * w * 3)

    def differ(a, b):  # in any channel (green garbage can match a picture's brightness)
        d = cv2.absdiff(a, b).reshape(-1, h, w, 3)
        # the largest channel over `diff`: any() over a last axis of 3 is numpy's slow case (15x)
        return np.maximum(np.maximum(d[..., 0], d[..., 1]), d[..., 2]) > diff

    lost = (differ(flat[1:-1], flat[:-2]) & differ(flat[1:-1], flat[2:])).mean(2) > row_share
    moved = differ(flat[:-2], flat[2:]).mean(2)  # per row: the neighbours differ from each other
    out = np.zeros(n)
    for i in range(n - 2):
        for rows, m in ((lost[i], moved[i]), (lost[i, ::-1], moved[i, ::-1])):  # from the top, from the bottom
            k = _run(rows)
            if k and m[:k].mean() < 0.5:
                out[i + 1] = max(out[i + 1], k / h)
    return out


def has_detail(y: np.ndarray, min_std: float = 6.0) -> bool:
    """The centre of the frame varies. Flat frames (flashes, fades, cards) show nothing but
    faint compression edges, so they are not judged for block edges; the centre, so that
    black bars around a white flash do not count as detail."""
    h, w = y.shape[:2]
    c = y[h // 4 : h - h // 4, w // 4 : w - w // 4]
    # std >= min_std as exact integer sums (n^2 var = n S2 - S^2), not float64 temporaries of a
    # full-size crop: the same answer, 6x faster.
    if not c.size:
        return False
    n, s1, s2 = c.size, int(cv2.sumElems(c)[0]), int(cv2.norm(c, cv2.NORM_L2SQR))
    return n * s2 - s1 * s1 >= min_std * min_std * n * n


def intact_part(rgb: np.ndarray, i: int, others: set, tol: float = 20.0, share: float = 1 / 3) -> bool:
    """The top or the bottom `share` of frame i (a third; a lost band's own height where
    lost_band measured one, so a thin band is not diluted by the intact rows of its third)
    matches a nearby frame not in `others` (the other suspects) while the other does not: lost
    data spares part of a frame, while an impact frame or a flash changes all of it. "Matches"
    allows for a moving camera: no more change than `tol`, or than that part shows between the
    good frames either side."""
    h = max(1, int(round(rgb.shape[1] * min(share, 1 / 3))))
    parts = (slice(0, h), slice(rgb.shape[1] - h, None))

    def change(a, b):
        return [float(np.abs(rgb[a, part].astype(np.int16) - rgb[b, part]).mean()) for part in parts]

    good = [j for j in (i - 1, i + 1, i - 2, i + 2, i - 3, i + 3) if 0 <= j < len(rgb) and j not in others]
    before, after = [j for j in good if j < i][:1], [j for j in good if j > i][:1]
    across = change(before[0], after[0]) if before and after else [0.0, 0.0]
    for j in good[:2]:
        ch = change(i, j)
        q = int(np.argmin(ch))  # the third that may be intact
        calm = ch[q] < max(tol, 1.2 * across[q])  # (the encoder may blur an intact part: a 3x contrast also counts)
        if ch[1 - q] > (1.6 if calm else 3.0) * ch[q] + 4.0:
            return True
    return False


def quality_flags(
    rgb: np.ndarray,
    luma: dict[int, np.ndarray],
    changed: list[float],
    fps: float,
    p: QualityParams | None = None,
    min_frames: int = 0,
    flow: list[float] | None = None,
) -> tuple[list[str], dict]:
    """Flags for one clip from its small RGB frames, sampled full-size luma, and per frame
    pair the camera-compensated change and the mean flow (from the motion pass)."""
    p = p or QualityParams()
    flags: list[str] = []
    stats: dict = {}
    n = len(rgb)
    if n < min_frames:
        flags.append("too_short")
    if n == 0:
        return flags, stats
    ys = [luma[k] for k in sorted(luma)]
    before = (
        ys[-1:] + ys[:-1] if len(ys) > 1 else [None]
    )  # each frame against the one sampled before (the first: the last)
    comb = np.array([combing(y, b) for y, b in zip(ys, before)]) if ys else np.zeros(0)
    stats["combing"] = round(float(np.median(comb)), 4) if len(comb) else 0.0
    combed_at = [k for k, c in zip(sorted(luma), comb) if c > p.comb]
    share = len(combed_at) / len(comb) if len(comb) else 0.0
    stats["combed_share"] = round(share, 3)
    if len(combed_at) >= p.comb_min and share >= p.comb_frames:
        cadence = pulldown_cadence(combed_at)
        stats["comb_cadence"] = round(cadence, 3)
        if share > p.comb_video or cadence >= p.comb_cadence:
            flags.append("interlaced")
    pictures = [y for y in inside_bars(ys) if has_detail(y)]
    grid = np.array([grid_ratio(y) for y in pictures])
    if len(grid):
        med = float(np.median(grid))
        steps = float(np.median([flat_block_steps(y) for y in pictures]))
        stats["grid_max"] = round(float(grid.max()), 3)
        stats["block_steps"] = round(steps, 3)
        burst = grid.max() > p.block_ratio and grid.max() > p.block_jump * med
        if burst or steps > p.block_steady:  # corruption bursts; starvation blocks every frame
            flags.append("block_corruption")
    # Lost data flattens many blocks (or smears one row down) for 1-3 frames: a spike over the
    # frames around it.
    dead = np.maximum(dead_blocks(rgb), repeated_rows(rgb))
    local = np.array([np.median(dead[max(0, i - 6) : i + 7]) for i in range(n)])
    stats["dead_spike"] = round(float((dead - local).max()), 3)
    suspects = set(np.nonzero(dead - local > p.garbage_flat)[0].tolist())
    band = lost_band(rgb)
    stats["lost_band"] = round(float(band.max()), 3) if n else 0.0
    banded = set(np.nonzero((band >= p.garbage_band) & (band <= 1 - p.garbage_band))[0].tolist())
    suspects |= banded
    if suspects:
        third = rgb[:, : rgb.shape[1] // 3].astype(np.int16)
        steady = float(np.median(np.abs(np.diff(third, axis=0)).mean(axis=(1, 2, 3)))) if n > 1 else 0.0
        tol = max(8.0, 2.0 * steady)  # what part of a frame changes by anyway (camera moves); a flash changes more
    if suspects and any(
        intact_part(rgb, i, suspects, tol) or (i in banded and intact_part(rgb, i, suspects, tol, float(band[i])))
        for i in suspects
    ):
        flags.append("decoder_garbage")
    grey = channel_mean(rgb)
    mean_luma = float(grey.mean())
    stats["mean_luma"] = round(mean_luma, 1)
    if mean_luma < p.black_luma:
        flags.append("near_black")
    else:
        rows, cols = grey.mean(0), grey  # average frame; per-frame for flatness
        avg = rows
        row_dark = (avg.mean(1) < p.bar_luma) & (grey.std(axis=(0, 2)) < p.bar_std)
        col_dark = (avg.mean(0) < p.bar_luma) & (cols.std(axis=(0, 1)) < p.bar_std)
        h, w = avg.shape
        if _bars(row_dark, p.bar_min * h):
            flags.append("letterbox")
        if _bars(col_dark, p.bar_min * w):
            flags.append("pillarbox")
    still_camera = not flow or max(flow) < p.frozen_flow
    if n > 1 and len(changed) and max(changed) < p.frozen_change and still_camera and n >= fps:
        flags.append("frozen")
    return flags, stats


def channel_mean(rgb: np.ndarray) -> np.ndarray:
    """rgb.mean(-1) of uint8 frames, the same float64 values (the exact integer sum over 3),
    10x faster than numpy's mean over a last axis of 3."""
    return (rgb[..., 0].astype(np.uint16) + rgb[..., 1] + rgb[..., 2]) / 3.0


def _bars(dark: np.ndarray, min_len: float) -> bool:
    """Dark runs of at least min_len at both ends of a row/column profile."""
    return _run(dark) >= min_len and _run(dark[::-1]) >= min_len


def _run(x: np.ndarray) -> int:
    """Length of the run of True at the start of x."""
    return len(x) if x.all() else int(np.argmin(x))
