"""Noise that travels with the camera: a sample's noise slides across its latent frames the way
its camera tag moves the picture (noise warping, as in Go-with-the-Flow, Burgert et al. 2025,
with the integral noise of "How I Warped Your Noise", Chang et al. 2024).

Why (BENCHMARKS.md, issue 21): the tag channel alone learns a pan's direction slowly, and what
it draws jitters more than it drifts, so the camera analyser reads shake or static. A rectified
flow sample is a deterministic function of its starting noise; when that noise already moves
steadily, the content the model draws out of it moves with it, at every noise level. The tag
decides the slide at training (from the clip's camera tag, the same tag the sampler is asked
for), so train and sample draw from one distribution.

How: one white-noise field at SUB x SUB sub-cells per latent pixel, as wide as the frame plus the
clip's travel; latent frame i reads the window shifted by i x speed latent pixels along the
move, and sums each pixel's SUB x SUB sub-cells / SUB. Each frame is then exactly N(0, 1) and
independent across pixels (a sum of SUB^2 independent unit normals over SUB), and neighbouring
frames share the sub-cells they overlap on: an exact sub-pixel slide without interpolation,
which would shrink the variance.
"""

from __future__ import annotations

import torch

from training.augment import MOVES

SUB = 4  # sub-cells per latent pixel and side: slides in quarters of a latent pixel


def camera_shift(camera: list[str] | None) -> tuple[int, int]:
    """The window's direction (dx, dy), each -1, 0 or 1, for a clip's camera tags (pans and
    tilts combine; other tags, or none, are still)."""
    dx = sum(MOVES[m][0] for m in camera or [] if m in MOVES)
    dy = sum(MOVES[m][1] for m in camera or [] if m in MOVES)
    return max(-1, min(1, dx)), max(-1, min(1, dy))


def camera_noise(
    shape: tuple[int, int, int, int], direction: tuple[int, int], speed: float, g: torch.Generator
) -> torch.Tensor:
    """[C, T, H, W] unit normal noise whose frames slide `speed` latent pixels a latent frame in
    `direction` (the window's, as augment.MOVES: pan_right's window goes right, so the noise,
    like the picture, slides left). Still (0, 0) gives the same noise in every frame."""
    c, t, h, w = shape
    step = round(speed * SUB)  # sub-cells a frame
    dx, dy = direction
    travel_x, travel_y = abs(dx) * step * (t - 1), abs(dy) * step * (t - 1)
    field = torch.randn(c, h * SUB + travel_y, w * SUB + travel_x, generator=g)
    x0, y0 = (travel_x if dx < 0 else 0), (travel_y if dy < 0 else 0)
    frames = []
    for i in range(t):
        x, y = x0 + dx * step * i, y0 + dy * step * i
        window = field[:, y : y + h * SUB, x : x + w * SUB]
        frames.append(window.reshape(c, h, SUB, w, SUB).sum((2, 4)) / SUB)
    return torch.stack(frames, dim=1)


def mix(fresh: torch.Tensor, travelling: torch.Tensor, share: float) -> torch.Tensor:
    """Unit normal noise with `share` of its variance from the travelling field."""
    return (1 - share) ** 0.5 * fresh + share**0.5 * travelling
