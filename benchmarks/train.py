"""Tag adherence of the bundled generator, judged by PKS's own analysers.

    python benchmarks/train.py [--families cel,painted] [--videos 8] [--seed 2029] [--steps 2000]
                               [--config tiny] [--samples 2] [--no-ablation] [--figures DIR]

Synthesises footage of each family (a seed nothing was tuned on), curates it with the `signals`
captioner (camera tags measured from the clips), trains the config twice with the same steps and
data: the dual-channel model and the text-only ablation (tags folded into the narrative, the tag
channel left 'unknown'). Then generates clips for 5 camera tags x 4 curriculum stages x --samples
seeds with each, and measures every clip with `annotators.signals.analyse`, as a curated clip is:
- camera adherence: the requested tag among the measured camera tags (chance 0.2);
- Spearman of requested stage vs measured deformation;
- defects: the share of samples carrying any quality flag of the project's own analysis;
- flicker: mean absolute change between consecutive frames (levels of 255), the symptom of a
  model that has not learnt to draw (patch noise that changes every frame);
- tag effect / seed effect: mean absolute difference between clips of one seed under different
  camera tags, over that between two seeds of one tag (0: the tags change nothing);
- moves: over the clips asked (or labelled) to pan or tilt, the median drift along the move
  (frame widths a frame, + the asked way) and frame-to-frame jitter the camera analyser read:
  a move reads as shake when jitter > drift, as static when the drift is under its floor.
The ceiling row is the same measure on the training clips themselves, at the size, frame count
and fps the model sees; with a learned latent space (`latent.kind: learned`) a second ceiling
row measures the clips encoded and decoded by the run's VAE (the best its generator could draw),
and the ablation reuses the dual-channel run's VAE, so the two runs differ only in the tag
channel (its train minutes then leave out the VAE's). --figures writes a contact sheet (one row per camera tag) and the loss
curves as PNGs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

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
    return analyse(load_clip(str(path), width=cfg.analyse.width, fps=fps), cfg.analyse, cfg.curriculum)


def move_reading(got: dict, cam: str) -> tuple[float, float]:
    """(drift, jitter) the camera analyser measured on a clip asked to (or labelled to) move as
    `cam`: the median per-frame translation along the move, + the asked way, and the
    frame-to-frame jitter, both in frame widths. A move reads as shake when jitter > drift."""
    stats = json.loads(got["signals"])["camera"]
    along = stats.get("pan_per_frame" if cam.startswith("pan") else "tilt_per_frame", 0.0)
    return (along if cam in ("pan_left", "tilt_up") else -along), stats.get("jitter", 0.0)


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic) if len(set(a)) > 1 and len(set(b)) > 1 else float("nan")


def flicker(frames: np.ndarray) -> float:
    return float(np.abs(np.diff(frames.astype(np.int16), axis=0)).mean())


def ceiling(run: Path, tcfg, cfg: dict, work: Path, space=None) -> dict:
    """The measure on training clips at the model's frames, fps and size, against their labels;
    with `space`, on the clips encoded and decoded by it (what the generator could draw at best)."""
    import pyarrow.parquet as pq
    import webdataset as wds

    from training.data import decode_clip

    dc = tcfg.data
    index = pq.read_table(run / "shards" / "index.parquet").to_pylist()
    hits, stages, deform, flags, flick, moves = [], [], [], [], [], []
    for s in wds.WebDataset(
        sorted({str(run / "shards" / r["shard"]) for r in index}), shardshuffle=False, empty_check=False
    ):
        rec = json.loads(s["json"])
        label = [t for t in rec["camera_motion"] if t in CAMERA]
        video = decode_clip(s["mp4"], rec["fps"], dc.frames, dc.fps, tuple(dc.size))
        if len(label) != 1 or len(video) < dc.frames:
            continue
        if space is not None:
            import torch

            video = space.decode(space.encode(torch.from_numpy(video).permute(0, 3, 1, 2)[None]))[0]
            video = video.permute(0, 2, 3, 1).numpy()
        got = measure(video, dc.fps, work / "ceiling.mp4", cfg)
        hits.append((label[0], label[0] in got["camera_motion"]))
        if label[0] != "static":
            moves.append(move_reading(got, label[0]))
        stages.append(rec["curriculum_stage"])
        deform.append(got["deformation_score"])
        flags.append(bool(got["quality_flags"]))
        flick.append(flicker(video))
    return {
        "hits": hits,
        "spearman": spearman(stages, deform),
        "impact": None,
        "flags": flags,
        "flicker": flick,
        "moves": moves,
    }


def generated(run_dir: Path, cfg: dict, samples: int, work: Path) -> dict:
    from training.sample import load_run, sample

    mcfg, tax, model, text, space, _ = load_run(run_dir)
    hits, stages, deform, impact, flags, flick, moves, clips = [], [], [], [], [], [], [], {}
    for cam in CAMERA:
        for stage in range(4):
            for seed in range(samples):
                video = sample(model, text, space, mcfg, {"camera": [cam]}, "", None, stage, seed, tax=tax)
                frames = video.permute(0, 2, 3, 1).numpy()
                got = measure(frames, mcfg.data.fps, work / "gen.mp4", cfg)
                hits.append((cam, cam in got["camera_motion"]))
                if cam != "static":
                    moves.append(move_reading(got, cam))
                stages.append(stage)
                deform.append(got["deformation_score"])
                flags.append(bool(got["quality_flags"]))
                flick.append(flicker(frames))
                clips[cam, stage, seed] = frames
    for seed in range(samples * 2):  # impact frames asked for, and not
        for want in (True, False):
            tags = {"camera": ["static"], "vfx": ["impact_frame"] if want else []}
            video = sample(model, text, space, mcfg, tags, "", None, None, 100 + seed, tax=tax)
            got = measure(video.permute(0, 2, 3, 1).numpy(), mcfg.data.fps, work / "gen.mp4", cfg)
            impact.append((want, got["impact_frames"] > 0))
    diff = lambda a, b: float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())  # noqa: E731
    by_tag = [
        diff(clips[a, st, sd], clips[b, st, sd])
        for a, b in itertools.combinations(CAMERA, 2)
        for st in range(4)
        for sd in range(samples)
    ]
    by_seed = [
        diff(clips[c, st, a], clips[c, st, b])
        for c in CAMERA
        for st in range(4)
        for a, b in itertools.combinations(range(samples), 2)
    ]
    return {
        "hits": hits,
        "spearman": spearman(stages, deform),
        "impact": impact,
        "flags": flags,
        "flicker": flick,
        "tag_vs_seed": (np.mean(by_tag), np.mean(by_seed)) if by_seed else None,
        "moves": moves,
        "clips": clips,
    }


def contact_sheet(clips: dict, path: Path, every: int = 3) -> None:
    """One row per camera tag (stage 1, seed 0): every `every`-th frame, 3x upscaled."""
    import cv2

    rows = []
    for cam in CAMERA:
        frames = clips[cam, 1, 0][::every]
        row = np.concatenate([np.pad(f, ((2, 2), (2, 2), (0, 0)), constant_values=255) for f in frames], axis=1)
        label = np.full((row.shape[0], 90, 3), 255, np.uint8)
        cv2.putText(label, cam, (2, row.shape[0] // 2 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (0, 0, 0), 1)
        rows.append(np.concatenate([label, row], axis=1))
    sheet = np.concatenate(rows, axis=0)
    sheet = cv2.resize(sheet, (sheet.shape[1] * 3, sheet.shape[0] * 3), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


def loss_curves(runs: dict[str, Path], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, run in runs.items():
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
        ax.plot([m["step"] for m in lines], [m["loss"] for m in lines], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss (velocity MSE)")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--families", default="cel,painted", help="footage families, comma-separated")
    ap.add_argument("--videos", type=int, default=8, help="videos per family")
    ap.add_argument("--seed", type=int, default=2029)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--config", default="tiny", help="training config name or YAML file")
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--no-ablation", action="store_true", help="train and measure the dual-channel model only")
    ap.add_argument("--work", default=None)
    ap.add_argument("--figures", default=None, help="write the contact sheet and loss curves (PNG) here")
    ap.add_argument("--out", default=None, help="also write the table here")
    args = ap.parse_args()
    from pks.config import load_config
    from pks.typedconfig import to_dict
    from training.config import load_train_config

    cfg = load_config()
    config = str(Path(args.config).resolve()) if Path(args.config).is_file() else args.config
    tcfg = load_train_config(config)
    work = Path(args.work or tempfile.mkdtemp(prefix="pks-train-bench-"))
    t0 = time.perf_counter()
    families = args.families.split(",")
    if not (work / "run" / "shards" / "index.parquet").exists():
        for family in families:
            pks(
                "synth",
                work / "footage" / family,
                "--videos",
                args.videos,
                "--seed",
                args.seed,
                "--size",
                "320x180",
                "--family",
                family,
            )
        pks("curate", work / "footage", work / "run", "--captioner", "signals")  # both families' folders
    prep = time.perf_counter() - t0
    results, times, runs = {}, {}, {}
    models = [("dual-channel", [])] + ([] if args.no_ablation else [("text-only ablation", ["--no-tag-channel"])])
    learned = tcfg.latent.kind == "learned" and not tcfg.latent.path
    for name, extra in models:
        run = runs[name] = work / name.split()[0]
        if not (run / "checkpoints").exists():
            t = time.perf_counter()
            pks("train", work / "run", "--config", config, "--steps", args.steps, "--out", run, *extra)
            times[name] = time.perf_counter() - t
        results[name] = generated(run, cfg, args.samples, work)
        if learned and name == "dual-channel":  # the ablation shares its first stage: only the tag channel differs
            shared = to_dict(tcfg.replace({"latent.path": str((run / "vae").resolve())}))
            config = str(work / "shared_vae.yaml")
            Path(config).write_text(yaml.safe_dump(shared, sort_keys=False))
    results["training clips (ceiling)"] = ceiling(work / "run", tcfg, cfg, work)
    if learned:
        from training.vae import latent_space

        space = latent_space(tcfg, "cpu", runs["dual-channel"])
        results["training clips through the run's VAE"] = ceiling(work / "run", tcfg, cfg, work, space)
    if args.figures:
        Path(args.figures).mkdir(parents=True, exist_ok=True)
        contact_sheet(results["dual-channel"]["clips"], Path(args.figures) / "train_samples.png")
        loss_curves(runs, Path(args.figures) / "train_loss.png")

    dc = tcfg.data
    lines = [
        f"{args.videos} videos per family ({', '.join(families)}; seed {args.seed}, 320x180), prep {prep:.0f}s; "
        f"config {Path(args.config).stem}, {args.steps} steps, batch {dc.batch_size}, {dc.frames} frames "
        f"of {list(dc.size)} at {dc.fps} fps",
        "",
        "| clips | camera adherence | " + " | ".join(CAMERA) + " | stage vs deformation (Spearman) | "
        "impact frames found when asked / not asked | with a defect flag | flicker (levels) | "
        "tag effect / seed effect | moves: drift / jitter (widths a frame) | loss first -> last | train minutes |",
        "|---" * (10 + len(CAMERA)) + "|",
    ]
    for name, r in results.items():
        per = {c: [h for t, h in r["hits"] if t == c] for c in CAMERA}
        rate = np.mean([h for _, h in r["hits"]]) if r["hits"] else float("nan")
        imp = "-"
        if r["impact"]:
            asked = [f for w, f in r["impact"] if w]
            not_asked = [f for w, f in r["impact"] if not w]
            imp = f"{sum(asked)}/{len(asked)} / {sum(not_asked)}/{len(not_asked)}"
        lo = "-"
        if name in runs:
            m = [json.loads(x) for x in (runs[name] / "metrics.jsonl").read_text().splitlines() if x.strip()]
            lo = f"{m[0]['loss']:.3f} -> {m[-1]['loss']:.3f}"
        mins = f"{times[name] / 60:.1f}" if name in times else "-"
        tvs = f"{r['tag_vs_seed'][0]:.1f} / {r['tag_vs_seed'][1]:.1f}" if r.get("tag_vs_seed") else "-"
        mv = np.median(r["moves"], axis=0) if r["moves"] else None
        mvs = f"{mv[0]:.4f} / {mv[1]:.4f}" if mv is not None else "-"
        lines.append(
            f"| {name} (n={len(r['hits'])}) | {rate:.2f} | "
            + " | ".join(f"{np.mean(v):.2f}" if v else "-" for v in per.values())
            + f" | {r['spearman']:.2f} | {imp} | {np.mean(r['flags']):.2f} | {np.mean(r['flicker']):.1f} | "
            f"{tvs} | {mvs} | {lo} | {mins} |"
        )
    emit(lines, args.out)
    print(f"work folder: {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
