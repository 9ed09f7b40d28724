"""Clip-analysis benchmark against synthetic ground truth, beside the flow-magnitude baseline.

    python benchmarks/analysis.py [--videos 16] [--seed 2027] [--family cel|painted|limited]

Each true shot of each synthetic video (transition frames left out) is analysed as a clip.
Reports Spearman rank correlation of deformation_score with the true deformation level (over
clean shots, and over clean shots with a moving camera) next to the usual flow-magnitude
"motion score" computed from the same flow; camera tag accuracy (the single true tag exactly);
cadence exact; damaged shots flagged; clean shots flagged (with a defect flag: the format flags
letterbox/pillarbox and near_black are not defects and are scored against the matte instead);
clean shots with speed lines flagged, and their camera accuracy; and source frames per second of the
whole analysis (decode included: each video decoded once, as `pks curate` decodes each clip once).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from annotators.signals import analyse, load_clip  # noqa: E402
from pks.config import load_config  # noqa: E402
from pks.record import DEFECT_FLAGS  # noqa: E402
from pks.synth import synthesize  # noqa: E402
from report import emit  # noqa: E402

DEFECTS = set(DEFECT_FLAGS)  # what no animator draws


def shot_spans(truth: dict):
    by_frame = {b["frame"]: b for b in truth["boundaries"]}
    for sh in truth["shots"]:
        s, e = sh["start_frame"], sh["end_frame"]
        if s in by_frame:
            s = max(s, by_frame[s]["span"][1])
        if e in by_frame:
            e = min(e, by_frame[e]["span"][0])
        if e - s >= 12:  # damage that fell on transition frames only is not in the clip
            yield {**sh, "failures": [f for f in sh["failures"] if any(s <= x < e for x in f["frames"])]}, s, e


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--seed", type=int, default=2027)
    ap.add_argument("--family", default="cel", help="footage family: cel | painted | limited (evaluation only)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--dump", default=None, help="also write every shot's truth and result (JSON lines) here")
    args = ap.parse_args()
    cfg = load_config()
    work = Path(tempfile.mkdtemp(prefix="pks-bench-analysis-"))
    paths = synthesize(work, args.videos, seed=args.seed, size=(640, 360), family=args.family)
    rows, frames, seconds = [], 0, 0.0
    for p in paths:
        truth = json.loads(p.with_suffix(".json").read_text())
        t0 = time.perf_counter()
        video = load_clip(str(p), width=cfg.analyse.width, fps=truth["fps"])  # one decode, as curate does
        seconds += time.perf_counter() - t0
        for sh, s, e in shot_spans(truth):
            t0 = time.perf_counter()
            out = analyse(video.span(s, e), cfg.analyse, cfg.curriculum)
            seconds += time.perf_counter() - t0
            frames += e - s
            rows.append((sh, out, json.loads(out["signals"])["flow_magnitude"], truth.get("matte", "none")))
    if args.dump:
        with open(args.dump, "w") as f:
            for sh, out, _, matte in rows:
                f.write(
                    json.dumps(
                        {
                            "truth": sh,
                            "matte": matte,
                            **{
                                k: out[k]
                                for k in ("camera_motion", "quality_flags", "cadence", "deformation_score", "signals")
                            },
                        }
                    )
                    + "\n"
                )
    clean = [r for r in rows if not r[0]["failures"]]
    moving = [r for r in clean if r[0]["camera"] != "static"]
    damaged = [r for r in rows if r[0]["failures"]]

    def rho(sel, key):
        true = [r[0]["deformation"] for r in sel]
        got = [r[1]["deformation_score"] if key == "pks" else r[2] for r in sel]
        return spearmanr(true, got)[0]

    cam = np.mean([r[1]["camera_motion"] == [r[0]["camera"]] for r in clean])
    cad = np.mean([round(r[1]["cadence"]) == r[0]["cadence"] for r in clean])

    def defect(r):
        return bool(set(r[1]["quality_flags"]) & DEFECTS)

    dmg = np.mean([defect(r) for r in damaged]) if damaged else float("nan")
    fp = np.mean([defect(r) for r in clean])
    lined = [r for r in clean if "speed_lines" in r[0]["vfx"]]
    matte = np.mean([({"letterbox", "pillarbox"} & set(r[1]["quality_flags"])) == ({r[3]} - {"none"}) for r in rows])
    per_kind = {}
    for r in damaged:
        k = r[0]["failures"][0]["kind"]
        per_kind.setdefault(k, []).append(defect(r))
    flagged = sorted({f for r in clean for f in r[1]["quality_flags"] if f in DEFECTS})
    lines = [
        f"{len(paths)} {args.family} videos (seed {args.seed}), 640x360, {len(rows)} shots ({len(clean)} clean, "
        f"{len(moving)} of them with a moving camera, {len(damaged)} damaged), {frames} frames",
        "",
        "| measure | PKS | flow-magnitude baseline | target |",
        "|---|---|---|---|",
        f"| Spearman deformation, clean shots | {rho(clean, 'pks'):.3f} | {rho(clean, 'flow'):.3f} | >= 0.85 |",
        f"| Spearman deformation, moving camera | {rho(moving, 'pks'):.3f} | {rho(moving, 'flow'):.3f} | >= 0.8 |",
        f"| camera tag accuracy | {cam:.3f} | - | >= 0.95 |",
        f"| cadence exact | {cad:.3f} | - | >= 0.9 |",
        f"| damaged shots flagged | {dmg:.3f} ({', '.join(f'{k} {sum(v)}/{len(v)}' for k, v in sorted(per_kind.items()))}) | - | >= 0.9 |",
        f"| clean shots flagged ({', '.join(flagged) or 'none'}) | {fp:.3f} | - | <= 0.02 |",
        f"| clean shots with speed lines flagged | {np.mean([defect(r) for r in lined]) if lined else float('nan'):.3f} "
        f"({len(lined)} shots) | - | 0 |",
        f"| camera tag accuracy, shots with speed lines | "
        f"{np.mean([r[1]['camera_motion'] == [r[0]['camera']] for r in lined]) if lined else float('nan'):.3f} | - | >= 0.95 |",
        f"| letterbox/pillarbox flags match the master | {matte:.3f} | - | 1.0 |",
        f"| source frames per second | {frames / seconds:.0f} | - | >= 300 |",
    ]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
