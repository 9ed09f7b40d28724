"""Tag adherence of the bundled generator, judged by PKS's own analysers.

    python benchmarks/train.py [--videos 16] [--seed 2028] [--steps 1500] [--samples 2]

Synthesises footage (a seed used nowhere else), curates it with the `signals` captioner (camera
tags measured from the clips), trains the `tiny` config twice with the same steps and data:
the dual-channel model and the text-only ablation (tags folded into the narrative, the tag
channel left 'unknown'). Then generates clips for 5 camera tags x 4 curriculum stages x
--samples seeds with each, and measures every clip with `annotators.signals.analyse`:
camera adherence (the requested tag among the measured ones), Spearman of requested stage vs
measured deformation, impact frames found when requested. The ceiling is the same measure on
the training clips themselves, at the size and frame count the model sees.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import emit  # noqa: E402

CAMERA = ("static", "pan_left", "pan_right", "tilt_up", "tilt_down")


def pks(*args) -> str:
    r = subprocess.run([sys.executable, "-m", "pks.cli", *map(str, args)], capture_output=True, text=True, cwd=ROOT)
    if r.returncode:
        raise SystemExit(f"pks {' '.join(map(str, args))} failed:\n{r.stderr[-3000:]}")
    return r.stdout


def measure(frames: np.ndarray, fps: float, path: Path, cfg: dict) -> dict:
    """Write uint8 [T, H, W, 3] frames as an mp4 (as `pks generate` does) and analyse it."""
    from annotators.signals import analyse, load_clip
    from pks.videoio import Mp4Writer

    w = Mp4Writer(path, fps, frames.shape[2], frames.shape[1], crf=12)
    for f in frames:
        w.write(f)
    w.close()
    return analyse(load_clip(str(path), width=cfg["analyse"]["width"], fps=fps), cfg)


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(set(a)) > 1 and len(set(b)) > 1 else float("nan")


def ceiling(run: Path, tcfg: dict, cfg: dict, work: Path) -> dict:
    """The measure on training clips at the model's frames, fps and size, against their labels."""
    import pyarrow.parquet as pq
    import webdataset as wds

    from training.data import decode_clip

    dc = tcfg["data"]
    index = pq.read_table(run / "shards" / "index.parquet").to_pylist()
    hits, stages, deform = [], [], []
    for s in wds.WebDataset(sorted({str(run / "shards" / r["shard"]) for r in index}), shardshuffle=False,
                            empty_check=False):
        rec = json.loads(s["json"])
        label = [t for t in rec["camera_motion"] if t in CAMERA]
        if len(label) != 1:
            continue
        video, real = decode_clip(s["mp4"], rec["fps"], dc["frames"], dc["fps"], tuple(dc["size"]))
        if real < dc["frames"]:
            continue
        got = measure(video, dc["fps"], work / "ceiling.mp4", cfg)
        hits.append((label[0], label[0] in got["camera_motion"]))
        stages.append(rec["curriculum_stage"])
        deform.append(got["deformation_score"])
    return {"hits": hits, "spearman": spearman(stages, deform), "impact": None}


def generated(run_dir: Path, tcfg: dict, cfg: dict, samples: int, work: Path) -> dict:
    from training.sample import load_run, sample

    mcfg, tax, model, text, space, _ = load_run(run_dir)
    hits, stages, deform, impact = [], [], [], []
    for cam in CAMERA:
        for stage in range(4):
            for seed in range(samples):
                video = sample(model, text, space, mcfg, {"camera": [cam]}, "", None, stage, seed, tax=tax)
                got = measure(video.permute(0, 2, 3, 1).numpy(), mcfg["data"]["fps"], work / "gen.mp4", cfg)
                hits.append((cam, cam in got["camera_motion"]))
                stages.append(stage)
                deform.append(got["deformation_score"])
    for seed in range(samples * 2):  # impact frames asked for, and not
        for want in (True, False):
            tags = {"camera": ["static"], "vfx": ["impact_frame"] if want else []}
            video = sample(model, text, space, mcfg, tags, "", None, None, 100 + seed, tax=tax)
            got = measure(video.permute(0, 2, 3, 1).numpy(), mcfg["data"]["fps"], work / "gen.mp4", cfg)
            impact.append((want, got["impact_frames"] > 0))
    return {"hits": hits, "spearman": spearman(stages, deform), "impact": impact}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=16)
    ap.add_argument("--seed", type=int, default=2028)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=None, help="also write the table here")
    args = ap.parse_args()
    from pks.config import load_config
    from training.train import load_train_config

    cfg = load_config()
    tcfg = load_train_config("tiny")
    work = Path(args.work or tempfile.mkdtemp(prefix="pks-train-bench-"))
    t0 = time.perf_counter()
    if not (work / "run" / "shards" / "index.parquet").exists():
        pks("synth", work / "footage", "--videos", args.videos, "--seed", args.seed, "--size", "320x180")
        pks("curate", work / "footage", work / "run", "--captioner", "signals")
    prep = time.perf_counter() - t0
    results, times, loss = {}, {}, {}
    for name, extra in (("dual-channel", []), ("text-only ablation", ["--no-tag-channel"])):
        run = work / name.split()[0]
        if not (run / "checkpoints").exists():
            t = time.perf_counter()
            pks("train", work / "run", "--config", "tiny", "--steps", args.steps, "--out", run, *extra)
            times[name] = time.perf_counter() - t
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        loss[name] = (lines[0]["loss"], lines[-1]["loss"])
        results[name] = generated(run, tcfg, cfg, args.samples, work)
    results["training clips (ceiling)"] = ceiling(work / "run", tcfg, cfg, work)

    lines = [f"{args.videos} videos (seed {args.seed}, 320x180), prep {prep:.0f}s; tiny config, {args.steps} steps, "
             f"batch {tcfg['data']['batch_size']}, {tcfg['data']['frames']} frames of {tcfg['data']['size']} "
             f"at {tcfg['data']['fps']} fps", "",
             "| clips | camera adherence | " + " | ".join(CAMERA) + " | stage vs deformation (Spearman) | "
             "impact frames found when asked / not asked | loss first -> last | train minutes |",
             "|---" * (6 + len(CAMERA)) + "|"]
    for name, r in results.items():
        per = {c: [h for t, h in r["hits"] if t == c] for c in CAMERA}
        rate = np.mean([h for _, h in r["hits"]]) if r["hits"] else float("nan")
        imp = "-"
        if r["impact"]:
            asked = [f for w, f in r["impact"] if w]
            not_asked = [f for w, f in r["impact"] if not w]
            imp = f"{sum(asked)}/{len(asked)} / {sum(not_asked)}/{len(not_asked)}"
        lo = f"{loss[name][0]:.3f} -> {loss[name][1]:.3f}" if name in loss else "-"
        mins = f"{times[name] / 60:.1f}" if name in times else "-"
        lines.append(f"| {name} (n={len(r['hits'])}) | {rate:.2f} | "
                     + " | ".join(f"{np.mean(v):.2f}" if v else "-" for v in per.values())
                     + f" | {r['spearman']:.2f} | {imp} | {lo} | {mins} |")
    emit(lines, args.out)
    print(f"work folder: {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
