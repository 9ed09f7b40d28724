"""The generator's latent space: a video VAE through `diffusers` (AutoencoderKLWan from a local
folder: 4x temporal and 8x spatial compression), a small VAE the run trains on its own clips
(`training/clipvae.py`: 4x and 4x, the CPU configuration), or plain pixels.

Both map uint8 video [B, T, 3, H, W] to float latents [B, C, T', H', W'] and back. Wan's
latents are normalised with the mean and std in its config, so the DiT sees unit scale.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

from pks.errors import UserError
from training.pixels import to_uint8, to_unit

if TYPE_CHECKING:
    from training.config import TrainConfig


class PixelSpace:
    """No compression: pixels scaled to [-1, 1]. Fine for tiny runs, where a random VAE could
    not reconstruct anything."""

    channels, time_stride, space_stride = 3, 1, 1
    name = "pixel"

    def latent_shape(self, frames: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
        return self.channels, frames, size[0], size[1]

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        return to_unit(video)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return to_uint8(z)


class WanVAE:
    """diffusers' AutoencoderKLWan, frozen. Clips need 1 + 4k frames and sides divisible by 8."""

    time_stride, space_stride = 4, 8

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", dtype=torch.float32):
        from diffusers import AutoencoderKLWan

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"no VAE in {path} (a local AutoencoderKLWan folder; PKS never downloads)")
        self.vae = AutoencoderKLWan.from_pretrained(path, torch_dtype=dtype).to(device).eval().requires_grad_(False)
        cfg = self.vae.config
        self.channels = cfg.z_dim
        self.mean = torch.tensor(cfg.latents_mean, device=device).view(1, -1, 1, 1, 1)
        self.std = torch.tensor(cfg.latents_std, device=device).view(1, -1, 1, 1, 1)
        self.device, self.dtype, self.name = device, dtype, f"wan:{path}"

    def latent_shape(self, frames: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
        if (frames - 1) % self.time_stride or size[0] % self.space_stride or size[1] % self.space_stride:
            raise ValueError(f"the Wan VAE needs 1 + 4k frames and sides divisible by 8, got {frames} x {size}")
        return self.channels, (frames - 1) // 4 + 1, size[0] // 8, size[1] // 8

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        x = to_unit(video.to(self.device), self.dtype)
        z = self.vae.encode(x).latent_dist.mean
        return ((z - self.mean) / self.std).float()

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        x = self.vae.decode((z.to(self.device) * self.std + self.mean).to(self.dtype)).sample
        return to_uint8(x).cpu()


def learned_vae_folder(cfg: TrainConfig, run: str | Path | None) -> Path:
    """Where a `learned` space lives: latent.path (an earlier run's vae/, reused), else RUN/vae."""
    path = cfg.latent.path
    if path:
        return Path(path)
    if run is None:
        raise UserError("latent.kind learned needs latent.path (a trained RUN/vae folder) outside a run")
    return Path(run) / "vae"


def latent_space(cfg: TrainConfig, device="cpu", run: str | Path | None = None):
    """The run's latent space; `run` locates a learned VAE trained into RUN/vae."""
    lat = cfg.latent
    if lat.kind == "pixel":
        return PixelSpace()
    if lat.kind == "learned":
        from training.clipvae import LearnedSpace

        return LearnedSpace(learned_vae_folder(cfg, run), device)
    if lat.kind == "wan":
        if not lat.path:
            raise ValueError("latent.kind wan needs latent.path (a local AutoencoderKLWan folder)")
        return WanVAE(lat.path, device)
    raise ValueError(f"latent.kind must be pixel, learned or wan, got {lat.kind!r}")
