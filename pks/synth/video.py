"""Compose synthetic shots into an H.264 video with a ground-truth JSON beside it.

A footage family (cel.py, painted.py, limited.py) plans and renders the shots; this module joins them
with hard cuts, fades (to/from black or white, optionally holding the colour), dissolves and
cards (black or a title on near-black, cut or faded into the next shot), and writes the
truth: every boundary with the span of frames that belong to no shot, every shot with what
the renderer knows about it. Frame rate, size, quality, cadence, camera, deformation, flashes
and damage all vary per video and shot, so nothing tuned on one video carries over for free.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from pks.synth import cel, limited, painted
from pks.videoio import Mp4Writer, as_rate

FAMILIES = {"cel": cel, "painted": painted, "limited": limited}
# Families benchmarks report on and nothing is tuned on (limited.py says why).
EVALUATION_ONLY = frozenset({"limited"})
# Further per-shot truth a family may give, in shot-relative frames, shifted to video frames.
FRAME_LISTS, FRAME_SPANS = ("drawing_starts", "mouth_frames", "blink_frames"), ("holds",)


def _fade(frame: np.ndarray, colour: int, a: float) -> np.ndarray:
    """`frame` blended toward a flat colour by a (0: frame, 1: colour)."""
    return (frame * (1 - a) + colour * a).astype(np.uint8)


def card_frame(size: tuple[int, int], text: str | None, seed: int) -> np.ndarray:
    """A black card, or a title in light type on near-black (as title cards and eyecatches are)."""
    w, h = size
    img = np.full((h, w, 3), 8 if text else 0, np.uint8)
    if text:
        scale = w / 640.0
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_DUPLEX, 1.1 * scale, 2)
        rng = np.random.default_rng(seed)
        org = (int((w - tw) / 2 + rng.uniform(-0.1, 0.1) * w), int(h / 2 + th / 2 + rng.uniform(-0.15, 0.15) * h))
        cv2.putText(
            img, text, org, cv2.FONT_HERSHEY_DUPLEX, 1.1 * scale, (225, 222, 210), max(1, int(2 * scale)), cv2.LINE_AA
        )
    return img


def compose(path: Path, fps, size: tuple[int, int], crf: int, transitions: list[dict], shots) -> tuple[list, list, int]:
    """Write the shots joined by their transitions; returns (boundaries, shots' truth, frames)."""
    w, h = size
    shots_truth: list[dict] = []
    boundaries: list[dict] = []
    pending_tail: list[np.ndarray] = []  # previous shot's frames held back for a dissolve
    g = 0  # global index of the next frame to be written
    with Mp4Writer(path, fps, w, h, crf=crf) as out:
        for i, (frames, info) in enumerate(shots):
            tin = transitions[i]
            tout: dict = transitions[i + 1] if i + 1 < len(transitions) else {"type": "end"}
            prev_end = g
            if tin["type"] == "dissolve":
                L = tin["length"]
                for j in range(L):
                    a = (j + 1) / (L + 1)
                    frames[j] = (pending_tail[j] * (1 - a) + frames[j] * a).astype(np.uint8)
                cut_at = g + L // 2
                prev_end = cut_at
                boundaries.append({"frame": cut_at, "type": "dissolve", "span": [g, g + L]})
            elif tin["type"] == "fade":
                colour = 255 if tin["colour"] == "white" else 0
                for _ in range(tin.get("hold", 0)):  # the colour held between the shots
                    out.write(np.full((h, w, 3), colour, np.uint8))
                    g += 1
                L = tin["in"]
                for j in range(L):
                    frames[j] = _fade(frames[j], colour, 1 - (j + 1) / (L + 1))
                cut_at = g
                boundaries.append(
                    {"frame": cut_at, "type": "fade", "colour": tin["colour"], "span": [prev_end - tin["_out"], g + L]}
                )
            elif tin["type"] == "card":  # cut to black or a title card, then cut or fade into the shot
                card = card_frame(size, tin.get("text"), i)
                for _ in range(tin["length"]):
                    out.write(card)
                    g += 1
                L = tin.get("in", 0)
                for j in range(L):
                    frames[j] = _fade(frames[j], 0, 1 - (j + 1) / (L + 1))
                cut_at = g
                boundaries.append(
                    {
                        "frame": cut_at,
                        "type": "card",
                        "title": bool(tin.get("text")),
                        "span": [prev_end - tin.get("_out", 0), g + max(L, 1)],
                    }
                )
            elif tin["type"] == "cut":
                cut_at = g
                boundaries.append({"frame": cut_at, "type": "cut", "span": [g, g + 1]})
            else:
                cut_at = 0
            if shots_truth:
                shots_truth[-1]["end_frame"] = prev_end if tin["type"] in ("fade", "card") else cut_at
            # Outgoing transition: fade the tail now; hold a dissolve's tail back.
            hold = 0
            if tout["type"] in ("fade", "card") and tout.get("out"):
                L = tout["out"]
                colour = 255 if tout.get("colour") == "white" else 0
                for j in range(L):
                    frames[-L + j] = _fade(frames[-L + j], colour, (j + 1) / (L + 1))
                tout["_out"] = L
            elif tout["type"] == "dissolve":
                hold = tout["length"]
            start_g = g  # global index of this shot's frame 0
            for f in frames[: len(frames) - hold]:
                out.write(f)
            pending_tail = frames[len(frames) - hold :] if hold else []
            g += len(frames) - hold
            rel = lambda fr, base=start_g: [base + int(x) for x in fr]  # noqa: E731
            shots_truth.append(
                {
                    "index": i,
                    "start_frame": cut_at,
                    "end_frame": None,
                    "transition_in": tin["type"],
                    **info,
                    "flashes": [{**f, "frame": start_g + f["frame"]} for f in info["flashes"]],
                    "failures": [{**f, "frames": rel(f["frames"])} for f in info["failures"]],
                    "smear_frames": rel(info["smear_frames"]),
                    "chibi_frames": rel(info["chibi_frames"]),
                    **{k: rel(info[k]) for k in FRAME_LISTS if k in info},
                    **{k: [rel(x) for x in info[k]] for k in FRAME_SPANS if k in info},
                }
            )
        n_frames = out.count
    shots_truth[-1]["end_frame"] = n_frames
    for t in transitions:
        t.pop("_out", None)
    return boundaries, shots_truth, n_frames


def synthesize_video(
    path: str | Path,
    seed: int,
    n_shots: int | None = None,
    size: tuple[int, int] | None = None,
    fps: str | None = None,
    crf: int | None = None,
    shot_frames: tuple[int, int] = (40, 110),
    damage_p: float = 0.18,
    flash_p: float = 0.35,
    family: str = "cel",
) -> dict:
    """Render one video of a footage family to `path` (mp4) and its truth to `path.with_suffix('.json')`."""
    path = Path(path)
    fam = FAMILIES[family]
    rng = np.random.default_rng(seed)
    fmt = fam.choose_format(rng)
    fmt["size"], fmt["fps"] = size or fmt["size"], fps or fmt["fps"]
    crf = int(crf if crf is not None else fmt["crf"])
    transitions, shots = fam.render_video(rng, fmt, n_shots or fmt["n_shots"], shot_frames, damage_p, flash_p)
    boundaries, shots_truth, n_frames = compose(path, fmt["fps"], fmt["size"], crf, transitions, shots)
    w, h = fmt["size"]
    truth = {
        "video": path.name,
        "seed": seed,
        "family": family,
        "fps": float(as_rate(fmt["fps"])),
        "fps_fraction": str(as_rate(fmt["fps"])),
        "width": w,
        "height": h,
        "crf": crf,
        "n_frames": n_frames,
        **{k: fmt[k] for k in ("matte", "grain") if k in fmt},
        **({"evaluation_only": True} if family in EVALUATION_ONLY else {}),
        "boundaries": boundaries,
        "shots": shots_truth,
    }
    path.with_suffix(".json").write_text(json.dumps(truth, indent=1))
    return truth


def synthesize(out_dir: str | Path, videos: int, seed: int = 0, family: str = "cel", **kw) -> list[Path]:
    """Write `videos` synthetic videos (and truth files) of a footage family into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(seed).generate_state(videos)
    paths = []
    for i, s in enumerate(seeds):
        p = out_dir / (f"anime_{seed}_{i:03d}.mp4" if family == "cel" else f"{family}_{seed}_{i:03d}.mp4")
        synthesize_video(p, int(s), family=family, **kw)
        paths.append(p)
    return paths
