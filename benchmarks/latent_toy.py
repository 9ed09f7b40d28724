"""Issue 21's two-tag toy in the learned latent space (training/toy.py): (a) toy clips through the
VAE (the ceiling), (b) a DiT trained on the toy's latents, sampled per tag. Synthetic data only.

    nice -n 10 .venv/bin/python benchmarks/latent_toy.py [--vae-steps 300] [--time-stride 2] [--width 24]
        [--motion 2.0] [--dit-steps 1000] [--dit-batch 16] [--dit-lr 1e-3] [--dit-seed 0] [--no-tags]
        [--pixel] [--vae DIR] [--plates RUN/shards]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import taxonomy
from training.config import LatentConfig
from training.toy import (
    DiTRecipe,
    Toy,
    footage_plates,
    sample_toy,
    separation,
    shifts,
    toy_clips,
    train_toy_dit,
    train_toy_vae,
)


def show(name: str, shift: np.ndarray, d: torch.Tensor) -> None:
    left, right = shift[d.numpy() < 0], shift[d.numpy() > 0]
    along = float(np.mean(shift * -d.numpy()))  # the mean shift the way the tag asks: less noisy than the share
    print(
        f"{name}: separation {separation(shift, d):.2f}, mean shift along the tag {along:+.2f}; pan_left shifts {left.min():+.2f}..{left.max():+.2f}, "
        f"pan_right {right.min():+.2f}..{right.max():+.2f} px/frame",
        flush=True,
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--vae-steps", type=int, default=300)
    p.add_argument("--time-stride", type=int, default=2)
    p.add_argument("--channels", type=int, default=8)
    p.add_argument("--width", type=int, default=24)
    p.add_argument("--motion", type=float, default=2.0)
    p.add_argument("--kl", type=float, default=1e-4)
    p.add_argument("--speed", type=int, default=1)
    p.add_argument("--grain", type=int, default=4)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--static", type=float, default=0.0, help="share of static clips in the VAE's training")
    p.add_argument("--size", default="32,56", help="H,W (tiny's frame size)")
    p.add_argument("--dit-steps", type=int, default=1000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--dit-batch", type=int, default=16)
    p.add_argument("--dit-lr", type=float, default=1e-3)
    p.add_argument("--dit-seed", type=int, default=0, help="the DiT's initialisation and draws")
    p.add_argument("--patch", default="1,2,2")
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--loss-weight", default="x0")
    p.add_argument("--dit-motion", type=float, default=0.0, help="the DiT's weighted motion term (DiTRecipe.motion)")
    p.add_argument("--samples", type=int, default=8, help="per tag")
    p.add_argument("--no-tags", action="store_true", help="never show the tag (negative control)")
    p.add_argument("--pixel", action="store_true", help="the DiT in pixel space (no VAE)")
    p.add_argument("--vae", help="a trained VAE folder to reuse (a toy one, or a run's RUN/vae)")
    p.add_argument("--plates", help="a curated run's shards: slide its static clips' pictures, not random textures")
    a = p.parse_args()
    torch.set_num_threads(1)
    tax = taxonomy.load()
    toy = Toy(
        frames=a.frames, size=tuple(int(v) for v in a.size.split(",")), speed=a.speed, grain=a.grain, static=a.static
    )
    if a.plates:
        toy.plates = footage_plates(Path(a.plates), toy)
        print(f"{len(toy.plates)} footage pictures to slide")
    d = torch.tensor([-1, 1]).repeat_interleave(a.samples)
    truth = toy_clips(d, toy, np.random.default_rng(999))
    show("toy clips", shifts(truth), d)
    space = None
    if not a.pixel:
        lc = LatentConfig(
            kind="learned",
            channels=a.channels,
            width=a.width,
            time_stride=a.time_stride,
            steps=a.vae_steps,
            kl=a.kl,
            motion=a.motion,
        )
        t0 = time.perf_counter()
        folder = Path(a.vae) if a.vae else Path(tempfile.mkdtemp()) / "vae"
        if a.vae and (folder / "vae.json").is_file():
            from training.clipvae import LearnedSpace

            space = LearnedSpace(folder)
        else:
            space = train_toy_vae(toy, folder, lc)
        kept = {k: space.meta[k] for k in ("channels", "width", "time_stride", "steps", "kl", "motion", "seconds")}
        print(f"vae {kept} at {folder}")
        hist = space.meta["history"]
        print(f"vae l1 {hist[0]['l1']:.3f} -> {hist[-1]['l1']:.3f}, motion l1 -> {hist[-1]['motion_l1']:.3f}")
        back = space.decode(space.encode(truth))
        err = (back.float() - truth.float()).abs().mean()
        print(f"(a) reconstruction error {float(err):.1f} levels")
        show("(a) through the VAE", shifts(back), d)
    if a.dit_steps == 0:
        return
    r = DiTRecipe(
        steps=a.dit_steps,
        batch=a.dit_batch,
        lr=a.dit_lr,
        dim=a.dim,
        patch=tuple(int(v) for v in a.patch.split(",")),
        tag_channel=not a.no_tags,
        loss_weight=a.loss_weight,
        motion=a.dit_motion,
    )
    if a.pixel:
        from training.vae import PixelSpace

        space_for_dit = PixelSpace()
    else:
        space_for_dit = space
    t0 = time.perf_counter()
    model = train_toy_dit(space_for_dit, toy, r, tax, seed=a.dit_seed)
    print(f"dit {r} in {time.perf_counter() - t0:.0f}s")
    out = sample_toy(model, space_for_dit, toy, d, tax, guidance=a.guidance)
    show(f"(b) samples, tag guidance {a.guidance}", shifts(out), d)
    print(f"(b) flicker {float((out[:, 1:].float() - out[:, :-1].float()).abs().mean()):.1f} levels")


if __name__ == "__main__":
    main()
