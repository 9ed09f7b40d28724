"""A curated-run folder of synthetic shots for the Judge, built without Ray: each shot is
encoded as a clip and recorded as an ok clip (6 source videos x 4 shots)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from pipelines.parts import build_manifest, write_part
from pks.config import load_config
from pks.record import ClipRecord
from pks.synth.art import Character, Palette
from pks.synth.shot import ShotSpec, render_shot

CAMERAS = ("static", "pan_left", "pan_right", "tilt_up", "zoom_in", "shake")


def judge_run(out: Path, videos: int = 6, shots: int = 4, seed: int = 0) -> Path:
    (out / "parts").mkdir(parents=True)
    (out / "clips").mkdir()
    rng = np.random.default_rng(seed)
    for v in range(videos):
        vid = f"video{seed}x{v}"
        recs = []
        for k in range(shots):
            n = int(rng.integers(24, 40))
            spec = ShotSpec(
                n_frames=n,
                camera=CAMERAS[int(rng.integers(len(CAMERAS)))],
                camera_speed=float(rng.uniform(1, 4)),
                cadence=int(rng.integers(1, 4)),
                deformation=float(rng.uniform(0, 1)),
                subject_speed=float(rng.uniform(0, 4)),
                subject_height=float(rng.uniform(0.4, 0.7)),
                location=v,
                seed=int(rng.integers(1 << 20)),
            )
            frames = list(render_shot(spec, (192, 108), Character.random(rng), Palette.random(rng)))
            r = ClipRecord(
                video_id=vid,
                source_path=f"{vid}.mp4",
                start_frame=100 * k,
                end_frame=100 * k + n,
                fps=24.0,
                width=192,
                height=108,
                deformation_score=spec.deformation,
                curriculum_stage=0,
            )
            with av.open(str(out / "clips" / f"{r.clip_id}.mp4"), "w") as c:
                s = c.add_stream("libx264", rate=Fraction(24))
                s.width, s.height, s.pix_fmt, s.options = 192, 108, "yuv420p", {"crf": "18", "preset": "ultrafast"}
                for f in frames:
                    for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                        c.mux(p)
                for p in s.encode():
                    c.mux(p)
            recs.append(r)
        write_part(out, vid, recs)
    build_manifest(out, load_config())
    return out
