"""Compose synthetic shots into an H.264 video with a ground-truth JSON beside it.

Shots are joined by hard cuts, fades (to/from black or white) and dissolves. Frame rate,
size, codec quality, cadence, camera, deformation, flashes and damage all vary per video and
shot, so nothing tuned on one video carries over for free.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from pks.synth.art import Character, Palette, paint_world
from pks.synth.damage import DAMAGE
from pks.synth.shot import VIEW_RANGE, ShotSpec, render_shot, world_size
from pks.videoio import Mp4Writer, as_rate

SIZES = [(640, 360), (480, 270), (854, 480), (640, 480), (512, 288)]
RATES = ["24000/1001", "24", "30000/1001"]
CAMERA_P = {"static": .2, "pan_left": .12, "pan_right": .12, "tilt_up": .08, "tilt_down": .08,
            "zoom_in": .12, "zoom_out": .1, "shake": .18}
TRANSITION_P = {"cut": .55, "fade": .2, "dissolve": .25}


def _pick(rng, table: dict):
    keys = list(table)
    return keys[int(rng.choice(len(keys), p=np.array(list(table.values())) / sum(table.values())))]


def plan_video(rng: np.random.Generator, n_shots: int, size: tuple[int, int],
               shot_frames: tuple[int, int] = (40, 110), damage_p: float = 0.18, flash_p: float = 0.35):
    """Random shot specs and the transitions into each (the first is 'start')."""
    w, _ = size
    k = w / 640.0  # speeds scale with frame width
    transitions = []
    for i in range(n_shots):
        if i == 0:
            transitions.append({"type": "start"})
            continue
        t = _pick(rng, TRANSITION_P)
        if t == "fade":
            transitions.append({"type": "fade", "out": int(rng.integers(6, 15)), "in": int(rng.integers(6, 15)),
                                "colour": "white" if rng.random() < 0.25 else "black"})
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
        cam = _pick(rng, CAMERA_P)
        speed = {"zoom_in": rng.uniform(0.15, 0.5), "zoom_out": rng.uniform(0.15, 0.5),
                 "shake": rng.uniform(3, 10) * k, "static": 0.0}.get(cam, rng.uniform(1.0, 10.0) * k)
        flashes = []
        if rng.random() < flash_p:
            lo, hi = lead + 8, n - tail - 8
            for f in sorted(rng.choice(np.arange(lo, hi), size=min(int(rng.integers(1, 3)), hi - lo), replace=False)):
                if not flashes or f > flashes[-1]["frame"] + flashes[-1]["length"] + 4:
                    flashes.append({"frame": int(f), "length": int(rng.integers(1, 3)),
                                    "kind": "white" if rng.random() < 0.5 else "invert"})
        subject_speed = float(rng.choice([0.0, rng.uniform(0.5, 2.0), rng.uniform(3.0, 8.0)])) * k
        vfx = []
        if rng.random() < (0.35 if subject_speed > 2.5 * k else 0.06):
            vfx.append("speed_lines")
        if rng.random() < 0.08:
            vfx.append("focus_lines")
        same_place = i > 0 and rng.random() < 0.3  # a reverse angle in the same place: a harder cut
        if not same_place:
            location = int(rng.integers(1 << 30))
        specs.append(ShotSpec(
            n_frames=n, camera=cam, camera_speed=float(speed),
            cadence=int(rng.choice([1, 2, 3], p=[0.25, 0.45, 0.3])),
            deformation=round(float(rng.uniform(0, 1)), 2), subject_speed=subject_speed,
            subject_height=float(rng.uniform(0.35, 0.85)), vfx=vfx, flashes=flashes,
            location=location, view=(float(rng.uniform(-VIEW_RANGE, VIEW_RANGE)), float(rng.uniform(-0.5, 0.5) * VIEW_RANGE)),
            seed=int(rng.integers(1 << 30))))
        damages.append(_pick(rng, {k2: 1 for k2 in DAMAGE}) if rng.random() < damage_p else None)
    return specs, transitions, damages


def choose_format(rng: np.random.Generator) -> dict:
    """Per-video size, frame rate, x264 quality and shot count."""
    return {"size": SIZES[int(rng.integers(len(SIZES)))], "fps": RATES[int(rng.integers(len(RATES)))],
            "crf": int(rng.integers(16, 31)), "n_shots": int(rng.integers(6, 11))}


def synthesize_video(path: str | Path, seed: int, n_shots: int | None = None,
                     size: tuple[int, int] | None = None, fps: str | None = None,
                     crf: int | None = None, shot_frames: tuple[int, int] = (40, 110),
                     damage_p: float = 0.18, flash_p: float = 0.35) -> dict:
    """Render one video to `path` (mp4) and its truth to `path.with_suffix('.json')`."""
    path = Path(path)
    rng = np.random.default_rng(seed)
    fmt = choose_format(rng)
    size, fps = size or fmt["size"], fps or fmt["fps"]
    crf = int(crf if crf is not None else fmt["crf"])
    n_shots = n_shots or fmt["n_shots"]
    w, h = size
    specs, transitions, damages = plan_video(rng, n_shots, size, shot_frames, damage_p, flash_p)
    cast = [Character.random(rng) for _ in range(2)]
    palettes: dict[int, Palette] = {}
    loc_size: dict[int, tuple[int, int]] = {}
    for spec in specs:
        ws = world_size(spec, w, h)
        old = loc_size.get(spec.location, (0, 0))
        loc_size[spec.location] = (max(old[0], ws[0]), max(old[1], ws[1]))
    worlds: dict[int, np.ndarray] = {}

    shots_truth, boundaries = [], []
    pending_tail: list[np.ndarray] = []  # previous shot's frames held back for a dissolve
    g = 0  # global index of the next frame to be written
    with Mp4Writer(path, fps, w, h, crf=crf) as out:
        for i, spec in enumerate(specs):
            pal = palettes.setdefault(spec.location, Palette.random(np.random.default_rng(spec.location)))
            if spec.location not in worlds:  # painted once, big enough for every shot there
                worlds = {spec.location: paint_world(np.random.default_rng(spec.location), *loc_size[spec.location], pal)}
            world = worlds[spec.location]
            gen = render_shot(spec, size, cast[i % 2], pal, world)  # alternate, as in shot/reverse-shot
            frames = []
            while True:
                try:
                    frames.append(next(gen))
                except StopIteration as stop:
                    st = stop.value
                    break
            failure = None
            if damages[i]:
                hit = DAMAGE[damages[i]](frames, np.random.default_rng(spec.seed + 1))
                failure = {"kind": damages[i], "frames": hit}
            tin, tout = transitions[i], transitions[i + 1] if i + 1 < len(specs) else {"type": "end"}
            start_g = g  # global index of this shot's frame 0
            # Incoming transition.
            if tin["type"] == "dissolve":
                L = tin["length"]
                for j in range(L):
                    a = (j + 1) / (L + 1)
                    frames[j] = (pending_tail[j] * (1 - a) + frames[j] * a).astype(np.uint8)
                cut_at = g + L // 2
                boundaries.append({"frame": cut_at, "type": "dissolve", "span": [g, g + L]})
            elif tin["type"] == "fade":
                L = tin["in"]
                colour = 255 if tin["colour"] == "white" else 0
                for j in range(L):
                    a = (j + 1) / (L + 1)
                    frames[j] = (frames[j] * a + colour * (1 - a)).astype(np.uint8)
                cut_at = g
                boundaries.append({"frame": cut_at, "type": "fade", "colour": tin["colour"],
                                   "span": [g - tin["_out"], g + L]})
            elif tin["type"] == "cut":
                cut_at = g
                boundaries.append({"frame": cut_at, "type": "cut", "span": [g, g + 1]})
            else:
                cut_at = 0
            if shots_truth:
                shots_truth[-1]["end_frame"] = cut_at
            # Outgoing transition: fade the tail now; hold a dissolve's tail back.
            hold = 0
            if tout["type"] == "fade":
                L = tout["out"]
                colour = 255 if tout["colour"] == "white" else 0
                for j in range(L):
                    a = (j + 1) / (L + 1)
                    frames[-L + j] = (frames[-L + j] * (1 - a) + colour * a).astype(np.uint8)
                tout["_out"] = L
            elif tout["type"] == "dissolve":
                hold = tout["length"]
            for f in frames[:len(frames) - hold]:
                out.write(f)
            pending_tail = frames[len(frames) - hold:] if hold else []
            g += len(frames) - hold
            rel = lambda fr: [start_g + int(x) for x in fr]  # noqa: E731
            shots_truth.append({
                "index": i, "start_frame": cut_at, "end_frame": None,
                "transition_in": tin["type"],
                "camera": spec.camera, "camera_speed": round(spec.camera_speed, 4),
                "cadence": spec.cadence, "deformation": spec.deformation,
                "subject_speed": round(spec.subject_speed, 3), "subject_height": round(spec.subject_height, 3),
                "vfx": spec.vfx, "location": spec.location,
                "flashes": [{"frame": start_g + f["frame"], "length": f["length"], "kind": f["kind"]}
                            for f in spec.flashes],
                "failures": [{"kind": failure["kind"], "frames": rel(failure["frames"])}] if failure else [],
                "smear_frames": rel(st.smear_frames), "chibi_frames": rel(st.chibi_frames),
                "spec": {k: v for k, v in asdict(spec).items() if k in ("n_frames", "seed")},
            })
        n_frames = out.count
    shots_truth[-1]["end_frame"] = n_frames
    for t in transitions:
        t.pop("_out", None)
    truth = {
        "video": path.name, "seed": seed, "fps": float(as_rate(fps)), "fps_fraction": str(as_rate(fps)),
        "width": w, "height": h, "crf": crf, "n_frames": n_frames,
        "boundaries": boundaries, "shots": shots_truth,
    }
    path.with_suffix(".json").write_text(json.dumps(truth, indent=1))
    return truth


def synthesize(out_dir: str | Path, videos: int, seed: int = 0, **kw) -> list[Path]:
    """Write `videos` synthetic videos (and truth files) into `out_dir`; returns the mp4 paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(seed).generate_state(videos)
    paths = []
    for i, s in enumerate(seeds):
        p = out_dir / f"anime_{seed}_{i:03d}.mp4"
        synthesize_video(p, int(s), **kw)
        paths.append(p)
    return paths
