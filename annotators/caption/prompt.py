"""What the VLM is shown: K frames of the clip, the taxonomy as a fixed system prompt (the
same bytes for every request, so vLLM's prefix cache serves it), and the measured signals as
hints the model may overrule."""

from __future__ import annotations

import base64
import json
import math
from functools import lru_cache

import cv2
import numpy as np

import taxonomy

PROMPT_VERSION = "p1"
PATCH = 28  # Qwen2-VL: one visual token per 28x28 pixels


@lru_cache(maxsize=8)
def system_prompt(version: int | None = None) -> str:
    tax = taxonomy.load(version)
    lines = [
        "You are an anime production analyst. Label the clip with the Production Knowledge System "
        f"(taxonomy v{tax.version}). Answer with one JSON object: a short narrative of what happens, and "
        "tag ids from the lists below for style, motion, camera and vfx (several allowed, none if nothing "
        "applies) and exactly one shot size. Intentional deformation (smears, squash-and-stretch, chibi "
        "shifts, impact frames) is craft: tag it, do not call it an error.",
    ]
    for name, axis in tax.axes.items():
        lines.append(f"\n[{name}] {axis.description}")
        lines += [f"- {t.id}: {t.definition}" for t in axis.tags]
    return "\n".join(lines)


def sample_frames(path: str, k: int = 4, token_budget: int = 256) -> list[np.ndarray]:
    """K evenly spaced RGB frames, each resized to at most `token_budget` visual tokens."""
    import decord

    vr = decord.VideoReader(path)
    n = len(vr)
    if n == 0:
        raise ValueError(f"{path}: no frames")
    idx = np.linspace(0, n - 1, min(k, n)).round().astype(int).tolist()
    frames = vr.get_batch(idx).asnumpy()
    h, w = frames.shape[1:3]
    scale = min(1.0, math.sqrt(token_budget * PATCH * PATCH / (h * w)))
    th, tw = max(PATCH, int(h * scale) // PATCH * PATCH), max(PATCH, int(w * scale) // PATCH * PATCH)
    return [cv2.resize(f, (tw, th), interpolation=cv2.INTER_AREA) for f in frames]


def data_url(rgb: np.ndarray, quality: int = 90) -> str:
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return "data:image/jpeg;base64," + base64.b64encode(jpg.tobytes()).decode()


def hints(record) -> str:
    """The signals measured from pixels, as hints (the model sees the drawing; we see motion)."""
    h = {
        "camera": record.camera_motion,
        "cadence": record.cadence,
        "deformation": record.deformation_score,
        "smear_frames": record.smear_frames,
        "impact_frames": record.impact_frames,
        "duration_s": round(record.end_s - record.start_s, 2),
    }
    return "Measured from the pixels (hints; overrule them if the frames disagree): " + json.dumps(
        {k: v for k, v in h.items() if v not in (None, [])}
    )


def messages(frames: list[np.ndarray], record, tax_version: int | None = None) -> list[dict]:
    content = [{"type": "image_url", "image_url": {"url": data_url(f)}} for f in frames]
    content.append({"type": "text", "text": hints(record) + "\nLabel this clip."})
    return [{"role": "system", "content": system_prompt(tax_version)}, {"role": "user", "content": content}]
