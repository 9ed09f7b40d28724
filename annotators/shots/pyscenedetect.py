"""PySceneDetect's AdaptiveDetector and ContentDetector behind the PKS interface, for comparison.

Frames are fed through the detectors' own `process_frame`, at about the width PySceneDetect's
SceneManager downscales to by default (256-px minimum), so the comparison is like for like.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from annotators.shots.base import Boundary, ShotDetector


@dataclass
class SceneDetectDetector(ShotDetector):
    name: str = "adaptive"
    frame_size: tuple[int, int] = (320, 180)
    kwargs: dict = field(default_factory=dict)

    def _make(self):
        from scenedetect.detectors import AdaptiveDetector, ContentDetector

        return {"adaptive": AdaptiveDetector, "content": ContentDetector}[self.name](**self.kwargs)

    def detect(self, frames: np.ndarray, fps: float) -> list[Boundary]:
        from scenedetect import FrameTimecode

        det = self._make()
        cuts = []
        bgr = frames[..., ::-1]
        for i, f in enumerate(bgr):
            cuts += det.process_frame(FrameTimecode(i, fps), np.ascontiguousarray(f))
        cuts += det.post_process(FrameTimecode(len(frames), fps)) or []
        return [Boundary(int(c.frame_num), "cut") for c in cuts if 0 < c.frame_num < len(frames)]
