"""Video between its stored form and a network's: uint8 frames [B, T, 3, H, W] <-> floats in
[-1, 1], channels first [B, 3, T, H, W] (the layout of 3D convolutions and of every latent space)."""

from __future__ import annotations

import torch


def to_unit(video: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [B, T, 3, H, W] -> `dtype` [B, 3, T, H, W] in [-1, 1]."""
    return video.permute(0, 2, 1, 3, 4).to(dtype) / 127.5 - 1.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, T, H, W] in [-1, 1] (clamped there) -> uint8 [B, T, 3, H, W], rounded to the nearest level."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 1, 3, 4)
