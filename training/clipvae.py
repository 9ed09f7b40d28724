"""A run's own latent space (`latent.kind: learned`): a small video VAE that `pks train` trains
on the run's clips as its first stage and keeps in RUN/vae/.

Why a learned space even on a CPU: in pixel space the DiT's output is a mosaic of its 4x4x4
patches, each predicted on its own, and its edges move from frame to frame (issue 21: samples
flicker 19-25 levels a frame against 16 in the footage, and the flow analyser reads that as
shake). A decoder trained to redraw the footage draws whole frames, and its temporal layers
make neighbouring frames agree, so the DiT only decides the coarse layout and its motion.
The compression (4x in time, 4x in space, 8 channels: 16x32x56x3 pixels -> 8x4x8x14) also
cuts the DiT's tokens from 448 to 112 with 1x2x2 patches.

Architecture (kept small enough to train in minutes on two cores): per-frame convolutions at
full resolution, strided 3D convolutions down to the latent grid, one residual block at the
bottom; the decoder mirrors it with nearest-neighbour upsampling and convolutions (not
transposed convolutions, whose uneven overlap draws a checkerboard). The loss is L1 on the
frames plus L1 on their frame-to-frame differences (motion is what the DiT must keep), with a
small KL term so the latent space is smooth enough to sample (as in Stable Diffusion's VAE).
Latents are normalised per channel with the mean and std measured on the training clips, so
the DiT sees unit scale, like Wan's published statistics.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pks.progress import bar
from pks.store import atomic_path
from training.config import LatentConfig
from training.pixels import to_uint8, to_unit

log = logging.getLogger(__name__)
WEIGHTS, META = "vae.pt", "vae.json"


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(8, c),
            nn.SiLU(),
            nn.Conv3d(c, c, 3, padding=1),
            nn.GroupNorm(8, c),
            nn.SiLU(),
            nn.Conv3d(c, c, 3, padding=1),
        )

    def forward(self, x):
        return x + self.body(x)


class Space2Depth(nn.Module):
    """[B, C, T, H, W] -> [B, 4C, T, H/2, W/2]: each 2x2 block of a frame as channels."""

    def forward(self, x):
        b, c, t, h, w = x.shape
        return (
            F.pixel_unshuffle(x.transpose(1, 2).reshape(b * t, c, h, w), 2)
            .view(b, t, 4 * c, h // 2, w // 2)
            .transpose(1, 2)
        )


class Depth2Space(nn.Module):
    """The inverse of Space2Depth (a sub-pixel convolution's last step, as in ESPCN)."""

    def forward(self, x):
        b, c, t, h, w = x.shape
        return (
            F.pixel_shuffle(x.transpose(1, 2).reshape(b * t, c, h, w), 2)
            .view(b, t, c // 4, 2 * h, 2 * w)
            .transpose(1, 2)
        )


class ClipVAE(nn.Module):
    """[B, 3, T, H, W] in [-1, 1] <-> [B, C, T/time_stride, H/4, W/4] (time_stride 2 or 4)."""

    space_stride = 4

    def __init__(self, channels: int = 8, width: int = 32, time_stride: int = 4):
        super().__init__()
        if time_stride not in (2, 4):
            raise ValueError(f"the learned VAE's time_stride must be 2 or 4, got {time_stride}")
        w, w2 = width, 2 * width
        self.channels, self.time_stride = channels, time_stride
        deep = time_stride == 4  # one more halving of time at the bottom, and its upsampling back
        self.encoder = nn.Sequential(
            Space2Depth(),
            nn.Conv3d(12, w, (1, 3, 3), padding=(0, 1, 1)),
            nn.SiLU(),  # H/2, per frame
            nn.Conv3d(w, w2, 4, stride=2, padding=1),
            nn.SiLU(),  # T/2, H/4
            nn.Conv3d(w2, w2, (4, 3, 3), stride=(2, 1, 1), padding=1) if deep else nn.Conv3d(w2, w2, 3, padding=1),
            ResBlock(w2),
            nn.GroupNorm(8, w2),
            nn.SiLU(),
            nn.Conv3d(w2, 2 * channels, 1),
        )  # mean and log-variance
        self.decoder = nn.Sequential(
            nn.Conv3d(channels, w2, 3, padding=1),
            ResBlock(w2),
            nn.Upsample(scale_factor=(2, 1, 1)) if deep else nn.Identity(),
            nn.Conv3d(w2, w2, 3, padding=1),
            nn.SiLU(),  # T/2
            nn.Upsample(scale_factor=2),
            nn.Conv3d(w2, w, (1, 3, 3), padding=(0, 1, 1)),
            nn.SiLU(),  # T, H/2
            nn.Conv3d(w, 12, 3, padding=1),
            Depth2Space(),
        )  # full size: each pixel from 3 frames' features

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(-20, 10)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None):
        mean, logvar = self.posterior(x)
        eps = torch.randn(mean.shape, generator=generator).to(mean)
        return self.decoder(mean + (0.5 * logvar).exp() * eps), mean, logvar


def vae_loss(
    x: torch.Tensor,
    recon: torch.Tensor,
    mean: torch.Tensor,
    logvar: torch.Tensor,
    kl_weight: float,
    motion_weight: float = 1.0,
    per_clip: bool = False,
) -> tuple[torch.Tensor, dict]:
    """L1 on frames + motion_weight x L1 on frame-to-frame changes + kl_weight x KL (per latent value).

    per_clip: each clip's motion L1 weighted by its own frame-to-frame change over the batch's
    mean (weights averaging 1). A plain mean lets the still clips, whose change is near zero and
    easy to redraw, dilute the term: on the two-tag toy a VAE whose stream is 80% still clips
    redraws the moving ones nearly still at the same L1 (BENCHMARKS.md issue 21)."""
    frames = (recon - x).abs().mean()
    dx = x[:, :, 1:] - x[:, :, :-1]
    err = ((recon[:, :, 1:] - recon[:, :, :-1]) - dx).abs().flatten(1).mean(1)
    if per_clip:
        change = dx.abs().flatten(1).mean(1)
        err = err * change / change.mean().clamp_min(1e-6)
    motion = err.mean()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1 - logvar).mean()
    return frames + motion_weight * motion + kl_weight * kl, {
        "l1": frames.item(),
        "motion_l1": motion.item(),
        "kl": kl.item(),
    }


class LearnedSpace:
    """A trained ClipVAE as the generator's latent space (the PixelSpace / WanVAE interface)."""

    space_stride = ClipVAE.space_stride

    def __init__(self, folder: str | Path, device: str | torch.device = "cpu"):
        folder = Path(folder)
        if not (folder / WEIGHTS).is_file() or not (folder / META).is_file():
            raise FileNotFoundError(f"no trained VAE in {folder} (pks train trains one into RUN/vae)")
        self.meta = json.loads((folder / META).read_text())
        self.vae = ClipVAE(self.meta["channels"], self.meta["width"], self.meta["time_stride"])
        self.vae.load_state_dict(torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True))
        self.vae.to(device).eval().requires_grad_(False)
        self.channels, self.time_stride = self.meta["channels"], self.meta["time_stride"]
        self.device, self.name = device, f"learned:{folder}"
        self.mean = torch.tensor(self.meta["latent_mean"], device=device).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(self.meta["latent_std"], device=device).view(1, -1, 1, 1, 1)

    def latent_shape(self, frames: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
        if frames % self.time_stride or size[0] % 4 or size[1] % 4:
            raise ValueError(
                f"the learned VAE needs frames divisible by {self.time_stride} and sides by 4, got {frames} x {size}"
            )
        return self.channels, frames // self.time_stride, size[0] // 4, size[1] // 4

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        mean, _ = self.vae.posterior(to_unit(video.to(self.device)))
        return (mean - self.mean) / self.std

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.vae.decoder(z.to(self.device) * self.std + self.mean)
        return to_uint8(x).cpu()


def train_vae(
    batches, folder: str | Path, lc: LatentConfig, device: str | torch.device = "cpu", seed: int = 0, show: bool = False
) -> dict:
    """Train a ClipVAE on `batches` (dicts with "video": uint8 [B, T, 3, H, W]) for lc.steps
    steps and write it to `folder` (weights, then vae.json last: a folder without vae.json is a
    torn one and is trained again). Returns vae.json's content."""
    folder = Path(folder)
    torch.manual_seed(seed)
    vae = ClipVAE(lc.channels, lc.width, lc.time_stride).to(device)
    opt = torch.optim.AdamW(vae.parameters(), lr=lc.lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    t0, history = time.perf_counter(), []
    seen: list[torch.Tensor] = []
    steps = bar(lc.steps, "pks train: vae", "step", enabled=show)
    for step, batch in enumerate(batches):
        if step >= lc.steps:
            break
        x = to_unit(batch["video"]).to(device)
        lr = lc.lr * min(1.0, (step + 1) / 50)  # a short warm-up: the first steps' gradients are large
        for group in opt.param_groups:
            group["lr"] = lr
        recon, mean, logvar = vae(x, g)
        loss, parts = vae_loss(x, recon, mean, logvar, lc.kl, lc.motion, lc.motion_per_clip)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if len(seen) < 64:  # clips kept for the latent statistics (never more than 64 batches)
            seen.append(batch["video"])
        if step == 0 or (step + 1) % 50 == 0 or step + 1 == lc.steps:
            history.append({"step": step + 1, "loss": loss.item(), **parts})
            log.debug(f"vae step {step + 1}/{lc.steps}: loss {loss.item():.4f} (l1 {parts['l1']:.4f})")
        steps.update(1)
    steps.close()
    vae.eval()
    with torch.no_grad():
        means = torch.cat([vae.posterior(to_unit(v).to(device))[0] for v in seen])
    c = means.transpose(0, 1).reshape(lc.channels, -1)
    meta = {
        "channels": lc.channels,
        "width": lc.width,
        "time_stride": lc.time_stride,
        "steps": lc.steps,
        "kl": lc.kl,
        "motion": lc.motion,
        "motion_per_clip": lc.motion_per_clip,
        "camera_moves": lc.camera_moves,
        "latent_mean": c.mean(1).tolist(),
        "latent_std": c.std(1).clamp_min(1e-3).tolist(),
        "seconds": round(time.perf_counter() - t0, 1),
        "history": history,
    }
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / WEIGHTS) as tmp:
        torch.save(vae.state_dict(), tmp)
    with atomic_path(folder / META) as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=1))
    return meta
