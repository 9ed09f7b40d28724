"""The first footage family, "cel": flat cel fills with one hard shadow tone and near-black
ink, banded painted skies, characters built from ellipses, linear camera moves, speed lines
held with the drawing, and three damage shapes (see damage.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import numpy as np

from pks.synth.art import Character, Palette, paint_world
from pks.synth.damage import DAMAGE
from pks.synth.shot import VIEW_RANGE, ShotSpec, render_shot, world_size

SIZES = [(640, 360), (480, 270), (854, 480), (640, 480), (512, 288)]
RATES = ["24000/1001", "24", "30000/1001"]
CAMERA_P = {
    "static": 0.2,
    "pan_left": 0.12,
    "pan_right": 0.12,
    "tilt_up": 0.08,
    "tilt_down": 0.08,
    "zoom_in": 0.12,
    "zoom_out": 0.1,
    "shake": 0.18,
}
TRANSITION_P = {"cut": 0.55, "fade": 0.2, "dissolve": 0.25}


def pick(rng, table: dict):
    keys = list(table)
    return keys[int(rng.choice(len(keys), p=np.array(list(table.values())) / sum(table.values())))]


def plan_video(
    rng: np.random.Generator,
    n_shots: int,
    size: tuple[int, int],
    shot_frames: tuple[int, int] = (40, 110),
    damage_p: float = 0.18,
    flash_p: float = 0.35,
):
    """Random shot specs and the transitions into each (the first is 'start')."""
    w, _ = size
    k = w / 640.0  # speeds scale with frame width
    transitions: list[dict[str, Any]] = []
    for i in range(n_shots):
        if i == 0:
            transitions.append({"type": "start"})
            continue
        t = pick(rng, TRANSITION_P)
        if t == "fade":
            transitions.append(
                {
                    "type": "fade",
                    "out": int(rng.integers(6, 15)),
                    "in": int(rng.integers(6, 15)),
                    "colour": "white" if rng.random() < 0.25 else "black",
                }
            )
        elif t == "dissolve":
            transitions.append({"type": "dissolve", "length": int(rng.integers(8, 21))})
        else:
            transitions.append({"type": "cut"})
    specs, damages = [], []
    location = 0
    for i in range(n_shots):
        gin = transitions[i]
        gout = transitions[i + 1] if i + 1 < n_shots else {"type": "end"}
        lead = gin.get("in", gin.get("length", 0))
        tail = gout.get("out", gout.get("length", 0))
        n = int(rng.integers(*shot_frames)) + lead + tail
        cam = pick(rng, CAMERA_P)
        speed = {
            "zoom_in": rng.uniform(0.15, 0.5),
            "zoom_out": rng.uniform(0.15, 0.5),
            "shake": rng.uniform(3, 10) * k,
            "static": 0.0,
        }.get(cam, rng.uniform(1.0, 10.0) * k)
        flashes: list[dict[str, Any]] = []
        if rng.random() < flash_p:
            lo, hi = lead + 8, n - tail - 8
            for f in sorted(rng.choice(np.arange(lo, hi), size=min(int(rng.integers(1, 3)), hi - lo), replace=False)):
                if not flashes or f > flashes[-1]["frame"] + flashes[-1]["length"] + 4:
                    flashes.append(
                        {
                            "frame": int(f),
                            "length": int(rng.integers(1, 3)),
                            "kind": "white" if rng.random() < 0.5 else "invert",
                        }
                    )
        subject_speed = float(rng.choice([0.0, rng.uniform(0.5, 2.0), rng.uniform(3.0, 8.0)])) * k
        vfx = []
        if rng.random() < (0.35 if subject_speed > 2.5 * k else 0.06):
            vfx.append("speed_lines")
        if rng.random() < 0.08:
            vfx.append("focus_lines")
        same_place = i > 0 and rng.random() < 0.3  # a reverse angle in the same place: a harder cut
        if not same_place:
            location = int(rng.integers(1 << 30))
        specs.append(
            ShotSpec(
                n_frames=n,
                camera=cam,
                camera_speed=float(speed),
                cadence=int(rng.choice([1, 2, 3], p=[0.25, 0.45, 0.3])),
                deformation=round(float(rng.uniform(0, 1)), 2),
                subject_speed=subject_speed,
                subject_height=float(rng.uniform(0.35, 0.85)),
                vfx=vfx,
                flashes=flashes,
                location=location,
                view=(float(rng.uniform(-VIEW_RANGE, VIEW_RANGE)), float(rng.uniform(-0.5, 0.5) * VIEW_RANGE)),
                seed=int(rng.integers(1 << 30)),
            )
        )
        damages.append(pick(rng, {k2: 1 for k2 in DAMAGE}) if rng.random() < damage_p else None)
    return specs, transitions, damages


def choose_format(rng: np.random.Generator) -> dict:
    """Per-video size, frame rate, x264 quality and shot count."""
    return {
        "size": SIZES[int(rng.integers(len(SIZES)))],
        "fps": RATES[int(rng.integers(len(RATES)))],
        "crf": int(rng.integers(16, 31)),
        "n_shots": int(rng.integers(6, 11)),
    }


def render_video(rng: np.random.Generator, fmt: dict, n_shots: int, shot_frames, damage_p, flash_p):
    """(transitions, shots): shots yields (frames, truth) per shot, frame numbers shot-relative."""
    size = fmt["size"]
    w, h = size
    specs, transitions, damages = plan_video(rng, n_shots, size, shot_frames, damage_p, flash_p)
    cast = [Character.random(rng) for _ in range(2)]

    def shots() -> Iterator[tuple[list[np.ndarray], dict]]:
        palettes: dict[int, Palette] = {}
        loc_size: dict[int, tuple[int, int]] = {}
        for spec in specs:
            ws = world_size(spec, w, h)
            old = loc_size.get(spec.location, (0, 0))
            loc_size[spec.location] = (max(old[0], ws[0]), max(old[1], ws[1]))
        worlds: dict[int, np.ndarray] = {}
        for i, spec in enumerate(specs):
            pal = palettes.setdefault(spec.location, Palette.random(np.random.default_rng(spec.location)))
            if spec.location not in worlds:  # painted once, big enough for every shot there
                worlds = {
                    spec.location: paint_world(np.random.default_rng(spec.location), *loc_size[spec.location], pal)
                }
            gen = render_shot(spec, size, cast[i % 2], pal, worlds[spec.location])  # alternate, as in shot/reverse-shot
            frames = []
            while True:
                try:
                    frames.append(next(gen))
                except StopIteration as stop:
                    st = stop.value
                    break
            failures = []
            if damages[i]:
                hit = DAMAGE[damages[i]](frames, np.random.default_rng(spec.seed + 1))
                failures = [{"kind": damages[i], "frames": hit}]
            yield (
                frames,
                {
                    "camera": spec.camera,
                    "camera_speed": round(spec.camera_speed, 4),
                    "cadence": spec.cadence,
                    "deformation": spec.deformation,
                    "subject_speed": round(spec.subject_speed, 3),
                    "subject_height": round(spec.subject_height, 3),
                    "vfx": spec.vfx,
                    "location": spec.location,
                    "flashes": spec.flashes,
                    "failures": failures,
                    "smear_frames": st.smear_frames,
                    "chibi_frames": st.chibi_frames,
                    "spec": {k: v for k, v in asdict(spec).items() if k in ("n_frames", "seed")},
                },
            )

    return transitions, shots()
