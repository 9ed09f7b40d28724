"""What a learned latent space keeps: the camera measure on a run's training clips, and on the
same clips encoded and decoded by a VAE trained on them (the best its generator could draw).

    python benchmarks/vae_ceiling.py OUT --config tiny --vae DIR [--set KEY=VALUE ...]

Trains the config's VAE on OUT's shards into DIR/vae (kept: a second call only measures), then
prints one JSON line per row with benchmarks/train.py's measures, and the moving clips' median
drift along their move and jitter (frame widths a frame). Run it on tuning footage.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from train import CAMERA, ceiling  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", help="a curated run (its shards are the VAE's training clips)")
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--vae", required=True, help="a folder: the VAE is trained into DIR/vae")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="KEY=VALUE, as pks train --set")
    args = ap.parse_args()
    from pks.config import load_config
    from pks.typedconfig import parse_sets
    from training.config import load_train_config
    from training.train import ensure_learned_vae, run_taxonomy
    from training.vae import latent_space

    out, folder = Path(args.out), Path(args.vae)
    tcfg = load_train_config(args.config, parse_sets(args.sets))
    tcfg = dataclasses.replace(tcfg, taxonomy_version=run_taxonomy(tcfg).version)
    folder.mkdir(parents=True, exist_ok=True)
    ensure_learned_vae(out / "shards", folder, tcfg, "cpu", 0, True)
    acfg = load_config()
    for name, space in (("training clips", None), ("through the VAE", latent_space(tcfg, "cpu", folder))):
        r = ceiling(out, tcfg, acfg, folder, space)
        print(
            json.dumps(
                {
                    "clips": name,
                    "n": len(r["hits"]),
                    "adherence": float(np.mean([h for _, h in r["hits"]])),
                    "per_tag": {c: float(np.mean([h for t, h in r["hits"] if t == c] or [np.nan])) for c in CAMERA},
                    "flagged": float(np.mean(r["flags"])),
                    "flicker": float(np.mean(r["flicker"])),
                    "spearman": r["spearman"],
                    # the moving clips: median drift along the labelled move and jitter (widths/frame)
                    "drift": float(np.median([d for d, _ in r["moves"]])) if r["moves"] else None,
                    "jitter": float(np.median([j for _, j in r["moves"]])) if r["moves"] else None,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
