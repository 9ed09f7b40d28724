"""The third footage family, "limited": limited TV animation. EVALUATION ONLY.

Benchmarks report on this family; nothing may be tuned on it (no threshold, weight or model
fitted or chosen by looking at its numbers). It was written without reading the analysers or
the other families' drawing code, so it shares as few habits with them as its author could
manage, and it leans on what limited TV animation really does:

- held drawings: bodies on 1s to 8s with long holds inside a shot, while only a mouth flaps (on
  2s or 3s) or the eyes blink; a held cel of a second character that never moves;
- the camera as a rostrum over a painting larger than the frame: pans and tilts from 0.5 px a
  frame at 1920 px wide (0.00026 frame widths) up to fast ones, sometimes stepped on twos;
  zooms about an off-centre point (the whole plate and its cels scale together), some with
  a pan beside them; jolting shakes; all resampled from the plate at sub-pixel positions;
- deformation on the drawings only: squash-and-stretch about the feet, lean, a rubbery bend,
  multiple-image smears and a super-deformed (chibi) stretch, all scaled by the shot's level;
- layers composited in screen space over everything: speed lines, focus lines, boiling
  hatching redrawn with each drawing, a screen tone, scan lines, film grain; impact frames
  1-4 frames long (white, negative, a red-black duotone, a silhouette);
- transitions: cuts, dissolves, fades through black or white, eyecatch cards.

The truth carries, besides the fields every family writes, what this family knows and the
others do not: `holds` (spans in which the body drawing is held), `drawing_starts`,
`mouth_frames`, `blink_frames` (video frame numbers), `camera_cadence` (the camera steps on
ones or twos), `camera_speed_frac` (pans in frame widths, tilts in frame heights per frame),
`camera_path` (the plate point under the frame centre and the scale, per shot frame),
`camera_tags` (the camera, and a pan beside a zoom where there is one, `pan_speed` px/frame),
`anchor` (the character fixed on the plate, "world", or held in frame while the plate slides,
"screen"), `layers` (screen-space art: scan_lines, screen_tone, hatching) with `vfx_detail`
(the drawn layers' parameters), `talking` and `mouth_cadence`, `second_character`, `plate`
(town, room, abstract) and `zoom_centre`. Flash kinds are white, invert, duotone, silhouette.
`failures` is always empty: damage is made by real processes (processes.py) on the encoded
file.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from pks.synth.shot import CAMERAS

EVALUATION_ONLY = True  # see the module docstring: report on it, never tune on it
SIZES = [(640, 360), (854, 480), (960, 540), (768, 432)]
RATES = ["24000/1001", "30000/1001", "25", "24"]
CAMERA_P = {
    "static": 0.3,
    "pan_left": 0.12,
    "pan_right": 0.12,
    "tilt_up": 0.07,
    "tilt_down": 0.07,
    "zoom_in": 0.1,
    "zoom_out": 0.1,
    "shake": 0.12,
}
CADENCE_P = {1: 0.12, 2: 0.34, 3: 0.26, 4: 0.1, 6: 0.1, 8: 0.08}
TRANSITION_P = {"cut": 0.62, "dissolve": 0.14, "fade": 0.14, "card": 0.1}
# Pan and tilt speeds, log-uniform in frame widths (heights) per frame: the slowest is 0.5 px a
# frame on a 1920 px frame (the "a real slow pan"), the fastest ~12 px at 640 px.
SLOWEST_PAN, FASTEST_PAN = 0.5 / 1920, 0.019
EDGE = 17  # frames at each end of a shot kept free of impact frames (longest transition + 1)
INK = (24, 18, 30)

assert set(CAMERA_P) == set(CAMERAS)


def pick(rng: np.random.Generator, table: dict):
    keys = list(table)
    p = np.array([table[k] for k in keys], float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    px = np.array([[[int(h * 179) % 180, int(s * 255), int(v * 255)]]], np.uint8)
    r, g, b = cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0]
    return int(r), int(g), int(b)


def _darker(c, f: float = 0.62) -> tuple[int, int, int]:
    return int(c[0] * f), int(c[1] * f), int(c[2] * f)


# ---------------------------------------------------------------- background plates


def _halftone(h: int, w: int, pitch: int, radius: float) -> np.ndarray:
    """A screen tone: a boolean grid of round dots, `pitch` px apart (a 45-degree grid)."""
    y, x = np.mgrid[0:h, 0:w]
    u, v = (x + y) % pitch - pitch / 2, (x - y) % pitch - pitch / 2
    return (u * u + v * v) < radius * radius


def _bands(top, bottom, n: int, h: int) -> np.ndarray:
    """A vertical gradient posterised into n flat bands (airbrushed skies on TV budgets)."""
    t = np.floor(np.linspace(0, 1, h, endpoint=False) * n) / max(1, n - 1)
    return (np.array(top)[None] * (1 - t[:, None]) + np.array(bottom)[None] * t[:, None]).astype(np.uint8)


def paint_plate(rng: np.random.Generator, width: int, height: int, kind: str, scale: float) -> np.ndarray:
    """A background painting `width` x `height`; `scale` is the frame height / 360 (detail size)."""
    hue = rng.random()
    img = np.empty((height, width, 3), np.uint8)
    s = max(0.5, scale)
    if kind == "abstract":  # an action background: flat bands of one hue at an angle
        img[:] = _bands(_hsv(hue, 0.7, 0.95), _hsv(hue + 0.08, 0.8, 0.35), 7, height)[:, None]
        return img
    night = rng.random() < 0.25
    if kind == "town":
        horizon = int(height * rng.uniform(0.42, 0.6))
        sky_top = _hsv(0.62, 0.6, 0.25) if night else _hsv(0.58 + 0.05 * rng.standard_normal(), 0.55, 0.95)
        sky_low = _hsv(0.7, 0.4, 0.45) if night else _hsv(0.1 * rng.random(), 0.25, 1.0)
        img[:] = _bands(sky_top, sky_low, int(rng.integers(5, 9)), height)[:, None]
        for _ in range(int(width / (220 * s)) + 1):  # flat clouds without outlines
            cx, cy = rng.uniform(0, width), rng.uniform(0.05, 0.35) * horizon
            for _ in range(int(rng.integers(3, 6))):
                ax, ay = rng.uniform(25, 70) * s, rng.uniform(10, 22) * s
                c = (int(cx + rng.uniform(-60, 60) * s), int(cy + rng.uniform(-8, 8) * s))
                cv2.ellipse(img, c, (int(ax), int(ay)), 0, 0, 360, (236, 238, 246), -1, cv2.LINE_AA)
        shadow = np.zeros((height, width), bool)
        x = 0.0
        while x < width:  # buildings on the skyline, each with a hard shadow side and windows
            bw = rng.uniform(40, 130) * s
            top = int(horizon - rng.uniform(0.2, 0.75) * horizon)
            x0, x1 = int(x), int(x + bw)
            base = _hsv(hue + rng.uniform(-0.12, 0.12), rng.uniform(0.15, 0.5), rng.uniform(0.45, 0.85))
            if night:
                base = _darker(base, 0.45)
            img[top:horizon, x0:x1] = base
            split = int(x0 + bw * rng.uniform(0.6, 0.8))
            img[top:horizon, split:x1] = _darker(base)
            shadow[top:horizon, split:x1] = True
            lit = (250, 226, 120) if night else _hsv(0.58, 0.35, 0.7)
            pitch_x, pitch_y = int(rng.uniform(12, 22) * s), int(rng.uniform(14, 24) * s)
            for wy in range(top + pitch_y // 2, horizon - pitch_y, pitch_y):
                for wx in range(x0 + pitch_x // 3, x1 - pitch_x // 2, pitch_x):
                    on = rng.random() < (0.5 if night else 0.8)
                    img[wy : wy + pitch_y // 2, wx : wx + pitch_x // 2] = lit if on else _darker(base, 0.4)
            cv2.rectangle(img, (x0, top), (x1, horizon), INK, max(1, int(2 * s)))
            x += bw + rng.uniform(0, 30) * s
        ground = _hsv(hue + 0.5, 0.12, 0.5 if night else 0.72)
        img[horizon:] = ground
        road = int(horizon + (height - horizon) * rng.uniform(0.35, 0.55))
        img[road:] = _darker(ground, 0.7)
        cv2.line(img, (0, road), (width, road), INK, max(1, int(2 * s)))
        for xs in np.arange(rng.uniform(0, 90) * s, width, 90 * s):  # road markings
            y = int(road + (height - road) * 0.5)
            cv2.rectangle(img, (int(xs), y), (int(xs + 40 * s), y + int(5 * s)), (235, 235, 225), -1)
        px = rng.uniform(0, 260) * s
        tops = []
        while px < width:  # telephone poles, and wires sagging between them
            ptop = int(horizon * rng.uniform(0.15, 0.3))
            cv2.rectangle(img, (int(px), ptop), (int(px + 7 * s), road), (60, 50, 45), -1)
            cv2.line(img, (int(px - 14 * s), ptop + int(12 * s)), (int(px + 21 * s), ptop + int(12 * s)), INK, 2)
            tops.append((px, ptop + 12 * s))
            px += rng.uniform(200, 320) * s
        for (ax, ay), (bx, by) in zip(tops, tops[1:]):
            for k in (-12, 0, 12):
                t = np.linspace(0, 1, 24)
                pts = np.stack([ax + k * s + (bx - ax) * t, ay + (by - ay) * t + 30 * s * 4 * t * (1 - t)], 1)
                cv2.polylines(img, [pts.astype(np.int32)], False, INK, 1, cv2.LINE_AA)
        tone = _halftone(height, width, max(4, int(6 * s)), 1.6 * s)
        img[shadow & tone] = (img[shadow & tone] * 0.55).astype(np.uint8)
        return img
    # "room": a wall with wallpaper stripes, windows, shelves of books, a floor of boards
    wall = _hsv(hue, rng.uniform(0.1, 0.35), rng.uniform(0.7, 0.92))
    img[:] = wall
    pitch = int(rng.uniform(24, 48) * s)
    for xs in range(0, width, pitch):
        img[:, xs : xs + max(2, pitch // 6)] = _darker(wall, 0.88)
    floor_y = int(height * rng.uniform(0.62, 0.75))
    x = rng.uniform(0, 200) * s
    while x < width:
        if rng.random() < 0.5:  # a window with a banded sky
            ww, wh = int(rng.uniform(90, 160) * s), int(rng.uniform(80, 140) * s)
            y0 = int(floor_y * 0.18)
            img[y0 : y0 + wh, int(x) : int(x) + ww] = _bands(_hsv(0.58, 0.5, 0.95), _hsv(0.1, 0.2, 1), 4, wh)[:, None]
            cv2.rectangle(img, (int(x), y0), (int(x) + ww, y0 + wh), (235, 230, 220), int(6 * s))
            cv2.line(img, (int(x) + ww // 2, y0), (int(x) + ww // 2, y0 + wh), (235, 230, 220), int(4 * s))
            cv2.rectangle(img, (int(x), y0), (int(x) + ww, y0 + wh), INK, 2)
        else:  # a shelf of books
            sw, y0 = int(rng.uniform(100, 180) * s), int(floor_y * rng.uniform(0.3, 0.55))
            bx = int(x)
            while bx < x + sw:
                bw, bh = int(rng.uniform(6, 14) * s), int(rng.uniform(22, 36) * s)
                book = _hsv(rng.random(), 0.6, rng.uniform(0.4, 0.85))
                cv2.rectangle(img, (bx, y0 - bh), (bx + bw, y0), book, -1)
                cv2.rectangle(img, (bx, y0 - bh), (bx + bw, y0), INK, 1)
                bx += bw + 1
            cv2.rectangle(img, (int(x) - 4, y0), (int(x) + sw + 4, y0 + int(8 * s)), (120, 80, 50), -1)
            cv2.rectangle(img, (int(x) - 4, y0), (int(x) + sw + 4, y0 + int(8 * s)), INK, 2)
        x += rng.uniform(160, 300) * s
    floor = _hsv(0.08, 0.45, rng.uniform(0.45, 0.7))
    img[floor_y:] = floor
    for ys in np.cumsum(np.linspace(6, 26, 12) * s) + floor_y:  # boards widening toward the camera
        cv2.line(img, (0, int(ys)), (width, int(ys)), _darker(floor, 0.75), max(1, int(2 * s)))
    cv2.line(img, (0, floor_y), (width, floor_y), INK, max(2, int(3 * s)))
    return img


# ---------------------------------------------------------------- characters


@dataclass
class Design:
    """A character's fixed look."""

    skin: tuple
    hair: tuple
    shirt: tuple
    legs: tuple
    iris: tuple
    spikes: int
    build: float


def random_design(rng: np.random.Generator) -> Design:
    return Design(
        skin=_hsv(0.07, rng.uniform(0.2, 0.35), rng.uniform(0.9, 1.0)),
        hair=_hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.25, 0.9)),
        shirt=_hsv(rng.random(), rng.uniform(0.4, 0.9), rng.uniform(0.5, 0.95)),
        legs=_hsv(rng.random(), rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.6)),
        iris=_hsv(rng.random(), 0.7, 0.7),
        spikes=int(rng.integers(4, 9)),
        build=float(rng.uniform(0.85, 1.15)),
    )


def _part(rgb, alpha, poly, colour, line: int, light=(-0.12, -0.1)) -> None:
    """A flat part with a hard shadow band (lit where the part shifted toward the light overlaps
    it) and an ink outline; in place on the RGBA canvas."""
    poly = poly.astype(np.int32)
    x0, y0 = poly.min(0)
    x1, y1 = poly.max(0)
    m = np.zeros(alpha.shape, np.uint8)
    cv2.fillPoly(m, [poly], 255)
    lit = np.zeros_like(m)
    shift = np.array([light[0] * (x1 - x0 + 1), light[1] * (y1 - y0 + 1)])
    cv2.fillPoly(lit, [(poly - shift).astype(np.int32)], 255)
    inside = m > 0
    rgb[inside] = _darker(colour, 0.7)
    rgb[inside & (lit > 0)] = colour
    alpha[inside] = 255
    cv2.polylines(rgb, [poly], True, INK, line, cv2.LINE_AA)
    cv2.polylines(alpha, [poly], True, 255, line, cv2.LINE_AA)


def _limb(p0, p1, w0: float, w1: float) -> np.ndarray:
    d = np.array(p1, float) - p0
    n = np.array([-d[1], d[0]]) / (np.hypot(*d) + 1e-9)
    return np.array([p0 + n * w0, p1 + n * w1, p1 - n * w1, p0 - n * w0])


def _ellipse(c, ax, ay, angle=0.0) -> np.ndarray:
    return np.array(
        cv2.ellipse2Poly((int(c[0]), int(c[1])), (max(1, int(ax)), max(1, int(ay))), int(angle), 0, 360, 12)
    )


def draw_figure(d: Design, height: int, pose: dict, mouth: int, blink: bool, chibi: bool) -> np.ndarray:
    """An RGBA drawing of the character `height` px tall, feet at the bottom centre.

    pose: arm and leg swings (radians), head tilt; mouth 0 closed, 1 half open, 2 open."""
    H, W = int(height * 1.1) + 8, int(height * 0.9) + 8
    rgb = np.zeros((H, W, 3), np.uint8)
    alpha = np.zeros((H, W), np.uint8)
    u = float(height)
    line = max(1, int(round(u / 110)))
    fx, fy = W / 2, H - 4 - line
    head_r = (0.2 if chibi else 0.115) * u
    body = 0.55 if chibi else 1.0
    hip = np.array([fx, fy - 0.46 * u * body])
    neck = np.array([fx + pose["lean"] * 0.1 * u, fy - 0.8 * u * body])
    bw = 0.11 * u * d.build * body
    a, g = pose["arm"], pose["leg"]
    for side in (-1, 1):  # legs, the far one first
        foot = np.array([fx + side * 0.07 * u + math.sin(side * g) * 0.18 * u * body, fy])
        _part(rgb, alpha, _limb(hip + [side * 0.05 * u, 0], foot, 0.045 * u * body, 0.035 * u * body), d.legs, line)
    _part(
        rgb, alpha, np.array([neck - [bw, 0], neck + [bw, 0], hip + [bw * 0.9, 0], hip - [bw * 0.9, 0]]), d.shirt, line
    )
    for side in (-1, 1):  # arms swing against each other
        sh = neck + [side * bw * 0.9, 0.02 * u]
        ang = side * 0.25 + math.sin(side * a) * 0.9
        hand = sh + np.array([math.sin(ang), math.cos(ang)]) * 0.33 * u * body
        _part(rgb, alpha, _limb(sh, hand, 0.035 * u, 0.028 * u), d.shirt, line)
        _part(rgb, alpha, _ellipse(hand, 0.03 * u, 0.03 * u), d.skin, line)
    hc = neck + np.array([pose["tilt"] * 0.3 * u, -head_r * 0.95])
    _part(rgb, alpha, _ellipse(hc, head_r * 0.9, head_r, pose["tilt"] * 40), d.skin, line)
    spikes = []  # hair: a cap of spikes over the top of the head
    for k in range(d.spikes + 1):
        t = math.pi * (1.05 + 0.9 * k / d.spikes)
        spikes.append(hc + np.array([math.cos(t), math.sin(t)]) * head_r * 1.05)
        if k < d.spikes:
            tm = math.pi * (1.05 + 0.9 * (k + 0.5) / d.spikes)
            spikes.append(hc + np.array([math.cos(tm), math.sin(tm)]) * head_r * 1.45)
    spikes += [hc + [head_r * 0.95, -head_r * 0.05], hc + [-head_r * 0.95, -head_r * 0.05]]
    _part(rgb, alpha, np.array(spikes), d.hair, line)
    ey = hc[1] + head_r * 0.12
    for side in (-1, 1):  # big eyes with an iris, a pupil and a highlight
        ec = (hc[0] + side * head_r * 0.4, ey)
        if blink:
            cv2.line(rgb, (int(ec[0] - head_r * 0.2), int(ey)), (int(ec[0] + head_r * 0.2), int(ey)), INK, line + 1)
            continue
        cv2.ellipse(rgb, (int(ec[0]), int(ey)), (int(head_r * 0.2), int(head_r * 0.28)), 0, 0, 360, (250, 250, 250), -1)
        cv2.ellipse(rgb, (int(ec[0]), int(ey)), (int(head_r * 0.13), int(head_r * 0.22)), 0, 0, 360, d.iris, -1)
        cv2.circle(rgb, (int(ec[0]), int(ey + head_r * 0.03)), max(1, int(head_r * 0.07)), INK, -1)
        cv2.circle(
            rgb, (int(ec[0] - head_r * 0.05), int(ey - head_r * 0.08)), max(1, int(head_r * 0.05)), (255,) * 3, -1
        )
        cv2.ellipse(rgb, (int(ec[0]), int(ey)), (int(head_r * 0.2), int(head_r * 0.28)), 0, 0, 360, INK, line)
    mc = (int(hc[0]), int(hc[1] + head_r * 0.6))
    if mouth == 0:
        cv2.line(rgb, (mc[0] - int(head_r * 0.15), mc[1]), (mc[0] + int(head_r * 0.15), mc[1]), INK, line)
    else:
        half = max(1, int(head_r * 0.08))  # open is always taller than half open, however small
        ay = half if mouth == 1 else max(half + 2, int(head_r * 0.2))
        ax = max(2, int(head_r * 0.16))
        cv2.ellipse(rgb, mc, (ax, ay), 0, 0, 360, (90, 20, 30), -1)
        cv2.ellipse(rgb, mc, (ax, ay), 0, 0, 360, INK, line)
    return np.dstack([rgb, alpha])


def deform(sprite: np.ndarray, squash: float, lean: float, bend: float, phase: float) -> np.ndarray:
    """Squash-and-stretch about the feet (area kept), a lean growing with height and a rubbery
    sideways bend; the canvas grows to hold the result."""
    h, w = sprite.shape[:2]
    sx, sy = 1.0 / squash, squash
    H, W = int(h * max(1.0, sy)) + 4, int(w * max(1.0, sx) + 2 * (abs(lean) + abs(bend)) * h * max(1.0, sy)) + 4
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    up = (H - 1 - y) / sy  # height above the feet in the source
    off = lean * up + bend * h * np.sin(np.pi * up / h + phase) * (up / h)
    src_x = (x - W / 2 - off) / sx + w / 2
    src_y = h - 1 - up
    return cv2.remap(sprite, src_x, src_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def smear(sprite: np.ndarray, direction: int, amount: float) -> np.ndarray:
    """A multiple-image smear: the drawing stretched along the motion with fading copies behind."""
    h, w = sprite.shape[:2]
    stretch = 1.0 + amount
    big = cv2.resize(sprite, (int(w * stretch), h), interpolation=cv2.INTER_LINEAR)
    W = big.shape[1] + int(w * amount)
    out = np.zeros((h, W, 4), np.uint8)
    step = int(w * amount / 3) + 1
    for k, fade in ((3, 0.3), (2, 0.5), (1, 0.75), (0, 1.0)):
        x0 = W - big.shape[1] - k * step if direction > 0 else k * step
        x0 = max(0, min(W - big.shape[1], x0))
        region = out[:, x0 : x0 + big.shape[1]]
        a = big[..., 3:4].astype(np.float32) / 255 * fade
        region[..., :3] = (region[..., :3] * (1 - a) + big[..., :3] * a).astype(np.uint8)
        region[..., 3] = np.maximum(region[..., 3], (big[..., 3] * fade).astype(np.uint8))
    return out


# ---------------------------------------------------------------- shots


@dataclass
class LimitedSpec:
    n_frames: int
    camera: str
    camera_speed: float  # px/frame (pans, tilts), total log-scale change (zooms), amplitude px (shake)
    camera_cadence: int  # the camera steps on ones or twos
    cadence: int  # frames each body drawing is held while it animates
    deformation: float  # 0..1
    subject_speed: float  # px/frame rigid travel of the character while it animates
    subject_height: float  # character height / frame height
    talking: bool = False
    mouth_cadence: int = 2
    anchor: str = "world"  # "world": on the plate; "screen": held in frame while the plate slides
    plate: str = "town"
    vfx: list[str] = field(default_factory=list)  # taxonomy ids: speed_lines, focus_lines
    layers: list[str] = field(default_factory=list)  # screen-space art: scan_lines, screen_tone, hatching
    flashes: list[dict] = field(default_factory=list)
    holds: list[list[int]] = field(default_factory=list)  # [start, end) of body holds, shot frames
    second: bool = False  # a second character, a held cel
    zoom_centre: tuple[float, float] = (0.5, 0.5)
    pan: float = 0.0  # zooms only: plate px/frame the view drifts sideways (+: pan_right)
    location: int = 0
    seed: int = 0


def camera_path(spec: LimitedSpec, w: int, h: int, rng: np.random.Generator):
    """Per-frame plate position of the frame centre (px, relative to the path's centre) and scale."""
    n, v = spec.n_frames, spec.camera_speed
    t = np.arange(n, dtype=np.float64)
    t = t - t % spec.camera_cadence  # on twos the camera holds every other frame
    x, y, s = np.zeros(n), np.zeros(n), np.ones(n)
    if spec.camera in ("pan_left", "pan_right"):
        x = (1 if spec.camera == "pan_right" else -1) * v * t
    elif spec.camera in ("tilt_up", "tilt_down"):
        y = (1 if spec.camera == "tilt_down" else -1) * v * t
    elif spec.camera in ("zoom_in", "zoom_out"):
        # Never magnify the plate: a zoom in runs from exp(-v) up to 1, a zoom out back down.
        f = t / max(1, n - 1)
        s = np.exp(-v * (1 - f)) if spec.camera == "zoom_in" else np.exp(-v * f)
        # Keep the plate point under the zoom centre fixed on screen.
        zx, zy = (spec.zoom_centre[0] - 0.5) * w, (spec.zoom_centre[1] - 0.5) * h
        x, y = zx - zx / s, zy - zy / s
        x = x + spec.pan * t  # a zoom may drift sideways too (a pan beside the zoom)
        # Centre everything the camera sees over the shot on the plate.
        x -= ((x - w / 2 / s).min() + (x + w / 2 / s).max()) / 2
        y -= ((y - h / 2 / s).min() + (y + h / 2 / s).max()) / 2
        return x, y, s
    elif spec.camera == "shake":  # jolts that decay and come again, on the camera's steps
        jolt = np.exp(-(t % max(8, n // 3)) / 5.0)
        x = v * jolt * rng.uniform(-1, 1, n)
        y = v * jolt * rng.uniform(-1, 1, n)
        if spec.camera_cadence == 2:
            x[1::2], y[1::2] = x[0:-1:2], y[0:-1:2]
    x -= (x.max() + x.min()) / 2
    y -= (y.max() + y.min()) / 2
    return x, y, s


def _screen_layers(spec: LimitedSpec, w: int, h: int, rng: np.random.Generator) -> dict:
    """The fixed screen-space layers and the parameters of the redrawn ones."""
    out: dict[str, Any] = {}
    if "scan_lines" in spec.layers:
        pitch = int(rng.integers(2, 5))
        thick = int(rng.integers(1, pitch))
        row = np.ones(h, np.float32)
        row[np.arange(h) % pitch < thick] = float(rng.uniform(0.6, 0.85))
        out["scan_lines"] = {"pitch": pitch, "thickness": thick, "gain": row}
    if "screen_tone" in spec.layers:  # a dot tone darkening one side of the frame, fixed on the glass
        left = bool(rng.random() < 0.5)
        ramp = np.clip(np.linspace(1.2, -0.3, w) if left else np.linspace(-0.3, 1.2, w), 0, 1)
        pitch = int(rng.integers(4, 9))
        dots = _halftone(h, w, pitch, 1.8)
        out["screen_tone"] = {
            "pitch": pitch,
            "left": left,
            "mul": (1 - 0.45 * (dots * ramp[None, :])).astype(np.float32),
        }
    if "hatching" in spec.layers:
        out["hatching"] = {"thickness": int(rng.integers(1, 4)), "spacing": int(rng.integers(7, 16))}
    if "speed_lines" in spec.vfx:
        out["speed_lines"] = {
            "horizontal": bool(rng.random() < 0.7),
            "per_frame": bool(rng.random() < 0.5),
            "light": bool(rng.random() < 0.6),
            "thickness": int(rng.integers(1, 5)),
        }
    if "focus_lines" in spec.vfx:
        out["focus_lines"] = {"per_frame": bool(rng.random() < 0.4), "count": int(rng.integers(30, 70))}
    return out


def _draw_lines(frame, layers: dict, drawing: int, i: int, seed: int) -> None:
    """The redrawn layers, drawn fresh from the seed and the drawing (held with it) or the frame."""
    h, w = frame.shape[:2]
    if "hatching" in layers:  # boiling diagonal hatching over the top of the frame, with the drawing
        p = layers["hatching"]
        r = np.random.default_rng((seed, 1, drawing))
        reach = int(h * 0.4)
        for x in range(-reach, w, p["spacing"]):
            x0 = x + int(r.integers(-2, 3))
            cv2.line(
                frame, (x0, int(r.integers(0, 4))), (x0 + reach, reach + int(r.integers(-6, 1))), INK, p["thickness"]
            )
    if "speed_lines" in layers:
        p = layers["speed_lines"]
        r = np.random.default_rng((seed, 2, i if p["per_frame"] else drawing))
        colour = (250, 250, 250) if p["light"] else (30, 30, 40)
        for _ in range(int(r.integers(25, 45))):
            a = int(r.integers(0, h if p["horizontal"] else w))
            s0 = int(r.uniform(-0.2, 0.8) * (w if p["horizontal"] else h))
            length = int(r.uniform(0.15, 0.6) * (w if p["horizontal"] else h))
            t = int(r.integers(1, p["thickness"] + 1))
            if p["horizontal"]:
                cv2.line(frame, (s0, a), (s0 + length, a), colour, t, cv2.LINE_AA)
            else:
                cv2.line(frame, (a, s0), (a, s0 + length), colour, t, cv2.LINE_AA)
    if "focus_lines" in layers:
        p = layers["focus_lines"]
        r = np.random.default_rng((seed, 3, i if p["per_frame"] else drawing))
        centre = np.array([w / 2, h / 2])
        rad = math.hypot(w, h) / 2
        for ang in r.uniform(0, 2 * math.pi, p["count"]):
            dvec = np.array([math.cos(ang), math.sin(ang)])
            inner = r.uniform(0.45, 0.75) * rad
            n = np.array([-dvec[1], dvec[0]]) * r.uniform(2, 7)
            tri = np.array([centre + dvec * inner, centre + dvec * rad * 1.1 + n, centre + dvec * rad * 1.1 - n])
            cv2.fillPoly(frame, [tri.astype(np.int32)], (20, 20, 28), cv2.LINE_AA)


def _flash(frame: np.ndarray, kind: str) -> np.ndarray:
    if kind == "white":  # overexposed: the picture barely survives under white
        return cv2.addWeighted(frame, 0.15, np.full_like(frame, 255), 0.85, 0)
    if kind == "invert":  # a negative of the whole frame
        return 255 - frame
    g = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if kind == "duotone":  # two flat colours, red and near-black, by a hard threshold
        out = np.empty_like(frame)
        out[:] = (20, 8, 10)
        out[g > np.median(g)] = (225, 40, 35)
        return out
    # "silhouette": black frame, white edges of the drawing
    edges = cv2.Canny(g, 60, 160)
    edges = cv2.dilate(edges, np.ones((2, 2), np.uint8))
    return np.repeat(edges[..., None], 3, axis=2)


def _composite(frame: np.ndarray, sprite: np.ndarray, M: np.ndarray) -> tuple[int, int, int, int] | None:
    """Alpha-composite the sprite warped by M onto the frame, inside its bounding box only;
    returns the box on screen of what was drawn (None when nothing was)."""
    h, w = frame.shape[:2]
    sh, sw = sprite.shape[:2]
    corners = np.array([[0, 0, 1], [sw, 0, 1], [0, sh, 1], [sw, sh, 1]], np.float32) @ M.T
    x0, y0 = np.floor(corners.min(0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return None
    Mb = M.copy()
    Mb[:, 2] -= (x0, y0)
    layer = cv2.warpAffine(sprite, Mb, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    a = layer[..., 3:4].astype(np.float32) / 255
    roi = frame[y0:y1, x0:x1]
    roi[:] = (roi * (1 - a) + layer[..., :3] * a).astype(np.uint8)
    ys, xs = np.nonzero(layer[..., 3])  # the drawing's own extent, not its canvas
    if not len(xs):
        return None
    return x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1


@dataclass
class LimitedTruth:
    drawing_starts: list[int] = field(default_factory=list)
    mouth_frames: list[int] = field(default_factory=list)
    blink_frames: list[int] = field(default_factory=list)
    smear_frames: list[int] = field(default_factory=list)
    chibi_frames: list[int] = field(default_factory=list)
    camera: tuple = ()
    boxes: list = field(default_factory=list)  # the character's screen box per frame (or None)
    layer_params: dict = field(default_factory=dict)  # the drawn layers' parameters (vfx_detail)


def plate_size(spec: LimitedSpec, w: int, h: int) -> tuple[int, int]:
    travel = spec.camera_speed * spec.n_frames if spec.camera.startswith(("pan", "tilt")) else 0.0
    grow = math.exp(spec.camera_speed) if spec.camera.startswith("zoom") else 1.0
    shake = 2 * spec.camera_speed if spec.camera == "shake" else 0.0
    travel_x = travel if spec.camera.startswith("pan") else abs(spec.pan) * spec.n_frames
    W = int(w * grow + travel_x + shake + 48)
    H = int(h * grow + (travel if spec.camera.startswith("tilt") else 0) + shake + 48)
    return W, H


def render_shot(
    spec: LimitedSpec, size: tuple[int, int], design: Design, grain: float = 0.0, other: Design | None = None
) -> Generator[np.ndarray, None, LimitedTruth]:
    """Yield the shot's RGB frames; returns (StopIteration.value) a LimitedTruth."""
    w, h = size
    rng = np.random.default_rng(spec.seed)
    scale = h / 360.0
    plate = paint_plate(np.random.default_rng(spec.location), *plate_size(spec, w, h), spec.plate, scale)
    PH, PW = plate.shape[:2]
    cx, cy, cs = camera_path(spec, w, h, rng)
    layers = _screen_layers(spec, w, h, rng)
    params = {k: {a: b for a, b in v.items() if not isinstance(b, np.ndarray)} for k, v in layers.items()}
    truth = LimitedTruth(camera=(cx, cy, cs), layer_params=params)
    d, n = spec.deformation, spec.n_frames
    held = np.zeros(n, bool)
    for a, b in spec.holds:
        held[a:b] = True
    direction = 1 if rng.random() < 0.5 else -1
    sprite_h = max(24, int(spec.subject_height * h))
    # Feet on screen at the first frame; a tall subject's feet fall below the frame (a close shot).
    feet = np.array([w * rng.uniform(0.3, 0.7), h * (0.5 + 0.55 * spec.subject_height)])
    feet[0] -= direction * spec.subject_speed * n / 3
    M0 = lambda i: np.array(  # noqa: E731  plate -> screen for frame i
        [[cs[i], 0, w / 2 - cs[i] * (PW / 2 + cx[i])], [0, cs[i], h / 2 - cs[i] * (PH / 2 + cy[i])]], np.float32
    )
    other_feet = np.array([feet[0] + (0.3 if feet[0] < w / 2 else -0.3) * w, feet[1]])  # beside, not behind
    if spec.anchor == "world":  # the plate positions at frame 0
        feet = (feet - M0(0)[:, 2]) / cs[0]
        other_feet = (other_feet - M0(0)[:, 2]) / cs[0]
    chibi_span = None
    if d >= 0.7 and n >= 24:
        a = int(rng.uniform(0.2, 0.5) * n)
        chibi_span = (a, a + max(2 * spec.cadence, n // 4))
    smear_p = max(0.0, d - 0.35) * 1.1
    flash_at = {f["frame"] + k: f["kind"] for f in spec.flashes for k in range(f["length"])}
    second = None
    if other is not None:  # a held cel standing on the plate, opposite the first character
        second = draw_figure(
            other, int(sprite_h * 0.95), {"arm": 0.2, "leg": 0.1, "lean": 0.0, "tilt": 0.0}, 0, False, False
        )
    grain_rng = np.random.default_rng((spec.seed, 8))  # its own stream: grain never changes the drawings
    grain_bank = (
        np.random.default_rng((spec.seed, 7)).normal(0, grain, (4, h + 32, w + 32)).astype(np.float32)
        if grain
        else None
    )

    k = -1
    mouth, blink_until, chibi, smeared = 0, -1, False, False
    sprite: np.ndarray | None = None
    pose: dict[str, float] = {}
    warp = (1.0, 0.0, 0.0, 0.0)  # the body drawing's squash, lean, bend and bend phase
    for i in range(n):
        new_body = (i == 0) or (not held[i] and i % spec.cadence == 0)
        changed = False
        if new_body:
            k += 1
            ph = 1.1 * k + rng.uniform(-0.15, 0.15)
            calm = 0.25 if spec.talking else 1.0
            pose = {
                "arm": calm * math.sin(ph) + rng.uniform(-0.1, 0.1),
                "leg": calm * math.sin(ph + 1.6),
                "lean": calm * 0.4 * math.sin(0.5 * ph),
                "tilt": 0.15 * math.sin(0.7 * ph),
            }
            if i > 0:
                feet[0] += direction * spec.subject_speed * spec.cadence
            truth.drawing_starts.append(i)
            changed = True
        if spec.talking and i % spec.mouth_cadence == 0 and i > 0:
            m = int(rng.integers(0, 3))
            if m != mouth:
                mouth = m
                if not new_body:
                    truth.mouth_frames.append(i)
                changed = True
        if i > 2 and blink_until < i and rng.random() < 0.025:
            blink_until = i + 2
            if not new_body:
                truth.blink_frames.append(i)
            changed = True
        if blink_until == i - 1 and not new_body:  # the eyes open again
            truth.blink_frames.append(i)
            changed = True
        if new_body:  # super-deformed proportions start and end with a drawing
            chibi = chibi_span is not None and chibi_span[0] <= i < chibi_span[1] and not spec.talking
        if changed:
            art = draw_figure(design, sprite_h, pose, mouth, blink_until >= i, chibi)
            if new_body:
                q = 1.0 + 0.5 * d * math.sin(1.3 * k + spec.seed % 7)
                warp = (q, 0.45 * d * math.sin(0.8 * k + 1), 0.12 * d * math.sin(0.9 * k + 2), 0.7 * k)
                smeared = (not chibi) and (not spec.talking) and bool(rng.random() < smear_p)
            sprite = deform(art, *warp)
            if smeared:
                sprite = smear(sprite, direction, 0.6 + 1.6 * d)
        if smeared:
            truth.smear_frames.append(i)
        if chibi:
            truth.chibi_frames.append(i)
        M = M0(i)
        frame = cv2.warpAffine(plate, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        assert sprite is not None
        sh, sw = sprite.shape[:2]
        if spec.anchor == "world":
            Ms = M.copy()
            Ms[:, 2] += M[:, :2] @ np.array([feet[0] - sw / 2, feet[1] - sh + 4], np.float32)
        else:  # held in frame: only the camera's shake moves it
            Ms = np.array([[1, 0, feet[0] - sw / 2], [0, 1, feet[1] - sh + 4]], np.float32)
        if second is not None:
            s2h, s2w = second.shape[:2]
            M2 = M.copy() if spec.anchor == "world" else np.eye(2, 3, dtype=np.float32)
            M2[:, 2] += M2[:, :2] @ np.array([other_feet[0] - s2w / 2, other_feet[1] - s2h + 4], np.float32)
            _composite(frame, second, M2)
        truth.boxes.append(_composite(frame, sprite, Ms))
        if any(x in layers for x in ("hatching", "speed_lines", "focus_lines")):
            _draw_lines(frame, layers, truth.drawing_starts[-1], i, spec.seed)
        if i in flash_at:
            frame = _flash(frame, flash_at[i])
        if "screen_tone" in layers:
            frame = (frame * layers["screen_tone"]["mul"][..., None]).astype(np.uint8)
        if grain_bank is not None:
            g = grain_bank[i % 4]
            oy, ox = (int(x) for x in grain_rng.integers(0, 32, 2))
            frame = np.clip(frame + g[oy : oy + h, ox : ox + w, None], 0, 255).astype(np.uint8)
        if "scan_lines" in layers:
            frame = (frame * layers["scan_lines"]["gain"][:, None, None]).astype(np.uint8)
        yield frame
    return truth


# ---------------------------------------------------------------- planning


def choose_format(rng: np.random.Generator) -> dict:
    """Per-video size, frame rate, x264 quality, shot count and film grain."""
    return {
        "size": SIZES[int(rng.integers(len(SIZES)))],
        "fps": RATES[int(rng.integers(len(RATES)))],
        "crf": int(rng.integers(16, 31)),
        "n_shots": int(rng.integers(6, 11)),
        "grain": float(rng.choice([0.0, rng.uniform(1.0, 6.0)])),
    }


def _holds(rng, n: int, cadence: int, talking: bool) -> list[list[int]]:
    """Spans in which the body drawing is held: most of a talking shot, a few long ones otherwise."""
    if talking:
        a = int(rng.integers(cadence * 3, max(cadence * 3 + 1, n // 3)))
        return [[a, n]] if n - a >= 12 else []
    holds: list[list[int]] = []
    for _ in range(int(rng.integers(0, 3))):
        length = int(rng.integers(12, 31))
        a = int(rng.integers(cadence * 2, max(cadence * 2 + 1, n - length)))
        a -= a % cadence
        if a + length <= n and all(a >= e + cadence or a + length + cadence <= s for s, e in holds):
            holds.append([a, a + length])
    return sorted(holds)


def plan_shot(rng: np.random.Generator, n: int, w: int, h: int, flash_p: float, location: int) -> LimitedSpec:
    camera = pick(rng, CAMERA_P)
    speed = 0.0
    if camera.startswith("pan"):
        speed = float(math.exp(rng.uniform(math.log(SLOWEST_PAN), math.log(FASTEST_PAN))) * w)
    elif camera.startswith("tilt"):
        speed = float(math.exp(rng.uniform(math.log(SLOWEST_PAN), math.log(FASTEST_PAN))) * h)
    elif camera.startswith("zoom"):
        speed = float(rng.uniform(0.08, 0.5))
    elif camera == "shake":
        speed = float(rng.uniform(2.0, 10.0) * h / 360)
    talking = bool(rng.random() < 0.35)
    cadence = int(pick(rng, CADENCE_P))
    action = not talking and rng.random() < 0.5
    deformation = float(rng.uniform(0, 0.25) if talking else rng.uniform(0.05, 1.0) if action else rng.uniform(0, 0.6))
    vfx = []
    if action and rng.random() < 0.5:
        vfx.append("speed_lines")
    if action and rng.random() < 0.2:
        vfx.append("focus_lines")
    layers = [x for x, p in (("scan_lines", 0.15), ("screen_tone", 0.2), ("hatching", 0.15)) if rng.random() < p]
    flashes = []
    if (action or camera == "shake") and rng.random() < flash_p * 2 and n - 2 * EDGE >= 5:
        length = int(rng.integers(1, 5))
        at = int(rng.integers(EDGE, n - EDGE - length))
        flashes.append(
            {"frame": at, "length": length, "kind": str(rng.choice(["white", "invert", "duotone", "silhouette"]))}
        )
    # A location is a town or a room (the painting differs with the plate's size); an action
    # shot on a static camera may trade it for an abstract background.
    plate = "abstract" if camera == "static" and action and rng.random() < 0.4 else ("town", "room")[location % 2]
    anchor = "screen" if camera.startswith("pan") and rng.random() < 0.4 else "world"
    pan = 0.0
    if camera.startswith("zoom") and rng.random() < 0.3:  # a zoom with a pan beside it
        pan = float(rng.choice([-1, 1]) * math.exp(rng.uniform(math.log(SLOWEST_PAN), math.log(FASTEST_PAN / 2))) * w)
    return LimitedSpec(
        n_frames=n,
        camera=camera,
        camera_speed=round(speed, 4),
        camera_cadence=2
        if camera in ("pan_left", "pan_right", "tilt_up", "tilt_down", "shake") and rng.random() < 0.3
        else 1,
        cadence=cadence,
        deformation=round(deformation, 2),
        subject_speed=round(float(rng.uniform(0.5, 4.0) * w / 640) if action else 0.0, 3),
        subject_height=round(float(rng.uniform(0.35, 1.2)), 3),
        talking=talking,
        mouth_cadence=int(rng.choice([2, 3])),
        anchor=anchor,
        plate=plate,
        vfx=vfx,
        layers=layers,
        flashes=flashes,
        holds=_holds(rng, n, cadence, talking),
        second=bool(talking and rng.random() < 0.5),
        zoom_centre=(round(float(rng.uniform(0.3, 0.7)), 3), round(float(rng.uniform(0.3, 0.7)), 3)),
        pan=round(pan, 4),
        location=location,
        seed=int(rng.integers(2**31)),
    )


def _transition(rng: np.random.Generator, prev_n: int, next_n: int) -> dict:
    kind = pick(rng, TRANSITION_P)
    if kind == "dissolve" and min(prev_n, next_n) >= 16:  # both shots keep 8 frames of their own
        return {"type": "dissolve", "length": int(rng.integers(6, min(16, prev_n - 8, next_n - 8) + 1))}
    if kind == "fade" and min(prev_n, next_n) >= 16:
        return {
            "type": "fade",
            "colour": "white" if rng.random() < 0.3 else "black",
            "out": int(rng.integers(4, 13)),
            "in": int(rng.integers(4, 13)),
            "hold": int(rng.integers(0, 7)),
        }
    if kind == "card" and min(prev_n, next_n) >= 16:
        return {
            "type": "card",
            "length": int(rng.integers(10, 25)),
            "text": str(rng.choice(["To Be Continued", "EYECATCH", "Next Episode"])) if rng.random() < 0.5 else None,
            "out": int(rng.integers(0, 7)),
            "in": int(rng.integers(0, 7)),
        }
    return {"type": "cut"}


def render_video(rng: np.random.Generator, fmt: dict, n_shots: int, shot_frames, damage_p, flash_p):
    """(transitions, shots): shots yields (frames, truth) per shot, frame numbers shot-relative.

    damage_p is accepted for the common interface and unused: this family draws no damage."""
    del damage_p
    w, h = fmt["size"]
    grain = float(fmt.get("grain", 0.0))
    cast = [random_design(rng) for _ in range(3)]
    locations = [int(x) for x in rng.integers(2**31, size=max(2, n_shots // 2))]
    lengths = [int(rng.integers(shot_frames[0], shot_frames[1] + 1)) for _ in range(n_shots)]
    specs = [plan_shot(rng, n, w, h, flash_p, locations[int(rng.integers(len(locations)))]) for n in lengths]
    who = [int(rng.integers(len(cast))) for _ in specs]
    transitions: list[dict] = [{"type": "start"}]
    for i in range(1, n_shots):
        transitions.append(_transition(rng, lengths[i - 1], lengths[i]))

    def shots() -> Iterator[tuple[list, dict]]:
        for spec, c in zip(specs, who):
            gen = render_shot(spec, (w, h), cast[c], grain, cast[(c + 1) % len(cast)] if spec.second else None)
            frames = []
            while True:
                try:
                    frames.append(next(gen))
                except StopIteration as stop:
                    tr: LimitedTruth = stop.value
                    break
            yield frames, shot_info(spec, tr, w, h)

    return transitions, shots()


def shot_info(spec: LimitedSpec, tr: LimitedTruth, w: int, h: int) -> dict[str, Any]:
    """The shot's truth in the common schema plus this family's own fields (frames shot-relative)."""
    frac = spec.camera_speed / (w if spec.camera.startswith("pan") else h) if spec.camera[:3] in ("pan", "til") else 0.0
    cx, cy, cs = tr.camera
    info: dict[str, Any] = {
        "camera": spec.camera,
        "camera_tags": [spec.camera] + (["pan_right" if spec.pan > 0 else "pan_left"] if spec.pan else []),
        "camera_speed": spec.camera_speed,
        "pan_speed": abs(spec.pan) if spec.pan else None,
        "camera_speed_frac": round(frac, 6),
        "camera_cadence": spec.camera_cadence,
        "cadence": spec.cadence,
        "deformation": spec.deformation,
        "subject_speed": spec.subject_speed,
        "subject_height": spec.subject_height,
        "vfx": list(spec.vfx),
        "layers": list(spec.layers),
        "vfx_detail": tr.layer_params,
        "location": spec.location,
        "flashes": [dict(f) for f in spec.flashes],
        "failures": [],
        "smear_frames": tr.smear_frames,
        "chibi_frames": tr.chibi_frames,
        "holds": [list(x) for x in spec.holds],
        "drawing_starts": tr.drawing_starts,
        "mouth_frames": tr.mouth_frames,
        "blink_frames": tr.blink_frames,
        "talking": spec.talking,
        "mouth_cadence": spec.mouth_cadence if spec.talking else None,
        "anchor": spec.anchor,
        "plate": spec.plate,
        "second_character": spec.second,
        "zoom_centre": list(spec.zoom_centre) if spec.camera.startswith("zoom") else None,
        "camera_path": {
            "x": [round(float(v), 3) for v in cx],
            "y": [round(float(v), 3) for v in cy],
            "scale": [round(float(v), 5) for v in cs],
        },
        "style": ["limited_animation", "cel_tv"],
        "spec": {k: v for k, v in asdict(spec).items() if k in ("n_frames", "seed")},
    }
    return info
