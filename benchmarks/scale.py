"""Scale benchmark: one long video curated at decode speed, memory flat in video length.

    python benchmarks/scale.py --video SRC_1080P.mp4 [--copies 2] [--segment-s 30] [--work DIR]

SRC is a 1080p synthetic video (`pks synth OUT --videos 1 --size 1920x1080 --shots 30`; ~8 min
to render 2,500 frames here, so it is passed in, not made). The long video is SRC repeated
`--copies` times by remuxing (no re-encode: the same frames, keyframes and timestamps). In one
run it measures, on the cores Ray is given (2 unless --cpus):
  - PyAV decode of the long video on one thread (frames/s): the reference;
  - `pks curate` with clips.write false, end to end (source frames/s), on 1 core and on all
    (the run pinned to those cores, so decoder and OpenCV threads stay on them too);
  - the encode-only floor: the first 240 decoded frames encoded with the clips' encoder and
    preset on the same cores, and `pks curate` with clips written at full size;
  - peak memory of a 2-minute and a 20-minute video (a small synthetic 2-minute video, and
    that video remuxed 10 times), sampled every 0.1 s over the driver and every Ray process.
and prints a Markdown table with the ratios the issue asks for, and `uptime` (the load).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av  # noqa: E402
import psutil  # noqa: E402

from pks.config import load_config  # noqa: E402
from pks.jobconfig import JobConfig  # noqa: E402
from pks.videoio import Mp4Writer, pick_encoder  # noqa: E402


def remux_copies(src: Path, copies: int, dst: Path) -> Path:
    """`src` played `copies` times in one file, packets copied (timestamps shifted)."""
    if dst.exists():
        return dst
    with av.open(str(src)) as inp:
        s = inp.streams.video[0]
        pts = [p.pts for p in inp.demux(s) if p.size]
    step = round(1 / (float(s.average_rate) * float(s.time_base)))
    span = max(pts) - min(pts) + step
    tmp = dst.with_suffix(".tmp.mp4")
    with av.open(str(src)) as inp, av.open(str(tmp), "w") as out:
        s = inp.streams.video[0]
        o = out.add_stream_from_template(s)
        for k in range(copies):
            inp.seek(0)
            for p in inp.demux(s):
                if p.dts is None or not p.size:
                    continue
                p.pts += k * span
                p.dts += k * span
                p.stream = o
                out.mux(p)
    tmp.rename(dst)
    return dst


def decode_fps(path: Path) -> float:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type, s.codec_context.thread_count = "NONE", 1
        t0, n = time.perf_counter(), 0
        for _ in c.decode(s):
            n += 1
    return n / (time.perf_counter() - t0)


def encode_fps(path: Path, cfg: JobConfig, n: int = 240) -> float:
    """The clips' encoder alone on n decoded frames held in memory (decode not timed)."""
    with av.open(str(path)) as c:
        frames = []
        for f in c.decode(video=0):
            frames.append(f)
            if len(frames) == n:
                break
    cc = cfg.clips
    with tempfile.TemporaryDirectory() as d:
        w = Mp4Writer(
            Path(d) / "x.mp4",
            24,
            frames[0].width - frames[0].width % 2,
            frames[0].height - frames[0].height % 2,
            crf=cc.crf,
            preset=cc.preset,
            encoder=pick_encoder(cc.encoder),
            threads=cc.threads,
        )
        t0 = time.perf_counter()
        for f in frames:
            w.write_frame(f)
        w.close()
        return n / (time.perf_counter() - t0)


class PeakRss:
    """Peak summed RSS of this process and its descendants (Ray's raylet and workers), and the
    peak of the largest single process other than the driver."""

    def __init__(self):
        self.total = self.worker = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            rss = []
            for p in [me] + me.children(recursive=True):
                try:
                    rss.append(p.memory_info().rss)
                except psutil.Error:
                    pass
            self.total = max(self.total, sum(rss))
            self.worker = max([self.worker] + rss[1:])
            time.sleep(0.1)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def curate(
    video: Path, cfg: JobConfig, cpus: int, work: Path, tag: str, trace: dict | None = None
) -> tuple[float, PeakRss]:
    """`pks curate` of `video` alone, pinned to `cpus` cores: (source frames/s, peak memory).
    With `trace`, also the run's start and end (time.time()) and Ray's timeline events in it
    (benchmarks/curate_timeline.py)."""
    import ray

    from pipelines.curate import run

    src = work / f"in-{tag}"
    src.mkdir(exist_ok=True)
    link = src / video.name
    if not link.exists():
        link.symlink_to(video)
    out = Path(tempfile.mkdtemp(dir=work, prefix=f"out-{tag}-"))
    # Pinned to `cpus` cores, not only told so: Ray's num_cpus limits its tasks, but FFmpeg's
    # frame threads and OpenCV's pool of a "1-core" run spread over every core, which made the
    # 1 -> 2 core ratio measure threads instead of cores. Ray's raylet and workers inherit the
    # driver's affinity.
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(cores)[:cpus])
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        with PeakRss() as mem:
            t0 = time.time()
            s = run(str(src), out, cfg, progress=lambda m: None)
            t1 = time.time()
        if trace is not None:
            trace.update(t0=t0, t1=t1, events=ray.timeline())
    finally:
        ray.shutdown()
        os.sched_setaffinity(0, cores)
    subprocess.run(["rm", "-rf", str(out)])
    return s["source_frames_per_s"], mem


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, required=True, help="a 1080p source video")
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--segment-s", type=float, default=30.0)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pks-scale")
    ap.add_argument(
        "--parts",
        default="speed,one_core,write,rss",
        help="what to measure (comma list): speed (decode, write false), one_core, write, rss",
    )
    a = ap.parse_args()
    parts = set(filter(None, a.parts.split(",")))
    a.work.mkdir(parents=True, exist_ok=True)
    long = remux_copies(a.video, a.copies, a.work / f"long-{a.copies}x.mp4")
    base = {"shard.enabled": False, "split.segment_s": a.segment_s}
    nowrite = load_config(None, {**base, "clips.write": False})
    write = load_config(None, base)
    rows = []
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    if parts & {"speed", "one_core"}:
        dec = decode_fps(long)
        rows.append(("PyAV decode, 1 thread (frames/s)", f"{dec:.0f}", ""))
        fps2, _ = curate(long, nowrite, a.cpus, a.work, "nowrite")
        rows.append(
            (
                f"curate, clips.write false, {a.cpus} cores (source frames/s)",
                f"{fps2:.1f}",
                f"{fps2 / dec:.2f}x decode (target >= 0.5x, issue 25)",
            )
        )
    if "one_core" in parts:
        fps1, _ = curate(long, nowrite, 1, a.work, "nowrite1")
        rows.append(
            (
                "curate, clips.write false, 1 core, pinned (source frames/s)",
                f"{fps1:.1f}",
                f"{a.cpus} cores / 1 core = {fps2 / fps1:.2f}x (target >= 1.8x, issue 25)",
            )
        )
    if "write" in parts:
        enc = encode_fps(long, write)
        rows.append(
            (
                f"encode only, {pick_encoder(write.clips.encoder)} {write.clips.preset} (frames/s)",
                f"{enc:.1f}",
                "",
            )
        )
        fpsw, _ = curate(long, write, a.cpus, a.work, "write")
        rows.append(
            (
                f"curate, clips written full size, {a.cpus} cores (source frames/s)",
                f"{fpsw:.1f}",
                f"{fpsw / enc:.2f}x encode only (target >= 0.85x, issue 25)",
            )
        )
    if "rss" in parts:
        from pks.synth import synthesize_video

        short = a.work / "small-2min.mp4"
        if not short.exists():
            # 2 minutes at 24 fps: 48 shots of ~60 frames, small so it renders in minutes.
            synthesize_video(short, 2026, n_shots=48, size=(480, 270), fps="24", shot_frames=(55, 65))
        longer = remux_copies(short, 10, a.work / "small-20min.mp4")
        _, m2 = curate(short, write, a.cpus, a.work, "rss2")
        _, m20 = curate(longer, write, a.cpus, a.work, "rss20")
        mb = 1 << 20
        rows.append(
            (
                "peak RSS, 2-min 480x270 video: all processes / largest worker (MB)",
                f"{m2.total / mb:.0f} / {m2.worker / mb:.0f}",
                "",
            )
        )
        rows.append(
            (
                "peak RSS, 20-min 480x270 video: all processes / largest worker (MB)",
                f"{m20.total / mb:.0f} / {m20.worker / mb:.0f}",
                f"{m20.total / m2.total:.2f}x / {m20.worker / m2.worker:.2f}x the 2-min (target <= 1.2x)",
            )
        )
    with av.open(str(long)) as c:
        s = c.streams.video[0]
        what = f"{s.codec_context.width}x{s.codec_context.height}, {s.frames} frames"
    print(
        f"\nLong video: {long.name} ({what}; {a.copies} remuxed copies of {a.video.name}), "
        f"split.segment_s {a.segment_s}, {a.cpus} cores"
    )
    print(f"Load before: {load_before}")
    print(f"Load after:  {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}\n")
    print("| measure | value | ratio |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


if __name__ == "__main__":
    main()
