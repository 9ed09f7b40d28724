"""One synthetic anime shot: a camera moving on ones over held drawings.

The background is a painted world larger than the frame; the camera (pan, tilt, zoom, shake)
is re-evaluated every frame, while the character is redrawn only every `cadence` frames (on
ones, twos or threes), with squash-and-stretch, wobble, smears and chibi shifts scaled by the
shot's deformation level. Flashes (white or inverted impact frames) happen inside the shot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from pks.synth.art import Character, Palette, deform_sprite, draw_character, focus_lines, paint_world, speed_lines

VIEW_RANGE = 0.35  # framing offsets stay within +-35% of the frame size
CAMERAS = ("static", "pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out", "shake")


@dataclass
class ShotSpec:
    n_frames: int
    camera: str
    camera_speed: float  # px/frame at frame scale for pans/tilts; total log-scale change for zooms
    cadence: int  # 1, 2 or 3: frames each drawing is held
    deformation: float  # 0..1 ground-truth non-rigid deformation level
    subject_speed: float  # px/frame rigid translation of the character (motion, not deformation)
    subject_height: float  # character height as a fraction of frame height (shot size)
    vfx: list[str] = field(default_factory=list)  # speed_lines, focus_lines
    flashes: list[dict] = field(default_factory=list)  # [{"frame": shot-relative, "length": n, "kind": ...}]
    location: int = 0  # shots with the same location share a painted world
    view: tuple[float, float] = (0.0, 0.0)  # framing offset in the world, in frame widths/heights
    seed: int = 0


@dataclass
class ShotTruth:
    """What the renderer knows about each drawing, for the truth file."""

    smear_frames: list[int] = field(default_factory=list)
    chibi_frames: list[int] = field(default_factory=list)
    drawing_starts: list[int] = field(default_factory=list)


def _camera_path(spec: ShotSpec, rng: np.random.Generator, w: int, h: int):
    """Per-frame (cx, cy, scale) of the camera in frame-size units relative to the world centre."""
    n = spec.n_frames
    t = np.arange(n, dtype=np.float64)
    cx = np.zeros(n)
    cy = np.zeros(n)
    s = np.ones(n)
    v = spec.camera_speed
    if spec.camera == "pan_left":  # view slides left: background moves right on screen
        cx = -v * t
    elif spec.camera == "pan_right":
        cx = v * t
    elif spec.camera == "tilt_up":
        cy = -v * t
    elif spec.camera == "tilt_down":
        cy = v * t
    elif spec.camera in ("zoom_in", "zoom_out"):
        sign = 1 if spec.camera == "zoom_in" else -1
        s = np.exp(sign * v * t / max(1, n - 1))
    elif spec.camera == "shake":
        amp = v
        cx = rng.uniform(-amp, amp, n)
        cy = rng.uniform(-amp, amp, n)
    # Centre the path so the whole move stays inside the world canvas.
    cx -= (cx.max() + cx.min()) / 2
    cy -= (cy.max() + cy.min()) / 2
    return cx, cy, s


def world_size(spec: ShotSpec, w: int, h: int) -> tuple[int, int]:
    extra = spec.camera_speed * spec.n_frames if spec.camera.startswith(("pan", "tilt")) else 0
    zoom_out = math.exp(spec.camera_speed) if spec.camera == "zoom_out" else 1.0
    # Room for the largest framing offset (VIEW_RANGE either way) so reverse angles fit.
    W = int(w * (1.2 * zoom_out + 2 * VIEW_RANGE) + (extra if spec.camera.startswith("pan") else 0) + 64)
    H = int(h * (1.2 * zoom_out + 2 * VIEW_RANGE) + (extra if spec.camera.startswith("tilt") else 0) + 64)
    return W, H


def render_shot(
    spec: ShotSpec, size: tuple[int, int], character: Character, palette: Palette, world: np.ndarray | None = None
):
    """Yield the shot's RGB frames; returns (via StopIteration.value) a ShotTruth."""
    w, h = size
    rng = np.random.default_rng(spec.seed)
    if world is None:
        world = paint_world(np.random.default_rng(spec.location), *world_size(spec, w, h), palette)
    Wh, Ww = world.shape[:2]
    cx, cy, scale = _camera_path(spec, rng, w, h)
    truth = ShotTruth()

    d = spec.deformation
    sprite_h = max(24, int(spec.subject_height * h))
    direction = (1.0, 0.0) if rng.random() < 0.5 else (-1.0, 0.0)
    if rng.random() < 0.3:
        direction = (direction[0] * 0.8, rng.choice([-0.6, 0.6]))
    # Where the character stands in world coordinates, and how it travels between drawings.
    px = Ww / 2 + spec.view[0] * w - spec.subject_speed * spec.n_frames * direction[0] / 2
    py = Wh / 2 + spec.view[1] * h + 0.3 * h
    chibi_span = None
    if d >= 0.6:  # a chibi shift: a stretch of the shot in super-deformed proportions
        a = int(rng.uniform(0.2, 0.5) * spec.n_frames)
        chibi_span = (a, a + max(spec.cadence * 2, spec.n_frames // 3))
    smear_p = max(0.0, (d - 0.3)) * 0.9
    flash_at = {f["frame"] + k: f["kind"] for f in spec.flashes for k in range(f["length"])}

    sprite = None
    for i in range(spec.n_frames):
        if i % spec.cadence == 0:  # a new drawing
            k = i // spec.cadence
            truth.drawing_starts.append(i)
            chibi = chibi_span is not None and chibi_span[0] <= i < chibi_span[1]
            phase = 0.9 * k + rng.uniform(-0.2, 0.2)
            art = draw_character(character, sprite_h, phase, chibi=chibi)
            squash = 1.0 + 0.45 * d * math.sin(1.3 * k + spec.seed)  # area-preserving scale
            smear = 0.0
            if rng.random() < smear_p and not chibi:
                smear = 1.0 + 2.5 * d
                truth.smear_frames.extend(range(i, min(spec.n_frames, i + spec.cadence)))
            if chibi:
                truth.chibi_frames.extend(range(i, min(spec.n_frames, i + spec.cadence)))
            sprite = deform_sprite(
                art, sx=1.0 / squash, sy=squash, wobble=0.06 * d, wobble_phase=1.9 * k, smear=smear, direction=direction
            )
            px += spec.subject_speed * spec.cadence * direction[0]
            py += spec.subject_speed * spec.cadence * direction[1] * 0.3
        # The camera moves on ones: world -> screen affine for this frame.
        s = scale[i]
        wx, wy = Ww / 2 + cx[i] + spec.view[0] * w, Wh / 2 + cy[i] + spec.view[1] * h
        M = np.array([[s, 0, w / 2 - s * wx], [0, s, h / 2 - s * wy]], np.float32)
        frame = cv2.warpAffine(world, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        assert sprite is not None  # drawn at i = 0
        sh, sw = sprite.shape[:2]
        Ms = M.copy()
        Ms[:, 2] += M[:, :2] @ np.array([px - sw / 2, py - sh], np.float32)
        layer = cv2.warpAffine(sprite, Ms, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        alpha = layer[..., 3:4].astype(np.float32) / 255.0
        frame = (frame * (1 - alpha) + layer[..., :3] * alpha).astype(np.uint8)
        vfx_rng = np.random.default_rng((spec.seed, i // spec.cadence))  # effects held with the drawing
        if "speed_lines" in spec.vfx:
            speed_lines(frame, vfx_rng, direction)
        if "focus_lines" in spec.vfx:
            focus_lines(frame, vfx_rng)
        kind = flash_at.get(i)
        if kind == "white":  # overexposed flash: the drawing survives faintly under white
            frame = cv2.addWeighted(frame, 0.18, np.full_like(frame, 255), 0.82, 0)
        elif kind == "invert":  # impact frame: stark inverted two-tone art
            g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            frame = cv2.cvtColor(np.where(g < 110, 255, 0).astype(np.uint8), cv2.COLOR_GRAY2RGB)
            frame[..., 0] = np.maximum(frame[..., 0], 60)
        yield frame
    return truth
