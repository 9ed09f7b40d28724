"""CPU time per 1080p source frame of the per-clip analysis (issue 25): ClipCollector.add,
quality_flags and its parts, and the motion loop, on the same decoded frames.

    PYTHONPATH=TREE python benchmarks/analysis_cpu.py [--video V] [--frames 240] [--clip 60]

Run it with PYTHONPATH at two checkouts to compare them on the same frames. CPU time of the
whole process (time.process_time: OpenCV's pool included), OpenCV at its default thread count
as in the pipeline, OMP_NUM_THREADS=1 as in a Ray num_cpus=1 task. Each figure is the best of
--repeat runs (the machine is shared: the minimum is the least disturbed)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import av  # noqa: E402
import cv2  # noqa: E402

from annotators.signals import quality as q  # noqa: E402
from annotators.signals.frames import ClipCollector  # noqa: E402
from annotators.signals.motion import MotionAnalyser  # noqa: E402


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--video", default="/tmp/pks-profile/src/anime_77_000.mp4")
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--clip", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cv-threads", type=int, default=-1, help="cv2.setNumThreads (-1: OpenCV's default)")
    a = ap.parse_args()
    if a.cv_threads >= 0:
        cv2.setNumThreads(a.cv_threads)
    frames = []
    with av.open(a.video) as c:
        for f in c.decode(video=0):
            frames.append(f)
            if len(frames) >= a.frames:
                break
    n = len(frames)
    rows: dict[str, float] = {}

    def collect():
        clips = []
        for s in range(0, n, a.clip):
            cc = ClipCollector(192, fps=30.0)
            for f in frames[s : s + a.clip]:
                cc.add(f)
            clips.append(cc.frames())
        return clips

    rows["ClipCollector (add + frames)"] = best(collect, a.repeat)
    clips = collect()
    ys = [y for c in clips for y in (c.luma[k] for k in sorted(c.luma))]
    prev = ys[-1:] + ys[:-1]
    rows["  combing"] = best(lambda: [q.combing(y, b) for y, b in zip(ys, prev)], a.repeat)
    pics = [p for c in clips for p in q.inside_bars([c.luma[k] for k in sorted(c.luma)])]
    rows["  inside_bars"] = best(lambda: [q.inside_bars([c.luma[k] for k in sorted(c.luma)]) for c in clips], a.repeat)
    rows["  has_detail"] = best(lambda: [q.has_detail(y) for y in pics], a.repeat)
    rows["  grid_ratio"] = best(lambda: [q.grid_ratio(y) for y in pics], a.repeat)
    rows["  flat_block_steps"] = best(lambda: [q.flat_block_steps(y) for y in pics], a.repeat)
    ma = MotionAnalyser()
    results = [ma.run(c.rgb) for c in clips]
    rows["motion (MotionAnalyser.run, all)"] = best(lambda: [ma.run(c.rgb) for c in clips], a.repeat)

    def flags():
        return [
            q.quality_flags(c.rgb, c.luma, [p.changed for p in r.pairs], c.fps, None, 0, [p.flow_mag for p in r.pairs])
            for c, r in zip(clips, results)
        ]

    rows["quality_flags (all)"] = best(flags, a.repeat)
    print(
        f"{n} frames of {frames[0].width}x{frames[0].height}, clips of {a.clip}; best of {a.repeat}; cv2 threads {cv2.getNumThreads()}"
    )
    for k, v in rows.items():
        print(f"{k:40s} {v:7.3f} s {1000 * v / n:7.3f} ms/frame")
    print("flags:", [f for f, _ in flags()])
    print("stats:", [s for _, s in flags()][:2])


if __name__ == "__main__":
    main()
