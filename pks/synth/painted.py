"""The second footage family, "painted": made to share as few habits with "cel" as a second
studio would, so a detector tuned on one family is tested on footage it has not seen.

Where cel has flat fills, near-black ink, banded skies, ellipse characters and linear camera
moves, painted has gradient and textured fills, painted backgrounds (noise-textured sky,
layered soft hills, brush strokes), coloured outlines on characters built from polygons,
eased camera moves and sinusoidal shake, speed lines thin (1 px) and thick, light and dark,
redrawn every frame or held with the drawing, thin radial focus lines and particles redrawn
every frame, film grain, 4:3 and letterboxed masters, multiple-image smears, title cards and
cuts to black, and damage of other shapes (bands of garbage at the bottom or top, shuffled
macroblocks over part of the frame, the other field order).
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np

from pks.synth.cel import pick
from pks.synth.shot import CAMERAS

SIZES = [(640, 360), (768, 432), (720, 540), (640, 480)]
RATES = ["24", "24000/1001", "25", "30000/1001"]
CAMERA_P = {
    "static": 0.18,
    "pan_left": 0.12,
    "pan_right": 0.12,
    "tilt_up": 0.1,
    "tilt_down": 0.1,
    "zoom_in": 0.12,
    "zoom_out": 0.12,
    "shake": 0.14,
}
TRANSITION_P = {"cut": 0.45, "fade": 0.12, "dissolve": 0.15, "card": 0.18, "black": 0.1}
TITLES = ["EPISODE 7", "The Next Morning", "CHAPTER II", "- END -", "Part B", "Three Years Later"]
MB = 16
assert set(CAMERA_P) == set(CAMERAS)


def _rgb(h, s, v) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1))) * 255


def smoothstep(x):
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


# ---- backgrounds ------------------------------------------------------------------------
def paint_backdrop(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A painted world: gradient sky with soft clouds, layered hills with gradient fills, brush
    texture over everything (so flow finds texture where cel has flat fills)."""
    hue = rng.random()
    yy = np.linspace(0, 1, height)[:, None, None]
    img: np.ndarray = _rgb(hue + 0.55, 0.5, 0.95) * (1 - yy) + _rgb(hue + 0.1, 0.3, 0.85) * yy
    img = np.broadcast_to(img, (height, width, 3)).astype(np.float32).copy()
    clouds = cv2.resize(
        rng.random((height // 48 + 2, width // 48 + 2)).astype(np.float32),
        (width, height),
        interpolation=cv2.INTER_CUBIC,
    )
    img += (np.clip(clouds - 0.55, 0, 1) * 160)[..., None]
    for layer in range(int(rng.integers(2, 4))):  # hills, far to near: darker and more saturated
        x = np.arange(width)
        base = height * (0.45 + 0.12 * layer)
        ridge = base + sum(
            rng.uniform(0.02, 0.06) * height * np.sin(2 * np.pi * x / rng.uniform(150, 700) + rng.uniform(0, 6))
            for _ in range(3)
        )
        below = np.arange(height)[:, None] > ridge[None, :]
        col = _rgb(hue + 0.25 + 0.08 * layer, 0.35 + 0.15 * layer, 0.75 - 0.15 * layer)
        shade = np.clip((np.arange(height)[:, None] - ridge[None, :]) / (0.4 * height), 0, 1)[..., None]
        fill = col * (1 - 0.35 * shade)
        mask = cv2.GaussianBlur(below.astype(np.float32), (0, 0), 1.2)[..., None]
        img = img * (1 - mask) + fill * mask
    for _ in range(int(rng.integers(6, 14))):  # props: posts and trees with soft, painted edges
        px, py = int(rng.uniform(0, width)), int(rng.uniform(0.55, 0.95) * height)
        r = int(rng.uniform(0.01, 0.035) * width)
        prop = tuple(float(c) for c in _rgb(hue + rng.uniform(0.2, 0.45), 0.5, rng.uniform(0.3, 0.6)))
        cv2.rectangle(img, (px - r // 4, py - 3 * r), (px + r // 4, py), prop, -1)
        cv2.circle(img, (px, py - 3 * r), r, tuple(c * 1.2 for c in prop), -1, cv2.LINE_AA)
    strokes = cv2.resize(
        rng.normal(0, 1, (height // 3 + 1, width // 5 + 1)).astype(np.float32),
        (width, height),
        interpolation=cv2.INTER_LINEAR,
    )  # brush texture: streaks along x
    img += (strokes * 9)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


# ---- characters -------------------------------------------------------------------------
class Mascot:
    """A character built from polygons: a rounded body, a head with ears, tapered limbs, fills
    shaded top to bottom, a coloured outline (no black ink)."""

    def __init__(self, rng: np.random.Generator):
        hue = rng.random()
        self.body = _rgb(hue, rng.uniform(0.4, 0.8), rng.uniform(0.6, 0.95))
        self.belly = _rgb(hue + 0.08, 0.15, 0.97)
        self.limbs = _rgb(hue + rng.uniform(0.3, 0.6), rng.uniform(0.4, 0.8), rng.uniform(0.4, 0.8))
        self.line = _rgb(hue + 0.5, 0.7, 0.3)
        self.ears = int(rng.integers(0, 3))  # none, round, pointed

    def draw(self, height: int, phase: float, chibi: bool = False) -> np.ndarray:
        h = height
        w = int(h * 0.8)
        img = np.zeros((h, w, 4), np.float32)
        lw = max(2, h // 40)
        cx = w / 2
        head_r = (0.3 if chibi else 0.16) * h
        body_top, body_bot = (0.52 if chibi else 0.32) * h, (0.85 if chibi else 0.75) * h
        body_w = (0.22 if chibi else 0.26) * h

        def poly(pts, colour, shade=True):
            pts = np.round(np.asarray(pts)).astype(np.int32)
            mask = np.zeros((h, w), np.uint8)
            cv2.fillPoly(mask, [pts], 255, cv2.LINE_AA)
            m = mask.astype(np.float32)[..., None] / 255
            grad = 1.0 - (0.3 * (np.arange(h) / h))[:, None, None] if shade else 1.0
            rgb = np.broadcast_to(colour * grad, (h, w, 3))
            img[..., :3] = img[..., :3] * (1 - m) + rgb * m
            img[..., 3:] = np.maximum(img[..., 3:], m * 255)
            cv2.polylines(img, [pts], True, tuple(float(c) for c in self.line) + (255.0,), lw, cv2.LINE_AA)

        def ellipse_pts(c, ax, ay, n=24):
            t = np.linspace(0, 2 * np.pi, n, endpoint=False)
            return np.stack([c[0] + ax * np.cos(t), c[1] + ay * np.sin(t)], 1)

        def limb(a, angle, length, width):
            d = np.array([math.cos(angle), math.sin(angle)])
            nrm = np.array([-d[1], d[0]])
            a = np.array(a)
            b = a + d * length
            poly([a + nrm * width, b + nrm * width * 0.5, b - nrm * width * 0.5, a - nrm * width], self.limbs)

        swing = math.sin(phase)
        for side in (-1, 1):
            limb(
                (cx + side * body_w * 0.45, body_bot - 0.03 * h),
                math.radians(90 + 25 * swing * side),
                min(h - body_bot - lw, 0.22 * h),
                0.05 * h,
            )
            limb(
                (cx + side * body_w * 0.8, body_top + 0.08 * h),
                math.radians(90 - side * 50 + 40 * swing * side),
                0.2 * h,
                0.04 * h,
            )
        poly(ellipse_pts((cx, (body_top + body_bot) / 2), body_w, (body_bot - body_top) / 2), self.body)
        poly(
            ellipse_pts((cx, (body_top + body_bot) / 2 + 0.03 * h), body_w * 0.55, (body_bot - body_top) * 0.33),
            self.belly,
            shade=False,
        )
        hc = (cx, body_top - head_r * 0.7)
        if self.ears:
            for side in (-1, 1):
                base = np.array([hc[0] + side * head_r * 0.6, hc[1] - head_r * 0.6])
                tip = base + np.array([side * head_r * 0.3, -head_r * (0.9 if self.ears == 2 else 0.5)])
                poly(
                    [base - [head_r * 0.25, 0], tip, base + [head_r * 0.25, 0]]
                    if self.ears == 2
                    else ellipse_pts(tip, head_r * 0.3, head_r * 0.3, 12),
                    self.body,
                )
        poly(ellipse_pts(hc, head_r, head_r * 0.9, 32), self.body)
        for side in (-1, 1):
            e = (int(hc[0] + side * head_r * 0.38), int(hc[1] - head_r * 0.05))
            cv2.circle(
                img, e, max(2, int(head_r * 0.13)), tuple(float(c) for c in self.line) + (255.0,), -1, cv2.LINE_AA
            )
            cv2.circle(img, (e[0] - 1, e[1] - 1), max(1, int(head_r * 0.04)), (255.0, 255.0, 255.0, 255.0), -1)
        return np.clip(img, 0, 255).astype(np.uint8)


def bend(sprite: np.ndarray, squash: float, shear: float, wobble: float, phase: float) -> np.ndarray:
    """Squash-and-stretch (area-preserving, about the feet), a lean (shear growing toward the
    top) and a wobble, in one remap; the canvas grows so nothing is clipped."""
    h, w = sprite.shape[:2]
    pad = int(h * 0.6)
    H, W = h + pad, w + 2 * pad
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    up = (H - 1.0) - ys  # height above the feet
    x = (xs - W / 2.0 + shear * up) * squash
    y = h - 1.0 - up * squash  # squash > 1 makes the drawing shorter and wider
    if wobble:
        x = x + wobble * h * np.sin(2 * np.pi * y / (0.7 * h) + phase)
    return cv2.remap(sprite, x + w / 2.0, y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def over(frame: np.ndarray, sprite: np.ndarray, x: float, y: float, alpha: float = 1.0) -> None:
    """Alpha-composite an RGBA sprite with its bottom centre at (x, y), in place."""
    h, w = sprite.shape[:2]
    x0, y0 = int(round(x - w / 2)), int(round(y - h))
    H, W = frame.shape[:2]
    a, b = max(0, x0), max(0, y0)
    c, d = min(W, x0 + w), min(H, y0 + h)
    if a >= c or b >= d:
        return
    s = sprite[b - y0 : d - y0, a - x0 : c - x0].astype(np.float32)
    m = s[..., 3:] / 255.0 * alpha
    frame[b:d, a:c] = (frame[b:d, a:c] * (1 - m) + s[..., :3] * m).astype(np.uint8)


# ---- screen effects (drawn over the frame, not in the world) ------------------------------
def speed_lines(frame, rng, horizontal: bool, thin: bool, light: bool) -> None:
    h, w = frame.shape[:2]
    colour = (245, 245, 240) if light else (25, 20, 35)
    overlay = frame.copy()
    for _ in range(int(rng.integers(15, 40))):
        if horizontal:
            y = int(rng.uniform(0, h))
            x0 = int(rng.uniform(-0.2, 0.8) * w)
            x1 = x0 + int(rng.uniform(0.2, 0.7) * w)
            if thin:
                cv2.line(overlay, (x0, y), (x1, y), colour, 1)
            else:
                t = rng.uniform(2, 6)
                tri = np.array([[x0, y], [x1, y - t / 2], [x1, y + t / 2]], np.int32)
                cv2.fillPoly(overlay, [tri], colour, cv2.LINE_AA)
        else:
            x = int(rng.uniform(0, w))
            y0 = int(rng.uniform(-0.2, 0.8) * h)
            y1 = y0 + int(rng.uniform(0.2, 0.7) * h)
            cv2.line(overlay, (x, y0), (x, y1), colour, 1 if thin else int(rng.integers(2, 6)))
    cv2.addWeighted(overlay, 0.85, frame, 0.15, 0, dst=frame)


def focus_lines(frame, rng) -> None:
    """Thin radial lines from the border toward the centre, redrawn each frame."""
    h, w = frame.shape[:2]
    c = np.array([w / 2, h / 2])
    R = math.hypot(w, h) / 2
    for _ in range(int(rng.integers(50, 90))):
        a = rng.uniform(0, 2 * math.pi)
        u = np.array([math.cos(a), math.sin(a)])
        p0 = c + u * rng.uniform(0.45, 0.7) * R
        cv2.line(frame, tuple(int(v) for v in p0), tuple(int(v) for v in c + u * R * 1.1), (30, 25, 40), 1, cv2.LINE_AA)


def particles(frame, rng) -> None:
    """Sparkles: small bright crosses scattered over the frame, redrawn each frame."""
    h, w = frame.shape[:2]
    for _ in range(int(rng.integers(20, 60))):
        x, y, r = int(rng.uniform(0, w)), int(rng.uniform(0, h)), int(rng.integers(2, 6))
        cv2.line(frame, (x - r, y), (x + r, y), (255, 250, 200), 1, cv2.LINE_AA)
        cv2.line(frame, (x, y - r), (x, y + r), (255, 250, 200), 1, cv2.LINE_AA)


# ---- damage -----------------------------------------------------------------------------
def garbage_band(frames, rng) -> list[int]:
    """1-3 frames lose a band at the bottom (or top): flat green, or the last good row smeared
    down in vertical streaks, with noisy macroblocks along its edge."""
    n = len(frames)
    hit = sorted({int(x) for x in rng.integers(0, n, int(rng.integers(1, 4)))})
    bottom, streaks = rng.random() < 0.8, rng.random() < 0.5
    for i in hit:
        f = frames[i]
        h, w = f.shape[:2]
        band = int(rng.uniform(0.2, 0.6) * h) // MB * MB
        y0, y1 = (h - band, h) if bottom else (0, band)
        if streaks:
            edge = f[y0 - 1] if bottom else f[y1]
            f[y0:y1] = edge[None]
        else:
            f[y0:y1] = (0, 135, 0)
        y = y0 if bottom else y1 - MB
        for x in range(0, w - MB, MB):
            if rng.random() < 0.4:
                f[y : y + MB, x : x + MB] = rng.integers(0, 256, (MB, MB, 3), dtype=np.uint8)
    return hit


def shuffled_blocks(frames, rng) -> list[int]:
    """2-6 frames in which the macroblocks of a region are shuffled among themselves."""
    n = len(frames)
    length = int(rng.integers(2, 7))
    start = int(rng.integers(0, max(1, n - length)))
    h, w = frames[0].shape[:2]
    rows, cols = h // MB, w // MB
    rh, rw = max(2, int(rows * rng.uniform(0.3, 0.6))), max(2, int(cols * rng.uniform(0.3, 0.6)))
    r0, c0 = int(rng.integers(0, rows - rh + 1)), int(rng.integers(0, cols - rw + 1))
    hit = []
    for i in range(start, min(n, start + length)):
        f = frames[i]
        blocks = [
            f[(r0 + r) * MB : (r0 + r + 1) * MB, (c0 + c) * MB : (c0 + c + 1) * MB].copy()
            for r in range(rh)
            for c in range(rw)
        ]
        order = rng.permutation(len(blocks))
        for k, j in enumerate(order):
            r, c = divmod(k, rw)
            f[(r0 + r) * MB : (r0 + r + 1) * MB, (c0 + c) * MB : (c0 + c + 1) * MB] = blocks[j]
        hit.append(i)
    return hit


def fields_swapped(frames, rng) -> list[int]:
    """Interlaced with the other field order: even lines come from the next frame."""
    nxt = [f.copy() for f in frames]
    for i in range(len(frames) - 1):
        frames[i][0::2] = nxt[i + 1][0::2]
    return list(range(len(frames) - 1))


DAMAGE = {"decoder_garbage": garbage_band, "block_corruption": shuffled_blocks, "interlaced": fields_swapped}


# ---- shots and videos -------------------------------------------------------------------
def choose_format(rng: np.random.Generator) -> dict:
    return {
        "size": SIZES[int(rng.integers(len(SIZES)))],
        "fps": RATES[int(rng.integers(len(RATES)))],
        "crf": int(rng.integers(16, 29)),
        "n_shots": int(rng.integers(6, 11)),
        "matte": pick(rng, {"none": 0.5, "letterbox": 0.25, "pillarbox": 0.25}),
        "grain": float(rng.choice([0.0, rng.uniform(1.5, 4.0)])),
    }


def camera_path(camera: str, speed: float, n: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame camera centre offset (px) and scale: eased moves, sinusoidal shake."""
    t = np.arange(n) / max(1, n - 1)
    ease = smoothstep(t) if rng.random() < 0.7 else t
    cx, cy, s = np.zeros(n), np.zeros(n), np.ones(n)
    total = speed * n
    if camera == "pan_left":
        cx = -total * ease
    elif camera == "pan_right":
        cx = total * ease
    elif camera == "tilt_up":
        cy = -total * ease
    elif camera == "tilt_down":
        cy = total * ease
    elif camera in ("zoom_in", "zoom_out"):
        s = np.exp((1 if camera == "zoom_in" else -1) * speed * ease)
    elif camera == "shake":
        k = np.arange(n)
        for axis in (0, 1):
            f1, f2 = rng.uniform(0.18, 0.45, 2)
            wave = np.sin(2 * np.pi * f1 * k + rng.uniform(0, 6)) + 0.5 * np.sin(2 * np.pi * f2 * k + rng.uniform(0, 6))
            (cx if axis == 0 else cy)[:] = speed * wave
    return cx - (cx.max() + cx.min()) / 2, cy - (cy.max() + cy.min()) / 2, s


def render_shot(
    rng,
    n: int,
    inner: tuple[int, int],
    world: np.ndarray,
    mascot: Mascot,
    camera: str,
    speed: float,
    cadence: int,
    d: float,
    subject_speed: float,
    subject_height: float,
    vfx: dict,
    flashes: list[dict],
):
    """The frames of one shot at the content size `inner`, and its smear and chibi frames."""
    w, h = inner
    Wh, Ww = world.shape[:2]
    cx, cy, scale = camera_path(camera, speed, n, rng)
    vx, vy = rng.uniform(-0.3, 0.3) * w, rng.uniform(-0.15, 0.15) * h  # framing: shots in one place differ
    cx, cy = cx + vx, cy + vy
    direction = 1.0 if rng.random() < 0.5 else -1.0
    px = Ww / 2 + vx + rng.uniform(-0.25, 0.25) * w - direction * subject_speed * n / 2
    py = Wh / 2 + vy + rng.uniform(0.2, 0.4) * h
    sprite_h = max(24, int(subject_height * h))
    chibi = (int(0.3 * n), int(0.3 * n) + max(2 * cadence, n // 3)) if d >= 0.65 else None
    flash_at = {f["frame"] + k: f["kind"] for f in flashes for k in range(f["length"])}
    smears: list[int] = []
    chibis: list[int] = []
    frames = []
    sprite, ghosts = None, 0
    for i in range(n):
        if i % cadence == 0:
            k = i // cadence
            is_chibi = chibi is not None and chibi[0] <= i < chibi[1]
            art = mascot.draw(sprite_h, 1.1 * k, chibi=is_chibi)
            squash = 1.0 + 0.5 * d * math.sin(1.7 * k + n)
            sprite = bend(art, squash, 0.5 * d * math.sin(0.9 * k), 0.05 * d, 2.3 * k)
            ghosts = 3 if (not is_chibi and rng.random() < max(0.0, d - 0.35)) else 0
            span = range(i, min(n, i + cadence))
            (smears if ghosts else []).extend(span)
            (chibis if is_chibi else []).extend(span)
            px += direction * subject_speed * cadence
        M = np.array(
            [[scale[i], 0, w / 2 - scale[i] * (Ww / 2 + cx[i])], [0, scale[i], h / 2 - scale[i] * (Wh / 2 + cy[i])]],
            np.float32,
        )
        frame = cv2.warpAffine(world, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        sx, sy = M[:, :2] @ np.array([px, py], np.float32) + M[:, 2]
        assert sprite is not None  # drawn at i = 0
        sp = cv2.resize(sprite, None, fx=scale[i], fy=scale[i]) if abs(scale[i] - 1) > 1e-3 else sprite
        for g in range(ghosts, 0, -1):  # a multiple-image smear: fading copies trailing the motion
            over(frame, sp, sx - direction * g * 0.12 * sprite_h, sy, 0.55**g)
        over(frame, sp, sx, sy)
        redraw = np.random.default_rng((n, i if vfx.get("per_frame") else i // cadence, 7))
        if "speed_lines" in vfx:
            speed_lines(frame, redraw, vfx["horizontal"], vfx["thin"], vfx["light"])
        if "focus_lines" in vfx:
            focus_lines(frame, redraw)
        if "particles" in vfx:
            particles(frame, redraw)
        kind = flash_at.get(i)
        if kind == "white":
            frame = cv2.addWeighted(frame, 0.12, np.full_like(frame, 255), 0.88, 0)
        elif kind == "tone":  # a two-tone impact frame in red and black
            grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            red, black = np.array([235, 40, 30], np.uint8), np.array([10, 5, 5], np.uint8)
            frame = np.where((grey > 120)[..., None], red, black).astype(np.uint8)
        frames.append(frame)
    return frames, smears, chibis


def _matte(frame: np.ndarray, size: tuple[int, int], grain: float, rng) -> np.ndarray:
    """Film grain on the picture, then the picture centred in a black frame of `size`."""
    if grain:
        noise = rng.normal(0, grain, frame.shape[:2]).astype(np.float32)[..., None]
        frame = np.clip(frame + noise, 0, 255).astype(np.uint8)
    w, h = size
    if frame.shape[:2] == (h, w):
        return frame
    out = np.zeros((h, w, 3), np.uint8)
    y, x = (h - frame.shape[0]) // 2, (w - frame.shape[1]) // 2
    out[y : y + frame.shape[0], x : x + frame.shape[1]] = frame
    return out


def content_size(size: tuple[int, int], matte: str) -> tuple[int, int]:
    w, h = size
    if matte == "letterbox":  # a 2.39:1 picture in the frame
        return w, min(h, int(w / 2.39) // 2 * 2)
    if matte == "pillarbox":  # a 4:3 picture in the frame
        return min(w, int(h * 4 / 3) // 2 * 2), h
    return w, h


def render_video(rng: np.random.Generator, fmt: dict, n_shots: int, shot_frames, damage_p, flash_p):
    size = fmt["size"]
    inner = content_size(size, fmt["matte"])
    k = inner[0] / 640.0
    transitions: list[dict[str, Any]] = [{"type": "start"}]
    for _ in range(n_shots - 1):
        t = pick(rng, TRANSITION_P)
        if t == "fade":
            transitions.append(
                {
                    "type": "fade",
                    "out": int(rng.integers(5, 16)),
                    "in": int(rng.integers(5, 16)),
                    "hold": int(rng.choice([0, 0, int(rng.integers(3, 12))])),
                    "colour": "white" if rng.random() < 0.2 else "black",
                }
            )
        elif t == "dissolve":
            transitions.append({"type": "dissolve", "length": int(rng.integers(6, 24))})
        elif t in ("card", "black"):  # a title card or a black card, cut into or faded into
            transitions.append(
                {
                    "type": "card",
                    "length": int(rng.integers(6, 30)),
                    "text": TITLES[int(rng.integers(len(TITLES)))] if t == "card" else None,
                    "in": int(rng.choice([0, int(rng.integers(4, 12))])),
                    "out": int(rng.choice([0, 0, int(rng.integers(4, 12))])),
                }
            )
        else:
            transitions.append({"type": "cut"})
    cast = [Mascot(rng) for _ in range(3)]
    plans = []
    location = 0
    for i in range(n_shots):
        gin, gout = transitions[i], (transitions[i + 1] if i + 1 < n_shots else {})
        n = (
            int(rng.integers(*shot_frames))
            + gin.get("in", gin.get("length", 0) if gin["type"] == "dissolve" else 0)
            + gout.get("out", gout.get("length", 0) if gout.get("type") == "dissolve" else 0)
        )
        cam = pick(rng, CAMERA_P)
        speed = {
            "zoom_in": rng.uniform(0.15, 0.5),
            "zoom_out": rng.uniform(0.15, 0.5),
            "shake": rng.uniform(3, 9) * k,
            "static": 0.0,
        }.get(cam, rng.uniform(1.0, 8.0) * k)
        subject_speed = float(rng.choice([0.0, rng.uniform(0.5, 2.0), rng.uniform(3.0, 8.0)])) * k
        vfx = {}
        if rng.random() < (0.5 if subject_speed > 2.5 * k else 0.2):
            vfx.update(
                {
                    "speed_lines": True,
                    "thin": bool(rng.random() < 0.5),
                    "light": bool(rng.random() < 0.6),
                    "horizontal": bool(rng.random() < 0.8),
                }
            )
        if rng.random() < 0.1:
            vfx["focus_lines"] = True
        if rng.random() < 0.12:
            vfx["particles"] = True
        if vfx:
            vfx["per_frame"] = bool(rng.random() < 0.6)
        flashes = []
        if rng.random() < flash_p and n > 30:
            f = int(rng.integers(10, n - 10))
            flashes.append(
                {"frame": f, "length": int(rng.integers(1, 3)), "kind": "white" if rng.random() < 0.5 else "tone"}
            )
        if i == 0 or rng.random() > 0.3:
            location = int(rng.integers(1 << 30))
        plans.append(
            dict(
                n=n,
                camera=cam,
                speed=float(speed),
                cadence=int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3])),
                d=round(float(rng.uniform(0, 1)), 2),
                subject_speed=subject_speed,
                subject_height=float(rng.uniform(0.3, 0.8)),
                vfx=vfx,
                flashes=flashes,
                location=location,
                damage=pick(rng, {x: 1 for x in DAMAGE}) if rng.random() < damage_p else None,
                seed=int(rng.integers(1 << 30)),
            )
        )

    def shots() -> Iterator[tuple[list[np.ndarray], dict]]:
        worlds: dict[int, np.ndarray] = {}
        for i, p in enumerate(plans):
            r = np.random.default_rng(p["seed"])
            if p["location"] not in worlds:
                extent = 1.0 + (
                    p["speed"] * p["n"] / inner[0] if p["camera"] not in ("zoom_in", "zoom_out", "shake") else 0
                )
                side = int(max(inner) * (1.8 + extent + (0.7 if p["camera"] == "zoom_out" else 0)))
                worlds = {p["location"]: paint_backdrop(np.random.default_rng(p["location"]), side, side)}
            frames, smears, chibis = render_shot(
                r,
                p["n"],
                inner,
                worlds[p["location"]],
                cast[i % 3],
                p["camera"],
                p["speed"],
                p["cadence"],
                p["d"],
                p["subject_speed"],
                p["subject_height"],
                p["vfx"],
                p["flashes"],
            )
            frames = [_matte(f, size, fmt["grain"], r) for f in frames]
            failures = [{"kind": p["damage"], "frames": DAMAGE[p["damage"]](frames, r)}] if p["damage"] else []
            yield (
                frames,
                {
                    "camera": p["camera"],
                    "camera_speed": round(p["speed"], 4),
                    "cadence": p["cadence"],
                    "deformation": p["d"],
                    "subject_speed": round(p["subject_speed"], 3),
                    "subject_height": round(p["subject_height"], 3),
                    "vfx": [v for v in ("speed_lines", "focus_lines", "particles") if v in p["vfx"]],
                    "vfx_detail": p["vfx"],
                    "location": p["location"],
                    "flashes": p["flashes"],
                    "failures": failures,
                    "smear_frames": smears,
                    "chibi_frames": chibis,
                    "spec": {"n_frames": p["n"], "seed": p["seed"]},
                },
            )

    return transitions, shots()
