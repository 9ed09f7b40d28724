"""cv2.resize INTER_AREA by whole-number factors, the same pixels at a fraction of the CPU.

Analysis shrinks every decoded plane (1080p to a detector's 64 x 36, to the collector's 192 px
width); OpenCV averages each block through a gather table, which costs more than the decode's
own colour work. Summing rows, then columns, as numpy integer adds and rounding as OpenCV does
gives its values exactly."""

from __future__ import annotations

import cv2
import numpy as np

# OpenCV sums a block in int and multiplies by float32(1 / area): exact while the sum is a
# whole float32 (below 2 ** 24), so blocks of up to 2 ** 24 / 255 pixels (about 256 x 256).
_FLOAT32_EXACT = 1 << 24


def _sum_dtype(n: int) -> type[np.unsignedinteger]:
    """The narrowest unsigned type that holds a sum of n uint8 values (uint16 adds are the cheaper)."""
    return np.uint16 if n * 255 < 1 << 16 else np.uint32


def area_resize(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """cv2.resize(plane, size, interpolation=cv2.INTER_AREA) of a uint8 plane, the same pixels.
    Where the plane is a whole number of times the size each way (1080p to 64 x 36: 30 each way,
    15 for chroma; to 192 px: 10 and 5), OpenCV takes its fast area path: each block summed as
    int, times float32(1 / area), rounded to nearest, ties to even. The same here with rows then
    columns summed as numpy uint16 adds, or uint32 where a block's sum needs it. 2 x 2 is its own
    SIMD kernel with other rounding, so it and every other case go to OpenCV."""
    w, h = size
    H, W = plane.shape
    fy, fx = (H // h, W // w) if h and w else (0, 0)
    if not fx or not fy or H != h * fy or W != w * fx or (fx, fy) == (2, 2) or fx * fy * 255 >= _FLOAT32_EXACT:
        return cv2.resize(plane, size, interpolation=cv2.INTER_AREA)
    rows = np.add.reduce(plane.reshape(h, fy, W), axis=1, dtype=_sum_dtype(fy))  # each block's rows summed
    s = rows[:, 0::fx].astype(_sum_dtype(fx * fy))
    for k in range(1, fx):  # strided adds: numpy sums short runs along the last axis slowly
        s += rows[:, k::fx]
    return np.rint(s.astype(np.float32) * np.float32(1.0 / (fx * fy))).astype(np.uint8)
