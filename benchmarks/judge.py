"""The Judge against generic rewards, on footage from seeds the Judge never trained on.

    python benchmarks/judge.py [--videos 12] [--train-seed 3140] [--eval-seed 9140] [--epochs 40]

Synthesises both footage families from a training seed and from an evaluation seed (used
nowhere else), curates each with the `signals` captioner, trains the Judge on the training
runs only, then scores the evaluation runs' clips: clean clips (`ok`, every curriculum stage)
against failure-flagged clips and failure copies of the clean clips (`training.failures`, a
different augmentation seed from training). For the Judge and two generic rewards, side by side:
- AUC (clean vs failure; target >= 0.95), per failure kind too;
- Spearman of the reward with measured deformation among clean clips (target >= -0.1: art is
  not punished).
Baselines: VBench-style subject consistency (per-frame features, the Judge's own CNN in place of
DINO, cosine to the first and to the previous frame, averaged) and flow-warping error (Farneback
flow between consecutive frames, the next frame warped back, mean absolute error; the reward is
its negative).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import emit  # noqa: E402
from train import pks, spearman  # noqa: E402


def warping_error(rgb: np.ndarray, pairs: int = 24) -> float:
    """Mean absolute error (0-1) of each frame against the next one warped back by optical flow."""
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in rgb[: pairs + 1]]
    h, w = gray[0].shape
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    errs = []
    for a, b in zip(gray, gray[1:]):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
        back = cv2.remap(b, xs + flow[..., 0], ys + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        errs.append(np.abs(a.astype(np.float32) - back.astype(np.float32)).mean() / 255.0)
    return float(np.mean(errs)) if errs else 0.0


@torch.no_grad()
def subject_consistency(model, ex) -> list[float]:
    """VBench's subject consistency with the Judge's per-frame CNN as the feature extractor."""
    out = []
    for frames in ex.frames:
        f = torch.nn.functional.normalize(model.frame(torch.from_numpy(frames)), dim=-1)
        first, prev = (f[1:] * f[:1]).sum(-1), (f[1:] * f[:-1]).sum(-1)
        out.append(float(((first + prev) / 2).mean()))
    return out


def runs(work: Path, seed: int, videos: int) -> list[Path]:
    outs = []
    for family in ("cel", "painted"):
        out = work / f"{family}-{seed}"
        if not (out / "manifest.parquet").exists():
            pks("synth", work / f"footage-{family}-{seed}", "--videos", videos, "--seed", seed, "--family", family)
            pks("curate", work / f"footage-{family}-{seed}", out, "--captioner", "signals")
        outs.append(out)
    return outs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=12, help="per family and seed")
    ap.add_argument("--train-seed", type=int, default=3140)
    ap.add_argument("--eval-seed", type=int, default=9140, help="never used for training or tuning")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--augment", type=float, default=2.0, help="failure copies per clean training clip")
    ap.add_argument("--work", default=None)
    ap.add_argument("--judge", default=None, help="also save the trained Judge here")
    ap.add_argument("--out", default=None, help="also write the table here")
    args = ap.parse_args()
    from pks.config import load_config
    from training.judge import JudgeConfig, auc, collect, save, score, train

    acfg = load_config()
    work = Path(args.work or tempfile.mkdtemp(prefix="pks-judge-bench-"))
    t0 = time.perf_counter()
    train_outs, eval_outs = runs(work, args.train_seed, args.videos), runs(work, args.eval_seed, args.videos)
    prep = time.perf_counter() - t0
    cfg = JudgeConfig(epochs=args.epochs, augment=args.augment, seed=args.train_seed)
    t = time.perf_counter()
    tr = collect(train_outs, cfg, acfg, progress=lambda m: print(m, file=sys.stderr))
    model = train(tr, None, cfg, progress=lambda m: print(m, file=sys.stderr))
    train_s = time.perf_counter() - t
    if args.judge:
        save(model, Path(args.judge))
    # The evaluation copies use another augmentation seed: no clip or copy was seen in training.
    ev = collect(
        eval_outs, JudgeConfig(**{**cfg.__dict__, "augment": 1.0, "seed": args.eval_seed}), acfg, extra=warping_error
    )
    rewards = {
        "Judge": score(model, ev),
        "subject consistency (VBench-style)": subject_consistency(model, ev),
        "flow-warping error (negated)": [-x for x in ev.extra],
    }
    labels, kinds = np.array(ev.labels), ev.kinds
    clean = labels == 1
    failure_kinds = sorted({k for k in kinds if k != "ok"})
    lines = [
        f"train: seed {args.train_seed}, {args.videos} videos per family ({len(tr.labels)} examples, "
        f"{sum(tr.labels)} clean); eval: seed {args.eval_seed} ({len(labels)} examples: {int(clean.sum())} clean, "
        f"{int((~clean).sum())} failure); prep {prep:.0f}s, Judge training {train_s:.0f}s, {args.epochs} epochs",
        "",
        "| reward | AUC clean vs failure | Spearman with deformation, clean clips | "
        + " | ".join(f"AUC {k} (n={kinds.count(k)})" for k in failure_kinds)
        + " |",
        "|---" * (3 + len(failure_kinds)) + "|",
    ]
    for name, r in rewards.items():
        r = np.array(r)
        per = []
        for k in failure_kinds:
            keep = clean | np.array([x == k for x in kinds])
            per.append(f"{auc(labels[keep], r[keep]):.3f}")
        lines.append(
            f"| {name} | {auc(labels, r):.3f} | {spearman(r[clean].tolist(), np.array(ev.deformation)[clean].tolist()):.3f} | "
            + " | ".join(per)
            + " |"
        )
    emit(lines, args.out)
    print(f"work folder: {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
