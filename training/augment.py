"""Camera moves made the way a camera makes them: a window travelling over a still shot.

In cel animation a pan or tilt *is* a camera (or the paper under it) sliding over a painted
plate, so a window sliding across the frames of a static shot is the same process, not a
drawing of it; its truth is the direction the window travels. Curated footage holds few moving
shots (a seed's training split held 3 tilt clips), so a generator meets a camera tag a handful
of times; drawing moves from the static clips gives every direction the same weight.

Conventions follow the camera analyser (annotators/signals/motion.py): pan_left means the view
goes left, so the picture slides right on screen; tilt_up, the picture slides down.
"""

from __future__ import annotations

import re

import cv2
import numpy as np

from pks.seeded import unit

# (dx, dy) of the window per unit of travel; the picture moves the other way on screen.
MOVES = {"pan_left": (-1, 0), "pan_right": (1, 0), "tilt_up": (0, -1), "tilt_down": (0, 1)}
# The window covers this share of the frame (each side), so it may travel up to 1 - ZOOM of
# the frame's width or height; 0.75 leaves room for a pan of a quarter frame.
ZOOM = 0.75


def move_window(video: np.ndarray, move: str, travel: float, across: float = 0.5) -> np.ndarray:
    """uint8 [n, H, W, 3] -> the same frames seen through a window of ZOOM x the frame that
    travels `travel` (a share of the frame's width for pans, height for tilts; <= 1 - ZOOM)
    in `move`'s direction over the n frames, at `across` (0..1) of the free room on the other
    axis; resampled bilinearly back to H x W."""
    if move not in MOVES:
        raise ValueError(f"unknown camera move {move!r}; choose from {', '.join(MOVES)}")
    if not 0 <= travel <= 1 - ZOOM:
        raise ValueError(f"travel {travel} is outside 0..{1 - ZOOM}")
    n, h, w = video.shape[:3]
    dx, dy = MOVES[move]
    room = 1 - ZOOM
    # Start so that the whole travel lies inside the frame: centred on the free room.
    along = (room - travel) / 2 + (travel if (dx or dy) < 0 else 0)
    out = np.empty_like(video)
    for i in range(n):
        s = along + (dx or dy) * travel * i / max(n - 1, 1)
        x0, y0 = (s, across * room) if dx else (across * room, s)
        # Output pixel (u, v) reads source (x0*w + u*ZOOM, y0*h + v*ZOOM).
        m = np.array([[ZOOM, 0, x0 * w], [0, ZOOM, y0 * h]], np.float64)
        out[i] = cv2.warpAffine(
            video[i], m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT
        )
    return out


def camera_move(
    video: np.ndarray, caption: dict | None, rate: float, travel: tuple[float, float], seed: int, index: int
) -> tuple[np.ndarray, dict | None, str | None]:
    """With probability `rate` (drawn from (seed, index): workers and resumes agree), a clip
    whose caption says the camera is static becomes a move: (frames, caption with the move as
    its camera tag, the move); otherwise the inputs and None. Only static clips: a move over a
    moving shot would be two moves, which no tag names."""
    if not rate or not caption or list(caption.get("camera") or []) != ["static"]:
        return video, caption, None
    if unit(seed, "camera-move", index) >= rate:
        return video, caption, None
    moves = sorted(MOVES)
    move = moves[min(int(unit(seed, "camera-move-kind", index) * len(moves)), len(moves) - 1)]
    lo, hi = travel
    amount = lo + (hi - lo) * unit(seed, "camera-move-travel", index)
    across = unit(seed, "camera-move-across", index)
    return move_window(video, move, amount, across), {**caption, "camera": [move]}, move


# A shot seen in a mirror is the same craft with its sides swapped: of the taxonomy's tags only
# the horizontal pans name a side (taxonomy/versions/v1.yaml), so only they trade places.
MIRRORED_TAGS = {"pan_left": "pan_right", "pan_right": "pan_left"}


def swap_sides(text: str) -> str:
    """'left' and 'right' swapped as whole words, keeping their case (a narrative says which way
    a character runs or looks; in the mirrored clip it is the other way)."""

    def other(m: re.Match) -> str:
        word = m.group(0)
        new = "right" if word.lower() == "left" else "left"
        return new.upper() if word.isupper() else new.capitalize() if word[0].isupper() else new

    return re.sub(r"\b(left|right)\b", other, text, flags=re.IGNORECASE)


def mirror(
    video: np.ndarray, caption: dict | None, rate: float, seed: int, index: int
) -> tuple[np.ndarray, dict | None, bool]:
    """With probability `rate` (drawn from (seed, index) like camera_move), the clip flipped left
    to right with its caption to match (pans swapped, and left/right in the narrative): (frames,
    caption, True); otherwise the inputs and False. Curated footage holds a handful of pans, and
    the pan_left clips are other pictures than the pan_right ones, so a pan tag can be learnt as
    its pictures, which carry their own motion; mirrored, every pan is shown both ways over the
    same pictures and only the tag tells them apart (BENCHMARKS.md, issue 21 tenth round)."""
    if not rate or unit(seed, "mirror", index) >= rate:
        return video, caption, False
    flipped = np.ascontiguousarray(video[:, :, ::-1])
    if caption is None:
        return flipped, None, True
    new = {**caption, "camera": [MIRRORED_TAGS.get(t, t) for t in caption.get("camera") or []]}
    if caption.get("narrative"):
        new["narrative"] = swap_sides(caption["narrative"])
    return flipped, new, True
