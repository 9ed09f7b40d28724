"""Where training runs: the device, and the process group of a multi-process run."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def default_device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def is_main_process() -> bool:
    """Whether this process speaks for the run (prints its summary): the only process, or rank 0
    of torchrun's. Read from torchrun's environment, as the process group is gone by then."""
    return int(os.environ.get("RANK", "0")) == 0


def setup_distributed() -> tuple[int, int, torch.device]:
    """Rank, world size and device: torchrun's environment, Ray Train's process group, or one
    process."""
    if not dist.is_initialized() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return rank, world, device
