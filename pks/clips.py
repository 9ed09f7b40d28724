"""Where clips live, and turning frames upright. The cutting itself (one decode of a span
feeding every clip writer and the analysis) is pipelines/clipwork.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def clip_path(out: str | Path, clip_id: str) -> Path:
    """Where a run keeps a clip's video: OUT/clips/{clip_id}.mp4."""
    return Path(out) / "clips" / f"{clip_id}.mp4"


def upright(rgb: np.ndarray, rotation: int) -> np.ndarray:
    """Apply the display rotation (degrees counter-clockwise, as in the display matrix)."""
    k = {90: 1, 180: 2, 270: 3}.get(rotation % 360, 0)
    return np.ascontiguousarray(np.rot90(rgb, k)) if k else rgb
