"""Failure damage applied to rendered frames: the defects PKS must flag, unlike intentional art.

Each function takes the shot's frames (list of RGB arrays, modified in place) and a generator,
and returns the shot-relative frame indices it damaged.
"""

from __future__ import annotations

import numpy as np

MB = 16  # H.264 macroblock size


def block_corruption(frames: list[np.ndarray], rng: np.random.Generator) -> list[int]:
    """A burst of frames with runs of macroblocks copied from wrong places with shifted colour,
    as when a decoder predicts from a lost reference."""
    n = len(frames)
    length = int(rng.integers(3, 8))
    start = int(rng.integers(0, max(1, n - length)))
    h, w = frames[0].shape[:2]
    rows, cols = h // MB, w // MB
    hit = []
    for i in range(start, min(n, start + length)):
        f = frames[i]
        src = f.copy()
        for _ in range(int(rng.integers(max(2, rows // 2), rows + 2))):  # runs along a slice
            r = int(rng.integers(0, rows))
            c0 = int(rng.integers(0, cols))
            run = int(rng.integers(3, max(4, cols // 2)))
            dy, dx = int(rng.integers(-3, 4)) * MB, int(rng.integers(-6, 7)) * MB
            tint = rng.integers(-70, 70, 3)
            for c in range(c0, min(cols, c0 + run)):
                y, x = r * MB, c * MB
                sy, sx = np.clip(y + dy, 0, h - MB), np.clip(x + dx, 0, w - MB)
                block = src[sy : sy + MB, sx : sx + MB].astype(np.int16) + tint
                f[y : y + MB, x : x + MB] = np.clip(block, 0, 255).astype(np.uint8)
        hit.append(i)
    return hit


def interlace(frames: list[np.ndarray], rng: np.random.Generator) -> list[int]:
    """Weave fields from consecutive frames: odd lines lag one frame, so motion combs."""
    prev = [f.copy() for f in frames]
    for i in range(1, len(frames)):
        frames[i][1::2] = prev[i - 1][1::2]
    return list(range(1, len(frames)))


def decoder_garbage(frames: list[np.ndarray], rng: np.random.Generator) -> list[int]:
    """1-3 frames whose lower part is lost: green fill, smeared rows and noise blocks."""
    n = len(frames)
    hit = sorted({int(x) for x in rng.integers(0, n, int(rng.integers(1, 4)))})
    for i in hit:
        f = frames[i]
        h, w = f.shape[:2]
        y0 = int(rng.uniform(0.2, 0.7) * h) // MB * MB
        f[y0:] = (0, 135, 0)  # what a YUV buffer of zeros looks like in RGB
        for _ in range(int(rng.integers(4, 12))):
            y = int(rng.integers(y0, h - MB)) // MB * MB
            x = int(rng.integers(0, w - MB)) // MB * MB
            bw = MB * int(rng.integers(1, 6))
            f[y : y + MB, x : x + bw] = rng.integers(0, 256, (MB, min(bw, w - x), 3), dtype=np.uint8)
        f[y0 : y0 + MB] = f[y0 - 1 : y0]  # the last good row smeared down
    return hit


DAMAGE = {"block_corruption": block_corruption, "interlaced": interlace, "decoder_garbage": decoder_garbage}
