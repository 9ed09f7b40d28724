"""The analyser's missed-cut check (`multi_shot`) on both sides: one-shot clips it must pass,
two-shot clips it must flag.

    python benchmarks/missed_cuts.py [--families cel,painted,limited] [--seed 7740] [--videos 6]
                                     [--set analyse.motion.cut_ratio=3 ...]

Family k is synthesised from `--seed + k` at 320x180. One-shot clips: every clean true shot
without its transition frames (as benchmarks/analysis.py cuts them). Two-shot clips: the last
24 frames of a clean shot and the first 24 of the next across a hard cut, as a clip holds them
when the shot detector misses that cut. Truth is the synthesiser's shot list, never the
analyser. Prints, per family, one-shot clips flagged `multi_shot` (false alarms; speed-line
shots apart) and two-shot clips flagged (missed cuts caught).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from analysis import shot_spans  # noqa: E402
from report import emit  # noqa: E402

FAMILIES = ("cel", "painted", "limited")
SIDE = 24  # frames either side of the cut in a two-shot clip (2 s at 12 fps, 1 s at 24)


def rows_of(path: Path, cfg) -> list[dict]:
    from annotators.signals import analyse, load_clip

    truth = json.loads(path.with_suffix(".json").read_text())
    video = load_clip(str(path), width=cfg.analyse.width, fps=truth["fps"])
    spans = list(shot_spans(truth))
    cut_at = {b["frame"] for b in truth["boundaries"] if b["type"] == "cut"}
    rows = []
    for sh, s, e in spans:
        if not sh["failures"]:
            out = analyse(video.span(s, e), cfg.analyse, cfg.curriculum)
            rows.append(
                {"kind": "one", "lines": "speed_lines" in sh["vfx"], "flagged": "multi_shot" in out["quality_flags"]}
            )
    for (a, s1, e1), (b, s2, e2) in zip(spans, spans[1:]):
        if a["failures"] or b["failures"] or b["start_frame"] not in cut_at:
            continue
        out = analyse(video.span(max(s1, e1 - SIDE), min(e2, s2 + SIDE)), cfg.analyse, cfg.curriculum)
        lines = "speed_lines" in a["vfx"] + b["vfx"]
        rows.append({"kind": "two", "lines": lines, "flagged": "multi_shot" in out["quality_flags"]})
    return rows


def share(rows: list[dict], kind: str, lines: bool | None = None) -> str:
    sel = [r for r in rows if r["kind"] == kind and (lines is None or r["lines"] == lines)]
    return f"{sum(r['flagged'] for r in sel)}/{len(sel)}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--seed", type=int, default=7740)
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--set", action="append", default=[], help="job config override KEY=VALUE (value read as YAML)")
    ap.add_argument("--work", default="/tmp/pks-missed-cuts")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from pks.config import load_config
    from pks.synth import synthesize

    overrides = {k: yaml.safe_load(v) for k, _, v in (s.partition("=") for s in args.set)}
    cfg = load_config(overrides=overrides)
    lines = [
        f"seed {args.seed} + k, {args.videos} videos per family, 320x180; overrides: {overrides or 'none'}",
        "",
        "| family | one-shot clips flagged | ... with speed lines | two-shot clips flagged | ... with speed lines |",
        "|---|---|---|---|---|",
    ]
    for k, family in enumerate(args.families.split(",")):
        paths = synthesize(Path(args.work) / family, args.videos, seed=args.seed + k, size=(320, 180), family=family)
        rows = [r for p in paths for r in rows_of(p, cfg)]
        cells = [share(rows, "one"), share(rows, "one", True), share(rows, "two"), share(rows, "two", True)]
        lines.append(f"| {family} | {' | '.join(cells)} |")
    emit(lines, args.out)


if __name__ == "__main__":
    main()
