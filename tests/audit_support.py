"""A small curated run for the audit workbench: clips whose frame i is a flat grey of level
GREY0 + GREY_STEP * i, so a browser can tell which decoded frame it shows from one pixel."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

import taxonomy
from pipelines.curate import build_manifest, write_part
from pks.config import load_config
from pks.record import ClipRecord

GREY0, GREY_STEP = 16, 9
FPS = 24


def caption(**kw) -> dict:
    tax = taxonomy.load()
    base = {"narrative": "", "style": [], "motion": [], "camera": ["static"], "vfx": [], "shot": tax.axes["shot"].ids[0]}
    return tax.validate({**base, **kw})


def encode_ramp(path: Path, n: int) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(FPS))
        s.width, s.height, s.pix_fmt = 128, 96, "yuv420p"
        s.options = {"crf": "0", "preset": "ultrafast"}
        for i in range(n):
            img = np.full((96, 128, 3), GREY0 + GREY_STEP * i, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def make_run(out: Path, n_clips: int = 4, frames: int = 24, narrative: str = "a girl runs") -> list[str]:
    (out / "parts").mkdir(parents=True)
    (out / "clips").mkdir()
    recs = [ClipRecord(video_id="v1", source_path="v1.mp4", start_frame=k * frames, end_frame=(k + 1) * frames,
                       fps=FPS, width=128, height=96, caption=caption(narrative=narrative, camera=["shake"]),
                       caption_source="tiny|prompt=1|taxonomy=v1", camera_motion=["static"], deformation_score=0.4,
                       curriculum_stage=1, cadence=2.0, signals='{"smear_at": [5, 6], "impact_at": [12]}')
            for k in range(n_clips)]
    for r in recs:
        encode_ramp(out / "clips" / f"{r.clip_id}.mp4", frames)
    write_part(out, "v1", recs)
    build_manifest(out, load_config())
    return [r.clip_id for r in recs]
