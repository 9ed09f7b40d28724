"""Failure augmentations: what video generators get wrong, made from clean clips, so the Judge
(issue 14) sees an art clip and its broken copy side by side across the quality boundary.

Each is a plain function `(frames [T, H, W, 3] uint8, rng) -> frames` that leaves the input
untouched. They imitate generator failures, not footage damage (PKS's quality flags cover
that), except where the two coincide (frozen frames, block noise):
- boiling: texture that shimmers every frame without following any motion;
- melting: a local warp whose place and direction change every frame and grow;
- identity_drift: the subject morphs into someone else over the clip;
- tearing: a band of some frames slips sideways against the rest;
- ghosting: physics-style blur, each frame averaged with the ones before (smears are drawn, not blended);
- frozen: one frame held for the whole clip;
- block_noise: macroblocks shuffled and shifted in a burst of frames.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

MB = 16


def _field(rng, h: int, w: int, amp: float, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random displacement field (px): noise on a coarse grid, upsampled."""
    gh, gw = max(2, h // scale), max(2, w // scale)
    dx = cv2.resize(rng.normal(0, amp, (gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(rng.normal(0, amp, (gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    return dx, dy


def _remap(frame: np.ndarray, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return cv2.remap(frame, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def boiling(frames: np.ndarray, rng: np.random.Generator, amp: float = 1.5) -> np.ndarray:
    h, w = frames.shape[1:3]
    return np.stack([_remap(f, *_field(rng, h, w, amp, 8)) for f in frames])


def melting(frames: np.ndarray, rng: np.random.Generator, strength: float = 0.25) -> np.ndarray:
    n, h, w = frames.shape[:3]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i, f in enumerate(frames):
        cx, cy = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h
        r = rng.uniform(0.15, 0.3) * min(h, w)
        blob = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * r * r))
        a = rng.uniform(0, 2 * np.pi)
        mag = strength * r * (0.3 + 0.7 * i / max(1, n - 1))  # it gets worse
        out.append(_remap(f, (mag * np.cos(a) * blob).astype(np.float32), (mag * np.sin(a) * blob).astype(np.float32)))
    return np.stack(out)


def identity_drift(frames: np.ndarray, rng: np.random.Generator, other: np.ndarray | None = None) -> np.ndarray:
    """Morph toward `other` (another clip's frames; by default this clip mirrored and
    recoloured: someone else in the same place) with a warp and a growing blend."""
    n, h, w = frames.shape[:3]
    if other is None:
        other = frames[:, :, ::-1, ::-1]  # mirrored, channels swapped
    other = np.stack([cv2.resize(o, (w, h)) for o in other[np.linspace(0, len(other) - 1, n).astype(int)]])
    out = []
    for i, (f, o) in enumerate(zip(frames, other)):
        t = i / max(1, n - 1)
        dx, dy = _field(np.random.default_rng(int(rng.integers(1 << 30))), h, w, 3.0 * t, 16)
        out.append(cv2.addWeighted(_remap(f, dx, dy), 1 - t, _remap(o, -dx, -dy), t, 0))
    return np.stack(out)


def tearing(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = frames.copy()
    n, h, w = frames.shape[:3]
    for i in sorted(rng.choice(n, max(1, n // 3), replace=False)):
        y0 = int(rng.uniform(0.25, 0.6) * h)
        y1 = min(h, y0 + int(rng.uniform(0.1, 0.25) * h))
        out[i, y0:y1] = np.roll(frames[i, y0:y1], int(rng.choice([-1, 1]) * rng.uniform(0.05, 0.15) * w), axis=1)
    return out


def ghosting(frames: np.ndarray, rng: np.random.Generator, keep: float = 0.45) -> np.ndarray:
    acc = frames[0].astype(np.float32)
    out = [frames[0]]
    for f in frames[1:]:
        acc = keep * acc + (1 - keep) * f.astype(np.float32)
        out.append(np.clip(acc, 0, 255).astype(np.uint8))
    return np.stack(out)


def frozen(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.repeat(frames[int(rng.integers(len(frames)))][None], len(frames), axis=0)


def block_noise(frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = frames.copy()
    n, h, w = frames.shape[:3]
    rows, cols = h // MB, w // MB
    start = int(rng.integers(0, max(1, n - 3)))
    for i in range(start, min(n, start + 3)):
        for _ in range(rows * cols // 4):
            r, c = int(rng.integers(rows)), int(rng.integers(cols))
            r2, c2 = int(rng.integers(rows)), int(rng.integers(cols))
            block = frames[i, r2 * MB : (r2 + 1) * MB, c2 * MB : (c2 + 1) * MB].astype(np.int16)
            out[i, r * MB : (r + 1) * MB, c * MB : (c + 1) * MB] = np.clip(block + rng.integers(-60, 60, 3), 0, 255)
    return out


FAILURES: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "boiling": boiling,
    "melting": melting,
    "identity_drift": identity_drift,
    "tearing": tearing,
    "ghosting": ghosting,
    "frozen": frozen,
    "block_noise": block_noise,
}
