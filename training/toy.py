"""The two-tag toy (issue 21's diagnostic): smooth random textures slide left or right, the camera
tag (pan_left / pan_right) the only cue. Can a generator draw a move at all? In pixel space the
`tiny` recipe separates the two tags on every sample (tests/test_train.py); here the same toy runs
in the learned latent space `tiny` uses (training/clipvae.py), in two steps:

(a) the ceiling: toy clips through the VAE (encode, decode). Does the latent keep the motion?
(b) the generator: a small DiT trained on the toy's latents, sampled per tag and decoded.

Both are read as the pixel toy reads them: the mean phase-correlation shift between consecutive
frames of a clip's grey picture, which must have the asked sign and exceed MIN_SHIFT.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

import taxonomy
from training.clipvae import LearnedSpace, train_vae
from training.config import LatentConfig
from training.model import DiTConfig, VideoDiT
from training.train import ema_decay_at, flow_loss

# A clip counts as moving the asked way when its mean shift exceeds 0.3 px/frame with the asked
# sign: the pixel toy's criterion (the toy slides 1 px/frame; a third of it is far above the
# phase-correlation noise of a static texture, ~0.05 px).
MIN_SHIFT = 0.3


@dataclass
class Toy:
    frames: int = 8
    size: tuple[int, int] = (32, 56)  # tiny's frame size
    speed: int = 1  # px a frame, as the pixel toy
    grain: int = 4  # px per cell of the random field before the bicubic resize (the texture's scale)
    static: float = 0.0  # share of the VAE's training clips that do not move (footage is mostly static)
    # Pictures to slide instead of random textures (uint8 [N, H, W + speed * (frames - 1), 3]):
    # still frames of footage, so the toy asks its question on footage content.
    plates: np.ndarray | None = None


def toy_clips(direction: torch.Tensor, toy: Toy, rng: np.random.Generator) -> torch.Tensor:
    """uint8 [B, T, 3, H, W]: direction +1 is pan_right (the picture slides left), -1 pan_left, 0 static."""
    (h, w), t, s = toy.size, toy.frames, toy.speed
    travel = s * (t - 1)
    out = []
    for d in direction.tolist():
        if toy.plates is not None:
            tex = toy.plates[rng.integers(len(toy.plates))].astype(np.float32) / 255
        else:
            cells = (h // toy.grain + 1, (w + travel) // toy.grain + 1)
            tex = cv2.resize(rng.random((*cells, 3)).astype(np.float32), (w + travel, h), interpolation=cv2.INTER_CUBIC)
        x = travel if d < 0 else travel // 2 if d == 0 else 0
        out.append(np.stack([tex[:, x + d * s * f : x + d * s * f + w] for f in range(t)]))
    return torch.from_numpy((np.clip(np.stack(out), 0, 1) * 255).round().astype(np.uint8)).permute(0, 1, 4, 2, 3)


def footage_plates(shards: Path, toy: Toy) -> np.ndarray:
    """The middle frame of every clip in a curated run's shards whose camera is static, resized to
    the toy's height and its width plus the travel: still footage pictures for the toy to slide."""
    import json

    import webdataset as wds

    from training.data import decode_clip

    (h, w), travel = toy.size, toy.speed * (toy.frames - 1)
    plates = []
    for s in wds.WebDataset(sorted(str(p) for p in Path(shards).rglob("*.tar")), shardshuffle=False, empty_check=False):
        rec = json.loads(s["json"])
        if (rec.get("caption") or {}).get("camera") == ["static"]:
            video = decode_clip(s["mp4"], rec["fps"], 8, 12, (h, w + travel))
            plates.append(video[len(video) // 2])
    if not plates:
        raise ValueError(f"no static clips in {shards}")
    return np.stack(plates)


def shifts(video: torch.Tensor) -> np.ndarray:
    """uint8 [B, T, 3, H, W] -> each clip's mean horizontal phase-correlation shift (px/frame;
    positive: the picture moved right, which pan_left draws)."""
    grey = video.float().mean(2).double().numpy()
    return np.array([np.mean([cv2.phaseCorrelate(c[f], c[f + 1])[0][0] for f in range(len(c) - 1)]) for c in grey])


def separation(shift: np.ndarray, direction: torch.Tensor) -> float:
    """Share of clips whose shift has the sign their tag asks (pan_left: +) and exceeds MIN_SHIFT."""
    asked = -direction.numpy()
    return float(np.mean(shift * asked > MIN_SHIFT))


def conditions(direction: torch.Tensor, known_tags: torch.Tensor, tax) -> tuple[dict, torch.Tensor]:
    tags = {a: torch.zeros(len(direction), len(tax.axes[a].ids)) for a in taxonomy.TAG_AXES}
    for i, d in enumerate(direction.tolist()):
        tags["camera"][i, tax.index("camera", "pan_right" if d > 0 else "pan_left")] = 1
    known = torch.zeros(len(direction), len(taxonomy.TAG_AXES), dtype=torch.bool)
    known[:, taxonomy.TAG_AXES.index("camera")] = known_tags
    return tags, known


def directions(n: int, g: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, (n,), generator=g) * 2 - 1


def train_toy_vae(toy: Toy, folder: Path, lc: LatentConfig, seed: int = 0) -> LearnedSpace:
    """The VAE trained on fresh toy clips every step (the toy is its own footage)."""
    rng, g = np.random.default_rng(seed), torch.Generator().manual_seed(seed)

    def moves():
        d = directions(lc.batch_size, g)
        return d * (torch.rand(lc.batch_size, generator=g) >= toy.static)

    batches = ({"video": toy_clips(moves(), toy, rng)} for _ in range(lc.steps))
    train_vae(batches, folder, lc, seed=seed)
    return LearnedSpace(folder)


@dataclass
class DiTRecipe:
    steps: int = 1000
    batch: int = 16
    dim: int = 64
    depth: int = 2
    patch: tuple[int, int, int] = (1, 2, 2)  # tiny's latent patch
    lr: float = 1e-3
    loss_weight: str = "x0"  # tiny's
    drop_tags: float = 0.1
    tag_channel: bool = True  # False: the tag is never shown (the test's negative control)
    pool: int = 512  # toy clips encoded once and drawn from
    # + this x the clean clip's error of its frame-to-frame change, weighted by where the clip's
    # own latent changes (normalised per clip): the move where the picture has it (0: off)
    motion: float = 0.0


def train_toy_dit(space, toy: Toy, r: DiTRecipe, tax, seed: int = 0) -> VideoDiT:
    """A small x0-predicting DiT on the toy's latents (encoded once), its EMA weights returned."""
    rng, g = np.random.default_rng(seed + 1), torch.Generator().manual_seed(seed + 1)
    pool_dir = directions(r.pool, g)
    pool = torch.cat([space.encode(toy_clips(pool_dir[i : i + 64], toy, rng)) for i in range(0, r.pool, 64)])
    torch.manual_seed(seed)
    cfg = DiTConfig(
        in_channels=pool.shape[1], patch=r.patch, dim=r.dim, depth=r.depth, heads=2, text_dim=8, prediction="x0"
    )
    model = VideoDiT(cfg, tax)
    ema = {k: v.detach().clone() for k, v in model.named_parameters()}
    opt = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=0.0)
    n = r.batch
    text, mask, none = torch.zeros(n, 1, 8), torch.ones(n, 1, dtype=torch.bool), torch.full((n,), -1)
    for step in range(r.steps):
        idx = torch.randint(0, r.pool, (n,), generator=g)
        x0, d = pool[idx], pool_dir[idx]
        shown = (torch.rand(n, generator=g) >= r.drop_tags) & r.tag_channel
        tags, known = conditions(d, shown, tax)
        t, noise = torch.sigmoid(torch.randn(n, generator=g)), torch.randn(x0.shape, generator=g)
        tt = t.view(-1, 1, 1, 1, 1)
        pred = model((1 - tt) * x0 + tt * noise, t, text, mask, tags, known, none, none)
        loss = flow_loss(pred, noise - x0, t, r.loss_weight).mean()
        if r.motion:
            err = torch.diff(tt * (pred - (noise - x0)), dim=2)  # x0's error is -t (v - v_true)
            moving = torch.diff(x0, dim=2).abs()
            w = moving / moving.mean(dim=(1, 2, 3, 4), keepdim=True).clamp(min=1e-6)
            loss = loss + r.motion * (w * err**2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            for k, p in model.named_parameters():
                ema[k].lerp_(p, 1 - ema_decay_at(step, 0.995))
    model.load_state_dict(ema)
    return model.eval()


@torch.no_grad()
def sample_toy(
    model: VideoDiT,
    space,
    toy: Toy,
    direction: torch.Tensor,
    tax,
    guidance: float = 3.0,
    steps: int = 20,
    seed: int = 100,
) -> torch.Tensor:
    """uint8 clips, one per entry of `direction`, by the Euler sampler with tag guidance (as sample.py)."""
    shape = space.latent_shape(toy.frames, toy.size)
    out = []
    text, mask, none = torch.zeros(2, 1, 8), torch.ones(2, 1, dtype=torch.bool), torch.full((2,), -1)
    for i, d in enumerate(direction.tolist()):
        x = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed + i))
        tags, known = conditions(torch.tensor([d, d]), torch.tensor([False, True]), tax)  # unconditioned, tagged
        ts = torch.linspace(1, 0, steps + 1)
        for k in range(steps):
            v = model(x.expand(2, -1, -1, -1, -1), ts[k].expand(2), text, mask, tags, known, none, none)
            x = x + (ts[k + 1] - ts[k]) * (v[:1] + guidance * (v[1:] - v[:1]))
        out.append(space.decode(x))
    return torch.cat(out)
