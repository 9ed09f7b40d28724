"""Where a 1080p curate spends its CPU time, per stage and per source frame (issue 25, item 1).

    python benchmarks/profile_curate.py [--copies 3] [--work /tmp/pks-profile] [--top 25]

The input is the issue's: the 1080p synth of seed 77 (`pks synth --seed 77 --size 1920x1080
--shots 30`, about 8 minutes to render here, so it is cached in --work) played --copies times
in one file, packets copied (benchmarks/scale.py's remux_copies).

Measured in one run:
  - the anchor: PyAV decode of that file on one thread, frames per wall second and per CPU
    second;
  - the curate job, default config with clips.write false, run in this one process without
    Ray: pipelines.curate.plan, then pipelines.segments.run_videos with its Ray pool replaced by
    its in-process pool (the very work_task calls the Ray tasks make: plan, each segment, each
    group), then build_manifest, as pipelines.curate.run calls them. Nothing in the
    pipeline is changed; the stages are read off cProfile's cumulative times.

CPU time, not wall time, because the machine may be shared. cProfile runs on the main thread's
CPU clock (time.thread_time); the CPU of the process's other threads (FFmpeg's frame threads,
OpenCV's pool) is measured per job, as process CPU less main-thread CPU, and shown as its own
rows. OMP_NUM_THREADS is 1, as Ray gives a num_cpus=1 task. cProfile's own overhead (a few
percent on many small calls) is in the figures; Ray's (start-up, serialisation, scheduling)
is not.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # as in a Ray worker running a num_cpus=1 task

import argparse  # noqa: E402
import cProfile  # noqa: E402
import pstats  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import av  # noqa: E402

from benchmarks.scale import remux_copies  # noqa: E402
from pipelines import segments  # noqa: E402
from pipelines.curate import plan  # noqa: E402
from pipelines.parts import build_manifest  # noqa: E402
from pks.config import load_config  # noqa: E402
from pks.store import as_store  # noqa: E402
from pks.synth import synthesize  # noqa: E402

HELPERS: dict[str, float] = defaultdict(float)  # job kind -> CPU s of threads other than the main one


def source(work: Path, copies: int) -> Path:
    """The issue's input: the 1080p synth of seed 77, `copies` times in one file."""
    src = work / "src" / "anime_77_000.mp4"
    if not src.exists():
        synthesize(src.parent, 1, seed=77, n_shots=30, size=(1920, 1080))
    return remux_copies(src, copies, work / f"long-{copies}x.mp4")


def decode_anchor(path: Path) -> tuple[int, float, float]:
    """(frames, wall s, CPU s) of a single-threaded PyAV decode of every frame."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type, s.codec_context.thread_count = "NONE", 1
        t0, c0, n = time.perf_counter(), time.process_time(), 0
        for _ in c.decode(s):
            n += 1
    return n, time.perf_counter() - t0, time.process_time() - c0


class Sequential(segments.InProcess):
    """pipelines.segments' jobs without Ray: the same functions on the same jobs, one after
    another in this process; each job's CPU outside the main thread is added to HELPERS."""

    def call(self, job: dict) -> dict:
        c0, t0 = time.process_time(), time.thread_time()
        result = super().call(job)
        HELPERS[job["kind"]] += (time.process_time() - c0) - (time.thread_time() - t0)
        return result


def curate_profiled(video: Path, out_dir: Path, cfg: dict) -> tuple[pstats.Stats, dict]:
    out = as_store(out_dir)
    (out_dir / "parts").mkdir(parents=True, exist_ok=True)
    (out_dir / "clips").mkdir(exist_ok=True)
    prof = cProfile.Profile(time.thread_time)
    c0, t0, w0 = time.process_time(), time.thread_time(), time.perf_counter()
    prof.enable()
    todo, _ = plan([str(video)], out)
    summaries = list(segments.run_videos(todo, out, cfg, Sequential(out, cfg)))  # Ray's pool swapped
    counts = build_manifest(out, cfg)
    prof.disable()
    totals = {
        "process_cpu": time.process_time() - c0,
        "main_cpu": time.thread_time() - t0,
        "wall": time.perf_counter() - w0,
        "clips_ok": counts["ok"],
        "records": sum(counts.values()),
        "segments": sum(s.get("segments") or 0 for s in summaries),
    }
    return pstats.Stats(prof), totals


class Table:
    """Cumulative CPU of functions in a pstats table, found by (file suffix, function name)."""

    def __init__(self, stats: pstats.Stats):
        self.raw = stats.stats  # {(file, line, name): (calls, primitive calls, own s, cumulative s, callers)}

    def key(self, file: str, name: str):
        hits = [k for k in self.raw if k[0].endswith(file) and k[2] == name]
        if len(hits) > 1:
            raise LookupError(f"{file}:{name} names {len(hits)} profiled functions")
        return hits[0] if hits else None  # (None: not called in this run)

    def ct(self, file: str, name: str) -> float:
        k = self.key(file, name)
        return self.raw[k][3] if k else 0.0

    def ct_from(self, callee: tuple[str, str], caller: tuple[str, str]) -> float:
        """Cumulative time of `callee` when called by `caller` (a C function: file "~", its name
        as cProfile writes it, e.g. "<warpAffine>" for cv2.warpAffine)."""
        ck = self.key(*caller)
        total = 0.0
        for k, v in self.raw.items():
            if k[0].endswith(callee[0]) and k[2] == callee[1] and ck in v[4]:
                total += v[4][ck][3]
        return total


def cv(name: str) -> tuple[str, str]:
    """An OpenCV function's key, as cProfile names it."""
    return ("~", f"<{name}>")


def stage_rows(t: Table, totals: dict) -> list[tuple[str, float]]:
    SEG, VID, CW, SIG = "pipelines/segments.py", "pipelines/video.py", "pipelines/clipwork.py", "annotators/signals/"
    run = (SIG + "motion.py", "run")
    in_run = {  # what the per-pair loop of MotionAnalyser.run calls, by the signal it serves
        "camera": ["medianBlur", "cvtColor", "Sobel", "estimateAffinePartial2D"],
        "timing": ["warpAffine", "GaussianBlur", "morphologyEx"],
        "deformation": ["dilate"],
    }
    dis = sum(v[3] for k, v in t.raw.items() if k[0] == "~" and "calc" in k[2] and t.key(*run) in v[4])
    part = {s: sum(t.ct_from(cv(n), run) for n in names) for s, names in in_run.items()}
    deform = t.ct(SIG + "motion.py", "_deformation") + part["deformation"]
    box = t.ct(SIG + "frames.py", "picture_box")
    motion_rest = t.ct(*run) - dis - part["camera"] - part["timing"] - deform - box
    detect = t.ct("annotators/shots/anime.py", "detect")
    seg = t.ct(SEG, "detect_segment")
    seg_decode = t.ct_from(("pks/seek.py", "iter_range"), (SEG, "detect_segment"))
    small = t.ct("pks/decode.py", "_small_yuv")
    grp_decode = t.ct_from(("pks/seek.py", "iter_range"), (CW, "_decode_pass"))
    collect = t.ct(SIG + "frames.py", "add") + t.ct(SIG + "frames.py", "frames")
    analyse = t.ct(SIG + "__init__.py", "analyse")
    summarise = t.ct(SIG + "motion.py", "summarise")
    quality = t.ct(SIG + "quality.py", "quality_flags")
    phash = t.ct(SIG + "dedupe.py", "signature")
    embed = t.ct(SIG + "embed.py", "embed")
    analyse_rest = analyse - t.ct(*run) - summarise - quality - phash
    group = t.ct(VID, "clip_stages")
    group_rest = group - grp_decode - collect - analyse - embed
    plan_task = t.ct(SEG, "plan_task")
    curate_plan = t.ct("pipelines/curate.py", "plan")
    manifest = t.ct("pipelines/parts.py", "build_manifest")
    dupes = t.ct("pipelines/parts.py", "duplicates")
    grouping = sum(t.ct(SEG, n) for n in ("merge_segments", "group_records")) + t.ct(VID, "clip_records")
    write_part = t.ct("pipelines/parts.py", "write_part")
    main = totals["main_cpu"]
    named = [
        ("hash the input, skip check (curate.plan)", curate_plan),
        ("probe + plan segments (plan_task: probe, frame grid)", plan_task),
        ("shot detection: seek + fast decode, main thread (iter_range)", seg_decode),
        ("shot detection: frames to detector size (_small_yuv)", small),
        ("shot detection: detector model (AnimeDetector.detect)", detect),
        ("shot detection: rest (YUV->RGB, stacking)", seg - seg_decode - small - detect),
        ("group span decode, main thread (iter_range)", grp_decode),
        ("analysis frames: 1080p planes -> 192 px, luma kept (ClipCollector)", collect),
        ("camera/motion: DIS flow", dis),
        ("camera/motion: despeckle, gray, Sobel texture, affine fit", part["camera"]),
        ("camera/motion: letterbox box (picture_box)", box),
        ("timing (held drawings): warp, blur, open", part["timing"]),
        ("deformation: region, RANSAC pieces", deform),
        ("motion loop: numpy between those calls (diff + threshold, flow magnitude, texture mask)", motion_rest),
        ("timing + camera summaries (cadence, smears, impacts, tags)", summarise),
        ("quality/damage checks (quality_flags)", quality),
        ("phash signature (dedupe)", phash),
        ("analyse: rest (params, curriculum stage, JSON)", analyse_rest),
        ("embedding (OpenCLIP; off without a checkpoint)", embed),
        ("group pass: rest (captions from the signals, clip_pass bookkeeping)", group_rest),
        ("grouping (merge segments, clip records, groups)", grouping),
        ("write the part", write_part),
        ("manifest: duplicate search (hashes; embeddings if any)", dupes),
        ("manifest: rest (read parts, write manifest)", manifest - dupes),
    ]
    named.append(("driver/job glue not named above (JSON rows, records)", main - sum(v for _, v in named)))
    named += [
        ("other threads during plan (probe)", HELPERS["plan"]),
        ("other threads during shot detection (FFmpeg frame threads, OpenCV)", HELPERS["segment"]),
        ("other threads during group passes (FFmpeg frame threads, OpenCV)", HELPERS["group"]),
        (
            "other threads elsewhere (hash, manifest, whole-video jobs)",
            totals["process_cpu"] - main - HELPERS["plan"] - HELPERS["segment"] - HELPERS["group"],
        ),
    ]
    return named


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "pks-profile")
    ap.add_argument("--top", type=int, default=25, help="also print the top functions by own CPU time")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    video = source(a.work, a.copies)
    load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    n, dec_wall, dec_cpu = decode_anchor(video)
    cfg = load_config(None, {"clips.write": False})
    out_dir = Path(tempfile.mkdtemp(dir=a.work, prefix="out-"))
    try:
        stats, totals = curate_profiled(video, out_dir, cfg)
    finally:
        subprocess.run(["rm", "-rf", str(out_dir)])
    load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows = stage_rows(Table(stats), totals)
    total = totals["process_cpu"]
    with av.open(str(video)) as c:
        s = c.streams.video[0]
        what = f"{s.codec_context.width}x{s.codec_context.height}, {n} frames, {float(s.average_rate):.3f} fps"
    print(f"\nVideo: {video.name} ({what}; {a.copies} remuxed copies of the seed-77 synth)")
    print(f"Curate: default config, clips.write false; {totals['segments']} segments, {totals['records']} records")
    print(f"({totals['clips_ok']} ok); one process, no Ray, cProfile on; CPU seconds (the machine may be shared)")
    print(f"Load before: {load_before}\nLoad after:  {load_after}\n")
    print("| stage | CPU s | ms / source frame | share |\n|---|---:|---:|---:|")
    for name, sec in rows:
        print(f"| {name} | {sec:.1f} | {1000 * sec / n:.2f} | {100 * sec / total:.1f}% |")
    print(f"| **total (process CPU)** | **{total:.1f}** | **{1000 * total / n:.2f}** | 100% |")
    print(f"| single-thread PyAV decode of the same file (anchor) | {dec_cpu:.1f} | {1000 * dec_cpu / n:.2f} | |")
    print(
        f"\nAnchor: {n / dec_cpu:.0f} frames per CPU second ({n / dec_wall:.0f} per wall second). "
        f"Curate: {n / total:.1f} source frames per CPU second, {total / dec_cpu:.1f}x the decode's CPU; "
        f"on 2 cores at best {2 * n / total:.0f} frames/s = {2 * dec_cpu / total:.2f}x single-thread decode "
        f"(wall here {totals['wall']:.0f} s, with cProfile, on a shared machine)."
    )
    if a.top:
        print(f"\nTop {a.top} functions by own CPU time (main thread):\n")
        stats.sort_stats("tottime").print_stats(a.top)


if __name__ == "__main__":
    main()
