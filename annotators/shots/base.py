"""The shot-detector interface: small frames in, boundaries with a transition type out.

Modelled on PySceneDetect's detector interface, but whole-video: anime needs look-ahead (a
flash is only a flash if the shot comes back) so detectors see all frames at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

KINDS = ("cut", "fade", "dissolve")


@dataclass(frozen=True)
class Boundary:
    frame: int  # first frame of the new shot (for gradual transitions: the middle of the span)
    kind: str = "cut"
    span: tuple[int, int] | None = None  # [start, end) of a gradual transition's frames

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"boundary kind must be one of {KINDS}, got {self.kind!r}")


@dataclass(frozen=True)
class Shot:
    start_frame: int
    end_frame: int  # exclusive
    transition_in: str  # start | cut | fade | dissolve

    def to_dict(self) -> dict:
        return {"start_frame": self.start_frame, "end_frame": self.end_frame, "transition_in": self.transition_in}


class ShotDetector(ABC):
    name: str = "base"
    frame_size: tuple[int, int] = (64, 36)  # (w, h) of the RGB frames detect() wants

    @abstractmethod
    def detect(self, frames: np.ndarray, fps: float) -> list[Boundary]:
        """Boundaries in a video given as uint8 RGB frames [N, h, w, 3] at `frame_size`."""


def shots_from_boundaries(
    boundaries: list[Boundary],
    n_frames: int,
    fps: float,
    min_shot_s: float = 0.0,
    max_shot_s: float | None = None,
    trim_frames: int = 0,
) -> list[Shot]:
    """Turn boundaries into shots [start, end).

    Frames inside a gradual transition belong to neither shot (they blend two shots).
    `trim_frames` are dropped at each end of every shot; shots then shorter than `min_shot_s`
    are dropped; shots longer than `max_shot_s` are split evenly, the later pieces marked
    'cut' (a hard edge is what a trainer sees at the split).
    """
    edges: list[tuple[int, int, str]] = []  # (start, end, transition_in)
    start, kind = 0, "start"
    for b in sorted(boundaries, key=lambda b: b.frame):
        end = b.span[0] if b.span else b.frame
        nxt = b.span[1] if b.span else b.frame
        if end > start:
            edges.append((start, end, kind))
        start, kind = max(start, nxt), b.kind
    if n_frames > start:
        edges.append((start, n_frames, kind))
    min_len = int(round(min_shot_s * fps)) if fps else 0
    max_len = int(round(max_shot_s * fps)) if (max_shot_s and fps) else None
    shots = []
    for s, e, k in edges:
        s, e = s + trim_frames, e - trim_frames
        if e - s < max(1, min_len):
            continue
        pieces = int(np.ceil((e - s) / max_len)) if max_len else 1
        cuts = np.linspace(s, e, pieces + 1).round().astype(int)
        for i, (a, b) in enumerate(zip(cuts, cuts[1:])):
            shots.append(Shot(int(a), int(b), k if i == 0 else "cut"))
    return shots
