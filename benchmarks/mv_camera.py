"""Camera tags from the bitstream's motion vectors beside today's flow analyser (issue 25 item 2).

    python benchmarks/mv_camera.py [--videos 3] [--seed 7401] [--size 640x360] [--families cel,painted,limited]

Seeds 7400-7409 are used by nothing else in the repository: family k of (cel, painted, limited)
is synthesised from seed `--seed + k`. Each clean true shot without its transition frames (as
benchmarks/analysis.py) is read both ways, in one run:

- flow: today's analyser (MotionAnalyser on the analysis frames, then summarise's camera tags);
- vectors: annotators/signals/mvcamera.py, P-frame motion vectors of the same decode, fitted
  and tagged by the same camera_tags and thresholds.

Camera tag accuracy is the single true tag exactly, as in analysis.py. CPU per source frame
(process time, all threads): the flow analyser's run + summarise; for the vectors, what
exporting them adds to the decode (a decode with `export_mvs` less one without) and reading
and fitting them. A third column keeps the vectors' tags but takes the flow's where the vectors
disagree (see `disagree`): the fallback issue 25 proposes. limited is held out: evaluation
only, nothing is tuned on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import av

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from analysis import shot_spans  # noqa: E402
from annotators.signals import load_clip, params  # noqa: E402
from annotators.signals.motion import MotionAnalyser, MotionParams, summarise  # noqa: E402
from annotators.signals.mvcamera import MV_OPTIONS, MvCollector, mv_camera, stream_step  # noqa: E402
from pks.config import load_config  # noqa: E402
from pks.synth import synthesize  # noqa: E402
from pks.synth.processes import reencode  # noqa: E402
from report import emit  # noqa: E402

FAMILIES = ("cel", "painted", "limited")


def decode_cpu(path: Path, options: dict | None) -> tuple[float, int]:
    """Process seconds and frames of a full decode (frames not converted), with `options`."""
    t0 = time.process_time()
    n = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        if options:
            s.codec_context.options = dict(options)
        for _ in c.decode(s):
            n += 1
    return time.process_time() - t0, n


def vectors(path: Path, spans: list[tuple[int, int]], mp: MotionParams, video) -> tuple[list, float]:
    """A collector per span from one decode with vectors exported, and the process seconds spent
    in the collectors (reading side data, texture, fit). Texture is read on the analysis frames
    (`video`, as the pipeline's one decode makes them), not shrunk again."""
    width = video.rgb.shape[2]
    cols = [MvCollector(mp, width) for _ in spans]
    spent = 0.0
    with av.open(str(path)) as c:
        s = c.streams.video[0]  # decoded on this thread: decoder threads would run on inside the timed fits
        s.codec_context.options = dict(MV_OPTIONS)
        step = stream_step(s)
        for i, frame in enumerate(c.decode(s)):
            t0 = time.process_time()
            for col, (a, b) in zip(cols, spans):
                if a <= i < b:
                    col.add(frame, step, video.rgb[i] if i < len(video.rgb) else None)
            spent += time.process_time() - t0
    return cols, spent


def coded(p: Path, truth: dict, preset: str | None) -> Path:
    """The file both estimates read: the synthesised video, or (with an x264 `preset`) a re-encode
    of it at the same quality. Slower presets use several reference frames (ref 3 at medium, 5 at
    slow) and adaptive B-frames, as broadcast and disc encodes do: a P-frame block may then
    predict from an older anchor than the one the vectors are assumed to come from."""
    if not preset:
        return p
    out = p.with_name(f"{p.stem}.{preset}.mp4")
    if not out.exists():
        reencode(p, out, crf=truth["crf"], preset=preset)
    return out


def measure(family: str, paths: list[Path], cfg, preset: str | None = None) -> dict:
    mp = params(MotionParams, cfg.analyse.motion)
    cam = {f: getattr(cfg.analyse.camera, f) for f in cfg.analyse.camera.__dataclass_fields__}
    rows = []
    flow_cpu = mv_cpu = plain = export = 0.0
    frames = decoded = 0
    for p in paths:
        truth = json.loads(p.with_suffix(".json").read_text())
        shots = [(sh, s, e) for sh, s, e in shot_spans(truth) if not sh["failures"]]
        p = coded(p, truth, preset)
        video = load_clip(str(p), width=cfg.analyse.width, fps=truth["fps"])
        cols, spent = vectors(p, [(s, e) for _, s, e in shots], mp, video)
        mv_cpu += spent
        t_plain, n = decode_cpu(p, None)
        t_export, _ = decode_cpu(p, MV_OPTIONS)
        plain, export, decoded = plain + t_plain, export + t_export, decoded + n
        for (sh, s, e), col in zip(shots, cols):
            t0 = time.process_time()
            res = MotionAnalyser(mp).run(video.span(s, e).rgb)
            flow_tags = summarise(res, mp, cam)["camera_motion"]
            flow_cpu += time.process_time() - t0
            frames += e - s
            mv_tags, stats = mv_camera(col.fits, cam)
            rows.append({"truth": sh["camera"], "flow": flow_tags, "mv": mv_tags, "stats": stats})
    return {
        "rows": rows,
        "frames": frames,
        "flow_ms": 1000 * flow_cpu / max(1, frames),
        "fit_ms": 1000 * mv_cpu / max(1, frames),
        "export_ms": 1000 * (export - plain) / max(1, decoded),
        "decode_ms": 1000 * plain / max(1, decoded),
    }


def disagree(row) -> bool:
    """The vectors disagree: no P-frame fitted, or the fitted camera explains under half of the
    textured blocks in the typical P-frame (then most vectors are not the camera's move)."""
    return row["stats"].get("p_frames", 0) == 0 or row["stats"]["inliers"] < 0.5


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=3, help="per family")
    ap.add_argument("--seed", type=int, default=7401, help="cel; painted +1, limited +2")
    ap.add_argument("--size", default="640x360", help="synthesised frame size WxH")
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--work", default=None, help="footage folder (kept; a rerun reuses its videos)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--preset", default=None, help="re-encode each video with this x264 preset first (e.g. slow)")
    ap.add_argument("--misses", action="store_true", help="also list each shot either estimate got wrong")
    args = ap.parse_args()
    cfg = load_config()
    size = tuple(int(x) for x in args.size.split("x"))
    work = Path(args.work or tempfile.mkdtemp(prefix="pks-bench-mv-"))
    lines = [
        f"{args.videos} videos per family at {size[0]}x{size[1]}, seeds {args.seed}/{args.seed + 1}/{args.seed + 2} "
        "(cel/painted/limited; 7400-7409 are used nowhere else), clean true shots; analysis width "
        f"{cfg.analyse.width}; coded by x264 {args.preset or 'veryfast (as synthesised)'}; CPU is process time "
        "per source frame (ms)",
        "",
        "| family | shots (moving) | camera accuracy, flow | camera accuracy, vectors | both right | "
        "vectors, flow where they disagree (shots sent to flow) | "
        "flow ms/frame | vectors ms/frame (export + fit) | decode ms/frame |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    misses = []
    for family in args.families.split(","):
        seed = args.seed + FAMILIES.index(family)
        folder = work / f"{family}_{args.size}"
        have = sorted(p for p in folder.glob("*.mp4") if "." not in p.stem and p.with_suffix(".json").exists())
        paths = (
            have[: args.videos]
            if len(have) >= args.videos
            else synthesize(folder, args.videos, seed=seed, size=size, family=family)
        )
        m = measure(family, paths, cfg, args.preset)
        rows = m["rows"]
        n = len(rows)
        moving = sum(r["truth"] != "static" for r in rows)
        flow = sum(r["flow"] == [r["truth"]] for r in rows)
        mv = sum(r["mv"] == [r["truth"]] for r in rows)
        both = sum(r["flow"] == [r["truth"]] == r["mv"] for r in rows)
        sent = [disagree(r) for r in rows]
        hybrid = sum((r["flow"] if d else r["mv"]) == [r["truth"]] for r, d in zip(rows, sent))
        held = " (held out)" if family == "limited" else ""
        lines.append(
            f"| {family}{held} | {n} ({moving}) | {flow / n:.3f} ({flow}/{n}) | {mv / n:.3f} ({mv}/{n}) | {both} | "
            f"{hybrid / n:.3f} ({sum(sent)}) | "
            f"{m['flow_ms']:.2f} | {m['export_ms'] + m['fit_ms']:.2f} ({m['export_ms']:.2f} + {m['fit_ms']:.2f}) | "
            f"{m['decode_ms']:.2f} |"
        )
        wrong = Counter((r["truth"], "+".join(r["mv"])) for r in rows if r["mv"] != [r["truth"]])
        misses.append(f"{family}: vectors wrong " + ", ".join(f"{t}->{g} x{c}" for (t, g), c in sorted(wrong.items())))
        wrong = Counter((r["truth"], "+".join(r["flow"])) for r in rows if r["flow"] != [r["truth"]])
        misses.append(f"{family}: flow wrong " + ", ".join(f"{t}->{g} x{c}" for (t, g), c in sorted(wrong.items())))
        if args.misses:
            for r in rows:
                if r["mv"] != [r["truth"]] or r["flow"] != [r["truth"]]:
                    print(family, r, file=sys.stderr)
    emit(lines + [""] + [f"- {x}" for x in misses], args.out)


if __name__ == "__main__":
    main()
