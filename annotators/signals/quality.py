"""Failure flags: defects of the footage, never of the art. A smear or a squash is drawn on
purpose and changes the drawing smoothly inside the subject; these checks look for what no
animator draws: macroblock grids, combing between fields, lost slices, bars, black, freezes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MB = 16


@dataclass
class QualityParams:
    comb: float = 0.02  # share of combing pixels (vertical zig-zag) in an interlaced frame
    comb_frames: float = 0.3  # share of sampled frames that must comb
    block_ratio: float = 2.6  # edge energy on the 16-px grid over elsewhere, in a corrupt frame
    block_jump: float = 1.8  # ...and over the clip's own median (compression is steady, corruption bursts)
    garbage_flat: float = 0.25  # extra share of dead (flat) blocks over the frames around
    bar_luma: float = 20.0  # letterbox bars: darker than this...
    bar_std: float = 4.0  # ...and this flat
    bar_min: float = 0.04  # ...over at least this share of the height (width) on both sides
    black_luma: float = 18.0
    frozen_change: float = 0.0005  # changed share under which no drawing changes...
    frozen_flow: float = 0.05  # ...and mean flow (px) under which the camera does not move either


def combing(y: np.ndarray, t: float = 12.0) -> float:
    """Share of pixels that differ from both vertical neighbours in the same direction by > t:
    the teeth that two fields from different times leave at moving edges."""
    y = y.astype(np.int16)
    up, mid, down = y[:-2], y[1:-1], y[2:]
    a, b = mid - up, mid - down
    return float(((a > t) & (b > t) | (a < -t) & (b < -t)).mean())


def grid_ratio(y: np.ndarray) -> float:
    """Mean step across 16-px block edges over the mean step elsewhere (both directions)."""
    y = y.astype(np.float32)
    dx = np.abs(np.diff(y, axis=1))
    dy = np.abs(np.diff(y, axis=0))
    on_x = dx[:, MB - 1::MB].mean()
    on_y = dy[MB - 1::MB, :].mean()
    mask_x = np.ones(dx.shape[1], bool)
    mask_x[MB - 1::MB] = False
    mask_y = np.ones(dy.shape[0], bool)
    mask_y[MB - 1::MB] = False
    off = 0.5 * (dx[:, mask_x].mean() + dy[mask_y].mean())
    return float(0.5 * (on_x + on_y) / max(off, 1e-3))


def dead_blocks(rgb: np.ndarray, k: int = 8) -> float:
    """Share of k x k blocks that are perfectly flat in every channel (lost data)."""
    h, w = (rgb.shape[0] // k) * k, (rgb.shape[1] // k) * k
    b = rgb[:h, :w].reshape(h // k, k, w // k, k, 3)
    spread = b.max(axis=(1, 3)).astype(np.int16) - b.min(axis=(1, 3))
    return float((spread.max(-1) <= 1).mean())


def top_intact(rgb: np.ndarray, i: int, others: set, tol: float = 20.0) -> bool:
    """The top third of frame i matches a nearby frame not in `others` (the other suspects):
    lost slices spare the top of a frame, while an impact frame or a flash changes all of it."""
    h = rgb.shape[1] // 3
    top = rgb[i, :h].astype(np.int16)
    near = [j for j in (i - 1, i + 1, i - 2, i + 2, i - 3, i + 3) if 0 <= j < len(rgb) and j not in others]
    return any(float(np.abs(top - rgb[j, :h]).mean()) < tol for j in near[:2])


def quality_flags(rgb: np.ndarray, luma: dict[int, np.ndarray], changed: list[float], fps: float,
                  p: QualityParams | None = None, min_frames: int = 0,
                  flow: list[float] | None = None) -> tuple[list[str], dict]:
    """Flags for one clip from its small RGB frames, sampled full-size luma, and per frame
    pair the camera-compensated change and the mean flow (from the motion pass)."""
    p = p or QualityParams()
    flags, stats = [], {}
    n = len(rgb)
    if n < min_frames:
        flags.append("too_short")
    if n == 0:
        return flags, stats
    ys = [luma[k] for k in sorted(luma)]
    comb = np.array([combing(y) for y in ys]) if ys else np.zeros(0)
    stats["combing"] = round(float(np.median(comb)), 4) if len(comb) else 0.0
    if len(comb) and (comb > p.comb).mean() >= p.comb_frames:
        flags.append("interlaced")
    grid = np.array([grid_ratio(y) for y in ys]) if ys else np.zeros(0)
    if len(grid):
        med = float(np.median(grid))
        stats["grid_max"] = round(float(grid.max()), 3)
        if grid.max() > p.block_ratio and grid.max() > p.block_jump * med:
            flags.append("block_corruption")
    # Lost data flattens many blocks for 1-3 frames: a spike over the frames around it.
    dead = np.array([dead_blocks(f) for f in rgb])
    local = np.array([np.median(dead[max(0, i - 6):i + 7]) for i in range(n)])
    stats["dead_spike"] = round(float((dead - local).max()), 3)
    suspects = set(np.nonzero(dead - local > p.garbage_flat)[0].tolist())
    if suspects:
        third = rgb[:, : rgb.shape[1] // 3].astype(np.int16)
        steady = float(np.median(np.abs(np.diff(third, axis=0)).mean(axis=(1, 2, 3)))) if n > 1 else 0.0
        tol = max(20.0, 2.0 * steady)  # what the top of a frame changes by anyway (camera moves)
    if suspects and any(top_intact(rgb, i, suspects, tol) for i in suspects):
        flags.append("decoder_garbage")
    grey = rgb.mean(-1)
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


def _bars(dark: np.ndarray, min_len: float) -> bool:
    """Dark runs of at least min_len at both ends of a row/column profile."""
    def run(x):
        k = 0
        while k < len(x) and x[k]:
            k += 1
        return k
    return run(dark) >= min_len and run(dark[::-1]) >= min_len
