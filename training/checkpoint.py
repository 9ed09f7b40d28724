"""A run's checkpoints: directories written under a temporary name and renamed when complete
(torn ones removed on resume), the metrics log trimmed back to a resumed step, and the model
unwrapped from DDP/FSDP/compile for saving."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from pks.store import atomic_path, jsonl_entries

CKPT = "step-{:08d}"


def checkpoints(run: Path) -> list[Path]:
    """Finished checkpoints, oldest first (a temporary directory left by a kill is not one)."""
    d = run / "checkpoints"
    return sorted(p for p in d.glob("step-*") if p.is_dir() and p.name[5:].isdigit()) if d.is_dir() else []


def save_checkpoint(
    run: Path, step: int, model, ema: dict, opt, sharded: bool, rank: int, keep: int, meta: dict | None = None
) -> None:
    """RUN/checkpoints/step-N/: state (one file, or torch.distributed.checkpoint shards), the EMA
    weights in full for sampling, meta.json (with `meta`: e.g. the taxonomy version). Written
    under a temporary name, renamed when whole."""
    final = run / "checkpoints" / CKPT.format(step)
    tmp = final.with_name(final.name + ".tmp")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    if sharded:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        dist.barrier()
        msd, osd = get_state_dict(model, opt)
        dcp.save({"model": msd, "optimizer": osd, "ema": ema}, checkpoint_id=str(tmp / "state"))
        full = {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).cpu() for k, v in ema.items()}  # collective
    else:
        full = {k: v.cpu() for k, v in ema.items()}
        if rank == 0:
            torch.save({"model": unwrap(model).state_dict(), "optimizer": opt.state_dict()}, tmp / "state.pt")
    if rank == 0:
        torch.save(full, tmp / "ema.pt")
        (tmp / "meta.json").write_text(
            json.dumps({"step": step, "sharded": sharded, **(meta or {}), "rng": torch.get_rng_state().tolist()})
        )
        os.replace(tmp, final)
        for old in checkpoints(run)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    if dist.is_initialized():
        dist.barrier()


def load_checkpoint(path: Path, model, ema: dict, opt) -> int:
    meta = json.loads((path / "meta.json").read_text())
    if meta["sharded"]:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import (
            get_state_dict,
            set_state_dict,
        )

        msd, osd = get_state_dict(model, opt)
        state: dict[str, Any] = {"model": msd, "optimizer": osd, "ema": ema}
        dcp.load(state, checkpoint_id=str(path / "state"))
        set_state_dict(model, opt, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    else:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
        unwrap(model).load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        saved = torch.load(path / "ema.pt", map_location="cpu", weights_only=True)
        for k, v in ema.items():
            v.copy_(saved[k])
    torch.set_rng_state(torch.tensor(meta["rng"], dtype=torch.uint8))
    return meta["step"]


def remove_torn_checkpoints(run: Path) -> None:
    """Delete checkpoint directories a kill left half written (never renamed to step-N)."""
    for stale in (run / "checkpoints").glob("*.tmp") if (run / "checkpoints").is_dir() else []:
        shutil.rmtree(stale)


def trim_metrics(path: Path, step: int) -> None:
    """Drop the lines a killed run logged after the checkpoint it resumes from (step), and a
    line it tore mid-write. Rewritten under a temporary name and renamed: a kill during the
    rewrite leaves the old file, never a truncated one."""
    if path.exists():
        kept = [e for e in jsonl_entries(path.read_text()) if e["step"] <= step]
        with atomic_path(path) as tmp:
            tmp.write_text("".join(json.dumps(e) + "\n" for e in kept))


def unwrap(model):
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP
