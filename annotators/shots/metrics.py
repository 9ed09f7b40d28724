"""Score detected boundaries against synthetic ground truth (pks synth truth JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field

from annotators.shots.base import Boundary, shots_from_boundaries

CUT_TOLERANCE = 2  # a hard cut counts within +-2 frames


@dataclass
class Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    gradual_total: int = 0
    gradual_found: int = 0
    flashes_total: int = 0
    flash_false_cuts: int = 0
    clips: int = 0
    leaky_clips: int = 0  # clips holding more than CUT_TOLERANCE frames of a transition or card
    false_frames: list[int] = field(default_factory=list)
    missed_frames: list[int] = field(default_factory=list)

    def __iadd__(self, o: Score) -> Score:
        for k in (
            "tp",
            "fp",
            "fn",
            "gradual_total",
            "gradual_found",
            "flashes_total",
            "flash_false_cuts",
            "clips",
            "leaky_clips",
        ):
            setattr(self, k, getattr(self, k) + getattr(o, k))
        self.false_frames += o.false_frames
        self.missed_frames += o.missed_frames
        return self

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def _window(t: dict) -> tuple[int, int]:
    """Frames where a detection matches a true boundary: [lo, hi] inclusive."""
    if t["type"] == "cut":
        return t["frame"] - CUT_TOLERANCE, t["frame"] + CUT_TOLERANCE
    return t["span"][0] - CUT_TOLERANCE, t["span"][1] - 1 + CUT_TOLERANCE


def score(detected: list[Boundary], truth: dict) -> Score:
    """Greedy one-to-one matching: each true boundary takes the nearest unmatched detection
    inside its window. A detection inside an impact flash (or up to 2 frames after it)
    that matches nothing is a false cut on a flash. The clips these boundaries make are
    checked too: a clip holding blended, faded or card frames is leaky."""
    s = Score()
    between = [t["span"] for t in truth["boundaries"] if t["type"] != "cut"]
    for clip in shots_from_boundaries(detected, truth["n_frames"], truth["fps"]):
        s.clips += 1
        inside = sum(max(0, min(clip.end_frame, b) - max(clip.start_frame, a)) for a, b in between)
        s.leaky_clips += inside > CUT_TOLERANCE
    free = sorted(b.frame for b in detected)
    for t in truth["boundaries"]:
        lo, hi = _window(t)
        inside = [f for f in free if lo <= f <= hi]
        gradual = t["type"] != "cut"
        s.gradual_total += gradual
        if inside:
            best = min(inside, key=lambda f: abs(f - t["frame"]))
            free.remove(best)
            s.tp += 1
            s.gradual_found += gradual
        else:
            s.fn += 1
            s.missed_frames.append(t["frame"])
    flashes = [f for shot in truth["shots"] for f in shot["flashes"]]
    s.flashes_total = len(flashes)
    for f in free:
        s.fp += 1
        s.false_frames.append(f)
        if any(fl["frame"] - CUT_TOLERANCE <= f <= fl["frame"] + fl["length"] + CUT_TOLERANCE for fl in flashes):
            s.flash_false_cuts += 1
    return s
