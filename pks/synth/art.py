"""Cel-shaded drawing primitives: flat fills, one hard shadow tone, black outlines.

Everything is drawn with OpenCV on uint8 RGB(A) arrays. Backgrounds are painted once per
location on a world canvas larger than the frame (the camera moves over it); characters are
drawn per *drawing* onto an RGBA sprite, as an animator redraws a cel.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import cv2
import numpy as np

INK = (20, 16, 24)  # outline colour: near-black, as in most cel ink
AA = cv2.LINE_AA


def _rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1))
    return int(r * 255), int(g * 255), int(b * 255)


def shadow(c, f: float = 0.68) -> tuple[int, ...]:
    """The hard shadow tone of a flat colour (cel shading uses one darker step)."""
    return tuple(int(x * f) for x in c[:3]) + tuple(c[3:])


@dataclass
class Palette:
    sky: list
    ground: tuple
    hills: tuple
    buildings: list
    foliage: tuple

    @classmethod
    def random(cls, rng: np.random.Generator) -> Palette:
        hue = rng.random()
        dusk = rng.random() < 0.3
        sky_v = 0.55 if dusk else 0.95
        sky = [_rgb(hue + 0.55 + 0.04 * i, 0.35 + 0.12 * i, sky_v - 0.06 * i) for i in range(3)]
        return cls(
            sky=sky,
            ground=_rgb(hue + rng.uniform(0.05, 0.3), rng.uniform(0.2, 0.6), rng.uniform(0.35, 0.7)),
            hills=_rgb(hue + 0.3, rng.uniform(0.3, 0.6), rng.uniform(0.4, 0.7)),
            buildings=[_rgb(rng.random(), rng.uniform(0.1, 0.55), rng.uniform(0.5, 0.95)) for _ in range(5)],
            foliage=_rgb(0.25 + rng.uniform(-0.08, 0.1), rng.uniform(0.4, 0.8), rng.uniform(0.35, 0.7)),
        )


def paint_world(rng: np.random.Generator, width: int, height: int, pal: Palette) -> np.ndarray:
    """A painted background (H, W, 3) RGB: stepped sky, hills, buildings, trees, clouds, ground."""
    img = np.empty((height, width, 3), np.uint8)
    horizon = int(height * rng.uniform(0.55, 0.7))
    bands = np.linspace(0, horizon, len(pal.sky) + 1).astype(int)
    for i, c in enumerate(pal.sky):  # stepped, not smooth: painted cel skies are banded
        img[bands[i] : bands[i + 1]] = c
    img[horizon:] = pal.ground
    lw = max(2, height // 300)
    # Clouds: clusters of white ellipses with a hard shadow underside.
    for _ in range(int(rng.integers(4, 9))):
        cx, cy = int(rng.uniform(0, width)), int(rng.uniform(0.05, 0.45) * horizon)
        for _ in range(int(rng.integers(3, 6))):
            ax = int(rng.uniform(0.02, 0.05) * width)
            center = (cx + int(rng.uniform(-1.5, 1.5) * ax), cy + int(rng.uniform(-0.3, 0.3) * ax))
            cv2.ellipse(img, center, (ax, ax // 2), 0, 0, 360, (236, 238, 245), -1, AA)
            cv2.ellipse(img, (center[0], center[1] + ax // 6), (ax, ax // 3), 0, 0, 180, (200, 205, 222), -1, AA)
    # Far hills: a jagged outlined polygon along the horizon.
    xs = np.linspace(0, width, int(rng.integers(6, 14)))
    ys = horizon - rng.uniform(0.05, 0.2, len(xs)) * height
    hill = np.array([[0, horizon]] + [[int(x), int(y)] for x, y in zip(xs, ys)] + [[width, horizon]], np.int32)
    cv2.fillPoly(img, [hill], pal.hills, AA)
    cv2.polylines(img, [hill], False, INK, lw, AA)
    # Buildings: flat boxes with a shadow side, window grids and ink outlines.
    x = int(rng.uniform(-0.05, 0.05) * width)
    while x < width:
        bw = int(rng.uniform(0.04, 0.11) * width)
        bh = int(rng.uniform(0.12, 0.45) * height)
        col = pal.buildings[int(rng.integers(len(pal.buildings)))]
        top = horizon - bh
        cv2.rectangle(img, (x, top), (x + bw, horizon), col, -1)
        cv2.rectangle(img, (x + int(bw * 0.7), top), (x + bw, horizon), shadow(col), -1)
        win = max(3, bw // 8)
        for wy in range(top + win, horizon - win, win * 2):
            for wx in range(x + win, x + int(bw * 0.7) - win, win * 2):
                cv2.rectangle(img, (wx, wy), (wx + win, wy + win), shadow(col, 0.45), -1)
        cv2.rectangle(img, (x, top), (x + bw, horizon), INK, lw)
        x += bw + int(rng.uniform(0.0, 0.06) * width)
    # Trees and bushes in front of the buildings.
    for _ in range(int(rng.integers(5, 12))):
        tx = int(rng.uniform(0, width))
        r = int(rng.uniform(0.015, 0.04) * width)
        ty = horizon + int(rng.uniform(-0.2, 0.1) * r)
        cv2.rectangle(img, (tx - r // 6, ty), (tx + r // 6, ty + r), (90, 60, 40), -1)
        cv2.circle(img, (tx, ty - r // 2), r, pal.foliage, -1, AA)
        cv2.circle(img, (tx + r // 3, ty - r // 4), int(r * 0.7), shadow(pal.foliage), -1, AA)
        cv2.circle(img, (tx, ty - r // 2), r, INK, lw, AA)
    # Ground: road stripes and stones give the flat ground a little structure.
    for _ in range(int(rng.integers(3, 7))):
        y = int(rng.uniform(horizon + 0.05 * height, height))
        x0 = int(rng.uniform(0, width))
        cv2.line(img, (x0, y), (x0 + int(rng.uniform(0.05, 0.3) * width), y), shadow(pal.ground, 0.8), lw * 2)
    for _ in range(int(rng.integers(10, 30))):
        c = (int(rng.uniform(0, width)), int(rng.uniform(horizon + 5, height)))
        cv2.ellipse(
            img, c, (int(rng.uniform(4, 14)), int(rng.uniform(2, 6))), 0, 0, 360, shadow(pal.ground, 0.75), -1, AA
        )
    return img


@dataclass
class Character:
    hair: tuple
    skin: tuple
    shirt: tuple
    pants: tuple
    eyes: tuple

    @classmethod
    def random(cls, rng: np.random.Generator) -> Character:
        return cls(
            hair=_rgb(rng.random(), rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.95)),
            skin=_rgb(0.07, rng.uniform(0.15, 0.35), rng.uniform(0.8, 0.98)),
            shirt=_rgb(rng.random(), rng.uniform(0.4, 0.9), rng.uniform(0.5, 0.95)),
            pants=_rgb(rng.random(), rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.6)),
            eyes=_rgb(rng.random(), 0.7, 0.6),
        )


def _blob(img, center, axes, angle, colour, lw, shade=True):
    """Cel-shaded ellipse: shadow tone, lit tone offset up-left on top, ink outline."""
    c = tuple(int(v) for v in center)
    ax = tuple(max(1, int(v)) for v in axes)
    cv2.ellipse(img, c, ax, angle, 0, 360, shadow(colour), -1, AA)
    if shade:
        lit = (c[0] - ax[0] // 5, c[1] - ax[1] // 6)
        cv2.ellipse(img, lit, (int(ax[0] * 0.8), int(ax[1] * 0.82)), angle, 0, 360, colour, -1, AA)
    cv2.ellipse(img, c, ax, angle, 0, 360, INK + (255,), lw, AA)


def _limb(img, a, b, colour, width, lw):
    a = tuple(int(v) for v in a)
    b = tuple(int(v) for v in b)
    cv2.line(img, a, b, INK + (255,), width + 2 * lw, AA)
    cv2.line(img, a, b, colour, width, AA)


def draw_character(ch: Character, height: int, phase: float, chibi: bool = False) -> np.ndarray:
    """One drawing of the character as an RGBA sprite of `height` px; feet at the bottom centre.

    `phase` drives the limbs (articulated, rigid-part motion); `chibi` switches to
    super-deformed proportions (big head, stubby body).
    """
    h = height
    w = int(h * 0.9)
    img = np.zeros((h, w, 4), np.uint8)
    lw = max(1, h // 90)
    col = lambda c: tuple(c) + (255,)  # noqa: E731
    cx = w // 2
    if chibi:
        head_r, neck, hip, arm_len, leg_len, body_w = 0.24 * h, 0.5 * h, 0.78 * h, 0.16 * h, 0.2 * h, 0.16 * h
    else:
        head_r, neck, hip, arm_len, leg_len, body_w = 0.11 * h, 0.25 * h, 0.6 * h, 0.3 * h, 0.38 * h, 0.12 * h
    swing = math.sin(phase)
    # Legs and arms: rigid segments rotating about hips and shoulders.
    for side in (-1, 1):
        hip_pt = (cx + side * body_w * 0.5, hip)
        ang = math.radians(90 + side * 4 + 28 * swing * side)
        foot = (hip_pt[0] + leg_len * math.cos(ang), min(h - lw * 2, hip_pt[1] + leg_len * math.sin(ang)))
        _limb(img, hip_pt, foot, col(ch.pants), max(2, int(body_w * 0.55)), lw)
    for side in (-1, 1):
        sh = (cx + side * body_w * 0.9, neck + 0.04 * h)
        ang = math.radians(90 - side * 20 - 35 * swing * side)
        hand = (sh[0] + side * arm_len * 0.35 + arm_len * math.cos(ang) * 0.6, sh[1] + arm_len * math.sin(ang))
        _limb(img, sh, hand, col(ch.shirt), max(2, int(body_w * 0.4)), lw)
        cv2.circle(img, tuple(int(v) for v in hand), max(2, int(body_w * 0.25)), col(ch.skin), -1, AA)
    # Torso.
    _blob(img, (cx, (neck + hip) / 2), (body_w, (hip - neck) / 2 + lw), 0, col(ch.shirt), lw)
    # Head, hair spikes, eyes.
    hc = (cx, neck - head_r * 0.85)
    _blob(img, hc, (head_r, head_r * 1.05), 0, col(ch.skin), lw)
    spikes = []
    for i in range(7):
        a = math.pi * (1.05 + 0.9 * i / 6)
        r = head_r * (1.25 if i % 2 else 1.02)
        spikes.append((hc[0] + r * math.cos(a), hc[1] + r * math.sin(a) * 1.05))
    hair = np.array(
        [[int(hc[0] - head_r), int(hc[1])]]
        + [[int(x), int(y)] for x, y in spikes]
        + [[int(hc[0] + head_r), int(hc[1])]],
        np.int32,
    )
    cv2.fillPoly(img, [hair], col(ch.hair), AA)
    cv2.polylines(img, [hair], True, INK + (255,), lw, AA)
    for side in (-1, 1):
        e = (int(hc[0] + side * head_r * 0.4), int(hc[1] + head_r * 0.25))
        ea = (max(2, int(head_r * 0.16)), max(2, int(head_r * 0.26)))
        cv2.ellipse(img, e, ea, 0, 0, 360, (255, 255, 255, 255), -1, AA)
        cv2.ellipse(img, (e[0], e[1] + ea[1] // 4), (ea[0] * 2 // 3, ea[1] * 2 // 3), 0, 0, 360, col(ch.eyes), -1, AA)
        cv2.ellipse(img, e, ea, 0, 0, 360, INK + (255,), lw, AA)
    return img


def deform_sprite(
    sprite: np.ndarray,
    sx: float,
    sy: float,
    wobble: float,
    wobble_phase: float,
    smear: float = 0.0,
    direction: tuple[float, float] = (1.0, 0.0),
) -> np.ndarray:
    """Non-rigid deformation of a drawing, anchored at the feet, in one remap.

    sx, sy: squash-and-stretch scales; wobble: amplitude of a travelling sine displacement
    (fraction of sprite height); smear: extra stretch factor along `direction` (0 = none).
    The output canvas is padded so stretched drawings are not clipped.
    """
    h, w = sprite.shape[:2]
    pad = int(h * (0.6 + smear))
    H, W = h + pad, w + 2 * pad
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    ax, ay = W / 2.0, H - 1.0  # anchor: feet at the bottom centre of the padded canvas
    u = np.array(direction, np.float32)
    u /= max(1e-6, float(np.linalg.norm(u)))
    dx, dy = xs - ax, ys - ay
    if smear > 0:  # stretch along the motion direction about the body centre
        cy = -h / 2.0
        along = dx * u[0] + (dy - cy) * u[1]
        k = along * (1.0 / (1.0 + smear) - 1.0)
        dx, dy = dx + k * u[0], dy + k * u[1]
    src_x = dx / sx + (w / 2.0)
    src_y = dy / sy + (h - 1.0)
    if wobble > 0:
        amp = wobble * h
        src_x = src_x + amp * np.sin(2 * np.pi * src_y / (0.55 * h) + wobble_phase)
        src_y = src_y + 0.5 * amp * np.sin(2 * np.pi * src_x / (0.5 * h) + 1.7 * wobble_phase)
    return cv2.remap(sprite, src_x, src_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def speed_lines(frame: np.ndarray, rng: np.random.Generator, direction: tuple[float, float]) -> None:
    """Parallel streaks across the frame along `direction`, redrawn each call (in place)."""
    h, w = frame.shape[:2]
    u = np.array(direction, float)
    u /= max(1e-6, np.linalg.norm(u))
    n = np.array([-u[1], u[0]])
    overlay = frame.copy()
    for _ in range(int(rng.integers(18, 34))):
        off = rng.uniform(-0.6, 0.6) * max(w, h)
        start = np.array([w / 2, h / 2]) + n * off - u * rng.uniform(0.2, 1.0) * w
        end = start + u * rng.uniform(0.3, 0.9) * w
        cv2.line(
            overlay,
            tuple(int(v) for v in start),
            tuple(int(v) for v in end),
            (250, 250, 250),
            int(rng.integers(1, 4)),
            AA,
        )
    cv2.addWeighted(overlay, 0.75, frame, 0.25, 0, dst=frame)


def focus_lines(frame: np.ndarray, rng: np.random.Generator) -> None:
    """Radial wedges from the border toward a clear centre (manga 'shuchusen'), in place."""
    h, w = frame.shape[:2]
    c = np.array([w / 2 + rng.uniform(-0.05, 0.05) * w, h / 2 + rng.uniform(-0.05, 0.05) * h])
    R = math.hypot(w, h)
    for _ in range(int(rng.integers(40, 70))):
        a = rng.uniform(0, 2 * math.pi)
        da = rng.uniform(0.004, 0.015)
        r0 = rng.uniform(0.3, 0.45) * min(w, h)
        pts = np.array(
            [
                c + r0 * np.array([math.cos(a), math.sin(a)]),
                c + R * np.array([math.cos(a - da), math.sin(a - da)]),
                c + R * np.array([math.cos(a + da), math.sin(a + da)]),
            ],
            np.int32,
        )
        cv2.fillPoly(frame, [pts], INK, AA)
