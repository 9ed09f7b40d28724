"""The preference stage on the tiny generator: beta found on held-out pairs, then the stage
against its starting point, both judged by the Judge and by PKS's own analysers.

    python benchmarks/dpo.py --data OUT --judge judge.pt [--init-steps 500] [--steps 150]

1. The starting run: `pks train OUT --config tiny --steps INIT_STEPS` (reused when present).
2. Beta: for each --betas value, an offline-pairs stage of --sweep-steps steps; on the
   validation split (clips never trained on) paired with their failure copies, the implicit
   accuracy (the policy prefers the clean clip, relative to the reference) and the velocity
   error on the clean clips against the reference's. The chosen beta is the one with the best
   held-out accuracy among those whose clean-clip error rose by less than 5%.
3. The stage with that beta, mixed pairs (offline + Judge-ranked online samples).
4. Both runs sample 5 camera tags x 4 requested stages x --samples seeds; each clip is scored
   by the Judge and measured by `annotators.signals.analyse`: mean Judge score, mean measured
   deformation per requested stage, camera adherence (issue 11's measure).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import emit  # noqa: E402
from train import CAMERA, measure, pks, spearman  # noqa: E402


def held_out(run: Path, init: Path, data: Path, batches: int = 6) -> dict:
    """Implicit accuracy and clean-clip velocity error on validation pairs (policy: the run's
    EMA; reference: the starting run's)."""
    from training.data import CurriculumLoader, shards_root
    from training.dpo import offline_pairs, pair_loss
    from training.sample import load_run

    cfg, tax, policy, text, space, _ = load_run(run)
    _, _, reference, _, _, _ = load_run(init)
    dc = cfg.data
    loader = CurriculumLoader(
        shards_root(data),
        split="val",
        frames=dc.frames,
        fps=dc.fps,
        size=tuple(dc.size),
        batch_size=4,
        seed=12345,
        steps=batches,
    )
    shape = space.latent_shape(dc.frames, tuple(dc.size))
    acc, fit, ref = [], [], []
    with torch.no_grad():
        for batch in loader:
            cond, w, lose, idx = offline_pairs(batch, cfg, tax, shape)
            _, st = pair_loss(policy, reference, text, space, cfg, [cond], w, lose, [i + 10**9 for i in idx])
            acc.append(st["implicit_acc"])
            fit.append(st["fit_w"])
            ref.append(st["ref_fit_w"])
    return {"acc": float(np.mean(acc)), "fit_rise": float(np.mean(fit) / np.mean(ref) - 1)}


def evaluate(run: Path, judge, acfg: dict, samples: int, work: Path) -> dict:
    from training.judge import judge_frames
    from training.sample import load_run, sample

    cfg, tax, model, text, space, _ = load_run(run)
    scores, logits, hits, stages, deform = [], [], [], [], []
    for cam in CAMERA:
        for stage in range(4):
            for seed in range(samples):
                video = sample(model, text, space, cfg, {"camera": [cam]}, "", None, stage, 500 + seed, tax=tax)
                frames = video.permute(0, 2, 3, 1).numpy()
                score, logit, _ = judge_frames(judge, frames, cfg.data.fps, acfg)
                scores.append(score)
                logits.append(logit)
                got = measure(frames, cfg.data.fps, work / "gen.mp4", acfg)
                hits.append(cam in got["camera_motion"])
                stages.append(stage)
                deform.append(got["deformation_score"])
    per_stage = [float(np.mean([d for s, d in zip(stages, deform) if s == k])) for k in range(4)]
    return {
        "judge": float(np.mean(scores)),
        "logit": float(np.mean(logits)),
        "per_stage": per_stage,
        "camera": float(np.mean(hits)),
        "spearman": spearman(stages, deform),
        "n": len(scores),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="a curated OUT with shards (train and val splits)")
    ap.add_argument("--judge", required=True)
    ap.add_argument("--init-steps", type=int, default=500)
    ap.add_argument(
        "--init",
        default=None,
        help="start from this trained run (e.g. benchmarks/train.py's dual-channel run) instead of training one",
    )
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--sweep-steps", type=int, default=60)
    ap.add_argument("--betas", default="250,2500,25000,100000")
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from pks.config import load_config
    from training.checkpoint import checkpoints
    from training.config import load_train_config
    from training.dpo import dpo_config, train_dpo
    from training.judge import load

    acfg = load_config()
    work = Path(args.work or tempfile.mkdtemp(prefix="pks-dpo-bench-"))
    init = Path(args.init) if args.init else work / "gen-init"
    if not (init / "checkpoints").is_dir():
        pks("train", args.data, "--config", "tiny", "--steps", args.init_steps, "--out", init)
    base = load_train_config("tiny").dpo
    assert base is not None  # tiny.yaml has the section
    sweep = {}
    for beta in map(float, args.betas.split(",")):
        run = work / f"sweep-beta{beta:g}"
        if not (run / "checkpoints").is_dir():
            train_dpo(
                args.data,
                init,
                None,
                run,
                dpo_config(base, {"beta": beta, "pairs": "offline", "steps": args.sweep_steps}),
                acfg,
                progress=False,
            )
        sweep[beta] = held_out(run, init, Path(args.data))
        print(f"beta {beta:g}: {sweep[beta]}", file=sys.stderr)
    fine = {b: r for b, r in sweep.items() if r["fit_rise"] < 0.05} or sweep
    beta = max(fine, key=lambda b: fine[b]["acc"])
    judge = load(Path(args.judge))
    run = work / f"dpo-beta{beta:g}"
    t = time.perf_counter()
    if not (run / "checkpoints").is_dir():
        train_dpo(
            args.data,
            init,
            args.judge,
            run,
            dpo_config(base, {"beta": beta, "steps": args.steps}),
            acfg,
            progress=False,
        )
    minutes = (time.perf_counter() - t) / 60
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    online = [m for m in metrics if m.get("online_pairs") is not None]
    rows = {
        "starting run": evaluate(init, judge, acfg, args.samples, work),
        f"after DPO (beta {beta:g})": evaluate(run, judge, acfg, args.samples, work),
    }
    init_cfg = yaml.safe_load((init / "config.yaml").read_text())
    init_steps = json.loads((checkpoints(init)[-1] / "meta.json").read_text())["step"]
    lines = [
        f"tiny generator ({init}), {init_steps} steps on {args.data}; DPO: {args.steps} steps, "
        f"{base.batch} pairs a step ({base.pairs}), lr {base.lr}, {minutes:.1f} min; "
        f"{init_cfg['data']['frames']} frames of {init_cfg['data']['size']}",
        "",
        "Beta on held-out pairs (validation clips vs their failure copies), offline stage of "
        f"{args.sweep_steps} steps:",
        "",
        "| beta | implicit accuracy | clean-clip velocity error vs reference |",
        "|---|---|---|",
    ]
    lines += [
        f"| {b:g}{' (chosen)' if b == beta else ''} | {r['acc']:.3f} | {r['fit_rise']:+.1%} |" for b, r in sweep.items()
    ]
    lines += [
        "",
        "| generator | mean Judge score | mean Judge logit | deformation, requested stage 0 / 1 / 2 / 3 | stage vs deformation "
        "(Spearman) | camera adherence | clips |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['judge']:.3g} | {r['logit']:.2f} | "
            + " / ".join(f"{d:.3f}" for d in r["per_stage"])
            + f" | {r['spearman']:.2f} | {r['camera']:.2f} | {r['n']} |"
        )
    rounds = []  # each metrics line repeats its round's figures until the next round
    for m in online:
        key = json.dumps(
            [round(m["online_judge_logit_mean"], 2), m["online_pairs"], round(m["online_winner_less_deformed"], 2)]
        )
        if not rounds or rounds[-1][1] != key:
            rounds.append((m["step"], key))
    if rounds:
        lines += [
            "",
            "Online rounds (step: mean Judge logit of the policy's own samples, pairs found, share of pairs whose "
            "winner measured less deformation): " + "; ".join(f"{s}: {k}" for s, k in rounds),
        ]
    emit(lines, args.out)
    print(f"work folder: {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
