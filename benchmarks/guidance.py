"""Camera adherence of one trained run under other tag-guidance scales and sampler steps.

    python benchmarks/guidance.py RUN [--grid 1:30,3:30,6:30,10:30,3:10,3:60,3:30:0.3-1] [--seeds 700,701]

For each (guidance_tags, steps[, guidance interval lo-hi]) of the grid: 5 camera tags x 4
curriculum stages x the seeds, each sample measured by `annotators.signals.analyse` as in
benchmarks/train.py (adherence: the requested tag among the measured camera tags; flagged: any
quality flag; flicker: mean absolute change between frames; drift and jitter: the camera
analyser's median per-frame translation along the requested move and its frame-to-frame jitter,
in frame widths, medians over the pan and tilt samples: a move reads as shake when jitter > drift).
Run it on a run of the tuning footage only: a scale chosen here and reported on the benchmark's
seed would be tuned on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train import CAMERA, flicker, measure, move_reading  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--grid", default="1:30,3:30,6:30,10:30,3:10,3:60", help="guidance_tags:steps, comma-separated")
    ap.add_argument("--seeds", default="700,701")
    args = ap.parse_args()
    import torch

    from pks.config import load_config
    from training.sample import load_run, sample

    torch.set_num_threads(1)
    acfg = load_config()
    cfg, tax, model, text, space, _ = load_run(Path(args.run))
    work = Path(tempfile.mkdtemp(prefix="pks-guidance-"))
    seeds = [int(s) for s in args.seeds.split(",")]
    n = 4 * len(seeds)  # samples per asked tag
    for item in args.grid.split(","):
        parts = item.split(":")
        g, steps = float(parts[0]), int(parts[1])
        interval = tuple(float(x) for x in parts[2].split("-")) if len(parts) > 2 else None
        per = {c: [] for c in CAMERA}
        read_as = {c: Counter() for c in CAMERA}  # asked tag -> what the analyser read, e.g. "shake" or "static"
        flags, jumps, drift, jitter = [], [], [], []
        along = {c: [] for c in CAMERA[1:]}  # every sample's drift along each move, + that move's way
        for cam in CAMERA:
            for stage in range(4):
                for seed in seeds:
                    video = sample(
                        model,
                        text,
                        space,
                        cfg,
                        {"camera": [cam]},
                        "",
                        None,
                        stage,
                        seed,
                        steps=steps,
                        guidance_tags=g,
                        tax=tax,
                        guidance_interval=interval,
                    )
                    frames = video.permute(0, 2, 3, 1).numpy()
                    got = measure(frames, cfg.data.fps, work / "g.mp4", acfg)
                    per[cam].append(cam in got["camera_motion"])
                    read_as[cam]["+".join(got["camera_motion"]) or "-"] += 1
                    flags.append(bool(got["quality_flags"]))
                    jumps.append(flicker(frames))
                    reading = {move: move_reading(got, move) for move in along}  # (drift that way, jitter)
                    for move, (d, _) in reading.items():
                        along[move].append(d)
                    if cam != "static":
                        drift.append(reading[cam][0])
                        jitter.append(reading[cam][1])
        print(
            json.dumps(
                {
                    "guidance_tags": g,
                    "steps": steps,
                    "interval": interval,
                    "adherence": float(np.mean([h for v in per.values() for h in v])),
                    "per_tag": {c: float(np.mean(v)) for c, v in per.items()},
                    "read_as": {c: dict(v.most_common()) for c, v in read_as.items()},
                    "flagged": float(np.mean(flags)),
                    "flicker": float(np.mean(jumps)),
                    "drift": float(np.median(drift)),
                    "jitter": float(np.median(jitter)),
                    # asked tag -> move -> median drift that way: the tag's control of the motion
                    "drift_by_tag": {
                        c: {m: round(float(np.median(v[k * n : (k + 1) * n])), 5) for m, v in along.items()}
                        for k, c in enumerate(CAMERA)
                    },
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
